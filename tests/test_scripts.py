"""Every derivation script in examples/ runs and prints the seeds' worked results (computed by SymPy), and
every program in README.md whose output the README shows prints exactly that."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))

# The seeds' answers, typed by hand here; the scripts compute them with SymPy.
EXPECTED = {
    "chain_rule.py": [
        "h(x)  = (5*x + 3)**2",
        "f'(g(x)) * g'(x) = 10*(5*x + 3) = 50*x + 30",
        "h'(x) = 50*x + 30",
        "chain rule == direct derivative: True",
        "LaTeX: h'(x) = 50 x + 30",
    ],
    "partial_derivatives.py": [
        "df/dx = 2*x*y",
        "df/dy = x**2",
        "grad f = [2*x*y, x**2]",
        "grad f at (3, 2) = [12, 9]",
    ],
    "activation_identities.py": [
        "f'(z) = a*(1 - a)  in a = f(z) (identity holds: True)",       # sigmoid
        "f'(z) = 1 - a**2  in a = f(z) (identity holds: True)",        # tanh
        "LaTeX: a \\left(1 - a\\right)",
        "sigmoid'(0) = 1/4; in a: a = sigmoid(0) = 1/2, a*(1 - a) = 1/4",
    ],
    "mlp_4_2_3_partials.py": [
        "sigmoid'(z2) = exp(-z2)/(1 + exp(-z2))**2 = a2*(1 - a2)",
        "output delta (one example): a2*(1 - a2)*(a2 - y)",
        "delta1 = g1*Heaviside(a1, 0),  g1 = delta2 @ W2",
        "dL/dW1 = delta1.T @ x  shape (2, 4)",
        "dL/db1 = delta1.T @ 1_n  shape (2,)",
        "dL/dW2 = delta2.T @ a1  shape (3, 2)",
        "dL/db2 = delta2.T @ 1_n  shape (3,)",
    ],
}


def run(script: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


# --- README.md: what it shows a program printing is what the program prints --------------------------------
# Two forms: a block that starts with `$ python examples/NAME.py`, the rest of it that script's output; and a
# ```python block followed by a paragraph starting "prints" and a block, its output.

def readme_programs(text: str) -> list[tuple[str, str, str]]:
    """(what, the program: a script path or Python source, the output shown), for every program README shows."""
    fences = list(re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.M | re.S))
    found = []
    for this, after in zip(fences, fences[1:] + [None]):
        language, body = this.group(1), this.group(2)
        first, _, rest = body.partition("\n")
        if language == "" and re.fullmatch(r"\$ python (examples/\w+\.py)", first):
            found.append((first, first.split()[-1], rest))
        elif (language == "python" and after is not None and after.group(1) == ""
              and text[this.end():after.start()].strip().startswith("prints")):
            found.append((f"the README block at line {text.count(chr(10), 0, this.start()) + 1}", body, after.group(2)))
    return found


def output_mismatch(what: str, shown: str, printed: str) -> str | None:
    """None when the output is what README shows, else the first line that differs, both ways."""
    if printed == shown:
        return None
    a, b = shown.splitlines(), printed.splitlines()
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (f"{what}: README line {i + 1} of its output shows {a[i] if i < len(a) else '(nothing)'!r}, "
            f"the program printed {b[i] if i < len(b) else '(nothing)'!r}")


README_PROGRAMS = readme_programs((ROOT / "README.md").read_text())


def test_readme_shows_programs_and_their_output():
    """The forms above are found (a README edit that breaks them is not silently unchecked), and a planted
    difference is reported."""
    assert {what for what, _, _ in README_PROGRAMS} >= {"$ python examples/activation_identities.py"}
    assert any(what.startswith("the README block") for what, _, _ in README_PROGRAMS)
    planted = "```python\nprint(1)\n```\n\nprints:\n\n```\n2\n```\n"
    [(what, source, shown)] = readme_programs(planted)
    assert source == "print(1)\n" and shown == "2\n"
    assert "shows '2', the program printed '1'" in output_mismatch(what, shown, "1\n")
    assert output_mismatch(what, shown, "2\n") is None


@pytest.mark.parametrize("what, program, shown", README_PROGRAMS, ids=[w for w, _, _ in README_PROGRAMS])
def test_readme_output_is_what_the_program_prints(tmp_path, what, program, shown):
    if program.startswith("examples/"):
        script = ROOT / program
    else:
        script = tmp_path / "readme_block.py"
        script.write_text(program)
    done = run(script)
    assert done.returncode == 0, done.stderr
    assert output_mismatch(what, shown, done.stdout) is None, output_mismatch(what, shown, done.stdout)


def test_every_script_has_expectations():
    assert {s.name for s in SCRIPTS} == set(EXPECTED), "add the new script's expected output to EXPECTED"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_prints_the_seeds_results(script):
    done = run(script)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    for want in EXPECTED[script.name]:
        assert want in lines, f"{script.name} did not print {want!r}:\n{done.stdout}"
    if script.name == "mlp_4_2_3_partials.py":
        # the four partials from the pieces == sp.diff of the loss written out weight by weight
        last = lines[-1]
        assert last.startswith("largest difference from sp.diff of the expanded loss: ")
        assert float(last.rsplit(" ", 1)[1]) < 1e-12


def shown_build_output(text: str) -> list[str]:
    """The lines README's quick start shows `nnderive build` printing ("..." marks lines left out, "; ..." a
    line cut short)."""
    start = text.index("`nnderive build` prints the derivation")
    block = re.search(r"^```\n(.*?)^```$", text[start:], flags=re.M | re.S).group(1)
    return [line for line in block.splitlines() if line.strip() not in ("", "...")]


def test_readme_quick_start_shows_what_build_prints(tmp_path):
    """Each line the quick start shows `nnderive build examples/mlp_4_2_3.toml` printing is printed, in order."""
    shown = shown_build_output((ROOT / "README.md").read_text())
    assert len(shown) > 15
    proc = subprocess.run([sys.executable, "-m", "codegen.cli", "build", "examples/mlp_4_2_3.toml", "-o", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    printed, at = proc.stdout.splitlines(), 0
    for line in shown:
        head = line.rstrip()[:-3] if line.rstrip().endswith("; ...") else None     # a line shown cut short
        matches = [i for i in range(at, len(printed))
                   if (printed[i].startswith(head) if head else printed[i].rstrip() == line.rstrip())]
        assert matches, f"README shows {line!r}, which build does not print (after line {at})"
        at = matches[0] + 1
