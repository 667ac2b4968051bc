"""The LaTeX / Markdown export: documents compile, match the committed files, and agree with the code."""
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen.cli import main
from codegen.build import example_specs, module_outputs, write_outputs
from codegen.document import document_outputs, render_document
from derive import Dense, Network, derive, load_spec
from derive.errors import NnderiveError
from derive.program import program
from derive.latex import (activation, check_partials, expanded_partials, latex, numeric, pieces, softmax_steps,
                          split_lines, symbol, visible_width)
from derive.latex_layout import fit_delimiters
from derive.verify import load_module

# Some unseen networks are odd on purpose (mse on softmax, untrainable step/sign): their warnings are expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = example_specs(ROOT / "examples")

# Networks no example uses: every activation family, every loss, a softmax hidden layer, a softmax
# output that does not fuse (mse: Jacobian-vector product), parameters, custom formulas.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    UNSEEN = [
        Network("gelu_softplus_mae", 3, [Dense(4, "gelu"), Dense(3, "softplus"), Dense(2, "identity")], loss="mae"),
        Network("elu_swish_bce", 2, [Dense(3, "elu", alpha=0.5), Dense(3, "swish", beta=2.0), Dense(1, "sigmoid")],
                loss="bce"),
        Network("softmax_mse", 3, [Dense(3, "gelu_tanh"), Dense(3, "softmax"), Dense(2, "softmax")], loss="mse"),
        Network("custom_sparse", 4, [Dense(3, "bump", formula="x/(1 + abs(x)) + max(x, 0)/10"),
                                     Dense(3, "leaky_relu", alpha=0.2), Dense(3, "softmax")], loss="sparse_cce"),
        Network("step_sign_tanh", 2, [Dense(2, "tanh"), Dense(2, "sign"), Dense(2, "step"), Dense(1, "identity")],
                loss="mse"),
    ]

# LaTeX specials wherever a user can put them: the file name, the custom formula's text (the parser
# ignores a trailing comment), and `_` in the spec and activation names (which must be identifiers).
SPECIAL_SPEC = '''
name = "we_ird__name_"
inputs = 2
loss = "mse"

[[layers]]
units = 2
activation = "my_act_"
formula = "x*sigmoid(x)**2"

[[layers]]
units = 1
activation = "identity"
'''


def pdflatex_or_skip() -> str:
    """The pdflatex executable; without it the test skips locally but fails in CI (CI is set)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: .ci/run must install texlive-latex-base")
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base); set CI to make this a failure")
    return exe


def compile_all(texts: dict, tmp: Path) -> dict:
    """Compile every {name: tex} with pdflatex (in parallel); name -> (returncode, log excerpt, pdf path)."""
    exe = pdflatex_or_skip()

    def one(item):
        name, text = item
        folder = tmp / name
        folder.mkdir()
        (folder / "doc.tex").write_text(text, encoding="utf-8")
        run = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
                             cwd=folder, capture_output=True, text=True, errors="replace", timeout=120)
        errors = [line for line in run.stdout.splitlines() if line.startswith("!")]
        return name, (run.returncode, "\n".join(errors) or run.stdout[-800:], folder / "doc.pdf")

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        return dict(pool.map(one, texts.items()))


@pytest.fixture(scope="module")
def example_docs():
    return {path.stem: document_outputs(load_spec(path)) for path in EXAMPLES}


@pytest.fixture(scope="module")
def unseen_docs():
    return {net.name: render_document(net) for net in UNSEEN}


# --- the documents ------------------------------------------------------------------------------------

def test_committed_documents_are_fresh(example_docs):
    for stem, outputs in example_docs.items():
        for name, text in outputs.items():
            path = ROOT / "generated" / name
            assert path.exists(), f"{path} missing: run nnderive build examples/*.toml"
            assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run nnderive build examples/*.toml"


def test_documents_compile_to_pdf(example_docs, unseen_docs, tmp_path):
    texts = {stem: outputs[f"{load_spec(ROOT / 'examples' / (stem + '.toml')).name}.tex"]
             for stem, outputs in example_docs.items()}
    texts.update({f"unseen_{name}": text for name, text in unseen_docs.items()})
    assert all(r"\section{Curvature: Hessian- and Gauss-Newton-vector products}" in t for t in texts.values())
    texts["expanded"] = render_document(load_spec(ROOT / "examples" / "mlp_4_2_3.toml"), expanded=True)
    results = compile_all(texts, tmp_path)
    for name, (code, log, pdf) in results.items():
        assert code == 0 and pdf.exists() and pdf.stat().st_size > 10_000, f"{name} did not compile:\n{log}"
        # no line too wide or stretched, no equation block taller than its page
        assert not bad_boxes(pdf.with_suffix(".log")), f"{name}: {bad_boxes(pdf.with_suffix('.log'))}"
    assert len(results) == len(EXAMPLES) + len(UNSEEN) + 1


def bad_boxes(log: Path) -> list[str]:
    """The Overfull and Underfull boxes pdflatex reported."""
    return [line for line in log.read_text(errors="replace").splitlines()
            if re.match(r"(Overfull|Underfull) \\[hv]box", line)]


@pytest.mark.parametrize("net", UNSEEN + [load_spec(p) for p in EXAMPLES], ids=lambda n: n.name)
def test_document_contains_deltas_and_gradients(net, example_docs, unseen_docs):
    tex = unseen_docs.get(net.name) or next(o[f"{net.name}.tex"] for o in example_docs.values()
                                            if f"{net.name}.tex" in o)
    L = net.depth
    assert tex.startswith(f"% Code generated by nnderive from ") and tex.splitlines()[0].endswith("DO NOT EDIT.")
    for l in range(1, L + 1):
        assert r"\delta^{(%d)} &= " % l in tex
        assert r"\frac{\partial L}{\partial W^{(%d)}} &= \mathrm{d}W^{(%d)} = {\delta^{(%d)}}^{\top} %s" % (
            l, l, l, "x" if l == 1 else "a^{(%d)}" % (l - 1)) in tex
        assert r"\frac{\partial L}{\partial b^{(%d)}} &= \mathrm{d}b^{(%d)}" % (l, l) in tex
    for l in range(1, L):
        assert r"g^{(%d)} &= \delta^{(%d)} W^{(%d)}" % (l, l + 1, l + 1) in tex
    weights = sum(a * b for a, b in zip(net.sizes, net.sizes[1:]))
    assert f"{weights} weights and {sum(net.sizes[1:])} biases" in tex


def test_fused_deltas_are_typeset_with_their_condition(example_docs):
    digits = example_docs["digits_64_32_10"]["digits_64_32_10.tex"]      # sparse_cce: one-hot by construction
    assert r"&= a_{j} - y_{j} &&\text{using }\sum_{k=1}^{K} y_{k} = 1" in digits
    assert r"\delta^{(2)} &= \frac{a^{(2)} - y}{n}" in digits
    mnist = example_docs["mnist_784_128_10"]["mnist_784_128_10.tex"]        # cce: nothing assumed of the targets
    assert r"&= a_{j} \sum_{k=1}^{K} y_{k} - y_{j} &&\text{for any targets" in mnist
    logreg = example_docs["logistic_regression"]["logistic_regression.tex"]
    assert r"&= a - y &&\text{fused, simplified by SymPy}" in logreg
    seed = example_docs["mlp_4_2_3"]["mlp_4_2_3.tex"]
    # sigmoid' as SymPy derived it, then rewritten in its output
    assert r"\sigma'(z) &= \frac{e^{- z}}{(1 + e^{- z})^{2}}" in seed
    assert r"&= a (1 - a) &&a = \sigma(z)" in seed
    assert r"&= g^{(1)} [a^{(1)} > 0]" in seed         # relu' in its output: [a > 0]


def test_documents_are_deterministic():
    net = load_spec(ROOT / "examples" / "mish_custom.toml")
    assert document_outputs(net) == document_outputs(net)


def test_special_characters_are_escaped_and_compile(tmp_path):
    spec = tmp_path / "we%ird&#$_{x}~^ \u2211 name.toml"
    spec.write_text(SPECIAL_SPEC, encoding="utf-8")
    net = load_spec(spec)
    outputs = document_outputs(net)
    tex, md = outputs["we_ird__name_.tex"], outputs["we_ird__name_.md"]
    assert tex.count("\n") > 100 and tex.splitlines()[0].startswith("% Code generated by nnderive from 'we%ird")
    assert r"\texttt{we\%ird\&\#\$\_\{x\}\textasciitilde{}\textasciicircum{} [U+2211] name.toml}" in tex
    assert "my\\_act\\_" in tex
    # A formula can carry no special characters but * (a trailing # comment is refused): the file
    # name above carries them; tests/test_hostile_names.py tries many more.
    assert r"\texttt{x*sigmoid(x)**2}" in tex and "`x*sigmoid(x)**2`" in md
    results = compile_all({"special": tex}, tmp_path)
    code, log, pdf = results["special"]
    assert code == 0 and pdf.exists(), log


def test_header_stays_one_line_whatever_the_file_name(tmp_path):
    odd = tmp_path / "two\nlines -->.toml"
    odd.write_text(SPECIAL_SPEC, encoding="utf-8")
    outputs = document_outputs(load_spec(odd))
    tex_head, tex_next = outputs["we_ird__name_.tex"].split("\n")[:2]
    md_head, md_next = outputs["we_ird__name_.md"].split("\n")[:2]
    assert tex_head.startswith("% Code generated by nnderive from 'two") and tex_head.endswith("DO NOT EDIT.")
    assert tex_next.startswith("\\documentclass")
    assert md_head.startswith("<!-- Code generated by nnderive from 'two") and md_head.endswith("DO NOT EDIT. -->")
    assert md_head.count("-->") == 1 and md_next.startswith("# Backpropagation")


def test_markdown_renders_on_github(example_docs):
    for outputs in example_docs.values():
        (md,) = [text for name, text in outputs.items() if name.endswith(".md")]
        assert md.startswith("<!-- Code generated by nnderive from ") and "DO NOT EDIT. -->\n" in md
        assert r"\VAR" not in md and r"\BLOCK" not in md
        for latex_only in (r"\begin{align*}", r"\qbezier", r"\section", r"\texttt", r"\documentclass"):
            assert latex_only not in md
        assert "```mermaid\nflowchart LR\n" in md
        body = re.sub(r"```.*?```", "", md, flags=re.S)
        blocks = re.findall(r"^\$\$$", body, flags=re.M)
        assert blocks and len(blocks) % 2 == 0, "every $$ stands on its own line, opened and closed"
        outside = re.sub(r"^\$\$\n.*?^\$\$$", "", body, flags=re.S | re.M)
        for line in outside.splitlines():
            dollars = len(re.findall(r"(?<!\\)\$", re.sub(r"`[^`]*`", "", line)))
            assert dollars % 2 == 0, f"unbalanced inline math: {line}"
        assert r"\frac{\partial L}{\partial W^{(1)}}" in md
        for block in re.findall(r"^\$\$\n(.*?)^\$\$$", body, flags=re.S | re.M):
            assert not re.search(r"\\\\(?!\n)", block), "GitHub drops a \\\\ that does not end its line"
            assert "\\:" not in block
        assert not re.search(r"(?<!\\)\\[{}]", body), "GitHub drops the braces of \\{ \\}: \\lbrace, \\rbrace"
        assert r"\mathcal{R}\lbrace\delta^{(1)}\rbrace" in md


# --- the curvature section ---------------------------------------------------------------------------

def _rows_of(tex: str, start: str, end: str) -> str:
    """The LaTeX between two headings of the document."""
    return tex[tex.index(start):tex.index(end, tex.index(start))]


def test_curvature_section_tanh_has_the_second_order_term(example_docs):
    tex = example_docs["tanh_regression"]["tanh_regression.tex"]
    forward = _rows_of(tex, r"\subsection*{Forward along", r"\subsection*{Backward along")
    assert r"\mathcal{R}\{z^{(1)}\} &= x {V^{(1)}}^{\top} + \mathbf{1}_{n} {v^{(1)}}^{\top}" in forward
    assert r"\mathcal{R}\{a^{(1)}\} &= \mathcal{R}\{z^{(1)}\} (1 - (a^{(1)})^{2})" in forward
    assert r"\mathcal{R}\{a^{(3)}\} &= \mathcal{R}\{z^{(3)}\}" in forward          # identity: R is linear
    backward = _rows_of(tex, r"\subsection*{Backward along", r"\subsection*{Gauss-Newton")
    assert r"\mathcal{R}\{\delta^{(3)}\} &= \frac{\mathcal{R}\{z^{(3)}\}}{n}" in backward
    for l in (1, 2):
        # R{g f'} = R{g} f' + g R{f'}: the second term from sp.diff of tanh' = 1 - a^2, in g = delta W
        assert (r"\mathcal{R}\{g^{(%d)}\} &= \mathcal{R}\{\delta^{(%d)}\} W^{(%d)} + \delta^{(%d)} V^{(%d)}"
                % (l, l + 1, l + 1, l + 1, l + 1)) in backward
        assert (r"\mathcal{R}\{\delta^{(%d)}\} &= \mathcal{R}\{g^{(%d)}\} (1 - (a^{(%d)})^{2}) \\*"
                "\n" r"   &\quad - 2 \mathcal{R}\{a^{(%d)}\} a^{(%d)} g^{(%d)} &&\text{second-order term}"
                % (l, l, l, l, l, l)) in backward
    assert r"\mathcal{R}\{\mathrm{d}W^{(2)}\} &= {\mathcal{R}\{\delta^{(2)}\}}^{\top} a^{(1)} + {\delta^{(2)}}^{\top} \mathcal{R}\{a^{(1)}\}" in backward
    assert r"\mathcal{R}\{\mathrm{d}b^{(1)}\} &= {\mathcal{R}\{\delta^{(1)}\}}^{\top} \mathbf{1}_{n}" in backward
    assert "Here layers 2 and 1 have one" in backward
    gn = _rows_of(tex, r"\subsection*{Gauss-Newton", r"\end{document}")
    assert "splits the\nnetwork at the output $a^{(3)}$" in gn          # mse on identity: not a fused delta
    assert r"\mathcal{R}_{G}\{\delta^{(3)}\} &= \frac{\mathcal{R}\{z^{(3)}\}}{n}" in gn
    assert r"\mathcal{R}_{G}\{\delta^{(1)}\} &= \mathcal{R}_{G}\{g^{(1)}\} (1 - (a^{(1)})^{2})" in gn
    assert r"\mathcal{R}_{G}\{g^{(1)}\} &= \mathcal{R}_{G}\{\delta^{(2)}\} W^{(2)}" in gn   # no V: J^T, all else fixed
    assert "second-order" not in gn and "V^{(" not in gn.split(r"\begin{align*}", 1)[1]


def test_curvature_section_relu_softmax_has_no_second_order_term(example_docs):
    tex = example_docs["relu2_softmax"]["relu2_softmax.tex"]
    forward = _rows_of(tex, r"\subsection*{Forward along", r"\subsection*{Backward along")
    # softmax: the directional derivative of the log-softmax, derived, then R{a} = a R{log a}
    assert (r"\mathcal{R}\{\log a^{(3)}\} &= \mathcal{R}\{z^{(3)}\} - (\mathcal{R}\{z^{(3)}\} \odot a^{(3)}) "
            r"\mathbf{1}_{2} \mathbf{1}_{2}^{\top}") in forward
    assert r"\mathcal{R}\{a^{(3)}\} &= \mathcal{R}\{\log a^{(3)}\} a^{(3)}" in forward
    backward = _rows_of(tex, r"\subsection*{Backward along", r"\subsection*{Gauss-Newton")
    assert r"\mathcal{R}\{\delta^{(1)}\} &= \mathcal{R}\{g^{(1)}\} [a^{(1)} > 0]" in backward
    assert "second-order term}" not in backward and "No hidden layer here has one" in backward
    gn = _rows_of(tex, r"\subsection*{Gauss-Newton", r"\end{document}")
    assert "splits the network at the pre-activations $z^{(3)}$" in gn     # softmax + cce: a matching loss
    # H_out J v is the softmax's directional derivative of R{z} (times the targets' sum), no K x K matrix
    assert r"\mathcal{R}_{G}\{\delta^{(3)}\} &= \frac{\mathcal{R}\{a^{(3)}\} \left(\textstyle\sum_{k} y_{k}\right)}{n}" in gn
    md = example_docs["relu2_softmax"]["relu2_softmax.md"]
    assert "## Curvature: Hessian- and Gauss-Newton-vector products" in md
    assert r"\mathcal{R}_{G}\lbrace\delta^{(3)}\rbrace &= \frac{\mathcal{R}\lbrace a^{(3)}\rbrace" in md


def test_curvature_section_is_printed_from_the_program():
    """Plant a change in one statement of each curvature pass: the typeset section follows it."""
    prog = program(load_spec(ROOT / "examples" / "tanh_regression.toml"))
    a1, Ra1, delta1 = symbol("a1"), symbol("Ra1"), symbol("delta1")

    def planted(pass_name, name, op, expr, reads=None):
        statements = getattr(prog, pass_name)
        k = next(i for i, s in enumerate(statements)
                 if s.name == name and s.op == op and (reads is None or s.expr.has(reads)))
        changed = statements[:k] + (dataclasses.replace(statements[k], expr=expr),) + statements[k + 1:]
        return render_document(dataclasses.replace(prog, **{pass_name: changed}))

    original = render_document(prog)
    second = r"&\quad - 2 \mathcal{R}\{a^{(1)}\} a^{(1)} g^{(1)} &&\text{second-order term}"
    assert second in original
    tex = planted("rbackward", "Rdelta1", "+=", -3 * Ra1 * a1 * delta1, reads=Ra1)   # the second-order term
    assert second not in tex and r"&\quad - 3 \mathcal{R}\{a^{(1)}\} a^{(1)} g^{(1)} &&\text{second-order term}" in tex
    tex = planted("rforward", "Ra1", "=", symbol("Rz1") * (1 - a1 ** 3))
    assert r"\mathcal{R}\{a^{(1)}\} &= \mathcal{R}\{z^{(1)}\} (1 - (a^{(1)})^{3})" in tex
    tex = planted("gnbackward", "Rdelta1", "*=", 1 - a1 ** 4)
    assert r"\mathcal{R}_{G}\{\delta^{(1)}\} &= \mathcal{R}_{G}\{g^{(1)}\} (1 - (a^{(1)})^{4})" in tex
    assert tex.replace("(a^{(1)})^{4}", "(a^{(1)})^{2}") == original       # nothing else moved


def test_curvature_names_print_in_the_document_notation():
    assert latex(symbol("Rdelta1")) == r"\mathcal{R}\{\delta^{(1)}\}"
    assert latex(symbol("RdW2")) == r"\mathcal{R}\{\mathrm{d}W^{(2)}\}"
    assert latex(symbol("vW2")) == "V^{(2)}" and latex(symbol("vb1")) == "v^{(1)}"
    assert latex(-2 * symbol("Ra1") * symbol("a1")) == r"- 2 \mathcal{R}\{a^{(1)}\} a^{(1)}"


# --- the typeset objects agree with the generated module ------------------------------------------

def _module(net: Network, tmp: Path):
    write_outputs(module_outputs(net), tmp)
    return load_module(tmp / f"{net.name}.py")


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def typeset_gradients(net: Network, params: dict, x: np.ndarray, y_onehot: np.ndarray) -> dict:
    """Evaluate the document's objects (the pieces) numerically: forward, deltas, dW, db."""
    p = pieces(net)
    n, L = x.shape[0], net.depth
    vals = {"x": x, "y": y_onehot, "ysum": y_onehot.sum(axis=1, keepdims=True), "n": n, **params}
    for l in range(1, L + 1):
        mat, bias = p.forward(l)
        vals[f"z{l}"] = numeric(mat + bias, vals)
        vals[f"a{l}"] = (_softmax(vals[f"z{l}"]) if net.is_vector(l)
                         else numeric(p.activation(l).f, vals))
    grads = {}
    for l in range(L, 0, -1):
        if l < L:
            vals[f"g{l}"] = numeric(p.upstream(l), vals)
        elif d_kind(net) == "jvp":
            vals[f"g{l}"] = numeric(p.upstream(l), vals) * np.ones_like(vals[f"a{l}"])
        vals[f"delta{l}"] = numeric(p.delta(l), vals) * np.ones_like(vals[f"a{l}"])
        grads[f"W{l}"] = numeric(p.dW(l), vals)
        grads[f"b{l}"] = numeric(p.db(l), vals).reshape(-1)
    return grads


def d_kind(net: Network) -> str:
    return derive(net).output.kind


def _batch(net: Network, rng, n=3):
    x = rng.normal(size=(n, net.inputs))
    k = net.sizes[-1]
    labels = rng.integers(0, k, size=n)
    onehot = np.eye(k)[labels]
    if net.loss == "sparse_cce":
        return x, labels, onehot
    if net.loss == "cce":
        return x, onehot, onehot
    y = rng.uniform(0.1, 0.9, size=(n, k)) if net.loss == "bce" else rng.normal(size=(n, k))
    return x, y, y


@pytest.mark.parametrize("net", [load_spec(ROOT / "examples" / f"{n}.toml") for n in
                                 ("mlp_4_2_3", "relu2_softmax", "logistic_regression", "mish_custom")]
                         + UNSEEN, ids=lambda n: n.name)
def test_typeset_objects_evaluate_to_the_modules_backward(net, tmp_path):
    rng = np.random.default_rng(7)
    module = _module(net, tmp_path)
    params = {k: rng.normal(0.3 if k[0] == "b" else 0.0, 0.8, size=s) for k, s in net.param_shapes().items()}
    x, y_module, y_onehot = _batch(net, rng)
    y_hat, cache = module.forward(params, x)
    want = module.backward(params, cache, y_module)
    got = typeset_gradients(net, params, x, y_onehot)
    for name in params:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=f"{net.name} {name}")


def test_written_out_partials_evaluate_to_the_modules_backward(tmp_path):
    net = load_spec(ROOT / "examples" / "mlp_4_2_3.toml")
    rng = np.random.default_rng(3)
    module = _module(net, tmp_path)
    params = {k: rng.normal(0.3 if k[0] == "b" else 0.0, 0.8, size=s) for k, s in net.param_shapes().items()}
    x, y, _ = _batch(net, rng, n=1)
    _, cache = module.forward(params, x)
    want = module.backward(params, cache, y)
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ params["W2"].T + params["b2"]
    a2 = 1 / (1 + np.exp(-z2))
    values = {f"x_{j}": x[0, j] for j in range(4)} | {f"y_{k}": y[0, k] for k in range(3)}
    for l, (z, a) in enumerate(((z1, a1), (z2, a2)), start=1):
        values |= {f"z{l}_{k}": z[0, k] for k in range(z.shape[1])} | {f"a{l}_{k}": a[0, k] for k in range(a.shape[1])}
    values |= {f"{k}_{i}_{j}": v for k, M in params.items() if M.ndim == 2 for (i, j), v in np.ndenumerate(M)}
    parts = expanded_partials(derive(net))
    assert len(parts) == 19
    for s, expr in parts.items():
        name, *idx = s.name.split("_")
        assert numeric(expr, values) == pytest.approx(want[name][tuple(int(i) for i in idx)], rel=1e-9, abs=1e-12)


def test_the_partials_check_catches_a_planted_error():
    d = derive(load_spec(ROOT / "examples" / "mlp_4_2_3.toml"))
    parts = expanded_partials(d)
    assert check_partials(d, parts) < 1e-30
    w = symbol("b2_1")
    parts[w] = parts[w] * sp.Rational(11, 10)     # a 10% error in one weight's partial
    assert check_partials(d, parts) > 1e-3


# --- the API for derivation scripts -------------------------------------------------------------------

def test_api_pieces_are_sympy_in_the_code_names():
    p = pieces(Network("seed", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse"))
    a1, a2, y, g1 = symbol("a1"), symbol("a2"), symbol("y"), symbol("g1")
    assert p.activation(2).fprime_a == a2 * (1 - a2)
    assert sp.simplify(p.output_delta - (a2 - y) * a2 * (1 - a2)) == 0
    assert p.delta(1) == g1 * sp.Heaviside(a1, 0)      # relu' in a: the mask [a1 > 0]
    assert p.dW(2).shape == (3, 2) and p.db(1).shape == (2, 1)
    assert p.output_delta.subs({a2: sp.Rational(1, 2), y: 1}) == -sp.Rational(1, 8)
    assert latex(p.output_delta) == r"a^{(2)} \left(1 - a^{(2)}\right) \left(a^{(2)} - y\right)"
    assert latex(p.dW(1)) == r"{\delta^{(1)}}^{\top} x"
    with pytest.raises(NnderiveError):
        p.delta(3)


def _balanced(line: str) -> bool:
    return line.count(r"\left") == line.count(r"\right")


def test_long_formulas_break_between_terms_and_keep_their_factors():
    a = symbol("a1_6")
    ws, qs = sp.symbols("w0:12"), sp.symbols("q0:12")
    total = sum(w * q * (1 - q) for w, q in zip(ws, qs))
    lines = split_lines((1 - a**2) * total, width=60)
    assert len(lines) > 2
    # a flat sum across lines: plain parentheses, the size of the text on every line
    assert lines[0].startswith(r"(1 - (a^{(1)}_{7})^{2}) (q_{0} w_{0} (1 - q_{0})")
    assert lines[-1].endswith(")") and all(line.startswith("+ ") for line in lines[1:])
    assert r"\left" not in " ".join(lines) and r"\Bigl" not in " ".join(lines)
    assert " ".join(lines) == fit_delimiters(r"\left(%s\right) \left(%s\right)" % (latex(1 - a**2), latex(total)))
    assert split_lines(-3 * a * total, width=60)[0].startswith(r"- 3 a^{(1)}_{7} (")


def _phantom(line: str, at: int) -> tuple[str, int]:
    """The argument of the \vphantom starting at line[at:], and where it ends."""
    depth, start = 0, at + len(r"\vphantom")
    for j in range(start, len(line)):
        depth += {"{": 1, "}": -1}.get(line[j], 0)
        if depth == 0:
            return line[start + 1:j], j + 1


def test_tall_parentheses_across_lines_are_as_tall_as_both_lines():
    r"""A group of fractions across lines: each line's \left ... \right pair balances, and each visible
    parenthesis carries a phantom of the group's part on the other line, so both are as tall as the
    taller of the two (a fixed \Bigl( is shorter than a fraction)."""
    u = sp.symbols("u0:12")
    total = sum(sp.exp(uk) / (1 + sp.exp(-uk)) ** 2 for uk in u)
    lines = split_lines(symbol("y") * total, width=60)
    assert len(lines) > 2 and all(_balanced(line) for line in lines)
    first, last = lines[0], lines[-1]
    assert first.startswith(r"y \left(\vphantom{") and first.endswith(r" \right.")
    assert last.startswith(r"\left.\vphantom{") and last.endswith(r"\right)")
    assert not any(r"\vphantom" in line or r"\left" in line for line in lines[1:-1])
    up, after_up = _phantom(first, first.index(r"\vphantom"))
    assert up == last[last.index("{}") + 2:-len(r"\right)")]                  # the closing line's part
    down, _ = _phantom(last, last.index(r"\vphantom"))
    assert down == first[after_up:-len(r" \right.")]                          # the opening line's part
    one_line = split_lines(symbol("y") * total, width=10_000)
    assert one_line == [fit_delimiters(latex(symbol("y") * total))] and r"\left(\frac" in one_line[0]
    for line in lines:
        assert visible_width(line) <= 60 + 12, line


def test_delimiters_fit_what_they_enclose():
    # the printer's \left( \right) grow to a superscript: around a flat formula they become plain
    assert fit_delimiters(r"\operatorname{ReLU}\left(z^{(1)}\right)") == r"\operatorname{ReLU}(z^{(1)})"
    assert fit_delimiters(r"\left[z^{(1)} > 0\right]") == "[z^{(1)} > 0]"
    assert fit_delimiters(r"\left(\left(a^{(1)}\right)^{2}\right)") == "((a^{(1)})^{2})"
    tall = r"\left(1 + \frac{1}{\left(1 + e^{- z}\right)^{2}}\right)"
    assert fit_delimiters(tall) == r"\left(1 + \frac{1}{(1 + e^{- z})^{2}}\right)"
    assert fit_delimiters(r"\left(\textstyle\sum_{k} y_{k}\right)") == r"\left(\textstyle\sum_{k} y_{k}\right)"
    assert fit_delimiters(r"\left(\vphantom{\frac{1}{2}} a \right.") == r"\left(\vphantom{\frac{1}{2}} a \right."
    # the document's activations: ReLU(z^{(1)}) with parentheses the size of the text
    net = Network("fit", 2, [Dense(2, "relu"), Dense(1, "sigmoid")], loss="bce")
    tex = render_document(net)
    assert r"a^{(1)} &= \operatorname{ReLU}(z^{(1)})" in tex
    assert not re.search(r"\\left\(z\^\{\(\d\)\}\\right\)", tex)


def test_api_activation_identities():
    assert activation("sigmoid").fprime_a == sp.Symbol("a", real=True) * (1 - sp.Symbol("a", real=True))
    assert activation("tanh").fprime_a == 1 - sp.Symbol("a", real=True) ** 2
    assert activation("relu").fprime_a == sp.Heaviside(sp.Symbol("a", real=True), 0)    # the mask [a > 0]
    with pytest.raises(NnderiveError):
        activation("softmax")
    assert softmax_steps().jvp.has(sp.Sum)


# --- the command ----------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "codegen.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_cli_latex_writes_stdout_files_and_expanded(tmp_path, capsys):
    spec = ROOT / "examples" / "mlp_4_2_3.toml"
    assert main(["latex", str(spec)]) == 0
    assert capsys.readouterr().out == render_document(load_spec(spec))
    md = tmp_path / "seed.md"
    assert main(["latex", str(spec), "-o", str(md)]) == 0
    assert md.read_text().startswith("<!-- Code generated by nnderive")
    tex = tmp_path / "seed.tex"
    assert main(["latex", str(spec), "--expanded", "-o", str(tex)]) == 0
    text = tex.read_text()
    assert r"\section{Every partial derivative}" in text
    assert text.count(r"\frac{\partial \ell}{\partial W^{(1)}_{") == 8
    assert text.count(r"\frac{\partial \ell}{\partial b^{(2)}_{") == 3
    code, log, pdf = compile_all({"expanded": text}, tmp_path)["expanded"]
    assert code == 0 and pdf.exists(), log


def test_cli_latex_errors_are_one_line(tmp_path, capsys):
    big = run_cli("latex", ROOT / "examples" / "mnist_784_128_10.toml", "--expanded")
    assert big.returncode == 2 and big.stderr.count("\n") == 1 and "at most 128 parameters" in big.stderr
    assert main(["latex", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    mine = tmp_path / "mine.tex"
    mine.write_text("my own notes\n")
    assert main(["latex", str(ROOT / "examples" / "mlp_4_2_3.toml"), "-o", str(mine)]) == 2
    assert "--force" in capsys.readouterr().err and mine.read_text() == "my own notes\n"


def test_docstring_examples():
    import doctest

    import codegen.document
    import derive.latex
    for module in (derive.latex, codegen.document):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
