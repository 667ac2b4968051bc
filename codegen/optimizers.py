"""Render generated/optimizers.py: one NumPy `<name>_step` function per entry of OPTIMIZERS."""
from __future__ import annotations

import os
from pathlib import Path

import sympy as sp

from .output import write_outputs
from .printer import NumPyPrinter, print_numpy
from .templating import PYTHON
from derive.optimizers import OPTIMIZERS, Optimizer, p, t

TEMPLATE = "optimizers.py.j2"
FILENAME = "optimizers.py"


def _print(expr, printer: NumPyPrinter) -> str:
    text = print_numpy(expr, printer)
    if printer.helpers:  # the module template emits no helper functions
        raise ValueError(f"optimizer rule {expr} needs the helpers {sorted(printer.helpers)}")
    return text


def _branches(opt: Optimizer, target: sp.Symbol, expr: sp.Expr, printer: NumPyPrinter) -> list[tuple]:
    """A rule as [(condition, statement)], condition None for "always" or "else".

    A rule on p prints its decrement, for `p -= ...`.
    """
    kind = "param" if target == p else "buffer" if target in opt.state else "local"
    pieces = expr.args if isinstance(expr, sp.Piecewise) else ((expr, sp.true),)
    out = []
    for i, (value, cond) in enumerate(pieces):
        if i and cond == sp.true and value == target:
            continue  # "otherwise keep the value": no else branch
        if kind == "param":
            value = p - value  # NumPy evaluates the right side before `-=` writes
        statement = {"kind": kind, "target": target.name, "value": _print(value, printer)}
        out.append((None if cond == sp.true else cond, statement))
    return out


def _blocks(opt: Optimizer, printer: NumPyPrinter) -> list[list[dict]]:
    """The rules as blocks; a block is a list of branches {condition, statements}.

    Neighbouring rules that branch on the same conditions share one if/elif/else.
    That is sound because conditions read only hyperparameters and t, never a rule's target.
    """
    targets = {target for target, _ in opt.rules}
    blocks: list[list[dict]] = []
    for target, expr in opt.rules:
        branches = _branches(opt, target, expr, printer)
        conditions = [c for c, _ in branches if c is not None]
        if any(c.free_symbols & targets for c in conditions):
            raise ValueError(f"{opt.name}: a condition reads a value the rules assign: {expr}")
        previous = blocks[-1] if blocks else []
        if conditions and conditions == [b["condition"] for b in previous if b["condition"] is not None]:
            for cond, statement in branches:
                same = [b for b in previous if b["condition"] == cond]
                if same:
                    same[0]["statements"].append(statement)
                else:  # an else branch the previous rule did not need
                    previous.append({"condition": None, "statements": [statement]})
            continue
        blocks.append([{"condition": c, "statements": [s]} for c, s in branches])
    for block in blocks:
        for branch in block:
            if branch["condition"] is not None:  # a flag or a scalar comparison, e.g. `t == 1`
                branch["condition"] = _print(branch["condition"], printer)
    return blocks


def _context(opt: Optimizer) -> dict:
    uses_t = any(t in expr.free_symbols for _, expr in opt.rules)
    return {
        "name": opt.name,
        "summary": opt.summary,
        "hyperparameters": [{"name": s.name, "default": repr(d)} for s, d in opt.hyperparameters],
        "state": [s.name for s in opt.state],
        "unpack": (["t"] if uses_t else []) + [s.name for s in opt.state],
        "blocks": _blocks(opt, NumPyPrinter()),
    }




def render_optimizers(optimizers: dict[str, Optimizer] | None = None) -> str:
    """Return the source of generated/optimizers.py (NumPy only).

    Args:
        optimizers: name -> Optimizer; default all of derive.optimizers.OPTIMIZERS.

    >>> "def adam_step(params, grads, state, lr=0.001" in render_optimizers()
    True
    """
    optimizers = OPTIMIZERS if optimizers is None else optimizers
    template = PYTHON.get_template(TEMPLATE)
    return template.render(optimizers=[_context(o) for o in optimizers.values()])


def write_optimizers(directory: str | os.PathLike) -> Path:
    """Write optimizers.py into `directory` atomically (temporary file, then rename)."""
    (target,) = write_outputs({FILENAME: render_optimizers()}, Path(directory))
    return target


if __name__ == "__main__":
    print(write_optimizers(Path(__file__).resolve().parents[1] / "generated"))
