"""Every command, including its error exits: one line, exit 2, no traceback, nothing written."""
import pytest

from conftest import ROOT, run_cli

GOOD = """name = "tiny"
inputs = 3
loss = "mse"

[[layers]]
units = 2
activation = "tanh"

[[layers]]
units = 1
activation = "identity"
"""

BAD = {
    "unknown activation": (GOOD.replace('"tanh"', '"tanhh"'), "did you mean 'tanh'"),
    "unknown loss": (GOOD.replace('"mse"', '"msee"'), "did you mean 'mse'"),
    "zero units": (GOOD.replace("units = 2", "units = 0"), "units"),
    "negative inputs": (GOOD.replace("inputs = 3", "inputs = -3"), "inputs"),
    "float units": (GOOD.replace("units = 2", "units = 2.5"), "units"),
    "string inputs": (GOOD.replace("inputs = 3", 'inputs = "3"'), "inputs"),
    "unknown top key": (GOOD + 'optimizer = "adam"\n', "optimizer"),
    "unknown layer key": (GOOD.replace('activation = "tanh"', 'activation = "tanh"\nalpha = 0.1'), "alpha"),
    "not an identifier": (GOOD.replace('"tiny"', '"my-net"'), "identifier"),
    "keyword name": (GOOD.replace('"tiny"', '"class"'), "name"),
    "unsafe formula": (GOOD.replace('activation = "tanh"', 'activation = "evil"\nformula = "__import__(\'os\')"'),
                       "formula"),
    "malformed formula": (GOOD.replace('activation = "tanh"', 'activation = "mine"\nformula = "x*(1 +"'), "formula"),
    "not TOML": ("name = tiny\n[[", "TOML"),
    "missing layers": ('name = "tiny"\ninputs = 3\nloss = "mse"\n', "layers"),
    "cce without softmax": (GOOD.replace('"mse"', '"cce"'), "softmax"),
}


def assert_user_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_is_one_line_exit_2_nothing_written(case, tmp_path):
    text, needle = BAD[case]
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    r = run_cli("generate", spec, "-o", out)
    assert_user_error(r, str(spec), needle)
    assert not out.exists() or not any(out.iterdir())


def test_missing_file(tmp_path):
    assert_user_error(run_cli("generate", tmp_path / "nope.toml", "-o", tmp_path), "nope.toml", "no such file")
    assert_user_error(run_cli("verify", tmp_path / "nope.toml"), "nope.toml")


def test_one_bad_spec_among_good_writes_nothing(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace('"tanh"', '"tanhh"').replace('"tiny"', '"tiny2"'))
    out = tmp_path / "out"
    assert_user_error(run_cli("generate", good, bad, "-o", out), "bad.toml")
    assert not out.exists() or not any(out.iterdir())


def test_every_independent_spec_error_is_a_line_of_its_own(tmp_path):
    first = tmp_path / "first.toml"
    first.write_text(GOOD.replace('"tanh"', '"tanhh"').replace('"identity"', '"identiy"'))
    second = tmp_path / "second.toml"
    second.write_text(GOOD.replace("inputs = 3", "inputs = 0").replace('"tiny"', '"tiny2"'))
    out = tmp_path / "out"
    r = run_cli("generate", first, second, "-o", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == "", r.stderr
    expected = [(first, "line 7, layers[1].activation: unknown activation 'tanhh'", "did you mean 'tanh'?"),
                (first, "line 11, layers[2].activation: unknown activation 'identiy'", "did you mean 'identity'?"),
                (second, "line 2, inputs: inputs must be a whole number", "e.g. inputs = 4")]
    lines = r.stderr.splitlines()
    assert len(lines) == len(expected), r.stderr
    for line, (spec, place_and_problem, fix) in zip(lines, expected):
        assert line.startswith(f"nnderive: error: {spec}: {place_and_problem}") and fix in line, line
    assert not out.exists() or not any(out.iterdir())


def test_generate_and_verify(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(GOOD)
    r = run_cli("generate", spec, "-o", tmp_path)
    assert r.returncode == 0 and (tmp_path / "tiny.py").exists()
    r = run_cli("verify", spec, "--module", tmp_path / "tiny.py")
    assert r.returncode == 0 and "W1" in r.stdout
    r = run_cli("verify", spec)
    assert r.returncode == 0
    assert r.stderr == "" and "\r" not in r.stdout       # not a terminal: no progress drawn


def test_generate_refuses_to_overwrite_a_foreign_file(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(GOOD)
    (tmp_path / "tiny.py").write_text("# my own code\n")
    assert_user_error(run_cli("generate", spec, "-o", tmp_path), "tiny.py", "--force")
    assert (tmp_path / "tiny.py").read_text() == "# my own code\n"
    assert run_cli("generate", spec, "-o", tmp_path, "--force").returncode == 0


def test_verify_rejects_a_module_of_another_network(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(GOOD)
    assert_user_error(run_cli("verify", spec, "--module", ROOT / "generated" / "mlp_4_2_3.py"), "PARAM_SHAPES")


def test_build_prints_equations_and_table(tmp_path):
    r = run_cli("build", ROOT / "examples" / "mlp_4_2_3.toml", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "a2*(1 - a2)" in r.stdout and "gen vs sym" in r.stdout and "delta1" in r.stdout
    assert (tmp_path / "mlp_4_2_3.py").exists()


def test_help_is_fast_and_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for command in ("build", "generate", "latex", "verify", "check", "train"):
        assert command in r.stdout


def test_version_needs_no_command():
    import codegen
    import derive
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"nnderive {codegen.__version__}"
    assert derive.__version__ == codegen.__version__ != "0+unknown"


def test_version_falls_back_when_not_installed(monkeypatch):
    import importlib
    import importlib.metadata

    import codegen
    import derive
    installed = codegen.__version__

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.delattr(codegen, "__version__")      # read again, lazily
    try:
        assert codegen.__version__ == "0+unknown"
        assert importlib.reload(derive).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(derive)
    assert codegen.__version__ == derive.__version__ == installed


def test_list_shows_every_registry_entry_in_80_columns():
    from derive.activations import ACTIVATIONS
    from derive.losses import LOSSES
    from derive.optimizers import OPTIMIZERS
    r = run_cli("list")
    assert r.returncode == 0, r.stderr
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout
    names = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    assert set(ACTIVATIONS) | set(LOSSES) | set(OPTIMIZERS) <= names
    for text in ("1/(1 + exp(-x))", "x if x > 0, else alpha*x", "alpha=0.01", "beta=1",   # formulas, defaults
                 "-y*log(yhat)", "integer class labels",                                 # losses, targets
                 "lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08", "nesterov=False"):       # hyperparameters
        assert text in r.stdout, text


def test_list_reads_the_registries():
    """Nothing is typed in the listing: a newly registered activation, loss or optimizer shows up."""
    import sympy as sp

    from codegen.listing import listing
    from derive.activations import ACTIVATIONS, register
    from derive.naming import X
    from derive.optimizers import OPTIMIZERS, Optimizer
    from derive.optimizers import register as register_optimizer
    register("softsign_test", X / (1 + sp.Abs(X)), gamma=0.5)
    register_optimizer(Optimizer("plain_test", "A test optimizer.", ((sp.Symbol("lr"), 0.25),), (), ()))
    try:
        text = listing()
    finally:
        del ACTIVATIONS["softsign_test"], OPTIMIZERS["plain_test"]
    assert "softsign_test" in text and "x/(Abs(x) + 1)" in text and "gamma=0.5" in text
    assert "plain_test" in text and "A test optimizer." in text and "lr=0.25" in text


def _subparser(name):
    from codegen.cli import parser
    (sub,) = [a for a in parser(name)._actions if a.dest == "command"]
    return sub.choices[name]


@pytest.mark.parametrize("name", ["build", "generate", "latex", "verify", "check", "list", "train", "surface",
                                  "gradcheck"])
def test_every_command_has_a_description_and_helped_arguments(name):
    p = _subparser(name)
    assert p.description and len(p.description) > 40, name
    for action in p._actions:
        assert action.help, (name, action.dest)          # SPEC, -o DIR ... every argument says what it is
    if any(a.dest == "output" and a.default for a in p._actions):
        assert "(default: generated)" in " ".join(p.format_help().split()), name


def test_train_help_says_what_the_data_files_hold():
    text = " ".join(_subparser("train").format_help().split())
    for needle in ("in the last column", "a header", "arrays x of shape (n, features...) and y",
                   "integer class labels (n,)"):
        assert needle in text, needle
