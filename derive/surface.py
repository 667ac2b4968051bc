"""The cost surface: the loss over a grid of two parameter elements, the rest held fixed."""
from __future__ import annotations

import re

import numpy as np

from .errors import SpecError
from .params import describe_shapes

SURFACE_DEFAULTS = {"span": 1.0, "steps": 41}
MAX_STEPS = 401          # a 401 x 401 surface is 160k loss evaluations: plenty
REFINEMENTS = 40         # golden-section steps of line_minimum: its bracket shrinks by 0.618**40, 4e-9


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


def line_minimum(module, params: dict, x, y, elements, gradient, span: float,
                 samples: int = 4 * SURFACE_DEFAULTS["steps"], refinements: int = REFINEMENTS):
    """Where the loss is lowest along -gradient, moving the two elements within the surface's grid: steepest
    descent with an exact line search (Cauchy's step), so the arrow the plot draws ends at that line's
    minimum instead of an arbitrary length past it.

    The ray from the current point is sampled at `samples` points out to the grid's edge, then the best
    bracket is narrowed by `refinements` golden-section steps: a fixed count of loss evaluations.

    Args:
        gradient: (dL/du, dL/dv) at params, the two elements' entries of the full gradient.
        span: the grid's half-width (loss_surface's span).

    Returns:
        (du, dv, loss): the move and the loss there, or None when -gradient is zero or not finite, or no
        point on the ray has a lower loss than the current one.
    """
    g = np.asarray(gradient, dtype=np.float64)
    norm = float(np.linalg.norm(g)) if np.all(np.isfinite(g)) else 0.0
    if norm == 0.0:
        return None
    direction = -g / norm
    (k1, i1), (k2, i2) = elements
    p = {k: np.array(v, copy=True) for k, v in params.items()}
    u0, v0 = float(p[k1][i1]), float(p[k2][i2])

    def loss_at(t: float) -> float:
        p[k1][i1], p[k2][i2] = u0 + t * direction[0], v0 + t * direction[1]
        value = float(module.loss(p, x, y))
        return value if np.isfinite(value) else np.inf

    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        reach = span / float(np.max(np.abs(direction)))         # the ray's length inside the square grid
        ts = np.linspace(0.0, reach, samples + 1)
        values = [loss_at(0.0)] + [loss_at(t) for t in ts[1:]]
        best = int(np.argmin(values))                  # 0: the minimum lies before the first sample, if anywhere
        lo, hi = ts[max(best - 1, 0)], ts[min(best + 1, samples)]
        ratio = (np.sqrt(5) - 1) / 2
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = loss_at(a), loss_at(b)
        for _ in range(refinements):
            if fa <= fb:
                hi, b, fb = b, a, fa
                a = hi - ratio * (hi - lo)
                fa = loss_at(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + ratio * (hi - lo)
                fb = loss_at(b)
        t, value = min([(ts[best], values[best]), (a, fa), (b, fb)], key=lambda pair: pair[1])
    if not value < values[0]:
        return None
    return float(t * direction[0]), float(t * direction[1]), float(value)


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
