"""The Program at the centre: derived once per command, printed and proven as one, deterministic, extensible."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from conftest import expects_spec_warning
import derive.program as program_module
from codegen import cli
from codegen.build import module_outputs, write_outputs
from derive import ACTIVATIONS, Dense, Network, load_spec
from derive.activations import register
from derive.naming import X
from derive.program import program
from derive.proof import prove

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_t_{path.stem}_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated(net: Network, tmp_path: Path):
    write_outputs(module_outputs(net), tmp_path)
    return load(tmp_path / f"{net.name}.py")


# --- one derivation per spec per command -------------------------------------------------------------

@pytest.fixture()
def count_derivations(monkeypatch):
    calls = []
    real = program_module.derive

    def counting(net):
        calls.append(net.name)
        return real(net)

    monkeypatch.setattr(program_module, "derive", counting)
    return calls


@pytest.mark.parametrize("command", [["build"], ["generate"], ["latex"], ["verify"]])
def test_every_command_derives_each_spec_once(command, count_derivations, tmp_path, capsys):
    specs = [str(ROOT / "examples" / "mish_custom.toml"), str(ROOT / "examples" / "relu2_softmax.toml")]
    if command[0] in ("latex", "verify"):
        specs = specs[:1]
    out = [] if command[0] == "verify" else ["-o", str(tmp_path / ("doc.tex" if command[0] == "latex" else "out"))]
    assert cli.main(command + specs + out) == 0
    assert sorted(count_derivations) == sorted(load_spec(s).name for s in specs)


def test_a_custom_formula_is_parsed_once_per_network(monkeypatch):
    import derive.formula as formula
    calls = []
    real = formula.parse_formula
    monkeypatch.setattr(formula, "parse_formula", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    net = load_spec(ROOT / "examples" / "mish_custom.toml")
    prog = program(net)
    module_outputs(prog)
    from codegen.document import document_outputs
    document_outputs(prog)
    assert len(calls) == 1


# --- nothing typed twice: consumers print the Program --------------------------------------------------

def test_no_consumer_types_the_recurrence_or_the_jvp():
    """The recurrence, dW/db and the softmax JVP appear nowhere as text outside the derivation."""
    import re
    pattern = re.compile(r"delta\{?l?\+?1?\}? ?@|\.T ?@ ?a\{|sum\(g ?\* ?a|\(g - \(g \* |"
                         r"\.sum\(axis=0\)|g \* a\)|ones\.dot\(delta")
    files = [*(ROOT / "codegen").glob("*.py"), *(ROOT / "codegen" / "templates").glob("*"),
             *(ROOT / "derive").glob("latex*.py"), *(ROOT / "derive").glob("report*.py"),
             *(ROOT / "derive").glob("verify*.py"), ROOT / "derive" / "pieces.py"]
    for path in files:
        where = ""
        for i, line in enumerate(path.read_text().splitlines(), 1):
            where = re.match(r"\s*def (\w+)", line).group(1) if re.match(r"\s*def \w+", line) else where
            if where.startswith("_print_"):
                continue        # a printer's spelling of one node, not a formula
            assert not pattern.search(line), f"{path.name}:{i}: {line.strip()}"


@expects_spec_warning("slow_softmax")         # mse on a softmax: the statements of the unfused output delta
def test_the_printed_statements_are_the_programs(tmp_path):
    """Every backward statement of the Program appears, printed, in the module (and nothing else computes)."""
    from codegen.printer import NumPyPrinter
    net = Network("n", 3, [Dense(4, "tanh"), Dense(3, "softmax")], loss="mse")
    prog = program(net)
    text = module_outputs(prog)["n.py"]
    printer = NumPyPrinter(params=prog.params)
    for s in prog.backward:
        code = printer.factor(s.expr) if s.op == "*=" else printer.doprint(s.expr)
        assert f"    {s.name} {s.op} {code}\n" in text, s


# --- deterministic on any machine ----------------------------------------------------------------------

def test_generated_is_byte_identical_on_a_loaded_machine(tmp_path):
    """Two CPU hogs run beside a fresh generation; the bytes equal the committed generated/ files."""
    hog = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(hog) for _ in range(2)]
    try:
        run = subprocess.run([sys.executable, "-m", "codegen.cli", "generate", *map(str, EXAMPLES), "-o", str(tmp_path)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
    finally:
        for h in hogs:
            h.kill()
    assert run.returncode == 0, run.stderr
    for spec in EXAMPLES:
        name = load_spec(spec).name
        assert (tmp_path / f"{name}.py").read_bytes() == (ROOT / "generated" / f"{name}.py").read_bytes(), name


# --- a new activation is one registry entry ---------------------------------------------------------

@pytest.fixture()
def softsign():
    entry = register("softsign", X / (1 + sp.Abs(X)), "softsign")
    yield entry
    del ACTIVATIONS["softsign"]


def test_a_run_time_registered_activation_needs_nothing_else(softsign, tmp_path):
    """softsign x/(1+|x|), registered at run time: a verified module, a compiling document, stable at 1e4."""
    torch = pytest.importorskip("torch")
    from codegen.document import document_outputs
    from derive.verify import check_module
    net = Network("softsign_net", 3, [Dense(5, "softsign"), Dense(2, "softsign")], loss="mse")
    assert max(dict(prove(net)).values()) < 1e-30
    m = generated(net, tmp_path)
    report = check_module(net, m)
    assert report.ok, report.table()
    rng = np.random.default_rng(0)
    params = m.init_params(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    loss, grads = m.loss_and_grad(params, x, y)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(x)
    for l in (1, 2):
        h = h @ tp[f"W{l}"].T + tp[f"b{l}"]
        h = h / (1 + h.abs())
    t_loss = (0.5 * ((h - torch.tensor(y)) ** 2).sum(1)).mean()
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-10, atol=1e-14)
    with np.errstate(all="raise"):                    # stable: no overflow, no NaN at |z| = 1e4
        big = {k: v * 1e4 for k, v in params.items()}
        loss, grads = m.loss_and_grad(big, x, y)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    docs = document_outputs(net)
    assert "softsign" in docs["softsign_net.tex"]
    if os.environ.get("CI") or subprocess.run(["which", "pdflatex"], capture_output=True).returncode == 0:
        (tmp_path / "doc.tex").write_text(docs["softsign_net.tex"])
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:]


def test_curvature_passes_do_not_depend_on_the_widths():
    """The R-operator passes are derived from the width-free statements: the same for 2 units or 300."""
    from derive.spec import Dense, Network
    small = program(Network("n", 2, [Dense(2, "tanh"), Dense(2, "sigmoid"), Dense(2, "softmax")], loss="cce"))
    wide = program(Network("n", 300, [Dense(128, "tanh"), Dense(64, "sigmoid"), Dense(10, "softmax")], loss="cce"))
    for name in ("rforward", "rbackward", "gnbackward"):
        assert [str(s) for s in getattr(small, name)] == [str(s) for s in getattr(wide, name)]
        assert getattr(small, name)
