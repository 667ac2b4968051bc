"""SymPy expressions evaluated on whole NumPy arrays in extended precision, with running error bounds.

The verifier's reference values: an activation or loss formula from the registries is walked
node by node (never lambdified: no eval, no exec) on arrays of np.longdouble (64-bit mantissa on
x86; where the platform has none it is float64 and the tolerances, which bound both sides, still
hold). `bounded` also returns a first-order running error bound in units of the unit roundoff
(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., 2002, sec. 3.1): what any
floating-point evaluation of the same formula may be off by, per element.
"""
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from .elementwise import at_kinks

REAL = np.longdouble
COMPLEX = np.clongdouble

_U = sp.Symbol("u", real=True)


def _erf(u):
    if np.iscomplexobj(u):
        raise TypeError("erf of a complex array")
    flat = np.asarray(u, dtype=REAL).ravel()
    with mpmath.workdps(25):
        out = np.array([REAL(mpmath.nstr(mpmath.erf(mpmath.mpf(str(v))), 22)) if np.isfinite(v) else REAL(np.sign(v))
                        for v in flat], dtype=REAL)
    return out.reshape(np.shape(u))


def _sign(u):
    return np.sign(u.real) if np.iscomplexobj(u) else np.sign(u)


_FUNCS = {sp.exp: np.exp, sp.log: np.log, sp.tanh: np.tanh, sp.sinh: np.sinh, sp.cosh: np.cosh,
          sp.sin: np.sin, sp.cos: np.cos, sp.tan: np.tan, sp.atan: np.arctan, sp.asinh: np.arcsinh,
          sp.erf: _erf, sp.sign: _sign}
_COMPARE = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
            "==": np.equal, "!=": np.not_equal}


@lru_cache(maxsize=4096)
def _number(e) -> REAL:
    return REAL(str(sp.N(e, 25)))


class Evaluator:
    """Evaluate expressions on arrays bound to Symbols; repeated subexpressions are computed once.

    >>> x = sp.Symbol("x")
    >>> Evaluator({x: np.array([-1.0, 2.0])})(sp.Max(x, 0) + 1).tolist()
    [1.0, 3.0]
    """

    def __init__(self, env: dict):
        self.env = {s: np.asarray(v) for s, v in env.items()}
        self.memo = {}

    def __call__(self, e):
        if e in self.memo:
            return self.memo[e]
        if e in self.env:
            r = self.env[e]
        elif e.is_Number or e.is_NumberSymbol:
            r = _number(e)
        elif e.is_Add:
            r = sum((self(a) for a in e.args[1:]), self(e.args[0]))
        elif e.is_Mul:
            r = self(e.args[0])
            for a in e.args[1:]:
                r = r * self(a)
        elif e.is_Pow:
            base, ex = self(e.base), e.exp
            if ex.is_Integer:
                r = base ** int(ex) if int(ex) >= 0 else 1 / base ** (-int(ex))
            else:
                r = base ** self(ex)
        elif isinstance(e, sp.Heaviside):
            v = self(e.args[0]).real
            at0 = self(e.args[1]) if len(e.args) > 1 else REAL(0.5)
            r = np.where(v > 0, REAL(1), np.where(v < 0, REAL(0), at0))
        elif isinstance(e, (sp.Max, sp.Min)):
            pick = np.greater if isinstance(e, sp.Max) else np.less
            r = self(e.args[0])
            for a in e.args[1:]:
                v = self(a)
                r = np.where(pick(v.real, r.real), v, r)
        elif isinstance(e, sp.Abs):
            v = self(e.args[0])
            r = v * _sign(v) if np.iscomplexobj(v) else np.abs(v)
        elif isinstance(e, sp.Piecewise):
            pieces = [(self(value), self.holds(cond)) for value, cond in e.args]
            shape = np.broadcast_shapes(*[np.shape(v) for v, _ in pieces], *[np.shape(c) for _, c in pieces])
            r = np.zeros(shape, dtype=np.result_type(*[np.asarray(v).dtype for v, _ in pieces]))
            taken = np.zeros(shape, dtype=bool)
            for v, c in pieces:
                new = np.broadcast_to(c, shape) & ~taken
                r = np.where(new, v, r)
                taken = taken | new
        elif e.func in _FUNCS:
            r = _FUNCS[e.func](*[self(a) for a in e.args])
        else:
            raise TypeError(f"cannot evaluate {e.func} on arrays")
        self.memo[e] = r
        return r

    def holds(self, c):
        if c in (sp.true, sp.false):
            return np.asarray(bool(c))
        if isinstance(c, sp.And):
            out = self.holds(c.args[0])
            for a in c.args[1:]:
                out = out & self.holds(a)
            return out
        if isinstance(c, sp.Or):
            out = self.holds(c.args[0])
            for a in c.args[1:]:
                out = out | self.holds(a)
            return out
        if isinstance(c, sp.Not):
            return ~self.holds(c.args[0])
        return _COMPARE[c.rel_op](self(c.lhs).real, self(c.rhs).real)


def evaluate_array(expr: sp.Expr, env: dict):
    """`expr` evaluated elementwise on the arrays in env (Symbol -> array), in extended precision.

    Elements that come out NaN from finite inputs (an intermediate overflowed: exp(4e7)/exp(4e7))
    are evaluated again one by one in mpmath, whose exponent range is unbounded.
    """
    env = {s: np.asarray(v, dtype=COMPLEX if np.iscomplexobj(v) else REAL) for s, v in env.items()}
    with np.errstate(all="ignore"):
        out = Evaluator(env)(expr)
    shape = np.broadcast_shapes(*[np.shape(v) for v in env.values()])
    out = np.broadcast_to(out, shape).copy()
    if not np.iscomplexobj(out):
        _repair(expr, env, out, shape)
        _, bound = bounded(expr, env, {}, refine=False)
        _refine(expr, env, out, shape, bound)
    return out


ACCURACY = 1e-15      # relative: where the extended-precision bound says worse, mpmath recomputes


def _refine(expr, env, out, shape, bound):
    """Recompute in mpmath the elements whose extended-precision value may be off by more than
    ACCURACY (cancellation: 1 + erf(x) for x << 0), so the reference stays far more accurate than
    anything it checks."""
    u = float(np.finfo(REAL).eps) / 2
    with np.errstate(all="ignore"):
        bad = np.argwhere(np.isfinite(out) & (bound * u > ACCURACY * np.abs(out)) & (bound > 0))
    if not len(bad):
        return
    import warnings

    from .expansion import evaluate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        memo_env = {s: np.broadcast_to(v, shape) for s, v in env.items()}
        for idx in bad[:20_000]:
            i = tuple(idx)
            prev = None
            # digits lost to cancellation: log10(bound / |value|); two precisions beyond that must agree
            lost = float(np.log10(bound[i]) - np.log10(np.abs(out[i]))) if out[i] != 0 else 300.0
            start = int(min(max(lost, 0.0), 1200.0)) + 30
            for dps in (start, start + 30, 2 * start + 30):
                with mpmath.workdps(dps):
                    try:
                        v = evaluate(expr, {s: mpmath.mpf(str(a[i])) for s, a in memo_env.items()})
                    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                        break
                    if prev is not None and abs(v - prev) <= abs(v) * mpmath.mpf(10) ** -20:
                        break
                    prev = v
            else:
                continue
            if prev is not None:
                out[i] = REAL(mpmath.nstr(v, 25))


def _repair(expr, env, out, shape):
    """Re-evaluate in mpmath the elements of `out` that are NaN although every input is finite."""
    finite = np.ones(shape, dtype=bool)
    for v in env.values():
        finite &= np.broadcast_to(np.isfinite(v), shape)
    bad = np.argwhere(np.isnan(out) & finite)
    if not len(bad):
        return
    import warnings

    from .expansion import evaluate
    with mpmath.workdps(30), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # beyond longdouble's range: inf, as it should
        for idx in bad[:100_000]:
            i = tuple(idx)
            values = {s: mpmath.mpf(str(np.broadcast_to(v, shape)[i])) for s, v in env.items()}
            try:
                out[i] = REAL(mpmath.nstr(evaluate(expr, values), 25))
            except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                pass


@lru_cache(maxsize=None)
def derivative(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """d expr / d var with the kink convention: the left derivative in var (relu'(0) = 0, |u|'(0) = -1, jumps 0)."""
    return at_kinks(sp.diff(expr, var), var)


@lru_cache(maxsize=None)
def _fprime(func) -> sp.Expr:
    return derivative(func(_U), _U)


@lru_cache(maxsize=None)
def _fsecond(func) -> sp.Expr:
    return derivative(derivative(func(_U), _U), _U)


def bounded(expr: sp.Expr, env: dict, env_err: dict, u: float = 0.0, refine: bool = True):
    """(value, error bound in units of the unit roundoff) of `expr`, elementwise.

    env_err gives each input's own error bound (same units). The rules: a sum's rounding is at
    most the sum of its terms' magnitudes, a product's at most its magnitude, a function's is
    |f'(u)| times its argument's error plus one rounding of the result; with the unit roundoff
    `u` given, also |f''(u)| err^2 u / 2, the second-order term that dominates where the argument's
    error is not small (float32 cos of 5e7, whose ulp is 4).
    """
    env = {s: np.asarray(v, dtype=REAL) for s, v in env.items()}
    ev = Evaluator(env)
    memo = {}

    def err(e):
        if e in memo:
            return memo[e]
        v = np.abs(ev(e))
        if e in env:
            r = np.asarray(env_err.get(e, 0.0), dtype=REAL)
        elif e.is_Number or e.is_NumberSymbol:
            r = v
        elif e.is_Add:
            r = sum(err(a) + np.abs(ev(a)) for a in e.args)
        elif e.is_Mul:
            r = v
            for i, a in enumerate(e.args):
                others = REAL(1)
                for j, b in enumerate(e.args):
                    if j != i:
                        others = others * np.abs(ev(b))
                r = r + err(a) * others
        elif e.is_Pow:
            base = ev(e.base)
            r = v + np.abs(ev(e.exp * e.base ** (e.exp - 1))) * err(e.base)
            if not e.exp.is_Number:
                r = r + np.abs(ev(e) * ev(sp.log(sp.Abs(e.base)))) * err(e.exp)
            del base
        elif isinstance(e, sp.Piecewise):
            # the error of the branch taken, element by element
            r = np.zeros_like(v)
            taken = np.zeros(np.shape(v), dtype=bool)
            for val, cond in e.args:
                c = np.broadcast_to(ev.holds(cond), np.shape(v)) & ~taken
                r = np.where(c, err(val), r)
                taken = taken | c
        elif isinstance(e, (sp.Max, sp.Min)):
            # the error of the argument taken; where arguments tie, the larger
            r = np.zeros_like(v)
            for a in e.args:
                r = np.where(ev(a) == ev(e), np.maximum(r, err(a)), r)
        elif isinstance(e, (sp.Heaviside, sp.sign)):
            r = np.zeros_like(v)
        elif isinstance(e, sp.Abs):
            r = err(e.args[0])
        elif e.func in _FUNCS:
            (a,) = e.args
            inner = Evaluator({_U: ev(a)})
            d = inner(_fprime(e.func))
            r = v + np.abs(d) * err(a)
            if u:
                r = r + np.abs(inner(_fsecond(e.func))) * err(a) ** 2 * REAL(u / 2)
        else:
            raise TypeError(f"cannot bound {e.func}")
        memo[e] = np.asarray(r, dtype=REAL)
        return memo[e]

    shape = np.broadcast_shapes(*[np.shape(v) for v in env.values()])
    with np.errstate(all="ignore"):
        value = np.broadcast_to(ev(expr), shape).copy()
        bound = np.broadcast_to(err(expr), shape).copy()
    _repair(expr, env, value, shape)
    if refine:
        _refine(expr, env, value, shape, bound)
    # where an intermediate overflowed, the running bound is unknown: a loose relative one instead
    bound = np.where(np.isfinite(bound), bound, 1e3 * np.abs(value))
    return value, bound


def kink_arguments(expr: sp.Expr) -> list[sp.Expr]:
    """The expressions whose sign switches a branch of `expr` (Max/Min differences, conditions, Abs ...)."""
    out = []
    for e in sp.preorder_traversal(expr):
        if isinstance(e, (sp.Max, sp.Min)):
            out += [a - b for a, b in zip(e.args, e.args[1:])]
        elif isinstance(e, sp.Piecewise):
            for _, cond in e.args:
                for rel in ([cond] if isinstance(cond, sp.core.relational.Relational) else
                            [c for c in sp.preorder_traversal(cond) if isinstance(c, sp.core.relational.Relational)]):
                    out.append(rel.lhs - rel.rhs)
        elif isinstance(e, (sp.Heaviside, sp.sign, sp.Abs)):
            out.append(e.args[0])
    return out
