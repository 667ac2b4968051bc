"""The scalar expansion: one Symbol per weight, the loss written out in full, evaluated exactly.

What the proof and the verifier compare against: plain sp.diff of this expansion (small networks
only: it grows fast with the widths), evaluated by a memoised mpmath tree walk.
"""
import mpmath
import numpy as np
import sympy as sp

from .activations import softmax_instance
from .losses import exact
from .naming import X, Y, YHAT
from .penalties import PENALTIES, W as ENTRY, penalty_kind
from .spec import Network

DIGITS = 40            # working precision of the exact evaluation

_FUNCS = {sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.erf: mpmath.erf,
          sp.sinh: mpmath.sinh, sp.cosh: mpmath.cosh, sp.sin: mpmath.sin, sp.cos: mpmath.cos,
          sp.tan: mpmath.tan, sp.atan: mpmath.atan, sp.asinh: mpmath.asinh, sp.Abs: abs,
          sp.sign: mpmath.sign}
_COMPARE = {">": lambda u, v: u > v, "<": lambda u, v: u < v, ">=": lambda u, v: u >= v,
            "<=": lambda u, v: u <= v, "==": lambda u, v: u == v, "!=": lambda u, v: u != v}


def evaluate(expr: sp.Expr, values: dict, memo: dict | None = None) -> mpmath.mpf:
    """Evaluate a SymPy expression at `values` (Symbol -> mpf) in mpmath, sharing repeated subtrees.

    Much faster than evalf(subs=...) on large expansions, and as exact as the working precision.

    >>> x = sp.Symbol("x")
    >>> evaluate(sp.exp(x) + sp.Max(x, 0), {x: mpmath.mpf(0)})
    mpf('1.0')
    """
    memo = {} if memo is None else memo

    def ev(e):
        if e in memo:
            return memo[e]
        if e in values:
            r = values[e]
        elif e.is_Number or e.is_NumberSymbol:
            r = mpmath.mpf(sp.N(e, mpmath.mp.dps + 5))
        elif e.is_Add:
            r = mpmath.fsum(ev(a) for a in e.args)
        elif e.is_Mul:
            r = mpmath.fprod(ev(a) for a in e.args)
        elif e.is_Pow:
            r = ev(e.base) ** ev(e.exp)
        elif isinstance(e, sp.Heaviside):
            v = ev(e.args[0])
            r = mpmath.mpf(v > 0) if v != 0 else (ev(e.args[1]) if len(e.args) > 1 else mpmath.mpf(0.5))
        elif isinstance(e, sp.Max):
            r = max(ev(a) for a in e.args)
        elif isinstance(e, sp.Min):
            r = min(ev(a) for a in e.args)
        elif isinstance(e, sp.Piecewise):
            r = next(ev(value) for value, cond in e.args if holds(cond))
        elif e.func in _FUNCS:
            r = _FUNCS[e.func](*[ev(a) for a in e.args])
        else:
            raise TypeError(f"cannot evaluate {e.func}")
        memo[e] = r
        return r

    def holds(c) -> bool:
        if c in (sp.true, sp.false):
            return bool(c)
        if isinstance(c, sp.And):
            return all(holds(a) for a in c.args)
        if isinstance(c, sp.Or):
            return any(holds(a) for a in c.args)
        if isinstance(c, sp.Not):
            return not holds(c.args[0])
        if isinstance(c, sp.ITE):
            return holds(c.args[1]) if holds(c.args[0]) else holds(c.args[2])
        return _COMPARE[c.rel_op](ev(c.lhs), ev(c.rhs))

    return ev(expr)


# --- the scalar expansion: one Symbol per weight, the loss written out in full ---------------------

def param_symbols(net: Network) -> dict:
    """sympy Matrices of Symbols w{l}_{k}_{j}, b{l}_{k} shaped like the parameters."""
    out = {}
    for name, shape in net.param_shapes().items():
        if len(shape) == 2:
            out[name] = sp.Matrix(shape[0], shape[1], lambda k, j: sp.Symbol(f"{name}_{k}_{j}", real=True))
        else:
            out[name] = sp.Matrix(shape[0], 1, lambda k, _: sp.Symbol(f"{name}_{k}", real=True))
    return out


def _activate(net: Network, l: int, z: list) -> list:
    if net.is_vector(l):
        return softmax_instance(z)
    f = net.activation_formula(l)
    return [f.xreplace({X: zk}) for zk in z]


def _targets(net: Network, y: np.ndarray) -> np.ndarray:
    if net.loss_entry.target == "labels":
        return np.eye(net.sizes[-1])[np.asarray(y, dtype=int)]
    return np.asarray(y, dtype=float).reshape(len(y), -1)


def example_output(net: Network, P: dict, x: list) -> tuple[list, list]:
    """The output layer's pre-activations z and outputs a of one example, as scalar expressions."""
    a = list(x)
    for l in range(1, net.depth + 1):
        W, b = P[f"W{l}"], P[f"b{l}"]
        z = [sum((W[k, j] * a[j] for j in range(len(a))), sp.S.Zero) + b[k] for k in range(W.shape[0])]
        a = _activate(net, l, z)
    return z, a


def output_loss(net: Network, a: list, y: list) -> sp.Expr:
    """The per-example loss of the outputs a (expressions or Symbols) and targets y."""
    element = net.loss_entry.element
    return sp.Add(*[element.xreplace({YHAT: ak, Y: yk}) for ak, yk in zip(a, y)])


def example_loss(net: Network, P: dict, x: list, y: list) -> sp.Expr:
    """The loss of one example as one scalar expression: x and y are lists of numbers or Symbols."""
    return output_loss(net, example_output(net, P, x)[1], y)


def expanded_loss(net: Network, P: dict, x: np.ndarray, y: np.ndarray) -> sp.Expr:
    """The batch loss as one scalar expression in the entries of P (x, y exact rationals), the weight
    penalty included."""
    rational = np.vectorize(lambda v: sp.Rational(float(v)), otypes=[object])
    rows = zip(rational(x), rational(_targets(net, y)))
    data = sp.Add(*[example_loss(net, P, list(row), list(target)) for row, target in rows]) / len(x)
    return data + expanded_penalty(net, P)


def penalty_terms(net: Network) -> list[tuple[str, sp.Expr]]:
    """(parameter, per-entry penalty in penalties.W) for every penalty the spec gives: the coefficient times
    the registry's formula (l2: w**2/2, l1: |w|). Read from the spec, never from the derivation."""
    out = []
    for l in range(1, net.depth + 1):
        for key, value in net.penalties(l).items():
            kind, on_bias = penalty_kind(key)
            out.append((f"b{l}" if on_bias else f"W{l}", exact(value) * PENALTIES[kind]))
    return out


def expanded_penalty(net: Network, P: dict) -> sp.Expr:
    """The weight penalty as one scalar expression in the entries of P."""
    return sp.Add(*[term.xreplace({ENTRY: s}) for name, term in penalty_terms(net) for s in P[name]])


def sample_batch(net: Network, rng, batch: int = 3):
    """Inputs and targets that suit the network's loss."""
    x = rng.normal(size=(batch, net.inputs))
    k = net.sizes[-1]
    target = net.loss_entry.target
    if target == "labels":
        y = rng.integers(0, k, size=batch)
    elif target == "onehot":
        y = np.eye(k)[rng.integers(0, k, size=batch)]
    elif net.loss == "bce":
        y = rng.uniform(0.05, 0.95, size=(batch, k))
    else:
        y = rng.normal(size=(batch, k))
    return x, y
