"""nnderive's names in LaTeX: the printer every typeset formula goes through."""
import re

import sympy as sp
from sympy.printing.latex import LatexPrinter

from . import naming
from .naming import A, G, LOGP, X, Y, YSUM


# --- names -------------------------------------------------------------------------------------------

N = sp.Symbol("n", integer=True, positive=True)     # the batch size, `n` in the generated code
Z = sp.Symbol("z", real=True)                       # the generic argument of an activation, for display

# code name -> LaTeX: a1 -> a^{(1)}, delta2 -> \delta^{(2)}, W1_0_1 -> W^{(1)}_{1,2} (1-based), t1_0 -> t^{(1)}_{0}.
_BASES = {"z": "z", "a": "a", "delta": r"\delta", "g": "g", "W": "W", "b": "b", "dW": r"\mathrm{d}W",
          "db": r"\mathrm{d}b", "t": "t", "x": "x", "y": "y", "logp": r"\log a"}
_NAME = re.compile(r"^(delta|logp|dW|db|z|a|g|W|b|t|x|y)(\d+|\{[^{}]*\})?((?:_\d+)*)$")


def symbol(name: str) -> sp.Symbol:
    r"""The scalar Symbol the derivation uses for (an element of) the array called `name` in the code.

    >>> a2 = symbol("a2")
    >>> print(latex(a2 * (1 - a2)))
    a^{(2)} \left(1 - a^{(2)}\right)
    """
    return naming.array(name)


# Curvature (derive.curvature): R{u} is Pearlmutter's directional derivative of u along the direction V,
# whose entries V^{(l)}, v^{(l)} have the shapes of W^{(l)}, b^{(l)}; the Gauss-Newton pass's arrays carry R_G.
ROP = r"\mathcal{R}"
ROP_GN = r"\mathcal{R}_{G}"
_DIRECTION = {"W": "V", "b": "v"}
_DIRECTION_NAME = re.compile("^%s([Wb])(\\d+|\\{[^{}]*\\})$" % naming.direction(""))


def tex_name(name: str, operator: str = ROP) -> str | None:
    r"""LaTeX for a code name (None if it is not one): z1 -> z^{(1)}, W1_0_1 -> W^{(1)}_{1,2},
    Rdelta1 -> \mathcal{R}\{\delta^{(1)}\} (`operator` for the R), vW1 -> V^{(1)}, vb1 -> v^{(1)}."""
    inner = naming.rop_of(name)
    if inner is not None:
        tex = tex_name(inner)
        return None if tex is None else r"%s\{%s\}" % (operator, tex)
    m = _DIRECTION_NAME.match(name)
    if m:
        return "%s^{(%s)}" % (_DIRECTION[m.group(1)], m.group(2).strip("{}"))
    m = _NAME.match(name)
    if not m:
        return None
    base, layer, idx = m.groups()
    if base == "x" and layer:
        return None
    tex = _BASES[base]
    if layer:
        tex += "^{(%s)}" % layer.strip("{}")
    if idx:
        numbers = [int(i) for i in idx[1:].split("_")]
        # Temporaries keep the code's number; array elements are 1-based, as in the text.
        tex += "_{%s}" % ",".join(str(i if base == "t" else i + 1) for i in numbers)
    if base == "logp":
        tex = r"\log a" + ("^{(%s)}" % layer.strip("{}") if layer else "")
    return tex


class _NestedExp(sp.Function):
    """exp(u) where u has an exp of its own (a sigmoid of a sigmoid), for printing only: SymPy's LaTeX printer
    asks whether such an exponent is negative and constant, which takes seconds per level of nesting
    (nested 6 deep: 24 s). Printed as e^{u}, the same."""

    def _latex(self, printer):
        return r"e^{%s}" % printer._print(self.args[0])

    def sort_key(self, order=None):          # in a sum, where the exp would stand
        return sp.exp(self.args[0], evaluate=False).sort_key(order)


def _quick(expr):
    """expr with its nested exps as _NestedExp (unchanged where there are none)."""
    if not isinstance(expr, sp.Basic) or not any(isinstance(e, sp.exp) and e.args[0].has(sp.exp)
                                                 for e in sp.preorder_traversal(expr)):
        return expr
    return expr.replace(lambda e: isinstance(e, sp.exp) and e.args[0].has(sp.exp), lambda e: _NestedExp(e.args[0]))


class NamePrinter(LatexPrinter):
    r"""sp.latex with nnderive's names and a few textbook spellings.

    Code names print as in the document (a1 -> a^{(1)}, delta1 -> \\delta^{(1)}); Heaviside(z, 0)
    and KroneckerDelta(k, q) print as Iverson brackets [z > 0], [k = q]; transposes as ^{\\top};
    a column of ones as \\mathbf{1}_n; a Hadamard product as \\odot.
    """

    def __init__(self, settings=None):
        settings = dict(settings or {})
        self.extra_names = settings.pop("names", {})
        super().__init__(settings)

    def doprint(self, expr):
        return super().doprint(_quick(expr))

    def _print_Symbol(self, expr, style="plain"):
        if expr in self._settings["symbol_names"]:
            return self._settings["symbol_names"][expr]
        if expr.name in self.extra_names:
            return self.extra_names[expr.name]
        if expr == YSUM:
            return r"\left(\textstyle\sum_{k} y_{k}\right)"
        named = tex_name(expr.name)
        return named if named is not None else super()._print_Symbol(expr, style)

    def _print_MatrixSymbol(self, expr):
        return self._print_Symbol(expr)

    def _print_Heaviside(self, expr, exp=None):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        rel = {sp.S.Zero: ">", sp.S.One: r"\ge"}.get(h0)
        if rel is None:
            return super()._print_Heaviside(expr, exp)
        tex = r"\left[%s %s 0\right]" % (self._print(expr.args[0]), rel)
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_KroneckerDelta(self, expr, exp=None):
        tex = r"\left[%s = %s\right]" % (self._print(expr.args[0]), self._print(expr.args[1]))
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_Transpose(self, expr):
        return r"{%s}^{\top}" % self._print(expr.arg)

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        if cols == 1:
            return r"\mathbf{1}_{%s}" % self._print(rows)
        if rows == 1:
            return r"\mathbf{1}_{%s}^{\top}" % self._print(cols)
        return r"\mathbf{1}_{%s \times %s}" % (self._print(rows), self._print(cols))

    def _print_MatMul(self, expr):
        args, sign = list(expr.args), ""
        if args and args[0] == -1:
            args, sign = args[1:], "- "
        parts = [self._print(a) for a in args]
        parts = [r"\left(%s\right)" % t if isinstance(a, (sp.HadamardProduct, sp.MatAdd)) else t
                 for a, t in zip(args, parts)]
        return sign + " ".join(parts)

    def _print_MatAdd(self, expr):
        # in the order built (sp.latex would sort the terms)
        terms = [self._print(t) for t in expr.args]
        return " ".join(t if i == 0 or t.startswith("-") else "+ " + t for i, t in enumerate(terms))

    def _print_HadamardProduct(self, expr):
        return r" \odot ".join(self.parenthesize(a, 50) for a in expr.args)

    def _print_Indexed(self, expr):
        # W^{(l)}_{k,j}, as the elements W1_0_1 -> W^{(1)}_{1,2} are written (one convention)
        base = self._print(expr.base)
        indices = ",".join(self._print(i) for i in expr.indices)
        return ("{%s}_{%s}" if "_" in base else "%s_{%s}") % (base, indices)

    def _helper_print_standard_power(self, expr, template: str) -> str:
        if isinstance(expr.base, sp.Indexed):       # (W^{(1)}_{k,j})^{2}: a superscript cannot take another
            return template % (self.parenthesize_super(self._print(expr.base)), self._print(expr.exp))
        return super()._helper_print_standard_power(expr, template)

    def _print_Total(self, expr):
        """A sum over every entry of a parameter: sum_{k, j} of the entry expression ({W^{(1)}}_{kj})."""
        arg = expr.args[0]
        params = sorted((s for s in arg.free_symbols if re.fullmatch(r"[Wb][1-9]\d*", s.name)), key=lambda s: s.name)
        k, j = sp.symbols("k j", integer=True)
        index = (k, j) if any(s.name[0] == "W" for s in params) else (k,)
        entries = {s: sp.IndexedBase(s)[index if s.name[0] == "W" else (k,)] for s in params}
        inner = self._print(arg.xreplace(entries))
        if isinstance(arg, sp.Add):
            inner = r"\left(%s\right)" % inner
        return r"\sum_{%s} %s" % (", ".join(self._print(i) for i in index), inner)

    def _print_sign(self, expr, exp=None):
        tex = r"\operatorname{sgn}\left(%s\right)" % self._print(expr.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


def latex(expr, **settings) -> str:
    r"""LaTeX of a SymPy expression in nnderive's names (see NamePrinter); settings as for sp.latex.

    >>> print(latex(sp.MatrixSymbol("delta1", N, 2).T * sp.MatrixSymbol("x", N, 4)))
    {\delta^{(1)}}^{\top} x
    >>> print(latex(sp.Heaviside(symbol("z1"), 0)))
    \left[z^{(1)} > 0\right]
    """
    return NamePrinter(settings).doprint(expr)


def at_layer(expr: sp.Expr, l: int) -> sp.Expr:
    """A derivation expression in the generic X, A, G, LOGP renamed to layer l's code names."""
    return sp.sympify(expr).xreplace({X: symbol(naming.pre(l)), A: symbol(naming.act(l)), Y: symbol("y"),
                                      G: symbol(f"g{l}"), LOGP: symbol(f"logp{l}")})


def _element(name: str, *idx: int) -> sp.Symbol:
    """The Symbol of one element of an array for one example: a2_0 is a2[i, 0]."""
    return symbol(name + "".join(f"_{i}" for i in idx))
