"""The NumPy printer: the only place expression text for generated code is made."""
import sympy as sp
from sympy.printing.numpy import NumPyPrinter as _SymPyNumPyPrinter
from sympy.printing.precedence import precedence


class Sigmoid(sp.Function):
    """1 / (1 + exp(-u)), printed as a helper that cannot overflow."""


class Softplus(sp.Function):
    """log(1 + exp(u)), printed as np.logaddexp(0, u)."""


class Expm1(sp.Function):
    """exp(u) - 1, printed as np.expm1(u)."""


class Log1p(sp.Function):
    """log(1 + u), printed as np.log1p(u)."""


class Erfc(sp.Function):
    """1 - erf(u), printed as a helper accurate in both tails (SymPy's erfc(-u) evaluates to 2 - erfc(u))."""


# Numerical primitives NumPy lacks; emitted into a module only when its code uses them.
# The error function: W. J. Cody, "Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969) 631-637, with the coefficients of his CALERF (netlib specfun/erf,
# 1990 revision). Relative error ~1e-16 in float64; the constants are Python floats, so float32
# stays float32. Every branch is computed on arguments clamped into its own range: no warnings.
HELPERS = {
    "_sigmoid": '''def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: no exp sees a positive argument; NaN stays NaN."""
    if z.size <= 64:
        # a few elements: the cost is NumPy's per-call overhead, and this is four calls
        return np.exp(-np.logaddexp(0, -z))
    # logaddexp is a scalar loop in NumPy; exp, maximum and division are vectorised
    e = np.exp(-np.abs(z))
    s = np.maximum(e, z >= 0)   # exp(min(z, 0)): 1 where z >= 0 (as e <= 1), e where z < 0
    e += 1
    s /= e
    return s''',
    "_erf": '''def _horner(t, coefficients):
    """The polynomial with these coefficients (highest power first) at t."""
    out = coefficients[0]
    for c in coefficients[1:]:
        out = out * t + c
    return out


def _erf_small(z):
    """erf(z) for |z| <= 0.46875 (W. J. Cody, Math. Comp. 23 (1969) 631, first interval)."""
    z = np.clip(z, -0.46875, 0.46875)
    t = z * z
    return z * (_horner(t, (0.185777706184603153, 3.16112374387056560, 113.864154151050156,
                            377.485237685302021, 3209.37758913846947))
                / _horner(t, (1.0, 23.6012909523441209, 244.024637934444173, 1282.61652607737228,
                              2844.23683343917062)))


def _erfc_tail(y):
    """erfc(y) for y >= 0.46875 (Cody's second and third intervals); it underflows to 0 by y = 27.3."""
    y = np.clip(y, 0.46875, 27.3)
    mid = np.minimum(y, 4.0)
    r_mid = (_horner(mid, (2.15311535474403846e-8, 0.564188496988670089, 8.88314979438837594,
                           66.1191906371416295, 298.635138197400131, 881.952221241769090,
                           1712.04761263407058, 2051.07837782607147, 1230.33935479799725))
             / _horner(mid, (1.0, 15.7449261107098347, 117.693950891312499, 537.181101862009858,
                             1621.38957456669019, 3290.79923573345963, 4362.61909014324716,
                             3439.36767414372164, 1230.33935480374942)))
    big = np.maximum(y, 4.0)
    w = 1 / (big * big)
    r_big = (0.56418958354775628695 - w * _horner(w, (0.0163153871373020978, 0.305326634961232344,
                                                      0.360344899949804439, 0.125781726111229246,
                                                      0.0160837851487422766, 6.58749161529837803e-4))
             / _horner(w, (1.0, 2.56852019228982242, 1.87295284992346047, 0.527905102951428412,
                           0.0605183413124413191, 0.00233520497626869185))) / big
    # exp(-y**2) as exp(-s**2) * exp(-(y - s)(y + s)) with s = y cut to 1/16: s**2 is exact
    s = np.trunc(y * 16) / 16
    return np.exp(-s * s) * np.exp(-(y - s) * (y + s)) * np.where(y <= 4.0, r_mid, r_big)


def _erf(z):
    """The error function, elementwise, in the dtype of z."""
    y = np.abs(z)
    return np.where(y <= 0.46875, _erf_small(z), np.copysign(1 - _erfc_tail(y), z))''',
    "_erfc": '''def _erfc(z):
    """1 - erf(z) without cancellation in either tail, in the dtype of z."""
    tail = _erfc_tail(np.abs(z))
    return np.where(np.abs(z) <= 0.46875, 1 - _erf_small(z), np.where(z < 0, 2 - tail, tail))''',
}
# Helpers that call another helper's functions.
_NEEDS = {"_erfc": ("_erf",)}


def _is_one_plus_exp(e) -> bool:
    return e.is_Add and len(e.args) == 2 and sp.S.One in e.args and any(isinstance(t, sp.exp) for t in e.args)


def _exp_arg(one_plus_exp) -> sp.Expr:
    return next(t for t in one_plus_exp.args if isinstance(t, sp.exp)).args[0]


def _mul_rewrite(m: sp.Mul) -> sp.Mul:
    """exp(u) / (1 + exp(u))**k = sigmoid(u) / (1 + exp(u))**(k-1): no inf/inf for large u."""
    factors = list(m.args)
    for i, f in enumerate(factors):
        if f.is_Pow and f.exp.is_Integer and f.exp < 0 and _is_one_plus_exp(f.base):
            u = _exp_arg(f.base)
            for j, e in enumerate(factors):
                if isinstance(e, sp.exp) and sp.expand(e.args[0] - u) == 0:
                    rest = [x for n, x in enumerate(factors) if n not in (i, j)]
                    return sp.Mul(*rest, Sigmoid(u), sp.Pow(f.base, f.exp + 1))
    return m


def _fold_constants(m: sp.Mul) -> sp.Expr:
    """Collapse the irrational numeric factors of a product into one float literal."""
    numbers = [a for a in m.args if a.is_number]
    if len(numbers) < 2 and not any(a.has(sp.pi, sp.E) or (a.is_Pow and not a.is_Rational) for a in numbers):
        return m
    coeff = sp.Mul(*numbers)
    if coeff.is_Rational:
        return m
    return sp.Mul(sp.Float(sp.N(coeff, 20), 17), *[a for a in m.args if not a.is_number], evaluate=False)


def _floats(expr: sp.Expr) -> sp.Expr:
    """Non-integer rationals become float literals, except in exponents (x**(1/2) stays a sqrt)."""
    if expr.is_Rational and not expr.is_Integer:
        return sp.Float(expr, 17)
    if expr.is_Pow:
        return sp.Pow(_floats(expr.base), expr.exp)
    if not expr.args or expr.is_Atom:
        return expr
    return expr.func(*[_floats(a) for a in expr.args])


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite expr into numerically stable primitives before printing."""
    expr = sp.sympify(expr)
    expr = expr.replace(lambda e: e.is_Mul, _mul_rewrite)
    expr = expr.replace(lambda e: isinstance(e, sp.log) and _is_one_plus_exp(e.args[0]),
                        lambda e: Softplus(_exp_arg(e.args[0])))
    expr = expr.replace(lambda e: e.is_Pow and e.exp.is_Integer and e.exp < 0 and _is_one_plus_exp(e.base),
                        lambda e: Sigmoid(-_exp_arg(e.base)) ** (-e.exp))
    expr = expr.replace(lambda e: isinstance(e, sp.log) and e.args[0].is_Add and sp.S.One in e.args[0].args,
                        lambda e: Log1p(e.args[0] - 1))
    expr = expr.replace(lambda e: e.is_Add, _complement)
    expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), _clamp_branches)
    expr = expr.replace(_is_numeric_call, _literal)
    return _floats(expr.replace(lambda e: e.is_Mul, _fold_constants))


def _complement(add: sp.Add) -> sp.Expr:
    """k*exp(u) - k -> k*expm1(u) (accurate near u = 0); k + k*erf(u) -> k*erfc(-u) and
    k - k*erf(u) -> k*erfc(u) (accurate where erf(u) is near -1 or 1: GELU's tails)."""
    terms = list(add.args)
    constants = [i for i, t in enumerate(terms) if t.is_number]
    if len(constants) != 1:
        return add
    c = terms[constants[0]]
    for i, term in enumerate(terms):
        k, f = term.as_coeff_Mul()
        if isinstance(f, sp.exp) and c == -k:
            new = k * Expm1(f.args[0])
        elif isinstance(f, sp.erf) and c == k:
            new = k * Erfc(-f.args[0])
        elif isinstance(f, sp.erf) and c == -k:
            new = -k * Erfc(f.args[0])
        else:
            continue
        rest = [t for j, t in enumerate(terms) if j not in (i, constants[0])]
        return sp.Add(new, *rest, evaluate=False)
    return add


# Functions that overflow for large arguments: np.where computes every branch everywhere.
_OVERFLOWING = (sp.exp, Expm1, sp.cosh, sp.sinh)


def _bound(cond) -> tuple | None:
    """(symbol, is_upper, c) for a condition like `x > c` or `c >= x`, else None."""
    if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op not in (">", ">=", "<", "<="):
        return None
    if cond.lhs.is_Symbol and cond.rhs.is_number:
        return cond.lhs, cond.rel_op in ("<", "<="), cond.rhs
    if cond.rhs.is_Symbol and cond.lhs.is_number:
        return cond.rhs, cond.rel_op in (">", ">="), cond.lhs
    return None


def _clamp(expr: sp.Expr, bounds: list) -> sp.Expr:
    """expr with each bounded symbol clamped into [lower, upper] (unchanged inside that range)."""
    subs = {}
    for sym in {b[0] for b in bounds}:
        clamped = sym
        lows = [c for s, upper, c in bounds if s == sym and not upper]
        highs = [c for s, upper, c in bounds if s == sym and upper]
        if lows:
            clamped = sp.Max(clamped, *lows)
        if highs:
            clamped = sp.Min(clamped, *highs)
        subs[sym] = clamped
    return expr.xreplace(subs)


def _clamp_branches(pw: sp.Piecewise) -> sp.Piecewise:
    """Let each branch's exp see only arguments from the branch's own region.

    np.where evaluates every branch everywhere: ELU's exp(x) - 1 would overflow (and warn)
    at x = 1e4 although that branch is only taken for x <= 0. exp(min(x, 0)) - 1 is the same
    where it is taken and finite everywhere; np.minimum keeps NaN.
    """
    branches, known = [], []        # known: bounds from the earlier conditions being false
    for value, cond in pw.args:
        own = _bound(cond)
        region = known + ([own] if own else [])
        if region and value.has(*_OVERFLOWING):
            value = value.replace(lambda e: isinstance(e, _OVERFLOWING),
                                  lambda e: e.func(*[_clamp(a, region) for a in e.args]))
        branches.append((value, cond))
        if own:
            known.append((own[0], not own[1], own[2]))
    return sp.Piecewise(*branches, evaluate=False)


def _is_numeric_call(e) -> bool:
    return e.is_number and (isinstance(e, sp.Function) or (e.is_Pow and not e.exp.is_Integer))


def _literal(e: sp.Expr) -> sp.Expr:
    """sqrt(2), exp(-1/2) ... as float literals: np.sqrt(2) is a NumPy float64 scalar, and
    float32 array * float64 scalar is float64 (NEP 50), while a Python float keeps float32."""
    value = sp.N(e, 20)
    return sp.Float(value, 17) if value.is_Float else e


def as_value(expr: sp.Expr) -> sp.Expr:
    """expr where it is an activation's value rather than a mask multiplying a gradient.

    A step printed as the comparison (z > 0) is False for NaN: the step of a NaN input would be a
    confident 0. sign(max(z, 0)) is the same step, keeps NaN and stays in z's dtype. (Masks keep
    the comparison: the gradient they multiply is NaN already where z is.)

    >>> print_numpy(as_value(sp.Heaviside(sp.Symbol("z1"), 0)))
    'np.sign(np.maximum(z1, 0))'
    """
    if isinstance(expr, sp.Heaviside) and len(expr.args) == 2 and expr.args[1] == 0:
        return sp.sign(sp.Max(expr.args[0], 0))
    return expr


class NumPyPrinter(_SymPyNumPyPrinter):
    """SymPy's NumPy printer, spelled the way careful hand-written NumPy is.

    >>> NumPyPrinter().doprint(sp.tanh(sp.Symbol("z1")))
    'np.tanh(z1)'
    """

    def __init__(self, settings=None):
        super().__init__(settings or {})
        self.helpers: set[str] = set()

    def _module_format(self, fqn, register=True):
        return super()._module_format(fqn, register).replace("numpy.", "np.")

    def doprint(self, expr, assign_to=None):
        return super().doprint(stabilize(expr), assign_to)

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return str(expr.p) if expr.q == 1 else repr(float(expr))

    _print_Half = _print_Rational

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.base, expr.exp
        b = self.parenthesize(base, precedence(expr))
        if exp == sp.S.Half:
            return f"np.sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"1/np.sqrt({self._print(base)})"
        if exp == -1:
            return f"1/{b}"
        if exp.is_Integer and exp < 0:
            return f"1/{b}**{-exp}"
        if exp.is_Integer:
            return f"{b}**{exp}"
        return f"{b}**{self.parenthesize(exp, precedence(expr))}"

    def _print_Max(self, expr):
        return self._fold("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("np.minimum", expr.args)

    def _fold(self, fn, args):
        # Put the array operand first: np.maximum(z1, 0) reads like hand-written code.
        args = sorted(args, key=lambda a: a.is_number)
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_Heaviside(self, expr):
        arg = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        if h0 == 0:
            return f"({arg} > 0)"
        if h0 == 1:
            return f"({arg} >= 0)"
        return f"np.heaviside({arg}, {self._print(h0)})"

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        out = self._print(last)
        for value, c in reversed(branches):
            out = f"np.where({self._print(c)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        # Python compares after all arithmetic: only a comparison inside a comparison needs brackets.
        level = precedence(expr)
        return f"{self.parenthesize(expr.lhs, level)} {expr.rel_op} {self.parenthesize(expr.rhs, level)}"

    def _print_sign(self, expr):
        return f"np.sign({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        self._use("_sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Expm1(self, expr):
        return f"np.expm1({self._print(expr.args[0])})"

    def _print_Log1p(self, expr):
        return f"np.log1p({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        self._use("_erf")
        return f"_erf({self._print(expr.args[0])})"

    def _print_Erfc(self, expr):
        self._use("_erfc")
        return f"_erfc({self._print(expr.args[0])})"

    def _use(self, helper: str) -> None:
        self.helpers.add(helper)
        self.helpers.update(_NEEDS.get(helper, ()))

    def _print_Exp1(self, expr):
        return "np.e"

    def _print_Pi(self, expr):
        return "np.pi"


def print_numpy(expr, printer: NumPyPrinter | None = None) -> str:
    """Print one expression as NumPy code.

    >>> print_numpy(sp.Max(sp.Symbol("z1"), 0))
    'np.maximum(z1, 0)'
    """
    return (printer or NumPyPrinter()).doprint(expr)
