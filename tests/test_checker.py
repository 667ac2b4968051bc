"""The checker fails on planted errors: a check that cannot fail proves nothing."""
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

SPEC = ROOT / "examples" / "mlp_4_2_3.toml"
MODULE = ROOT / "generated" / "mlp_4_2_3.py"


def plant(tmp_path, pattern, replacement):
    text = MODULE.read_text()
    planted, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, f"pattern {pattern!r} not in the module"
    path = tmp_path / "mlp_4_2_3.py"
    path.write_text(planted)
    return path


def test_true_module_passes():
    r = run_cli("verify", SPEC, "--module", MODULE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dW1_off_by_a_tenth_of_a_percent_fails(tmp_path):
    bad = plant(tmp_path, r"dW1 = (.*)", r"dW1 = 1.001 * (\1)")
    r = run_cli("verify", SPEC, "--module", bad)
    assert r.returncode == 1
    assert "W1" in r.stderr and "generated" in r.stderr and "symbolic" in r.stderr


@pytest.mark.parametrize("pattern, replacement", [
    (r"(\n    delta2 = .*)a2\*\(1 - a2\)", r"\1a2*(1 - a2*a2)"),      # a wrong sigmoid derivative
    (r"(\n    delta1 \*= .*)\(a1 > 0\)", r"\1(a1 >= 0)"),              # a wrong relu mask: 1 everywhere
    (r"db2 = ones.dot\(delta2\)", "db2 = delta2.mean(axis=0)"),
])
def test_wrong_derivatives_fail(tmp_path, pattern, replacement):
    r = run_cli("verify", SPEC, "--module", plant(tmp_path, pattern, replacement))
    assert r.returncode == 1, r.stdout


def test_finite_differences_alone_catch_errors_on_wide_networks(tmp_path):
    """Beyond the symbolic width cap the module is still checked entry by entry."""
    from derive.spec import Dense, Network
    from derive.verify import check_module
    import numpy as np

    net = Network("wide", 3, [Dense(2, "tanh"), Dense(12, "softmax")], loss="cce")

    class Wrong:
        def __init__(self, module):
            self.m = module

        def __getattr__(self, name):
            return getattr(self.m, name)

        def loss_and_grad(self, p, x, y):
            loss, g = self.m.loss_and_grad(p, x, y)
            g["b1"] = g["b1"] * 1.01
            return loss, g

    from codegen.build import module_outputs, write_outputs
    from derive.verify import load_module
    write_outputs(module_outputs(net), tmp_path)
    module = load_module(tmp_path / "wide.py")
    assert check_module(net, module).ok
    report = check_module(net, Wrong(module))
    assert not report.ok and {r.param for r in report.rows if not r.ok} == {"b1"}
