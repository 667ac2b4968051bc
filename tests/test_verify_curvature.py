"""nnderive verify --curvature: true modules pass; planted second-order errors fail, and are named."""
import dataclasses
import re

import pytest
import sympy as sp

from conftest import ROOT, run_cli
from derive.program import program
from derive.proof import prove_curvature, small_instance
from derive.spec import Dense, Network, load_spec
from derive.verify import load_module
from derive.verify_curvature import check_curvature

TANH = load_spec(ROOT / "examples" / "tanh_regression.toml")     # tanh, tanh, identity + mse: split at a
MLP = load_spec(ROOT / "examples" / "mlp_4_2_3.toml")            # relu, sigmoid + mse
SOFTMAX = Network("soft", 3, [Dense(4, "sigmoid"), Dense(3, "softmax")], loss="cce")   # split at z


def _module(tmp_path, net, plant=None):
    from codegen.render import generate_module
    text = generate_module(net)
    if plant is not None:
        old, new = plant
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{net.name}.py"
    path.write_text(text)
    return load_module(path)


@pytest.mark.parametrize("net", [TANH, MLP, SOFTMAX], ids=lambda n: n.name)
def test_true_modules_pass(tmp_path, net):
    report = check_curvature(net, _module(tmp_path, net), prove=net is not MLP)
    assert report.ok, report.table()
    entries = {r.entry for r in report.rows if r.checked}
    assert {"hvp", "gnvp", "loss_grad_hvp", "dtype", "inputs unchanged"} <= entries
    assert net is MLP or {"symbolic hvp", "symbolic gnvp"} <= entries


# (network, text in the module, its replacement, the entry point and the name the failure must carry)
PLANTED = {
    "R-backward drops delta2^T R{a1} from RdW2": (TANH, "    RdW2 += delta2.T.dot(Ra1)\n    Rdb2",
                                                  "    Rdb2", "hvp", "W2"),
    "tanh'' term -2a as -1.9a": (TANH, "    Rdelta1 += -2*Ra1*a1*delta1\n    RdW1", "    Rdelta1 += -1.9*Ra1*a1*delta1\n    RdW1",
                                 "hvp", "W1"),
    "output second-order term dropped": (MLP, "    Rdelta2 = Ra2*(a2*(1 - a2) - a2*(a2 - y) + (1 - a2)*(a2 - y))\n    Rdelta2 *= scale\n    delta2",
                                         "    Rdelta2 = Ra2*a2*(1 - a2)\n    Rdelta2 *= scale\n    delta2", "hvp", "W2"),
    "Gauss-Newton with f' once, not twice": (MLP, "    Rdelta2 = Ra2*a2*(1 - a2)\n    Rdelta2 *= scale\n    RdW2 = Rdelta2.T.dot(a1)\n",
                                             "    Rdelta2 = Ra2*1.0\n    Rdelta2 *= scale\n    RdW2 = Rdelta2.T.dot(a1)\n",
                                             "gnvp", "u.Gv"),
    "softmax H_out without the p p^T part": (SOFTMAX, "    Rlogp = Rz2 - (Rz2*a2).sum(axis=1, keepdims=True)",
                                             "    Rlogp = Rz2 - 0*(Rz2*a2).sum(axis=1, keepdims=True)", "gnvp", "u.Gv"),
    "hessian columns doubled": (TANH, "            unit[i] = 1\n", "            unit[i] = 2\n", "hessian", ""),
    "hvp in float64 for float32": (TANH, "    return RdW1, Rdb1, RdW2, Rdb2, RdW3, Rdb3\n\n\ndef _grad_hvp",
                                   "    return RdW1.astype(np.float64), Rdb1, RdW2, Rdb2, RdW3, Rdb3\n\n\ndef _grad_hvp",
                                   "dtype", "float32"),
}


@pytest.mark.parametrize("name", PLANTED)
def test_planted_error_is_caught_and_named(tmp_path, name):
    net, old, new, entry, param = PLANTED[name]
    report = check_curvature(net, _module(tmp_path, net, (old, new)), prove=False)
    assert not report.ok
    failing = {(r.entry, r.param) for r in report.rows if not r.ok}
    assert (entry, param) in failing, report.table()


def _planted(prog, pass_name, name, change):
    statements, done = [], False
    for s in getattr(prog, pass_name):
        if s.name == name and not done and change(s.expr) != s.expr:
            s, done = dataclasses.replace(s, expr=change(s.expr)), True
        statements.append(s)
    assert done, f"nothing to plant in {name}"
    return dataclasses.replace(prog, **{pass_name: tuple(statements)})


def test_the_proof_fails_on_a_planted_second_order_term():
    """The proof runs the Program's own curvature statements: an error in one is found, and named."""
    prog = program(small_instance(TANH))
    assert max(dict(prove_curvature(prog)).values()) < 1e-30
    a1 = sp.Symbol("a1", real=True)
    planted = _planted(prog, "rbackward", "Rdelta1", lambda e: e.xreplace({a1: 1.01 * a1}) if e.has(sp.Symbol("Ra1", real=True)) else e)
    worst = dict(prove_curvature(planted))
    assert worst["hvp W1"] > 1e-6 and worst["gnvp W1"] < 1e-30
    planted = _planted(prog, "gnbackward", "RdW2", lambda e: 1.001 * e)
    worst = dict(prove_curvature(planted))
    assert worst["gnvp W2"] > 1e-6 and worst["hvp W2"] < 1e-30


def test_cli_verify_curvature(tmp_path):
    spec = ROOT / "examples" / "logistic_regression.toml"
    proc = run_cli("verify", str(spec), "--curvature")
    assert proc.returncode == 0, proc.stderr
    assert "symbolic hvp" in proc.stdout and "gnvp" in proc.stdout
    # a module without the curvature functions: one line, exit 2
    old = tmp_path / "old.py"
    text = (ROOT / "generated" / "logistic_regression.py").read_text()
    old.write_text(text[:text.index("# --- curvature")])
    proc = run_cli("verify", str(spec), "--module", str(old), "--curvature")
    assert proc.returncode == 2 and "hvp" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_l1_penalty_kink_is_not_a_false_alarm(tmp_path):
    """digits_weight_decay (l1 on W1): at seed 0 a finite-difference step of the gradient crossed an
    entry of W1 through 0, where the l1 gradient jumps, and hvp was called wrong (regression). Steps
    that change the sign of an l1-penalised weight are halved like those that cross a relu kink."""
    from derive.verify_curvature import _penalty_kinks
    net = load_spec(ROOT / "examples" / "digits_weight_decay.toml")
    assert _penalty_kinks(program(net).derivation) == ["W1"]            # l1 on W1; l2's gradient is smooth
    report = check_curvature(net, _module(tmp_path, net), prove=False)
    assert report.ok, report.table()
    hvp = [r for r in report.rows if r.entry == "hvp" and r.param == "W1"]
    assert hvp and hvp[0].checked and not hvp[0].note           # checked, no direction skipped


def test_a_penalty_curvature_error_is_still_caught(tmp_path):
    """The kink rule does not hide an error: hvp's l2 term of W2 (lambda on the diagonal) doubled."""
    net = load_spec(ROOT / "examples" / "digits_weight_decay.toml")
    source = open(_module(tmp_path, net).__file__).read()
    found = re.findall(r"    RdW2 \+= .*\n", source)
    assert found, "no penalty term in RdW2"
    planted = source.replace(found[-1], found[-1].rstrip("\n") + "*2\n", 1)
    path = tmp_path / "planted" / f"{net.name}.py"
    path.parent.mkdir()
    path.write_text(planted)
    report = check_curvature(net, load_module(path), prove=False)
    assert not report.ok
    assert any(r.entry == "hvp" and r.param == "W2" and not r.ok for r in report.rows), report.table()
