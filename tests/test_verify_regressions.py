"""verify on correct modules: no false alarms (random architectures, both dtypes, the issue-11 cases), and
load_module's refusals: one line, exit 2, never a hang."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, count_calls, run_cli, spec_warnings_expected
from derive.activations import ACTIVATIONS
from derive.errors import SpecError
from derive.spec import Dense, Network
from derive.verify import check_module, load_module

HIDDEN = sorted(n for n, a in ACTIVATIONS.items() if not a.vector) + ["softmax", "custom"]
OUTPUTS = [("identity", "mse"), ("identity", "mae"), ("tanh", "mse"), ("sigmoid", "bce"), ("softmax", "cce"),
           ("softmax", "sparse_cce"), ("softmax", "mse"), ("relu", "mse"), ("elu", "mae")]


@st.composite
def networks(draw):
    layers = []
    for _ in range(draw(st.integers(0, 2))):
        act = draw(st.sampled_from(HIDDEN))
        units = draw(st.integers(2 if act == "softmax" else 1, 5))
        if act == "custom":
            layers.append(Dense(units, "wiggle", formula=draw(st.sampled_from(
                ["x*tanh(log(1 + exp(x)))", "x*sin(x)", "max(x, 0) + 0.1*min(x, 0)", "abs(x)*x"]))))
        else:
            params = {p.name: draw(st.sampled_from([0.05, 1.5, 1e6])) for p in ACTIVATIONS[act].params}
            layers.append(Dense(units, act, **params))
    out, loss = draw(st.sampled_from(OUTPUTS))
    layers.append(Dense(draw(st.integers(2, 4)) if out == "softmax" else draw(st.integers(1, 4)), out))
    with spec_warnings_expected("slow_softmax", "untrainable"):     # mse on a softmax, step, sign: drawn on purpose
        return Network("random_net", draw(st.integers(1, 5)), layers, loss=loss)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=networks(), seed=st.integers(0, 2**16))
def test_random_correct_modules_pass_in_both_dtypes(net, seed, build_module):
    report = check_module(net, build_module(net), seed=seed)
    assert report.ok, report.table()
    assert {r.entry for r in report.rows} >= {"forward", "loss", "loss_and_grad", "backward", "sgd_step", "dtype"}


class OneEntryWrong:
    """A module whose loss_and_grad is wrong in one entry of one parameter, by a relative 1e-4."""

    def __init__(self, module, name, index):
        self.m, self.name, self.index = module, name, index

    def __getattr__(self, attr):
        return getattr(self.m, attr)

    def loss_and_grad(self, p, x, y):
        loss, g = self.m.loss_and_grad(p, x, y)
        g = dict(g)
        g[self.name] = g[self.name].copy()
        g[self.name][self.index] += 1e-4 * (abs(g[self.name][self.index]) + 1e-3)
        return loss, g


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=networks(), data=st.data())
def test_random_modules_with_one_wrong_entry_fail(net, data, build_module):
    shapes = net.param_shapes()
    name = data.draw(st.sampled_from(sorted(shapes)))
    index = tuple(data.draw(st.integers(0, n - 1)) for n in shapes[name])
    report = check_module(net, OneEntryWrong(build_module(net), name, index))
    assert ("loss_and_grad", name) in [(r.entry, r.param) for r in report.rows if not r.ok], report.table()


# --- issue 11 item 7: wrong verdicts on correct modules --------------------------------------------

@pytest.mark.parametrize("net", [
    Network("tanh_100", 100, [Dense(100, "tanh")], loss="mse"),
    Network("elu_1e6", 3, [Dense(4, "elu", alpha=1e6), Dense(2, "identity")], loss="mse"),
    Network("leaky_1e6", 3, [Dense(4, "leaky_relu", alpha=1e6), Dense(2, "identity")], loss="mse"),
], ids=lambda n: n.name)
def test_issue11_false_alarms_are_gone(net, build_module):
    report = check_module(net, build_module(net))
    assert report.ok, report.table()


# --- issue 11 item 4: verify is polynomial in depth -------------------------------------------------

@pytest.mark.parametrize("net", [
    Network("tanh_deep_12", 2, [Dense(2, "tanh")] * 12, loss="mse"),
    Network("tanh_deep_63", 1, [Dense(1, "tanh")] * 63, loss="mse"),
], ids=lambda n: n.name)
def test_deep_networks_verify_without_recursion(net, build_module):
    report = check_module(net, build_module(net))
    assert report.ok, report.table()
    assert report.cases <= 24      # a fixed amount of work: a few batch sizes x regimes x 2 dtypes


def test_the_issue12_network_verifies_fast(build_module):
    net = Network("n5_16_8_6_3", 5, [Dense(16, "mish", formula="x*tanh(log(1 + exp(x)))"), Dense(8, "elu"),
                                     Dense(6, "sq", formula="x*sin(x)"), Dense(3, "softmax")], loss="cce")
    module = build_module(net)
    report, calls = count_calls(check_module, net, module)
    assert report.ok, report.table()
    # Work in function calls, not seconds (the same on any machine): 1.9 million when written, 1-3 s on a
    # 2-core machine (the target is 10 s); twice that work fails.
    assert report.cases <= 24 and calls < 4_000_000, (report.cases, calls)


# --- load_module: bad modules are one-line errors ---------------------------------------------------

def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.py"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_module(fifo)
    r = run_cli("verify", ROOT / "examples" / "mlp_4_2_3.toml", "--module", fifo)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def one_line_exit_2(r, needle):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr, r.stderr


def test_a_directory_is_refused(tmp_path):
    one_line_exit_2(run_cli("verify", ROOT / "examples" / "mlp_4_2_3.toml", "--module", tmp_path), "is a directory")


@pytest.mark.parametrize("shapes", ["[1, 2]", "{'W1': 'big'}", "{'W1': (2.5, 1)}", "None"])
def test_param_shapes_not_a_dict_is_refused(tmp_path, shapes):
    text = (ROOT / "generated" / "mlp_4_2_3.py").read_text()
    start = text.index("PARAM_SHAPES = {")
    end = text.index("}\n", start) + 2
    bad = tmp_path / "mlp_4_2_3.py"
    bad.write_text(text[:start] + f"PARAM_SHAPES = {shapes}\n" + text[end:])
    one_line_exit_2(run_cli("verify", ROOT / "examples" / "mlp_4_2_3.toml", "--module", bad), "PARAM_SHAPES")


@pytest.mark.parametrize("text, needle", [("def broken(:\n", "not valid Python"), ("raise RuntimeError('x')\n", "raised"),
                                          ("import numpy as np\n", "missing")])
def test_broken_modules_are_one_line(tmp_path, text, needle):
    bad = tmp_path / "m.py"
    bad.write_text(text)
    one_line_exit_2(run_cli("verify", ROOT / "examples" / "mlp_4_2_3.toml", "--module", bad), needle)


def test_a_module_raising_inside_an_entry_point_is_a_finding_not_a_crash(tmp_path):
    text = (ROOT / "generated" / "mlp_4_2_3.py").read_text()
    bad = tmp_path / "mlp_4_2_3.py"
    bad.write_text(text.replace('def predict(params, x):\n', 'def predict(params, x):\n    raise KeyError("W9")\n'))
    r = run_cli("verify", ROOT / "examples" / "mlp_4_2_3.toml", "--module", bad)
    assert r.returncode == 1 and "predict" in r.stderr and "KeyError" in r.stderr and "Traceback" not in r.stderr
