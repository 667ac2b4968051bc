"""What a reader of the documents meets (issue 16): shapes, the notation table, pages, the softmax delta,
one index convention, definitions and temporaries (test_latex compiles every document, free of bad boxes)."""
import dataclasses
import re
from pathlib import Path

import pytest
import sympy as sp

from codegen.build import example_specs, module_outputs
from codegen.document import render_document
from derive import Dense, Network, derive, load_spec
from derive.activations import ACTIVATIONS
from derive.errors import DerivationError
from derive.latex import activation
from derive.latex_document import SHOWN_WIDTH, _definition, _output, _softmax_raw
from derive.latex_printer import Z
from derive.naming import A
from derive.pieces import Pieces
from derive.program import program

from test_latex import UNSEEN, bad_boxes, compile_all

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
EXAMPLES = [load_spec(path) for path in example_specs(ROOT / "examples")]


def committed(net: Network, ext: str) -> str:
    """The committed document of an example (test_latex checks that it is fresh)."""
    return (GENERATED / f"{net.name}.{ext}").read_text(encoding="utf-8")


def rows(tex: str) -> list[tuple[str, str, str]]:
    """(lhs, rhs, note) of every row of every align* (the LaTeX document) or aligned (Markdown) block."""
    out = []
    for block in re.findall(r"\\begin\{align(?:\*|ed)\}\n(.*?)\\end\{align(?:\*|ed)\}", tex, flags=re.S):
        for line in re.split(r" \\\\\*?\n", block.strip("\n")):
            line = re.sub(r" \\tag\*\{\$(.*)\$\}$", r" &&\1", line)
            lhs, rhs, *note = line.split("&")            # lhs &rhs &&note: no other & in the math
            out.append((lhs.strip(), rhs.strip(), note[-1].strip() if note else ""))
    return out


def section(tex: str, start: str, end: str) -> str:
    i = tex.index(start)
    return tex[i:tex.index(end, i)]


# --- shapes ---------------------------------------------------------------------------------------------

TUPLE = re.compile(r"^\\left\(.*,.*\\right\)$|^\(.*,.*\)$|,\s*\\right\)|\(\d+,\s*\)")


@pytest.mark.parametrize("ext", ["tex", "md"])
def test_shapes_cannot_be_read_as_equation_numbers(ext):
    for net in EXAMPLES:
        doc = committed(net, ext)
        notes = [note for _, _, note in rows(doc) if note]
        assert notes and not [n for n in notes if TUPLE.search(n)], net.name
        L, K = net.depth, net.sizes[-1]
        # every shape is the set the value lives in, named: delta^{(L)} in R^{n x K}, db in R^{K}
        assert r"\delta^{(%d)} \in \mathbb{R}^{n \times %d}" % (L, K) in doc
        assert r"\mathrm{d}b^{(%d)} \in \mathbb{R}^{%d}" % (L, K) in doc
        assert r"\mathrm{d}W^{(1)} \in \mathbb{R}^{%d \times %d}" % (net.sizes[1], net.sizes[0]) in doc
        assert r"$\mathbb{R}^{n_l}$" in doc and r"$%d \times %d$" % (net.sizes[1], net.sizes[0]) in doc
        assert not re.search(r"\(n_l,\s*\)|\\left\(n_l,\\right\)", doc)


# --- the notation table -----------------------------------------------------------------------------------

def test_notation_table_breaks_only_between_code_names():
    for net in EXAMPLES:
        tex = committed(net, "tex")
        table = section(tex, r"\begin{table}", r"\end{table}")
        assert r">{\raggedright}p{" in table                # ragged right: no stretched (Underfull) lines
        body = table.split(r"\hline", 1)[1]
        for row in body.splitlines():
            if " & " not in row:
                continue
            codes = row.split(" & ")[0]
            # each name whole in an \mbox: a line may break after a comma, never inside "delta2 @ W2"
            assert re.fullmatch(r"\\mbox\{\\texttt\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}\}(, \\mbox\{\\texttt\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}\})*",
                                codes), codes
        md = committed(net, "md")
        assert re.search(r"^\| `delta2 @ W2`(, `[^`]+`)* \|", md, flags=re.M) or net.depth == 1


# --- pages ------------------------------------------------------------------------------------------------

def _probe(tex: str, before: str, label: str) -> str:
    """tex with \\label{label} just before the text `before` (once), to read its page off the .aux."""
    assert tex.count(before) == 1, before
    return tex.replace(before, r"\label{%s}%s" % (label, before))


def _pages(aux: Path) -> dict:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\\newlabel\{(\w+)\}\{\{[^{}]*\}\{(\d+)\}", aux.read_text())}


def test_page_one_is_filled_and_the_figure_is_near(tmp_path):
    """A 5-layer network whose drawing does not fit on page 1 (6-unit layers): the text goes on filling
    page 1 (it used to stop half way, the figure and the notation table pushed to page 2), and the
    figure is on page 2 at the latest."""
    net = Network("five", 8, [Dense(6, "tanh"), Dense(6, "relu"), Dense(6, "tanh"), Dense(6, "relu"),
                              Dense(3, "softmax")], loss="cce")
    tex = render_document(net)
    tex = _probe(tex, "Formulas that combine arrays", "formulas")
    tex = tex.replace(r"loss \texttt{cce}.}", r"loss \texttt{cce}.\label{drawing}}")
    tex = _probe(tex, r"\section{Forward pass}", "forward")
    code, log, pdf = compile_all({"five": tex}, tmp_path)["five"]
    assert code == 0, log
    pages = _pages(pdf.with_suffix(".aux"))
    assert pages["formulas"] == 1 and pages["drawing"] <= 2, pages
    assert not bad_boxes(pdf.with_suffix(".log"))


def _ends(block: str) -> list[str]:
    """How each row of an align* block ends: '\\\\' (a page may break after it), '\\\\*' (it may not)."""
    return re.findall(r" (\\\\\*?)\n", block)


def test_a_layers_equations_stay_on_one_page():
    for net in EXAMPLES:
        tex = committed(net, "tex")
        hidden = section(tex, r"\section{The hidden-layer deltas}", r"\section{Gradients") if net.depth > 1 else ""
        for block in re.findall(r"\\begin\{align\*\}\n(.*?)\\end\{align\*\}", hidden, flags=re.S):
            assert set(_ends(block)) <= {r"\\*"}, block                 # g, delta and its forms together
        activations = section(tex, r"\section{Activations", r"\section{Backpropagation")
        for block in re.findall(r"\\begin\{align\*\}\n(.*?)\\end\{align\*\}", activations, flags=re.S):
            assert set(_ends(block)) <= {r"\\*"}, block                 # f, f' and the temporaries together
        gradients = section(tex, r"\section{Gradients", r"\end{align*}")
        lines = [line for line in gradients.splitlines() if line.startswith(r"  \frac{\partial L}")]
        assert len(lines) == 2 * net.depth
        for k, line in enumerate(lines[:-1]):
            # dW and db of a layer together; a page may break between layers
            assert line.endswith(r"\\*" if k % 2 == 0 else "\\\\"), line


# --- the softmax output delta ------------------------------------------------------------------------------

def _first_logit_rows(net: Network) -> str:
    return " ".join(rhs for _, rhs, _ in _output(Pieces(net))["raw"].rows)


@pytest.mark.parametrize("width", [2, 3, SHOWN_WIDTH])
def test_softmax_delta_is_shown_on_the_networks_own_width(width):
    net = Network("soft", 2, [Dense(3, "relu"), Dense(width, "softmax")], loss="cce")
    out = _output(Pieces(net))
    assert out["instance"] == dict(own=True, width=width, derived=3)
    raw = _first_logit_rows(net)
    assert r"z^{(2)}_{%d}" % width in raw and r"z^{(2)}_{%d}" % (width + 1) not in raw
    assert r"y_{%d}" % width in raw and r"y_{%d}" % (width + 1) not in raw


def test_a_wide_softmax_states_its_instance():
    net = load_spec(ROOT / "examples" / "digits_64_32_10.toml")
    out = _output(Pieces(net))
    assert out["instance"] == dict(own=False, width=3, derived=3)
    raw = _first_logit_rows(net)
    assert "z_{3}" in raw and "z_{4}" not in raw and "z^{(2)}" not in raw      # the instance's own logits
    tex = committed(net, "tex")
    assert "This network has 10 outputs" in tex and r"with logits $z_1, \ldots, z_{3}$" in tex
    relu2 = committed(load_spec(ROOT / "examples" / "relu2_softmax.toml"), "tex")
    assert "On this network's own 2 outputs" in relu2 and "z^{(3)}_{3}" not in relu2


def test_the_fused_softmax_delta_is_checked_on_the_networks_width():
    d = derive(Network("soft", 2, [Dense(2, "softmax")], loss="cce"))
    _softmax_raw(d, 2)
    wrong = dataclasses.replace(d, output=dataclasses.replace(d.output, expr=d.output.expr + A / 7))
    with pytest.raises(DerivationError, match="does not follow"):
        _softmax_raw(wrong, 2)


def test_no_fixed_size_parentheses_in_any_document():
    for net in EXAMPLES:
        for ext in ("tex", "md"):
            assert r"\Bigl" not in committed(net, ext) and r"\Bigr" not in committed(net, ext)


# --- notation ------------------------------------------------------------------------------------------------

BRACED = re.compile(r"\{\\?[A-Za-z]+\^\{\([^)]*\)\}\}_\{")     # {W^{(l)}}_{kj}: the other convention


def test_one_index_convention_in_the_body_and_the_expanded_section():
    expanded = render_document(load_spec(ROOT / "examples" / "mlp_4_2_3.toml"), expanded=True)
    body, every = expanded.split(r"\section{Every partial derivative}")
    for doc in [committed(net, ext) for net in EXAMPLES for ext in ("tex", "md")] + [expanded]:
        assert not BRACED.search(doc), BRACED.search(doc).group(0)
    assert r"W^{(l)}_{k,j}" in body and r"\partial W^{(l)}_{q,r}" in body
    assert r"\partial W^{(1)}_{1,1}" in every and r"\partial b^{(2)}_{3}" in every


def test_the_document_uses_its_own_symbols():
    for net in EXAMPLES:
        for ext in ("tex", "md"):
            assert r"u_k = \sum_j w_{kj} z_j" not in committed(net, ext)


def test_no_activation_is_defined_as_itself():
    for name, act in sorted(ACTIVATIONS.items()):
        if act.vector:
            continue
        f = activation(name).f
        if isinstance(f, sp.Function) and f.args == (Z,):     # tanh(z): the name of the function itself
            assert _definition(f) != f, name
        else:
            assert _definition(f) == f, name
    assert _definition(sp.tanh(Z)) == sp.tanh(Z).rewrite(sp.exp)
    assert _definition(sp.sign(Z)).has(sp.Piecewise)
    tex = committed(load_spec(ROOT / "examples" / "tanh_regression.toml"), "tex")
    assert r"\tanh(z) &= \frac{e^{z} - e^{- z}}{e^{z} + e^{- z}}" in tex
    for net in EXAMPLES:
        for lhs, rhs, _ in rows(committed(net, "tex")):
            assert not (lhs and rhs == "= " + lhs), (net.name, lhs)


# --- temporaries --------------------------------------------------------------------------------------------

def _temporaries_used(code: str) -> set[str]:
    return set(re.findall(r"\b(R?t\d+_\d+)\b", code))


def _defined(doc: str, name: str, markdown: bool) -> bool:
    m = re.fullmatch(r"(R?)t(\d+)_(\d+)", name)
    tex = "t^{(%s)}_{%s}" % (m.group(2), m.group(3))
    if m.group(1):
        tex = (r"\mathcal{R}\lbrace %s\rbrace" if markdown else r"\mathcal{R}\{%s\}") % tex
    return re.search(r"^\s*%s &= " % re.escape(tex), doc, flags=re.M) is not None


def test_every_temporary_the_code_uses_is_defined_in_the_document():
    nets = [net for net in EXAMPLES if _temporaries_used((GENERATED / f"{net.name}.py").read_text())]
    assert [net.name for net in nets] == ["mish_custom"]
    checked = 0
    for net in nets:
        used = _temporaries_used((GENERATED / f"{net.name}.py").read_text())
        for ext in ("tex", "md"):
            doc = committed(net, ext)
            assert not [t for t in sorted(used) if not _defined(doc, t, ext == "md")], (net.name, ext)
            checked += len(used)
    for net in UNSEEN[:2]:                      # gelu and elu/swish: temporaries that read temporaries
        used = _temporaries_used(next(text for name, text in module_outputs(net).items() if name.endswith(".py")))
        doc = render_document(net)
        assert used and not [t for t in sorted(used) if not _defined(doc, t, False)], net.name
        # each temporary defined once
        assert all(len(re.findall(r"^\s*t\^\{\(%s\)\}_\{%s\} &= " % tuple(t[1:].split("_")), doc, flags=re.M)) == 1
                   for t in used if not t.startswith("R"))
        checked += len(used)
    assert checked > 10


def test_temporaries_are_printed_from_the_program():
    prog = program(load_spec(ROOT / "examples" / "mish_custom.toml"))
    k = next(i for i, s in enumerate(prog.forward) if s.name == "t1_0")
    planted = dataclasses.replace(prog.forward[k], expr=sp.cosh(prog.forward[k].expr.args[0]))
    tex = render_document(dataclasses.replace(prog, forward=prog.forward[:k] + (planted,) + prog.forward[k + 1:]))
    row = next(rhs for lhs, rhs, _ in rows(tex) if lhs == "t^{(1)}_{0}")
    assert row.startswith(r"= \cosh") and r"t^{(1)}_{0} &= \tanh" in committed(load_spec(ROOT / "examples" / "mish_custom.toml"), "tex")
