"""`nnderive list`: the activations, losses and optimizers, read from their registries (nothing typed here)."""
from __future__ import annotations

import textwrap

import sympy as sp
from sympy.printing.str import StrPrinter

WIDTH = 80
NAME = 14          # the name column; the description starts after it

# What a loss's target must be, by the registry's `target` field.
TARGETS = {"values": "y: targets shaped like the output",
           "onehot": "y: one-hot rows or distributions",
           "labels": "y: integer class labels, shape (batch,); one-hot inside"}


class _Plain(StrPrinter):
    """SymPy's str, with the pieces a reader trips on spelled out: Piecewise as if/else, Sum as sum_j."""

    def _print_Piecewise(self, expr):
        pieces = []
        for e, c in expr.args:
            pieces.append(self._print(e) if c == sp.true else f"{self._print(e)} if {self._print(c)}")
        return ", else ".join(pieces)

    def _print_Sum(self, expr):
        (j, lo, hi), = expr.limits
        return f"sum_{self._print(j)}={self._print(lo)}..{self._print(hi)} {self._print(expr.function)}"


def plain(expr) -> str:
    """A formula as one line of plain text."""
    return _Plain().doprint(expr)


def _entry(name: str, lines: list[str]) -> list[str]:
    """`name` in its column, each line wrapped beside it at WIDTH columns."""
    out = []
    for i, line in enumerate(lines):
        first = f"  {name:<{NAME - 2}}" if i == 0 and len(name) < NAME - 2 else " " * NAME
        if i == 0 and len(name) >= NAME - 2:
            out.append(f"  {name}")
        out.extend(textwrap.wrap(line, WIDTH, initial_indent=first, subsequent_indent=" " * (NAME + 2),
                                 break_on_hyphens=False) or [first.rstrip()])
    return out


def _number(value) -> str:
    return str(value) if isinstance(value, bool) else f"{value:g}"


def activation_lines() -> list[str]:
    from derive.activations import ACTIVATIONS
    out = ["Activations f(x) of a unit's pre-activation (softmax: over the layer's K units)"]
    for name, act in ACTIVATIONS.items():
        lines = [plain(act.formula)]
        if act.params:
            lines.append("parameters: " + ", ".join(f"{s.name}={_number(d)}" for s, d in act.params.items()))
        out += _entry(name, lines)
    out += _entry("(custom)", ['any other name, with formula = "..." in x beside it,',
                                'e.g. formula = "x*tanh(log(1 + exp(x)))"'])
    return out


def loss_lines() -> list[str]:
    from derive.losses import LOSSES
    out = ["Losses l(yhat, y) of one output, prediction yhat, target y; the loss of a batch of N examples "
           "with K outputs is L = (1/N) sum_n sum_k l(yhat[n, k], y[n, k])"]
    for name, loss in LOSSES.items():
        lines = [plain(loss.element), loss.title, TARGETS.get(loss.target, "y: " + loss.target)]
        if loss.needs:
            lines.append(f"the output layer must give a {loss.needs}")
        if loss.note:
            lines.append(loss.note)
        out += _entry(name, lines)
    return out


def optimizer_lines() -> list[str]:
    from derive.optimizers import OPTIMIZERS
    out = ["Optimizers (nnderive train --optimizer NAME; NAME_step in optimizers.py)"]
    for name, opt in OPTIMIZERS.items():
        out += _entry(name, [opt.summary, ", ".join(f"{k}={_number(v)}" for k, v in opt.defaults.items())])
    return out


def listing() -> str:
    """The whole `nnderive list` text, one block per registry."""
    blocks = [activation_lines(), loss_lines(), optimizer_lines()]
    return "\n\n".join("\n".join(textwrap.fill(b[0], WIDTH, subsequent_indent="  ") .splitlines() + b[1:])
                       for b in blocks) + "\n"
