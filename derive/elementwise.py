"""Derivatives of one activation: sp.diff, the kink conventions, and the form in the forward output."""
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy.calculus.util import function_range

from .errors import DerivationError
from .naming import A, X

# Bounds on deriving one activation, by size, never by time (the same spec must give the same bytes
# on any machine): formulas come from untrusted specs, and a short formula can have a derivative
# SymPy takes minutes over (the parser bounds the formula, not its derivative).
MAX_DERIVATIVE_OPS = 5000
MAX_INVERT_OPS = 8        # solve a = f(x) for x only for formulas this small (sigmoid: 3, softplus: 3)
MAX_INVERT_CALLS = 2      # ... and with at most this many nested functions (softplus: log(1 + exp(x)), 2);
                          # solve() on tan(sin(tan(x))) runs for minutes
MAX_PIECES = 6            # a formula made of pieces (relu, elu, max(x, 0.2x)) of at most MAX_INVERT_OPS
                          # operations is tried for a form in a with at most this many pieces (leaky_relu: 2)
MAX_SIMPLIFY_OPS = 60     # simplify/factor only expressions this small (sigmoid' in a: 12)
MAX_EXPANDED_TERMS = 2000  # ... whose expansion has at most this many terms: count_ops((a - y)**99) is 3, but
                           # simplify, cancel and expand multiply it out (a softmax instance: 5151 terms, minutes)

# Forms the inversion a = f(x) -> x cannot handle; their derivatives are used in x.
_NOT_INVERTIBLE = (sp.Piecewise, sp.Heaviside, sp.Max, sp.Min, sp.sign, sp.Abs, sp.erf)
# Functions made of pieces, each smooth: a form in a is sought piece by piece.
_PIECEWISE = (sp.Piecewise, sp.Heaviside, sp.Max, sp.Min, sp.sign, sp.Abs)


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


def _direction(g: sp.Expr, var: sp.Symbol) -> int:
    """+1 where g increases with var, -1 where it decreases, 0 when SymPy cannot tell.

    Heaviside factors of dg/dvar count as nonnegative (they are 0 or 1); where neither sign is
    provable and g vanishes at var = 0, the sign of dg/dvar there decides.
    """
    d = sp.diff(g, var).replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    h = sp.Symbol("h", nonnegative=True)
    bounded = d.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: h)
    if d == 0:
        return 0
    if bounded.is_nonnegative:
        return 1
    if bounded.is_nonpositive:
        return -1
    at0 = d.xreplace({var: 0})
    if g.xreplace({var: 0}) == 0 and at0.is_number and at0 != 0:
        return 1 if at0 > 0 else -1
    return 0


_LEFT_CLOSED = {1: {">=": ">", "<": "<="}, -1: {">": ">=", "<=": "<"}}


def _left_condition(cond, var):
    """A branch condition with its boundary point on the side var approaches it from below."""
    if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op not in (">", ">=", "<", "<="):
        return cond
    if not cond.has(var):
        return cond
    op = _LEFT_CLOSED.get(_direction(cond.lhs - cond.rhs, var), {}).get(cond.rel_op)
    return cond if op is None else sp.core.relational.Relational(cond.lhs, cond.rhs, op)


def at_kinks(expr: sp.Expr, var: sp.Symbol = X) -> sp.Expr:
    """Apply the kink convention to a derivative in `var`: at a kink, the left derivative.

    One rule for every primitive that jumps: its value at the jump is its limit as `var` comes from
    below. So relu'(0) = 0, leaky_relu'(0) = alpha, elu'(0) = alpha, abs'(0) = -1,
    max(x, 0.2x)'(0) = 0.2, and a jump's Dirac delta is 0 (step' = sign' = 0: not trainable).
    Heaviside(g) takes the value 0 at g = 0 where g increases with var, 1 where it decreases;
    sign(g) becomes 2 Heaviside(g) - 1 with that value; a Piecewise condition puts its boundary on
    the left branch. Where SymPy cannot tell the direction, Heaviside(g) at 0 is 0.

    >>> at_kinks(sp.diff(sp.Max(X, X / 5), X))
    Heaviside(-4*x/5, 1)/5 + Heaviside(4*x/5, 0)
    """
    def heaviside(e):
        return sp.Heaviside(e.args[0], 1 if _direction(e.args[0], var) < 0 else 0)

    def sign(e):
        return 2 * heaviside(sp.Heaviside(e.args[0])) - 1

    def piecewise(e):
        return sp.Piecewise(*[(v, _left_condition(c, var)) for v, c in e.args], evaluate=False)

    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside), heaviside)
    expr = expr.replace(lambda e: isinstance(e, sp.sign) and e.args[0].has(var), sign)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), piecewise)


def diff(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """sp.diff with the kink convention applied."""
    return at_kinks(sp.diff(expr, var), var)


def expansion_size(expr: sp.Expr, cap: int = 10 ** 9) -> int:
    """An upper estimate of the terms SymPy's expand (and simplify, cancel, factor, which expand) makes of
    expr or of any part of it: multinomial counts of integer powers of sums, products of sums. No
    expansion is done: the count is read off the tree.

    >>> expansion_size((X + A + 1) ** 100), expansion_size((X + 1) * (A + 1))
    (5151, 4)
    """
    import math
    worst = [1]

    def size(e) -> int:
        if e.is_Atom:
            return 1
        if e.is_Add:
            n = sum(size(a) for a in e.args)
        elif e.is_Mul:
            n = 1
            for a in e.args:
                n = min(cap, n * size(a))
        elif e.is_Pow and e.exp.is_Integer:
            k = size(e.base)
            n = 1 if k == 1 else min(cap, math.comb(min(abs(int(e.exp)), cap) + k - 1, k - 1))
        else:                          # a function, or a fractional power: its arguments expand on their own
            for a in e.args:
                size(a)
            n = 1
        n = min(cap, n)
        worst[0] = max(worst[0], n)
        return n

    size(sp.sympify(expr))
    return worst[0]


def small_enough(expr: sp.Expr) -> bool:
    """Whether simplify / factor / cancel / expand may run on expr: few operations, a small expansion."""
    return sp.count_ops(expr) <= MAX_SIMPLIFY_OPS and expansion_size(expr) <= MAX_EXPANDED_TERMS


def agree_numerically(e1: sp.Expr, e2: sp.Expr, var: sp.Symbol, points=(-2.3, -0.7, 0.4, 1.9)) -> bool:
    """e1 == e2 at several points (floats, or exact SymPy numbers) to 40 digits (a guard on top of a
    symbolic proof)."""
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
    calls = sum(1 for e in sp.preorder_traversal(f) if isinstance(e, sp.Function))
    if (f.has(*_NOT_INVERTIBLE) or sum(1 for e in sp.preorder_traversal(f) if e == X) != 1
            or sp.count_ops(f) > MAX_INVERT_OPS or calls > MAX_INVERT_CALLS):
        return
    inverses = sp.solve(sp.Eq(A, f), X, check=False)   # the candidate is proven below
    for inv in inverses:
        yield fprime.xreplace({X: inv}), inv


def _output_form(f: sp.Expr, fprime: sp.Expr) -> tuple[sp.Expr | None, sp.Expr | None]:
    """Find g with f'(x) = g(f(x)): substitute or solve, simplify, then prove g(f(x)) - f'(x) == 0.

    A constant f' (identity, step, sign) is left as it is: backward reads neither z nor a for it.
    """
    if not fprime.has(X) or not small_enough(fprime):
        return None, None
    if f.has(*_PIECEWISE):
        return _piecewise_output_form(f, fprime), None
    return _smooth_output_form(f, fprime)


def _smooth_output_form(f: sp.Expr, fprime: sp.Expr) -> tuple[sp.Expr | None, sp.Expr | None]:
    try:
        for g, inv in _candidates(f, fprime):
            if not small_enough(g):
                continue
            simple = sp.simplify(g)
            g = min((g, simple, sp.factor(simple)), key=sp.count_ops)
            if g.has(X) or sp.count_ops(g) > sp.count_ops(fprime):
                continue
            if sp.simplify(g.xreplace({A: f}) - fprime) == 0 and agree_numerically(g.xreplace({A: f}), fprime, X):
                return g, inv
    except (NotImplementedError, ValueError, TypeError):
        pass
    return None, None


def _pieces(e: sp.Expr) -> list[tuple[sp.Expr, sp.Set]]:
    """(formula, set of x) pairs: e equals the formula on the set; the sets partition the real line."""
    e = sp.piecewise_fold(e.rewrite(sp.Piecewise))
    return e.as_expr_set_pairs(sp.S.Reals) if isinstance(e, sp.Piecewise) else [(e, sp.S.Reals)]


def _piecewise_output_form(f: sp.Expr, fprime: sp.Expr) -> sp.Expr | None:
    """f' in a for an f made of smooth pieces, where the sign of a tells the pieces apart (relu, leaky_relu,
    elu, max(x, 0.2x)): relu' = Heaviside(a, 0), elu' = a + alpha where a <= 0.

    On each piece of the line where f and f' (kink convention included) are each one formula, f' is
    written in that piece's a (a constant, or as for a smooth f), and the piece's values of a are its
    image under f (sympy.calculus.util.function_range). The pieces must fall into two forms, one with
    images in a > 0 and computing a = x there, the other with images in a <= 0: then a > 0 is x > 0,
    exactly and in floating point (a = x is not rounded on that side, and rounding keeps the other
    side's values at most 0; a >= 0 would not be safe: 0.01 x underflows to -0.0). Else there is no
    form here: abs and min(x, 0) have a = 0 at the kink and beyond it, with different f', and a
    threshold elsewhere (a > -1 for max(x, 0) - 1) would not survive rounding (1e-20 - 1 is -1). The
    choice is made by sets; g(f(x)) = f'(x) is then proven piece by piece, and checked at points and
    at the kinks, before the form is returned.
    """
    if sp.count_ops(f) > MAX_INVERT_OPS:
        return None
    try:
        parts = []                                   # (image of the piece under f, f' on it in a, f on it)
        for fe, fs in _pieces(f):
            for de, ds in _pieces(fprime):
                where = sp.Intersection(fs, ds)
                if where is sp.S.EmptySet:
                    continue
                if len(parts) == MAX_PIECES or fe.has(*_PIECEWISE) or de.has(*_PIECEWISE) or not small_enough(fe):
                    return None
                g = de if not de.has(X) else _smooth_output_form(fe, de)[0]
                image = function_range(fe, X, where)
                if g is None or not isinstance(image, (sp.Interval, sp.FiniteSet)):
                    return None
                parts.append((image, g, fe))
        positive = sp.Interval.open(0, sp.oo)
        upper = [p for p in parts if p[0].is_subset(positive)]
        lower = [p for p in parts if sp.Intersection(p[0], positive) is sp.S.EmptySet]
        if not upper or not lower or len(upper) + len(lower) < len(parts) or any(fe != X for _, _, fe in upper):
            return None
        g_hi, g_lo = upper[0][1], lower[0][1]
        if any(sp.simplify(g - g_hi) != 0 for _, g, _ in upper) or any(sp.simplify(g - g_lo) != 0 for _, g, _ in lower):
            return None
        form = g_hi * sp.Heaviside(A, 0) if g_lo == 0 and g_hi.is_number else sp.Piecewise((g_hi, A > 0), (g_lo, True))
        # The proof: g(f(x)) - f'(x) is 0 on every piece of the line; then at points, the kinks among them.
        if any(sp.simplify(e) != 0 for e, _ in _pieces(form.xreplace({A: f}) - fprime)):
            return None
        kinks = {b for _, fs in _pieces(f) for b in fs.boundary if b.is_finite}
        points = (-2.3, -0.7, 0.4, 1.9, *sorted(kinks, key=float))
        return form if agree_numerically(form.xreplace({A: f}), fprime, X, points) else None
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None


@lru_cache(maxsize=None)
def derive_elementwise(f: sp.Expr) -> ElementwiseDerivative:
    """Differentiate an activation formula in X and rewrite f' in terms of a = f(x) where provable.

    Raises:
        DerivationError: no usable derivative, or a derivative of more than MAX_DERIVATIVE_OPS
            operations (or nested too deeply for SymPy's recursion).
    """
    try:
        fprime = diff(f, X)
        if fprime.has(sp.Derivative, sp.Subs, sp.zoo, sp.nan):
            raise DerivationError(f"SymPy found no usable derivative of {f}: {fprime}; "
                                  "write the activation with functions SymPy can differentiate")
        ops = sp.count_ops(fprime)
        if ops > MAX_DERIVATIVE_OPS:
            raise DerivationError(f"the derivative of {f} has {ops} operations, more than "
                                  f"{MAX_DERIVATIVE_OPS}; simplify the formula")
        fprime_a, inverse = _output_form(f, fprime)
    except RecursionError:
        raise DerivationError(f"the formula {f} is nested too deeply to differentiate; simplify it") from None
    return ElementwiseDerivative(f, fprime, fprime_a, inverse)
