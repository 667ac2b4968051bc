"""Lays a Program out as a module (NumPy, or any array API namespace): the printer writes each statement, Jinja2 the rest."""
import math
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from derive import naming, nodes
from derive.program import Assign, Program, program
from derive.statements import array, live
from derive.spec import Network, content_hash

from .listing import plain
from .output import HEADER
from .printer import NumPyPrinter
from .printer_xp import ArrayAPIPrinter
from .templating import PYTHON


def quoted(text) -> str:
    """Spec-controlled text (a file name) as a printable-ASCII Python string literal, for a comment:
    it cannot break the line, and it is kept out of lines 1-2, where Python reads a coding cookie."""
    return ascii(str.__str__(str(text)))




@dataclass(frozen=True)
class Flavour:
    """One kind of generated module: the printer of its statements, its template, its file name."""

    printer: type
    template: str
    suffix: str          # of the file name: mlp.py, mlp_xp.py
    flag: str            # what `nnderive generate` is given to write it


FLAVOURS = {
    "numpy": Flavour(NumPyPrinter, "module.py.j2", "", ""),
    "array_api": Flavour(ArrayAPIPrinter, "module_xp.py.j2", "_xp", "--array-api "),
}


def module_file(name: str, flavour: str = "numpy") -> str:
    """The file name of a network's module: mlp.py, and mlp_xp.py for the array-API flavour."""
    return f"{name}{FLAVOURS[flavour].suffix}.py"


class _Printer:
    """Prints Program statements: one printer of the flavour, parameters spelled params["W1"]."""

    def __init__(self, prog: Program, printer=NumPyPrinter):
        self.np = printer(params=prog.params, directions=dict(zip(prog.directions, prog.params)))

    def line(self, s: Assign) -> dict:
        """A statement as the template lays it out: target, op, code and a comment line above."""
        code = self.np.factor(s.expr) if s.op == "*=" else self.np.doprint(s.expr)
        comment = s.about if s.shows is None else f"{s.about} = {self.np.shown(s.shows)}"
        return {"target": s.name, "op": s.op, "code": code, "comment": comment}


def _reads(statements) -> set[str]:
    return set().union(*(s.reads() for s in statements)) if statements else set()


def _curvature_passes(prog: Program) -> dict:
    """The statements of each curvature function, without the work its results do not need."""
    grads = [g for _, g in prog.grads]
    rgrads = [naming.rop(g) for g in grads]
    return {
        "hvp": live(prog.rforward + prog.rbackward, rgrads),
        "grad_hvp": live(prog.rforward + prog.rbackward, grads + rgrads),
        "gnvp": live(prog.rforward + prog.gnbackward, rgrads),
    }


def _affine_lines(statements, pr: _Printer) -> list[dict]:
    """Forward statements for the array-API module: `z = a @ W.T` then `z += b` is one call,
    _matmul_add (PyTorch's addmm, as F.linear; elsewhere the same two steps)."""
    lines, i = [], 0
    while i < len(statements):
        s, after = statements[i], statements[i + 1] if i + 1 < len(statements) else None
        if (after is not None and s.op == "=" and isinstance(s.expr, nodes.Dot) and after.name == s.name
                and after.op == "+=" and isinstance(after.expr, sp.Symbol) and not s.about and not after.about):
            pr.np.helpers.add("_matmul_add")
            a, b = (pr.np.doprint(arg) for arg in s.expr.args)
            lines.append({"target": s.name, "op": "=", "code": f"_matmul_add(xp, {a}, {b}, {pr.np.doprint(after.expr)})",
                          "comment": ""})
            i += 2
        else:
            lines.append(pr.line(s))
            i += 1
    return lines


def _sgd_pass(prog: Program, pr: _Printer) -> tuple[list[dict], list[str]]:
    """sgd_step's backward pass for the array-API module: the backward statements, then each
    parameter updated in place by its scaled gradient.

    A weight gradient that is one product a @ b, written once and read by nothing after it, is not
    made at all: its update is `W - a @ b` in one call (_sub_matmul: PyTorch's addmm_). The updates
    come after every statement, so no delta reads a parameter already updated.
    """
    statements = list(prog.backward)
    fused = {}
    for _, g in prog.grads:
        defs = [i for i, s in enumerate(statements) if s.name == g]
        if len(defs) != 1 or statements[defs[0]].op != "=" or not isinstance(statements[defs[0]].expr, nodes.Dot):
            continue
        i = defs[0]
        later = statements[i + 1:]
        if any(s.name in statements[i].reads() for s in later) or g in _reads(later):
            continue
        fused[g] = statements[i].expr
    lines = [pr.line(s) for s in statements if s.name not in fused]
    updates = []
    for p, g in prog.grads:
        target = pr.np.doprint(array(p))
        if g in fused:
            pr.np.helpers.add("_sub_matmul")
            a, b = (pr.np.doprint(arg) for arg in fused[g].args)
            updates.append(f"{target} = _sub_matmul(xp, {target}, {a}, {b})")
        else:
            updates.append(f"{target} -= {g}")
    return lines, updates


def module_context(prog: Program, source: str, flavour: str = "numpy") -> dict:
    net = prog.network
    pr = _Printer(prog, FLAVOURS[flavour].printer)
    forward = _affine_lines(prog.forward, pr) if flavour == "array_api" else [pr.line(s) for s in prog.forward]
    backward = [pr.line(s) for s in prog.backward]
    *loss_steps, total = prog.data_loss
    output = prog.output
    values = list(dict.fromkeys(s.name for s in prog.forward))      # every array forward makes, in order
    backward_needs = _reads(prog.backward)
    loss_needs = _reads(prog.data_loss)
    curvature = _curvature_passes(prog)
    curvature_needs = _reads([s for statements in curvature.values() for s in statements])
    # What _forward hands on: the values backward, the loss or the curvature passes read, and the output last.
    saved = [v for v in values if v != output and (v in backward_needs or v in loss_needs or v in curvature_needs)]
    saved.append(output)
    init = []
    for l, layer in enumerate(net.layers, start=1):
        init.append((naming.weight(l), net.sizes[l], net.sizes[l - 1], net.init_gain(l)))
    grads = prog.grads
    sgd_lines, sgd_updates = _sgd_pass(prog, pr) if flavour == "array_api" else ([], [])
    curvature_code = {name: {"lines": [pr.line(s) for s in statements],
                             "args": [v for v in ["x"] + saved if v in _reads(statements) or v == "x"]}
                      for name, statements in curvature.items()}       # printed before the helpers are listed
    return dict(
        header=f"{HEADER} (sha256 {content_hash(net)}). DO NOT EDIT.\n"
               f"# Regenerate it from its spec with `nnderive generate {FLAVOURS[flavour].flag}SPEC`.\n"
               f"# Spec: {quoted(source)}",
        name=net.name, describe=net.describe(), n_in=net.inputs, n_out=net.sizes[-1],
        shapes=net.param_shapes(), init=init, forward=forward, backward=backward, saved=saved,
        backward_args=[v for v in ["x"] + saved if v in backward_needs],
        loss_args=[v for v in saved if v in loss_needs],
        output=output, loss_steps=[pr.line(s) for s in loss_steps], loss_total=pr.np.doprint(total.expr),
        loss_name=net.loss, target=prog.derivation.loss.target, loss_title=prog.derivation.loss.title,
        loss_element=plain(prog.derivation.loss.element), loss_note=prog.derivation.loss.note,
        helpers=[pr.np.helper_source[h] for h in sorted(pr.np.helpers)],
        uses_math=any("math." in pr.np.helper_source[h] for h in pr.np.helpers),
        grads=grads, grad_names=", ".join(g for _, g in grads), sgd_backward=sgd_lines, sgd_updates=sgd_updates,
        rgrad_names=", ".join(naming.rop(g) for _, g in grads),
        curvature=curvature_code,
        penalised=prog.penalised, penalty_steps=[pr.line(s) for s in prog.penalty],
        penalty_formula=penalty_text(prog),
        n_params=sum(math.prod(s) for s in net.param_shapes().values()),
    )


def penalty_text(prog: Program) -> str:
    """The penalty for a docstring, as the plain printer writes it: 0.005*sum(W1**2) + 0.001*sum(Abs(b1))."""
    from derive.report import plain
    return " + ".join(plain(s.expr) for s in prog.penalty)


def render_module(prog: Program, source: str = "<python>", flavour: str = "numpy") -> str:
    """The text of the generated module for a Program (deterministic): the NumPy module, or with
    flavour="array_api" the module for any array API namespace."""
    return PYTHON.get_template(FLAVOURS[flavour].template).render(**module_context(prog, source, flavour))


def source_label(net: Network) -> str:
    return Path(net.source).name if net.source and not net.source.startswith("<") else net.source


def generate_module(net: Network) -> str:
    return render_module(program(net), source_label(net))
