"""Hostile and malformed specs: every command answers exit status 2 and one line, writes nothing,
executes nothing; formulas whose derivative is costly are bounded; a real bug keeps its traceback.

Each CLI run is a separate process: forked from this (already warm) interpreter so that 100 specs x 3
commands take seconds, plus a few through the real `nnderive` entry point in fresh interpreters.
"""
import ast
import builtins
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest
import sympy as sp
import sympy.parsing.sympy_parser

from conftest import count_calls, expects_spec_warning

from codegen import cli
from derive import elementwise
from derive.errors import DerivationError, SpecError
from derive.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((Path(__file__).parent / "hostile_specs").glob("*.toml"))
MARKER = "nnderive_pwned"     # the corpus's formulas would create this file in the working directory
COMMANDS = {"generate": ["generate", "{spec}", "-o", "out"], "build": ["build", "{spec}", "-o", "out"],
            "verify": ["verify", "{spec}"], "latex": ["latex", "{spec}", "-o", "out/doc.tex"],
            "train": ["train", "{spec}", "--data", "digits", "--epochs", "1"]}
SLOW_COMMANDS = ("generate", "build", "verify")     # for the special paths
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked CLI runs need os.fork")


@pytest.fixture(scope="module", autouse=True)
def warm_interpreter():
    """Import what the commands import, once, so that each forked run starts warm (~30 ms)."""
    import derive.report  # noqa: F401
    import derive.verify  # noqa: F401
    for command in ("latex", "train"):
        try:
            cli.parser().parse_known_args([command, "x.toml", "--data", "digits"])
        except SystemExit:
            pass
    cli.parser()


def run_forked(argv, cwd, timeout=60.0):
    """Run `nnderive ARGV` as a child process of this interpreter: (exit status, stdout, stderr).

    The child does what the console script does: codegen.cli.main, and an uncaught exception
    prints its traceback and exits 1 (as the interpreter would).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:   # the child: never returns into pytest
            code = 1
            try:
                os.chdir(cwd)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                try:
                    code = cli.main(argv)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"nnderive {' '.join(argv)} ran longer than {timeout} s")
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"), err.read().decode(errors="replace")


def assert_user_error(rc, out, err, work: Path):
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnderive: error: "), err
    assert len(lines[0]) < 600
    assert out == ""
    assert not (work / "out").exists() or not any((work / "out").iterdir()), sorted((work / "out").iterdir())
    assert not any(work.rglob(MARKER)), "a formula was executed"


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 40
    kinds = {p.name.split("_")[0] for p in CORPUS}
    assert {"name", "formula", "units", "layers", "missing", "misspelt", "loss", "penalty"} <= kinds
    assert len([p for p in CORPUS if p.stem.startswith("loss_formula")]) >= 20   # as hostile as the activations'



def _run_commands(spec, commands, tmp_path):
    for command in commands:
        work = tmp_path / command
        work.mkdir()
        rc, out, err = run_forked([a.format(spec=spec) for a in COMMANDS[command]], work)
        assert_user_error(rc, out, err, work)
        assert spec.name in err, err   # names the file


@needs_fork
@pytest.mark.parametrize("spec", CORPUS, ids=[p.stem for p in CORPUS])
def test_hostile_spec_gets_one_line_and_exit_status_2(spec, tmp_path):
    _run_commands(spec, ["generate"], tmp_path)


# One or two of each kind of hostility, through the commands that also load specs.
SAMPLE = [p for p in CORPUS if p.stem in {
    "binary_garbage", "deeply_nested_arrays", "duplicate_key", "empty", "formula_import", "formula_exp_tower",
    "formula_literal_with_huge_exponent", "formula_sympy_symbol_injection", "key_with_newline", "layers_string",
    "misspelt_activation", "name_newline_injection", "name_stdlib_os", "too_many_parameters", "units_bool",
    "cce_on_relu", "bce_on_identity", "custom_activation_injection_name", "loss_formula_import",
    "loss_formula_dunder_attribute", "loss_param_string", "penalty_negative"}]


@needs_fork
@pytest.mark.parametrize("spec", SAMPLE, ids=[p.stem for p in SAMPLE])
def test_hostile_spec_gets_one_line_and_exit_status_2_from_every_command(spec, tmp_path):
    _run_commands(spec, [c for c in COMMANDS if c != "generate"], tmp_path)


def test_sample_covers_every_command_and_kind():
    assert len(SAMPLE) == 22


def _fifo(tmp_path):
    path = tmp_path / "fifo.toml"
    os.mkfifo(path)
    return path


def _large(tmp_path):
    path = tmp_path / "large.toml"
    path.write_text('name = "big"\n' + "# padding\n" * 200_000)
    return path


SPECIAL = {
    "nonexistent path": lambda tmp: tmp / "no_such_spec.toml",
    "a directory": lambda tmp: tmp,
    "a FIFO (would block forever)": _fifo,
    "a character device": lambda tmp: Path(os.devnull),
    "larger than 1 MB": _large,
    "NUL in the path": lambda tmp: "spec\0.toml",
}


@needs_fork
@pytest.mark.parametrize("what", SPECIAL)
def test_special_paths_are_user_errors(what, tmp_path):
    spec = SPECIAL[what](tmp_path)
    for command in SLOW_COMMANDS:
        argv = COMMANDS[command]
        work = tmp_path / f"work_{command}"
        work.mkdir()
        rc, out, err = run_forked([a.format(spec=spec) for a in argv], work, timeout=30)
        assert_user_error(rc, out, err, work)


VALID = ROOT / "examples" / "logistic_regression.toml"


@needs_fork
def test_output_path_problems_are_user_errors(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("precious\n")
    rc, out, err = run_forked(["generate", str(VALID), "-o", str(a_file)], tmp_path)
    assert rc == 2 and len(err.splitlines()) == 1 and "is a file" in err
    assert a_file.read_text() == "precious\n"
    target_dir = tmp_path / "gen"
    (target_dir / "logistic_regression.py").mkdir(parents=True)
    rc, out, err = run_forked(["generate", str(VALID), "-o", str(target_dir)], tmp_path)
    assert rc == 2 and len(err.splitlines()) == 1 and "is a directory" in err


@needs_fork
@expects_spec_warning("slow_softmax", action="always")     # shown: the forked command prints it
def test_unusual_pairing_is_a_one_line_warning_and_does_not_stop_generation(tmp_path):
    spec = tmp_path / "odd.toml"
    spec.write_text('name = "odd"\ninputs = 2\nloss = "mse"\n[[layers]]\nunits = 3\nactivation = "softmax"\n')
    rc, out, err = run_forked(["generate", str(spec), "-o", "out"], tmp_path)
    assert rc == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnderive: warning: ") and "odd.toml: line 3, loss: mse" in err
    assert (tmp_path / "out" / "odd.py").exists()


@needs_fork
def test_usage_errors_are_one_line(tmp_path):
    for argv in (["generate"], ["frobnicate"], ["verify", "a.toml", "--bogus"], []):
        rc, out, err = run_forked(argv, tmp_path)
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("nnderive: error: "), (argv, err)


# --- the real entry point, in fresh interpreters -------------------------------------------------------

REPRESENTATIVE = {"formula_import.toml": "generate", "name_newline_injection.toml": "build",
                  "binary_garbage.toml": "verify"}


def _entry_point():
    exe = Path(sys.executable).parent / "nnderive"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "codegen.cli"]


def test_entry_point_gives_exit_status_2_and_one_line(tmp_path):
    """Through the installed `nnderive` script, several commands at once (each a fresh interpreter)."""
    runs = []
    for i, (name, command) in enumerate(REPRESENTATIVE.items()):
        work = tmp_path / f"w{i}"
        work.mkdir()
        argv = [a.format(spec=Path(__file__).parent / "hostile_specs" / name) for a in COMMANDS[command]]
        runs.append((work, subprocess.Popen(_entry_point() + argv, cwd=work, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)))
    for work, proc in runs:
        out, err = proc.communicate(timeout=120)
        assert_user_error(proc.returncode, out, err, work)


def test_a_real_bug_keeps_its_traceback_and_exit_status_1(tmp_path):
    """Only NnderiveError is a user error: anything else is a bug and must not be hidden."""
    script = ("import sys, codegen.build\n"
              "def broken(net): raise RuntimeError('planted bug')\n"
              "codegen.build.module_outputs = broken\n"
              "from codegen.cli import main\n"
              f"sys.exit(main(['generate', {str(VALID)!r}, '-o', 'out']))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: planted bug" in proc.stderr


# --- in-process: nothing reaches an evaluator -------------------------------------------------------

def test_loading_the_corpus_never_calls_an_evaluator(monkeypatch):
    specs = CORPUS + sorted((ROOT / "examples").glob("*.toml"))
    for spec in specs:              # once unpatched: lazy imports (codecs ...) run module code via exec
        try:
            load_spec(spec)
        except SpecError:
            pass
    called = []

    def refuse(*args, **kwargs):
        called.append(args[:1])
        raise AssertionError("a string reached an evaluator")

    real_compile = builtins.compile

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:      # ast.parse compiles to a syntax tree only: allowed
            return refuse(source)
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    for owner, name in [(sp, "sympify"), (sp, "parse_expr"), (sympy.parsing.sympy_parser, "parse_expr"),
                        (sp, "lambdify"), (builtins, "eval"), (builtins, "exec")]:
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(builtins, "compile", parse_only)
    outcomes = []
    for spec in specs:
        try:
            load_spec(spec)
            outcomes.append((spec.name, "ok"))
        except SpecError:
            outcomes.append((spec.name, "SpecError"))
        except AssertionError:
            outcomes.append((spec.name, "evaluator"))
    monkeypatch.undo()
    assert not called, called
    assert all(result == ("SpecError" if spec in CORPUS else "ok") for spec, (_, result) in zip(specs, outcomes))


# --- formulas: gaps found in review, each must fail fast ----------------------------------------------

SHORT_BUT_HUGE = ["1e99999999*x", "x + 1e-99999999", "1.5e+999999999*x", "x*0.1e-99999999", "1e308*x",
                  "1" + "0" * 400 + "*x"]


@pytest.mark.parametrize("text", SHORT_BUT_HUGE)
def test_short_literals_for_huge_numbers_fail_fast(text):
    """A ten-character literal can stand for a number with 10**8 digits: it is judged by its exponent."""
    from derive.formula import parse_formula
    error, calls = count_calls(parse_formula, text, "net.toml", "layers[1].formula", expect=SpecError)
    assert isinstance(error, SpecError) and ("beyond" in str(error) or "too small" in str(error)), error
    assert calls < 10_000       # function calls, not seconds: ~100 measured; the number itself is never built


# --- formulas that parse but are costly to differentiate: bounded ------------------------------------

def test_derivation_is_bounded_by_size_not_time(monkeypatch):
    """exp(exp(...(x))) would make SymPy try to invert it for seconds: the inversion is attempted only
    for formulas of at most MAX_INVERT_OPS operations, so the work is bounded by the formula's size,
    the same on every machine (no clock is read)."""
    from derive.formula import parse_formula
    f = parse_formula("exp(" * 12 + "x" + ")" * 12)
    assert sp.count_ops(f) > elementwise.MAX_INVERT_OPS
    elementwise.derive_elementwise.cache_clear()
    solves = []
    monkeypatch.setattr(sp, "solve", lambda *a, **k: solves.append(a) or [])   # unbounded: 3.5 s of solve()
    d, calls = count_calls(elementwise.derive_elementwise, f)
    monkeypatch.undo()
    assert solves == [] and calls < 500_000     # ~78k function calls measured, with SymPy's cache cold
    assert d.fprime == sp.diff(f, elementwise.X)
    elementwise.derive_elementwise.cache_clear()


# Function calls (conftest.count_calls), not seconds: the same on any machine. Measured in a fresh process:
# 1.05 million for the two costly derivations (the simplify this avoids runs for minutes), 90 thousand for
# the nested sigmoids' LaTeX (SymPy's own sign queries took 24 s there).
CALLS_COSTLY = 5_000_000
CALLS_NESTED = 500_000


def test_costly_loss_formulas_are_bounded_by_size_not_time():
    """(y_hat - y)**100 is three operations, but simplify would multiply out its softmax instance (5151
    terms per power, minutes): expansion_size bounds what is simplified, so the derivation falls back
    to the Jacobian-vector product at once, the same on every machine."""
    from derive.backprop import derive
    from derive.spec import Dense, Network
    def both():
        return [derive(Network("costly", 2, [Dense(3, act)], loss="costly", loss_formula="(y_hat - y)**100")).output.kind
                for act in ("softmax", "sigmoid")]

    kinds, calls = count_calls(both)
    assert set(kinds) <= {"jvp", "chain"}
    assert elementwise.expansion_size((elementwise.X + elementwise.A + 1) ** 99) > elementwise.MAX_EXPANDED_TERMS
    assert calls < CALLS_COSTLY


def test_documents_of_nested_sigmoids_are_typeset_in_seconds():
    """SymPy's LaTeX printer asks whether each nested exponent is a negative constant (24 s for a sigmoid
    nested 6 deep); nested exps are printed without asking."""
    from derive.formula import parse_formula
    from derive.latex_printer import latex
    fprime = elementwise.derive_elementwise(parse_formula("sigmoid(" * 6 + "x" + ")" * 6)).fprime
    tex, calls = count_calls(latex, fprime)
    assert tex.count("e^{") > 6 and calls < CALLS_NESTED     # function calls, not seconds


def test_no_clock_decides_what_is_derived():
    """No SIGALRM, timer or time limit in the library: the same spec gives the same bytes anywhere."""
    import re
    root = Path(__file__).resolve().parents[1]
    for folder in ("derive", "codegen"):
        for path in (root / folder).glob("*.py"):
            text = path.read_text()
            assert not re.search(r"SIGALRM|setitimer|signal\.alarm|time_limit\(", text), path
