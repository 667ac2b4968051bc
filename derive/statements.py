"""The statements a Program is made of, and the pieces of lowering every pass shares.

A statement is `name op expr`; every Symbol in expr names an array of the generated code. The
primal lowering (derive.program) and the curvature passes (derive.curvature) both build them.
"""
from dataclasses import dataclass

import sympy as sp

from . import naming
from .backprop import softmax_steps
from .naming import A, G, LOGP, X, Y, YSUM
from .nodes import UnitSum

SCALE = sp.Symbol(naming.SCALE, real=True)   # what backward scales every gradient by: 1/n (sgd_step: lr/n)
RATE = sp.Symbol(naming.RATE, real=True)     # ... and the penalty's gradient by: 1 (sgd_step: lr)


def array(name: str) -> sp.Symbol:
    """The Symbol standing for the array `name` of the generated code."""
    return naming.array(name)


@dataclass(frozen=True)
class Assign:
    """One statement: `name op expr`, op "=" or in place ("+=", "*=" on an array the pass made)."""

    name: str
    expr: sp.Expr
    shape: tuple
    op: str = "="
    about: str = ""          # words for a reader of the code, never a formula
    shows: sp.Expr | None = None   # an expression the comment shows after `about = ` (printed, not typed)

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.expr}"

    @property
    def target(self) -> sp.Symbol:
        return array(self.name)

    def reads(self) -> set[str]:
        """The names of the arrays this statement reads (an in-place one reads its target too)."""
        names = {s.name for s in self.expr.free_symbols}
        return names | {self.name} if self.op != "=" else names




def _from_indexed(expr: sp.Expr, arrays: dict) -> sp.Expr:
    """An indexed per-unit expression as an array expression: x[j] -> x, sum over the units -> UnitSum."""
    if isinstance(expr, sp.Indexed):
        return arrays[expr.base]
    if isinstance(expr, sp.Sum):
        if len(expr.limits) != 1:
            raise TypeError(f"a sum over more than the units: {expr}")
        return UnitSum(_from_indexed(expr.function, arrays))
    if not expr.args:
        return expr
    return expr.func(*[_from_indexed(a, arrays) for a in expr.args])


def softmax_jvp(g: sp.Symbol, a: sp.Symbol) -> sp.Expr:
    """dL/dz for a = softmax(z) and g = dL/da, from the derived indexed form (never the K x K Jacobian)."""
    s = softmax_steps()
    return _from_indexed(s.jvp, {s.g: g, s.a: a})


def _names(l: int) -> dict:
    """The generic symbols of the derivation renamed to layer l's arrays."""
    return {X: array(naming.pre(l)), A: array(naming.act(l)), Y: array(naming.TARGETS), G: array(naming.UPSTREAM),
            LOGP: array(naming.log_output(l, True)), YSUM: UnitSum(array(naming.TARGETS))}


def softmax_directional(u: sp.Expr, a: sp.Symbol, log: bool = False) -> sp.Expr:
    """The change of a = softmax(z) (of log a, if `log`) along a direction u of z, from the derived
    indexed form (backprop.softmax_steps: forward_jvp, log_jvp); never the K x K Jacobian."""
    s = softmax_steps()
    return _from_indexed(s.log_jvp if log else s.forward_jvp, {s.u: u, s.a: a})


def live(statements, outputs) -> tuple:
    """The statements that `outputs` (array names) need, in order: the others are dead code."""
    needed, kept = set(outputs), []
    for s in reversed(statements):
        if s.name in needed:
            kept.append(s)
            if s.op == "=":
                needed.discard(s.name)
            needed |= {v.name for v in s.expr.free_symbols}
    return tuple(reversed(kept))
