"""A plain-text account of a Program, for the terminal: its statements, in the code's names."""
import sympy as sp
from sympy.printing.str import StrPrinter

from . import naming
from .program import RATE, SCALE, Program, program


class PlainPrinter(StrPrinter):
    """sstr with the Program's nodes in NumPy-like matrix notation (@, .T, sums over an axis)."""

    def _print_Dot(self, e):
        return f"{self.parenthesize(e.args[0], 60)} @ {self.parenthesize(e.args[1], 60)}"

    def _print_T(self, e):
        return f"{self.parenthesize(e.args[0], 999)}.T"

    def _print_BatchSum(self, e):
        return f"{self.parenthesize(e.args[0], 999)}.sum(axis=0)"

    def _print_UnitSum(self, e):
        return f"{self.parenthesize(e.args[0], 999)}.sum(axis=1)"

    def _print_Total(self, e):
        return f"sum({self._print(e.args[0])})"

    def _print_Like(self, e):
        return self._print(e.args[0])

    def _print_LogSoftmax(self, e):
        return f"log_softmax({self._print(e.args[0])})"

    def _print_Sigmoid(self, e):
        return f"sigmoid({self._print(e.args[0])})"

    def _print_Softplus(self, e):
        return f"softplus({self._print(e.args[0])})"


def plain(expr) -> str:
    """One Program expression in plain text (scale shown as 1/n and rate as 1, what backward is called with)."""
    return PlainPrinter().doprint(sp.sympify(expr).xreplace({SCALE: 1 / sp.Symbol("n"), RATE: 1}))


def _named(expr: sp.Expr, l: int) -> str:
    from .naming import A, X
    return plain(expr.xreplace({X: naming.array(naming.pre(l)), A: naming.array(naming.act(l))}))


def summary(net) -> str:
    """The derivation of every layer and the Program's backward statements, in the generated code's names."""
    prog: Program = program(net)
    d = prog.derivation
    lines = [f"{prog.network.name}: {prog.network.describe()}"]
    for layer in d.layers:
        l = layer.index
        if layer.vector:
            lines.append(f"  layer {l}     a{l} = softmax(z{l})")
            continue
        ew = layer.elementwise
        lines.append(f"  layer {l}     a{l} = {layer.activation}(z{l}) = {_named(ew.f, l)}")
        rewritten = f" = {_named(ew.fprime_a, l)}" if ew.fprime_a is not None else ""
        lines.append(f"              {layer.activation}'(z{l}) = {_named(ew.fprime, l)}{rewritten}")
    how = {"fused": "fused, simplified by SymPy", "chain": "dL/da * f'(z)",
           "jvp": "softmax Jacobian-vector product with g = dL/da"}[d.output.kind]
    for title, statements in (("forward", prog.forward), ("backward", prog.backward), ("loss", prog.loss)):
        for i, s in enumerate(statements):
            label = f"  {title:<11} " if i == 0 else " " * 14
            note = f"  ({how})" if s.name == naming.delta(d.depth) and s.op == "=" else ""
            lines.append(f"{label}{s.name} {s.op} {plain(s.expr)}{note}")
    penalty = f" + {naming.PENALTY}" if prog.penalised else ""
    lines.append(f"              L = total / n{penalty}  (computed from {d.output.loss_from.replace('_', '-')})")
    return "\n".join(lines)
