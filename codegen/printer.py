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


# Numerical primitives NumPy lacks; emitted into a module only when its code uses them.
HELPERS = {
    "_sigmoid": '''def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp(-log(1 + exp(-z)))."""
    return np.exp(-np.logaddexp(0, -z))''',
    "_erf": '''_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(z):
    """The error function, element by element (NumPy has none), in the dtype of z."""
    z = np.asarray(z)
    return _erf_scalar(z).astype(z.dtype)''',
}


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
    expr = expr.replace(lambda e: e.is_Add and sp.S.NegativeOne in e.args and
                        any(isinstance(t, sp.exp) for t in e.args),
                        lambda e: _expm1(e))
    return _floats(expr.replace(lambda e: e.is_Mul, _fold_constants))


def _expm1(add: sp.Add) -> sp.Expr:
    """exp(u) - 1 + rest -> expm1(u) + rest (accurate near u = 0)."""
    exps = [t for t in add.args if isinstance(t, sp.exp)]
    rest = [t for t in add.args if t is not exps[0] and t != sp.S.NegativeOne]
    return sp.Add(Expm1(exps[0].args[0]), *rest, evaluate=False)


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
        return f"{self.parenthesize(expr.lhs, 50)} {expr.rel_op} {self.parenthesize(expr.rhs, 50)}"

    def _print_sign(self, expr):
        return f"np.sign({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        self.helpers.add("_sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Expm1(self, expr):
        return f"np.expm1({self._print(expr.args[0])})"

    def _print_Log1p(self, expr):
        return f"np.log1p({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        self.helpers.add("_erf")
        return f"_erf({self._print(expr.args[0])})"

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
