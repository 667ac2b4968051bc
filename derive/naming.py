"""Names shared by the derivation, the LaTeX and the generated code: W1, b1, z1, a1, delta1, dW1 ..."""
import re

import sympy as sp

# Generic scalar symbols the elementwise formulas are written in.
X = sp.Symbol("x", real=True)          # an activation's argument (z of its layer)
A = sp.Symbol("a", real=True)          # an activation's output a = f(z)
Y = sp.Symbol("y", real=True)          # a target element
YHAT = sp.Symbol("yhat", real=True)    # a prediction element
LOGP = sp.Symbol("logp", real=True)    # log of a prediction, computed stably from logits
G = sp.Symbol("g", real=True)          # an upstream gradient dL/da
YSUM = sp.Symbol("ysum", real=True)    # the sum of one example's targets over the units


def weight(l: int) -> str:
    return f"W{l}"


def bias(l: int) -> str:
    return f"b{l}"


def pre(l: int) -> str:
    """The pre-activation z{l}; z0 does not exist, a0 is x."""
    return f"z{l}"


def act(l: int) -> str:
    return "x" if l == 0 else f"a{l}"


def delta(l: int) -> str:
    return f"delta{l}"


def grad(param: str) -> str:
    return f"d{param}"


def param_of(gradient: str) -> str:
    """grad's inverse: dW1 -> W1."""
    return gradient[1:]


# Arrays of the generated code that belong to no one layer.
TARGETS = "y"          # the targets, one row per example
UPSTREAM = "g"         # the upstream gradient dL/da a statement is about to multiply through f'
RESIDUAL = "r"         # a loss's inner difference, squared in one BLAS dot
TOTAL = "total"        # the per-example losses summed over the batch
SCALE = "scale"        # what backward scales every gradient by: 1/n (sgd_step: lr/n)
RATE = "rate"          # what backward scales the penalty's gradient by: 1 (sgd_step: lr), i.e. scale * n
PENALTY = "penalty"    # the weight penalty, added to the batch mean of the loss


def log_output(l: int, is_output: bool) -> str:
    """log(a{l}) of a softmax layer, computed stably from z{l}: `logp` for the output layer."""
    return "logp" if is_output else f"logp{l}"


def temp(l: int, i: int) -> str:
    """A shared subexpression of layer l's activation and its derivative."""
    return f"t{l}_{i}"


def rop(name: str) -> str:
    """R{name}: the directional derivative of the array `name` along the direction v (Pearlmutter's R-operator)."""
    return f"R{name}"


def direction(param: str) -> str:
    """The direction v's entry for a parameter (printed v["W1"] in generated code)."""
    return f"v{param}"


def rop_of(name: str) -> str | None:
    """The array whose R{} `name` is (rop's inverse: Rdelta1 -> delta1), or None."""
    prefix = rop("")
    return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else None


def direction_of(name: str) -> str | None:
    """The parameter whose direction entry `name` is (direction's inverse: vW1 -> W1), or None."""
    prefix, rest = direction(""), name[len(direction("")):]
    return rest if name.startswith(prefix) and re.fullmatch(r"[Wb][1-9]\d*", rest) else None


DIRECTIONS = "v"       # the direction argument of hvp / gnvp: a dict shaped like params


def array(name: str) -> sp.Symbol:
    """The scalar symbol that stands for one element of the array `name` in generated code."""
    return sp.Symbol(name, real=True)
