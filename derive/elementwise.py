"""Derivatives of one activation: sp.diff, the kink conventions, and the form in the forward output."""
import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .errors import DerivationError
from .naming import A, X

# Bounds on deriving one activation: formulas come from untrusted specs, and a short formula can
# have a derivative SymPy takes minutes over (the parser bounds the formula, not its derivative).
DERIVE_SECONDS = 20
MAX_DERIVATIVE_OPS = 5000

# Forms the inversion a = f(x) -> x cannot handle; their derivatives are used in x.
_NOT_INVERTIBLE = (sp.Piecewise, sp.Heaviside, sp.Max, sp.Min, sp.sign, sp.Abs, sp.erf)


@dataclass(frozen=True)
class ElementwiseDerivative:
    """An activation f, its derivative f' (in x) and, when proven, f' written in a = f(x).

    >>> d = derive_elementwise(1 / (1 + sp.exp(-X)))
    >>> d.fprime_a
    a*(1 - a)
    """

    f: sp.Expr
    fprime: sp.Expr
    fprime_a: sp.Expr | None = None   # f'(x) == fprime_a(f(x)) for all x, proven symbolically
    inverse: sp.Expr | None = None    # x in terms of a, where f is invertible

    @property
    def backward_factor(self) -> sp.Expr:
        """What backward multiplies by: the output form when there is one (reuses forward values)."""
        return self.fprime if self.fprime_a is None else self.fprime_a


def at_kinks(expr: sp.Expr) -> sp.Expr:
    """Apply the kink conventions: the left derivative at a kink, and 0 for a jump's Dirac delta.

    relu'(0) = Heaviside(0, 0) = 0, leaky_relu'(0) = alpha, step'(x) = sign'(x) = 0 (not trainable).
    """
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside) and (len(e.args) == 1 or e.args[1] == sp.S.Half),
                        lambda e: sp.Heaviside(e.args[0], 0))
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def diff(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """sp.diff with the kink conventions applied."""
    return at_kinks(sp.diff(expr, var))


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError if the block runs longer than `seconds` (main thread only; else no limit).

    Limits nest: an inner limit never extends an outer one, and the outer one is re-armed with
    what is left of it when the inner block ends (an expired outer limit fires at once).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds:g} s")

    start = time.monotonic()
    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    old = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def agree_numerically(e1: sp.Expr, e2: sp.Expr, var: sp.Symbol, points=(-2.3, -0.7, 0.4, 1.9)) -> bool:
    """e1 == e2 at several points to 40 digits (a guard on top of a symbolic proof)."""
    for p in points:
        v1, v2 = (sp.N(e.xreplace({var: sp.Rational(str(p))}), 50) for e in (e1, e2))
        if not (v1.is_number and v2.is_number) or abs(v1 - v2) > sp.Float("1e-40") * (1 + abs(v1)):
            return False
    return True


def _candidates(f: sp.Expr, fprime: sp.Expr):
    """Ways to write f' in a: replace f by a where it appears (tanh' = 1 - tanh^2), or invert a = f(x)."""
    direct = fprime.subs(f, A)
    if not direct.has(X):
        yield direct, None
    # Inversion only for a chain of unary functions of x; solve() on anything else is slow and futile.
    if f.has(*_NOT_INVERTIBLE) or sum(1 for e in sp.preorder_traversal(f) if e == X) != 1:
        return
    with time_limit(3):
        inverses = sp.solve(sp.Eq(A, f), X, check=False)   # the candidate is proven below
    for inv in inverses:
        yield fprime.xreplace({X: inv}), inv


def _output_form(f: sp.Expr, fprime: sp.Expr) -> tuple[sp.Expr | None, sp.Expr | None]:
    """Find g with f'(x) = g(f(x)): substitute or solve, simplify, then prove g(f(x)) - f'(x) == 0."""
    if not fprime.has(X):
        return None, None
    try:
        for g, inv in _candidates(f, fprime):
            with time_limit(3):
                simple = sp.simplify(g)
                g = min((g, simple, sp.factor(simple)), key=sp.count_ops)
                if g.has(X) or sp.count_ops(g) > sp.count_ops(fprime):
                    continue
                if sp.simplify(g.xreplace({A: f}) - fprime) == 0 and agree_numerically(g.xreplace({A: f}), fprime, X):
                    return g, inv
    except (TimeoutError, NotImplementedError, ValueError, TypeError):
        pass
    return None, None


@lru_cache(maxsize=None)
def derive_elementwise(f: sp.Expr) -> ElementwiseDerivative:
    """Differentiate an activation formula in X and rewrite f' in terms of a = f(x) where provable.

    Raises:
        DerivationError: no usable derivative, a derivative of more than MAX_DERIVATIVE_OPS
            operations, or more than DERIVE_SECONDS of SymPy work.
    """
    try:
        with time_limit(DERIVE_SECONDS):
            fprime = diff(f, X)
            if fprime.has(sp.Derivative, sp.Subs, sp.zoo, sp.nan):
                raise DerivationError(f"SymPy found no usable derivative of {f}: {fprime}; "
                                      "write the activation with functions SymPy can differentiate")
            ops = sp.count_ops(fprime)
            if ops > MAX_DERIVATIVE_OPS:
                raise DerivationError(f"the derivative of {f} has {ops} operations, more than "
                                      f"{MAX_DERIVATIVE_OPS}; simplify the formula")
            fprime_a, inverse = _output_form(f, fprime)
    except (TimeoutError, RecursionError):
        raise DerivationError(f"differentiating {f} took longer than {DERIVE_SECONDS} s; simplify the formula") from None
    return ElementwiseDerivative(f, fprime, fprime_a, inverse)
