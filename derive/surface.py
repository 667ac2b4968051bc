"""The cost surface: the loss over a grid of two parameter elements, the rest held fixed."""
from __future__ import annotations

import re

import numpy as np

from .errors import SpecError
from .params import describe_shapes

SURFACE_DEFAULTS = {"span": 1.0, "steps": 41}
MAX_STEPS = 401          # a 401 x 401 surface is 160k loss evaluations: plenty


_ELEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*,?\s*\]\s*$")


def parse_element(text: str, shapes: dict, flag: str = "--params") -> tuple[str, tuple[int, ...]]:
    """'W1[0,2]' -> ("W1", (0, 2)), checked against the parameter shapes.

    >>> parse_element("W1[1, 0]", {"W1": (2, 4), "b1": (2,)})
    ('W1', (1, 0))
    """
    valid = f"the parameters are {describe_shapes(shapes)}"
    match = _ELEMENT.match(text)
    if not match:
        raise SpecError(flag, "", f"{text!r} is not a parameter element like W1[0,0] or b1[0]", valid)
    name, index = match[1], tuple(int(i) for i in match[2].split(","))
    if name not in shapes:
        raise SpecError(flag, "", f"{text!r}: the network has no parameter {name!r}", valid)
    shape = tuple(shapes[name])
    if len(index) != len(shape) or any(i >= n for i, n in zip(index, shape)):
        raise SpecError(flag, "", f"{text!r} is outside {name}'s shape {shape}",
                        f"give {len(shape)} index(es), each below {shape}; {valid}")
    return name, index


def loss_surface(module, params: dict, x, y, elements, span: float, steps: int):
    """The loss over a steps x steps grid moving two parameter elements by -span..span, the rest fixed.

    Returns (u, v, losses): u and v the values of the first and second element,
    losses[i, j] the loss at (u[j], v[i]).
    """
    (k1, i1), (k2, i2) = elements
    p = {k: np.array(v, copy=True) for k, v in params.items()}
    u = p[k1][i1] + np.linspace(-span, span, steps)
    v = p[k2][i2] + np.linspace(-span, span, steps)
    losses = np.empty((steps, steps))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for i, vi in enumerate(v):
            p[k2][i2] = vi
            for j, uj in enumerate(u):
                p[k1][i1] = uj
                losses[i, j] = module.loss(p, x, y)
    return u, v, losses


def _one_blas_thread():
    """Limit BLAS to one thread when threadpoolctl (a scikit-learn dependency) is at hand.

    The surface is thousands of small matrix products: BLAS threads cost more than
    they save there, and many times more when the cores are busy (measured 3-4x).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)
