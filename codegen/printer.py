"""The NumPy printer: the only place expression text for generated code is made."""
import sympy as sp
from sympy.printing.numpy import NumPyPrinter as _SymPyNumPyPrinter
from sympy.printing.precedence import precedence

from derive import naming, nodes
from derive.nodes import carries_array, is_mask
from derive.stable import as_value, stabilize  # noqa: F401  (re-exported: the printer's public helpers)


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
    "_log_softmax": '''def _log_softmax(z):
    """log(softmax(z)) over each row without overflow: z minus its row maximum, minus the log of the row sum of exp."""
    # The row maximum is taken over a transposed copy: NumPy reduces along short rows (a few
    # classes) element by element, ~10x slower than across the rows of the copy at batch 1024.
    logp = z - np.ascontiguousarray(z.T).max(axis=0)[:, None]
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return logp''',
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


def spelled(expr: sp.Expr) -> sp.Expr:
    """expr in the form the printer writes: stable primitives, numbers as float literals."""
    expr = stabilize(expr)
    expr = expr.replace(_is_numeric_call, _literal)
    return _floats(expr.replace(lambda e: e.is_Mul, _fold_constants))


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


def _is_numeric_call(e) -> bool:
    return e.is_number and (isinstance(e, sp.Function) or (e.is_Pow and not e.exp.is_Integer))


def _literal(e: sp.Expr) -> sp.Expr:
    """sqrt(2), exp(-1/2) ... as float literals: np.sqrt(2) is a NumPy float64 scalar, and
    float32 array * float64 scalar is float64 (NEP 50), while a Python float keeps float32."""
    value = sp.N(e, 20)
    return sp.Float(value, 17) if value.is_Float else e


class NumPyPrinter(_SymPyNumPyPrinter):
    """SymPy's NumPy printer, spelled the way careful hand-written NumPy is.

    >>> NumPyPrinter().doprint(sp.tanh(sp.Symbol("z1")))
    'np.tanh(z1)'
    """

    ns = "np"               # the name the module imports its array namespace under
    helper_source = HELPERS  # helper name -> the text of its definition
    helper_args = ""         # what a helper call passes before its argument

    def __init__(self, settings=None, params=(), directions=None):
        super().__init__(settings or {})
        self.helpers: set[str] = set()
        self.params = frozenset(params)   # Symbols with these names are printed params["W1"]
        self.directions = dict(directions or {})   # symbol name -> parameter: printed v["W1"]

    def _module_format(self, fqn, register=True):
        return super()._module_format(fqn, register).replace("numpy.", "np.")

    def doprint(self, expr, assign_to=None):
        return super().doprint(spelled(expr), assign_to)

    def factor(self, expr) -> str:
        """expr as the right-hand side of `target *= expr`: a bare mask stays a comparison there."""
        expr = spelled(expr)
        if is_mask(expr):
            return self._mask(expr)
        return self.doprint(expr)

    def shown(self, expr) -> str:
        """A factor as a comment shows it beside its statement."""
        return self.factor(expr)

    def _print_Symbol(self, expr):
        if expr.name in self.params:
            return f'params["{expr.name}"]'
        if expr.name in self.directions:
            return f'{naming.DIRECTIONS}["{self.directions[expr.name]}"]'
        return super()._print_Symbol(expr)

    # --- the array nodes of derive.nodes ---------------------------------------------------------

    def _operand(self, expr) -> str:
        """expr as the object of a method call (x.dot, x.T): bracketed unless it is a name or a call."""
        text = self._print(expr)
        simple = isinstance(expr, (sp.Symbol, nodes.ArrayOp)) and not isinstance(expr, nodes.Like)
        return text if simple else f"({text})"

    def _print_Dot(self, expr):
        # a.dot(b) is the BLAS product a @ b with less call overhead, which small networks notice
        return f"{self._operand(expr.args[0])}.dot({self._print(expr.args[1])})"

    def _print_T(self, expr):
        return f"{self._operand(expr.args[0])}.T"

    def _print_BatchSum(self, expr):
        # One BLAS call, ones @ a (ones and n are set up where the pass starts); at batch 1 the row.
        a = self._operand(expr.args[0])
        return f"ones.dot({a}) if n > 1 else {a}[0]"

    def _print_UnitSum(self, expr):
        return f"{self._operand(expr.args[0])}.sum(axis=1, keepdims=True)"

    def _print_LogSoftmax(self, expr):
        return self._helper("_log_softmax", expr.args[0])

    def _print_Total(self, expr):
        # A sum of products u * v (or of squares u**2) is one BLAS dot, np.vdot(u, v), in place of a
        # temporary product and a reduction.
        arg = expr.args[0]
        if arg.is_Mul and len(arg.args) == 2 and all(isinstance(f, sp.Symbol) for f in arg.args):
            return f"np.vdot({', '.join(self._print(f) for f in arg.args)})"
        if arg.is_Pow and arg.exp == 2 and isinstance(arg.base, sp.Symbol):
            return f"np.vdot({self._print(arg.base)}, {self._print(arg.base)})"
        return f"({self._print(arg)}).sum()"

    def _print_Like(self, expr):
        value, ref = expr.args
        if value == 0:
            return f"{self.ns}.zeros_like({self._print(ref)})"
        return f"{self.ns}.full_like({self._print(ref)}, {self._print(value)})"

    def _print_Mul(self, expr):
        # A mask multiplying an array is a comparison (a boolean array keeps the other factor's
        # dtype) and goes last, so that a leading minus never negates a boolean array.
        masks = [f for f in expr.args if is_mask(f)]
        rest = [f for f in expr.args if not is_mask(f)]
        if masks and any(carries_array(f) for f in rest):
            head = sp.Mul(*rest)
            # a leading minus binds tighter than *: -u*(m) is (-u)*(m); only a sum needs brackets
            text = "" if head == 1 else (f"({self._print(head)})" if head.is_Add else self._print(head))
            return "*".join(([text] if text else []) + [self._mask(m) for m in masks])
        return super()._print_Mul(expr)

    def _mask(self, expr) -> str:
        if isinstance(expr, sp.Heaviside):
            arg = self._print(expr.args[0])
            h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
            if h0 in (0, 1):
                return f"({arg} {'>' if h0 == 0 else '>='} 0)"
        return f"({self._print(expr)})"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return str(expr.p) if expr.q == 1 else repr(float(expr))

    _print_Half = _print_Rational

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.base, expr.exp
        b = self.parenthesize(base, precedence(expr))
        if exp == sp.S.Half:
            return f"{self.ns}.sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"1/{self.ns}.sqrt({self._print(base)})"
        if exp == -1:
            return f"1/{b}"
        if exp.is_Integer and exp < 0:
            return f"1/{b}**{-exp}"
        if exp.is_Integer:
            return f"{b}**{exp}"
        return f"{b}**{self.parenthesize(exp, precedence(expr))}"

    def _print_Max(self, expr):
        return self._fold(f"{self.ns}.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold(f"{self.ns}.minimum", expr.args)

    def _fold(self, fn, args):
        # Put the array operand first: np.maximum(z1, 0) reads like hand-written code.
        args = sorted(args, key=lambda a: a.is_number)
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_Heaviside(self, expr):
        # On its own (not multiplying an array) a step is np.heaviside: in its argument's dtype, where
        # a comparison would be a boolean array that 0.2 * (z > 0) turns into float64.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"np.heaviside({self._print(expr.args[0])}, {self._print(h0)})"

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        out = self._print(last)
        for value, c in reversed(branches):
            out = f"{self.ns}.where({self._print(c)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        # Python compares after all arithmetic: only a comparison inside a comparison needs brackets.
        level = precedence(expr)
        return f"{self.parenthesize(expr.lhs, level)} {expr.rel_op} {self.parenthesize(expr.rhs, level)}"

    def _print_sign(self, expr):
        return f"{self.ns}.sign({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self.ns}.abs({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        return self._helper("_sigmoid", expr.args[0])

    def _print_Softplus(self, expr):
        return f"{self.ns}.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Expm1(self, expr):
        return f"{self.ns}.expm1({self._print(expr.args[0])})"

    def _print_Log1p(self, expr):
        return f"{self.ns}.log1p({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return self._helper("_erf", expr.args[0])

    def _print_Erfc(self, expr):
        return self._helper("_erfc", expr.args[0])

    def _helper(self, helper: str, arg) -> str:
        """A call of one of HELPERS, recorded so that the module defines it (and the helpers it calls)."""
        self.helpers.add(helper)
        self.helpers.update(_NEEDS.get(helper, ()))
        return f"{helper}({self.helper_args}{self._print(arg)})"

    def _print_Exp1(self, expr):
        return f"{self.ns}.e"

    def _print_Pi(self, expr):
        return f"{self.ns}.pi"


def print_numpy(expr, printer: NumPyPrinter | None = None) -> str:
    """Print one expression as NumPy code.

    >>> print_numpy(sp.Max(sp.Symbol("z1"), 0))
    'np.maximum(z1, 0)'
    """
    return (printer or NumPyPrinter()).doprint(expr)
