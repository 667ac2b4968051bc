"""Every derivation script in examples/ runs and prints the seeds' worked results (computed by SymPy)."""
import os
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
        "sigmoid'(z) in a = sigmoid(z): a*(1 - a)  (identity holds: True)",
        "tanh'(z) in a = tanh(z): 1 - a**2  (identity holds: True)",
        "LaTeX: a \\left(1 - a\\right)",
        "relu' has no form in a = relu(z)",
        "sigmoid'(0) = 1/4 = 1/4",
    ],
    "mlp_4_2_3_partials.py": [
        "sigmoid'(z2) = exp(-z2)/(1 + exp(-z2))**2 = a2*(1 - a2)",
        "output delta (one example): a2*(1 - a2)*(a2 - y)",
        "delta1 = g1*Heaviside(z1, 0),  g1 = delta2*W2",
        "dL/dW1 = delta1.T*x  shape (2, 4)",
        "dL/db1 = delta1.T*1  shape (2, 1)",
        "dL/dW2 = delta2.T*a1  shape (3, 2)",
        "dL/db2 = delta2.T*1  shape (3, 1)",
    ],
}


def run(script: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


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
