"""The array-API printer: the NumPy printer's statements spelled for any array API namespace `xp`.

A generated `<name>_xp.py` module finds `xp` with array_api_compat.array_namespace (NumPy, PyTorch,
JAX, CuPy, array-api-strict) and passes it to every pass and helper. What differs from NumPy is
spelled here once: `a @ b`, xp.sum for the reductions, masks cast with xp.astype (the standard
refuses bool * float), a step on its own without np.heaviside, helpers that take `xp`.
"""
import sympy as sp
from sympy.printing.numpy import _known_functions_numpy
from sympy.printing.precedence import PRECEDENCE

from derive import nodes
from derive.statements import SCALE

from .printer import _NEEDS, NumPyPrinter, is_mask, spelled

# The helpers of codegen.printer.HELPERS for any namespace: the same formulas and constants (W. J.
# Cody's CALERF coefficients for the error function; tests/test_array_api.py checks that they are
# the NumPy helper's, digit for digit), written with the standard's functions only, `xp` passed in.
XP_HELPERS = {
    "_sigmoid": '''def _sigmoid(xp, z):
    """1 / (1 + exp(-z)) without overflow: no exp sees a positive argument; NaN stays NaN."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0, e) / (1 + e)   # exp(min(z, 0)) / (1 + exp(-|z|))''',
    "_log_softmax": '''def _log_softmax(xp, z):
    """log(softmax(z)) over each row without overflow: z minus its row maximum, minus the log of the row sum of exp."""
    if array_api_compat.is_torch_array(z):
        return z.log_softmax(1)   # PyTorch's one kernel for the same max-shifted form
    logp = z - xp.max(z, axis=1, keepdims=True)
    logp -= xp.log(xp.sum(xp.exp(logp), axis=1, keepdims=True))
    return logp''',
    "_as_factor": '''def _as_factor(xp, mask, like):
    """A bool mask as the right-hand side of `u *= mask`, u of like's dtype: NumPy and PyTorch multiply by a
    bool array inside the product's kernel; the standard has no bool * float, so elsewhere it is cast first."""
    if array_api_compat.is_torch_array(mask) or array_api_compat.is_numpy_array(mask):
        return mask
    return xp.astype(mask, like.dtype)''',
    "_matmul_add": '''def _matmul_add(xp, a, b, c):
    """a @ b + c, a new array: PyTorch adds c inside the product (addmm, as F.linear does); elsewhere
    the product, then c added into it."""
    if array_api_compat.is_torch_array(c):
        return c.addmm(a, b)
    out = a @ b
    out += c
    return out''',
    "_step": '''def _step(xp, u):
    """The factor of `d *= step`: 1 where u > 0, else 0 (at 0 and for NaN too), in u's dtype or as a bool
    array the product's kernel reads (NumPy). On PyTorch sign(u) clamped at 0: two float kernels, where
    a comparison, which makes a bool array, costs several times more."""
    if array_api_compat.is_torch_array(u):
        return u.sign().clamp_(min=0)
    if array_api_compat.is_numpy_array(u):
        return u > 0
    return xp.astype(u > 0, u.dtype)''',
    "_sub_matmul": '''def _sub_matmul(xp, w, a, b):
    """w - a @ b, into w where its arrays are mutable; returns w (on JAX a new array).

    PyTorch folds the update into the product (addmm_: one GEMM, C <- C - A B, no temporary); the
    standard has no such call, so elsewhere the product is made first.
    """
    if array_api_compat.is_torch_array(w):
        return w.addmm_(a, b, alpha=-1)
    w -= a @ b
    return w''',
    "_erf": '''def _horner(t, coefficients):
    """The polynomial with these coefficients (highest power first) at t."""
    out = coefficients[0]
    for c in coefficients[1:]:
        out = out * t + c
    return out


def _erf_small(xp, z):
    """erf(z) for |z| <= 0.46875 (W. J. Cody, Math. Comp. 23 (1969) 631, first interval)."""
    z = xp.clip(z, -0.46875, 0.46875)
    t = z * z
    return z * (_horner(t, (0.185777706184603153, 3.16112374387056560, 113.864154151050156,
                            377.485237685302021, 3209.37758913846947))
                / _horner(t, (1.0, 23.6012909523441209, 244.024637934444173, 1282.61652607737228,
                              2844.23683343917062)))


def _erfc_tail(xp, y):
    """erfc(y) for y >= 0.46875 (Cody's second and third intervals); it underflows to 0 by y = 27.3."""
    y = xp.clip(y, 0.46875, 27.3)
    mid = xp.clip(y, max=4.0)
    r_mid = (_horner(mid, (2.15311535474403846e-8, 0.564188496988670089, 8.88314979438837594,
                           66.1191906371416295, 298.635138197400131, 881.952221241769090,
                           1712.04761263407058, 2051.07837782607147, 1230.33935479799725))
             / _horner(mid, (1.0, 15.7449261107098347, 117.693950891312499, 537.181101862009858,
                             1621.38957456669019, 3290.79923573345963, 4362.61909014324716,
                             3439.36767414372164, 1230.33935480374942)))
    big = xp.clip(y, min=4.0)
    w = 1 / (big * big)
    r_big = (0.56418958354775628695 - w * _horner(w, (0.0163153871373020978, 0.305326634961232344,
                                                      0.360344899949804439, 0.125781726111229246,
                                                      0.0160837851487422766, 6.58749161529837803e-4))
             / _horner(w, (1.0, 2.56852019228982242, 1.87295284992346047, 0.527905102951428412,
                           0.0605183413124413191, 0.00233520497626869185))) / big
    # exp(-y**2) as exp(-s**2) * exp(-(y - s)(y + s)) with s = y cut to 1/16: s**2 is exact
    s = xp.trunc(y * 16) / 16
    return xp.exp(-s * s) * xp.exp(-(y - s) * (y + s)) * xp.where(y <= 4.0, r_mid, r_big)


def _erf(xp, z):
    """The error function, elementwise, in the dtype of z."""
    y = xp.abs(z)
    return xp.where(y <= 0.46875, _erf_small(xp, z), xp.copysign(1 - _erfc_tail(xp, y), z))''',
    "_erfc": '''def _erfc(xp, z):
    """1 - erf(z) without cancellation in either tail, in the dtype of z."""
    tail = _erfc_tail(xp, xp.abs(z))
    return xp.where(xp.abs(z) <= 0.46875, 1 - _erf_small(xp, z), xp.where(z < 0, 2 - tail, tail))''',
}
assert set(XP_HELPERS) >= set(_NEEDS) | {h for needed in _NEEDS.values() for h in needed}

# SymPy's NumPy names where the standard spells a function otherwise (its names are C99's).
_STANDARD_NAMES = {"arccos": "acos", "arccosh": "acosh", "arcsin": "asin", "arcsinh": "asinh", "arctan": "atan",
                   "arctan2": "atan2", "arctanh": "atanh", "power": "pow"}
# The elementwise functions of the array API standard (2024.12) that SymPy's NumPy table can name.
_STANDARD = {"abs", "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "copysign", "cos", "cosh",
             "exp", "expm1", "floor", "hypot", "isfinite", "isinf", "isnan", "log", "log10", "log1p", "log2",
             "logaddexp", "maximum", "minimum", "pow", "sign", "sin", "sinh", "sqrt", "tan", "tanh", "trunc"}
_XP_FUNCTIONS = {sympy_name: f"xp.{_STANDARD_NAMES.get(name, name)}"
                 for sympy_name, name in sorted(_known_functions_numpy.items())
                 if _STANDARD_NAMES.get(name, name) in _STANDARD}


class ArrayAPIPrinter(NumPyPrinter):
    """NumPyPrinter for the array API standard: every call goes to the namespace `xp`.

    >>> ArrayAPIPrinter().doprint(sp.tanh(sp.Symbol("z1")) * sp.Heaviside(sp.Symbol("z1"), 0))
    'xp.tanh(z1)*xp.astype(z1 > 0, z1.dtype)'
    """

    ns = "xp"
    helper_source = XP_HELPERS
    helper_args = "xp, "
    _module = "xp"
    _kf = _XP_FUNCTIONS
    _kc = {"Exp1": "xp.e", "Pi": "xp.pi", "NaN": "xp.nan", "Infinity": "xp.inf"}

    def __init__(self, settings=None, params=(), directions=None):
        super().__init__(settings, params, directions)
        # Only the standard's functions: SymPy's table would fall back to math.* for the others.
        self.known_functions = dict(_XP_FUNCTIONS)

    def parenthesize(self, item, level, strict=False):
        # `a @ b` binds like `*` (left to right): inside a product or a power it needs brackets.
        if isinstance(item, nodes.Dot) and level >= PRECEDENCE["Mul"]:
            return f"({self._print(item)})"
        return super().parenthesize(item, level, strict)

    def _operand(self, expr) -> str:
        """expr as an operand of `@` or of `.T`: bracketed unless it is a name or a call."""
        text = self._print(expr)
        simple = isinstance(expr, (sp.Symbol, nodes.ArrayOp)) and not isinstance(expr, (nodes.Like, nodes.Dot))
        return text if simple else f"({text})"

    def _print_Dot(self, expr):
        a, b = expr.args
        left = self._print(a) if isinstance(a, nodes.Dot) else self._operand(a)   # a @ b @ c is (a @ b) @ c
        return f"{left} @ {self._operand(b)}"

    def _print_BatchSum(self, expr):
        return f"xp.sum({self._print(expr.args[0])}, axis=0)"

    def _print_UnitSum(self, expr):
        return f"xp.sum({self._print(expr.args[0])}, axis=1, keepdims=True)"

    def _print_Total(self, expr):
        return f"xp.sum({self._print(expr.args[0])})"

    def factor(self, expr) -> str:
        """expr as the right-hand side of `target *= expr`: a bare mask is a comparison there, which
        _as_factor casts only for a namespace that cannot multiply by a bool array (a step u > 0:
        _step)."""
        expr = spelled(expr)
        condition = self._condition(expr) if is_mask(expr) else None
        if condition is None:
            return self.doprint(expr)
        if isinstance(expr, sp.Heaviside) and isinstance(condition, sp.StrictGreaterThan):
            self.helpers.add("_step")
            return f"_step(xp, {self._print(expr.args[0])})"
        self.helpers.add("_as_factor")
        return f"_as_factor(xp, {self._print(condition)}, {self._typed(condition)})"

    def shown(self, expr) -> str:
        """A factor as a comment shows it: a bare mask as its comparison."""
        expr = spelled(expr)
        condition = self._condition(expr) if is_mask(expr) else None
        return self.doprint(expr) if condition is None else self._print(condition)

    @staticmethod
    def _condition(expr):
        """The comparison a mask stands for (Heaviside(u, 0) is u > 0, Heaviside(u, 1) is u >= 0), or None
        for a step whose value at 0 is neither: that one is a float expression, not a comparison."""
        if isinstance(expr, sp.Heaviside):
            h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
            if h0 not in (0, 1):
                return None
            return expr.args[0] > 0 if h0 == 0 else expr.args[0] >= 0
        return expr

    def _mask(self, expr) -> str:
        # The standard has no bool * float: the comparison is cast to the dtype of the array it compares.
        condition = self._condition(expr)
        if condition is None:
            return self._print(expr)
        return f"xp.astype({self._print(condition)}, {self._dtype_of(condition)})"

    def _dtype_of(self, expr) -> str:
        """The dtype of the arrays expr reads (every array of a pass has the working dtype)."""
        return f"{self._typed(expr)}.dtype"

    def _typed(self, expr) -> str:
        """The first array expr reads, to take the working dtype from (`scale` is a number)."""
        arrays = sorted((s for s in expr.free_symbols if s != SCALE), key=lambda s: s.name)
        if not arrays:
            raise ValueError(f"a mask of numbers only, with no array to take a dtype from: {expr}")
        return self._print(arrays[0])

    # max(u, c) with one number c is clip(u, min=c): one call, where xp.maximum makes c an array
    # first (3-6x slower on PyTorch); NaN stays NaN either way.
    def _print_Max(self, expr):
        return self._clip(expr, "min") or super()._print_Max(expr)

    def _print_Min(self, expr):
        return self._clip(expr, "max") or super()._print_Min(expr)

    def _clip(self, expr, bound: str) -> str | None:
        numbers = [a for a in expr.args if a.is_number]
        if len(numbers) != 1:
            return None
        rest = expr.func(*[a for a in expr.args if not a.is_number])
        return f"xp.clip({self._print(rest)}, {bound}={self._print(numbers[0])})"

    def _print_Heaviside(self, expr):
        # On its own, in its argument's dtype and NaN for NaN (as np.heaviside): sign(max(u, 0)) is
        # 1 for u > 0 and 0 for u <= 0; the value at 0 is set apart where it is not 0.
        u = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        step = f"xp.sign(xp.clip({u}, min=0))"
        return step if h0 == 0 else f"xp.where({u} == 0, {self._print(h0)}, {step})"

    def _print_And(self, expr):
        return self._logical("xp.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._logical("xp.logical_or", expr.args)

    def _print_Not(self, expr):
        return f"xp.logical_not({self._print(expr.args[0])})"

    def _logical(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out


def print_xp(expr, printer: ArrayAPIPrinter | None = None) -> str:
    """Print one expression for an array API namespace `xp`.

    >>> print_xp(nodes.BatchSum(sp.Symbol("delta1")))
    'xp.sum(delta1, axis=0)'
    """
    return (printer or ArrayAPIPrinter()).doprint(expr)
