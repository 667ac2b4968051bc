"""Weight penalties: l2 (lambda/2 sum w**2, gradient lambda w) and l1 (lambda sum |w|) per layer or for the
whole network, on weights (l2, l1) or biases (bias_l2, bias_l1). Derived and lowered into the Program,
so that the gradient, the curvature passes and the documents have them; checked against torch autograd,
torch.optim.SGD(weight_decay=...) step for step, finite differences, and the three-way check."""
import re

import numpy as np
import pytest

from codegen.build import module_outputs
from derive.errors import SpecError
from derive.program import program
from derive.spec import Dense, Network, parse_spec
from derive.verify import check_module, load_module, sample_params

NET = Network("pen", 3, [Dense(5, "tanh", l1=0.02, bias_l2=0.3), Dense(4, "relu", l2=0), Dense(2, "sigmoid")],
              loss="bce", penalty={"l2": 0.05})


def _numpy_penalty(net, params):
    """The penalty as the README states it, computed here from the spec's numbers."""
    total = 0.0
    for l in range(1, net.depth + 1):
        for key, lam in net.penalties(l).items():
            p = params[("b" if key.startswith("bias_") else "W") + str(l)]
            total += lam / 2 * np.sum(p ** 2) if key.endswith("l2") else lam * np.sum(np.abs(p))
    return total


def test_a_layers_own_penalty_wins_and_biases_are_penalised_only_when_asked():
    assert NET.penalties(1) == {"l2": 0.05, "l1": 0.02, "bias_l2": 0.3}
    assert NET.penalties(2) == {}                       # l2 = 0 exempts the layer from the network's l2
    assert NET.penalties(3) == {"l2": 0.05}             # no bias penalty unless bias_l2 / bias_l1
    assert NET.describe() == "3 -> 5 (tanh, l2 0.05, l1 0.02, bias_l2 0.3) -> 4 (relu) -> 2 (sigmoid, l2 0.05), loss bce"


def test_the_penalty_enters_the_program_derived(build_module):
    prog = program(NET)
    assert [str(s) for s in prog.penalty] == [
        "penalty = Total(W1**2)/40", "penalty += Total(Abs(W1))/50", "penalty += 3*Total(b1**2)/20",
        "penalty += Total(W3**2)/40"]
    updates = {s.name: str(s.expr) for s in prog.backward if s.op == "+="}
    assert updates == {"dW1": "rate*(W1/20 + Heaviside(W1, 0)/25 - 1/50)", "db1": "3*b1*rate/10",
                       "dW3": "W3*rate/20"}
    assert [s.name for s in prog.backward[-3:]] == ["dW1", "db1", "dW3"]      # last: db1 is a view of delta1
    m = build_module(NET)
    rng = np.random.default_rng(3)
    params = sample_params(NET, rng)
    x, y = rng.normal(size=(4, 3)), rng.uniform(size=(4, 2))
    assert m.penalty(params) == pytest.approx(_numpy_penalty(NET, params), rel=1e-14)
    data = module_of(NET.with_widths(99), unpenalised=True)
    assert m.loss(params, x, y) == pytest.approx(data.loss(params, x, y) + m.penalty(params), rel=1e-14)


def module_of(net, unpenalised=False, tmp=[]):
    """A module of `net` (without its penalties, if asked), generated into a temporary folder."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from codegen.build import write_outputs
    if unpenalised:
        net = dataclasses.replace(net, layers=tuple(Dense(la.units, la.activation, la.formula, **la.params)
                                                    for la in net.layers), penalty={}, name=net.name + "_data")
    tmp.append(tempfile.TemporaryDirectory())
    write_outputs(module_outputs(net), Path(tmp[-1].name))
    return load_module(Path(tmp[-1].name) / f"{net.name}.py")


def test_an_unpenalised_module_has_no_penalty_function_and_no_rate():
    text = module_outputs(Network("plain", 2, [Dense(2, "tanh")], loss="mse"))["plain.py"]
    assert "def penalty(" not in text and not re.search(r"\brate\b", text)


def _torch_objective(net, tparams, x, y):
    import torch
    F = torch.nn.functional
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda z: z,
            "softplus": F.softplus, "elu": F.elu}
    a = torch.tensor(x)
    for l, layer in enumerate(net.layers, start=1):
        a = acts[layer.activation](a @ tparams[f"W{l}"].T + tparams[f"b{l}"])
    data = F.binary_cross_entropy(a, torch.tensor(y), reduction="sum") / len(x) if net.loss == "bce" else \
        0.5 * ((a - torch.tensor(y)) ** 2).sum() / len(x)
    penalty = 0
    for l in range(1, net.depth + 1):
        for key, lam in net.penalties(l).items():
            p = tparams[("b" if key.startswith("bias_") else "W") + str(l)]
            penalty = penalty + (lam / 2 * (p ** 2).sum() if key.endswith("l2") else lam * p.abs().sum())
    return data + penalty


@pytest.mark.parametrize("seed", range(4))
def test_penalised_gradients_match_torch_autograd(seed, build_module):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    acts = ["tanh", "relu", "softplus", "elu"]
    layers = [Dense(int(rng.integers(2, 6)), str(rng.choice(acts)),
                    **{k: float(v) for k, v in zip(("l2", "l1", "bias_l2", "bias_l1"), rng.uniform(0, 0.2, 4))
                       if rng.random() < 0.6}) for _ in range(int(rng.integers(1, 3)))]
    net = Network(f"torch_pen{seed}", 3, layers + [Dense(2, "identity")], loss="mse",
                  penalty={"l2": float(rng.uniform(0, 0.1))})
    m = build_module(net)
    params = sample_params(net, rng)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    loss, grads = m.loss_and_grad(params, x, y)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tloss = _torch_objective(net, tparams, x, y)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for k, v in tparams.items():
        assert np.allclose(grads[k], v.grad.numpy(), rtol=1e-10, atol=1e-12), k
    # H v, with H including the penalty's l2 on the diagonal: torch's double backward
    v = {k: rng.normal(size=p.shape) for k, p in params.items()}
    tparams = {k: torch.tensor(p, requires_grad=True) for k, p in params.items()}
    g = torch.autograd.grad(_torch_objective(net, tparams, x, y), list(tparams.values()), create_graph=True)
    dot = sum((gi * torch.tensor(v[k])).sum() for gi, k in zip(g, tparams))
    hv = dict(zip(tparams, torch.autograd.grad(dot, list(tparams.values()))))
    mine = m.hvp(params, x, y, v)
    for k in params:
        assert np.allclose(mine[k], hv[k].numpy(), rtol=1e-9, atol=1e-11), k


def test_generated_sgd_equals_torch_sgd_with_weight_decay_step_for_step():
    """l2 = lambda on every W (and bias_l2 = lambda on every b) is SGD(weight_decay=lambda): 25 steps, float64."""
    torch = pytest.importorskip("torch")
    lam, lr = 0.03, 0.1
    for biases in (False, True):
        extra = {"bias_l2": lam} if biases else {}
        net = Network("wd", 4, [Dense(6, "tanh"), Dense(3, "identity")], loss="mse", penalty={"l2": lam, **extra})
        m = module_of(net)
        rng = np.random.default_rng(7)
        params = m.init_params(seed=2)
        params = {k: v + rng.normal(scale=0.1, size=v.shape) for k, v in params.items()}     # nonzero biases
        tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
        groups = [{"params": [tparams[k] for k in tparams if k[0] == "W"], "weight_decay": lam},
                  {"params": [tparams[k] for k in tparams if k[0] == "b"], "weight_decay": lam if biases else 0.0}]
        opt = torch.optim.SGD(groups, lr=lr)
        for step in range(25):
            x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))
            m.sgd_step(params, x, y, lr)
            opt.zero_grad()
            z = torch.tanh(torch.tensor(x) @ tparams["W1"].T + tparams["b1"]) @ tparams["W2"].T + tparams["b2"]
            (0.5 * ((z - torch.tensor(y)) ** 2).sum() / len(x)).backward()     # the data term: torch adds the decay
            opt.step()
            for k in params:
                assert np.allclose(params[k], tparams[k].detach().numpy(), rtol=1e-13, atol=1e-14), (biases, step, k)


def test_sgd_step_returns_the_objective_before_the_step():
    m = module_of(NET)
    rng = np.random.default_rng(0)
    params = sample_params(NET, rng)
    x, y = rng.normal(size=(3, 3)), rng.uniform(size=(3, 2))
    before = m.loss(params, x, y)
    assert m.sgd_step(params, x, y, 0.1) == pytest.approx(before, rel=1e-15)


def test_l1_at_zero_takes_the_left_derivative():
    """d|w|/dw at w = 0 is -1, the kink convention of every derivative (relu'(0) = 0, |u|'(0) = -1)."""
    net = Network("l1zero", 2, [Dense(2, "identity", l1=0.5)], loss="mse")
    m = module_of(net)
    params = {"W1": np.array([[0.0, 1.0], [-2.0, 0.0]]), "b1": np.zeros(2)}
    x, y = np.zeros((1, 2)), np.zeros((1, 2))           # the data term's gradient is 0 here
    _, grads = m.loss_and_grad(params, x, y)
    assert grads["W1"].tolist() == [[-0.5, 0.5], [-0.5, -0.5]]
    assert m.penalty(params) == 1.5


def test_gnvp_adds_the_penalty_hessian(build_module):
    """G v of the penalised network is G v of the data term plus l2 v on the penalised entries."""
    m, data = module_of(NET), module_of(NET, unpenalised=True)
    rng = np.random.default_rng(5)
    params = sample_params(NET, rng)
    x, y = rng.normal(size=(3, 3)), rng.uniform(size=(3, 2))
    v = {k: rng.normal(size=p.shape) for k, p in params.items()}
    gv, gv0 = m.gnvp(params, x, y, v), data.gnvp(params, x, y, v)
    hv, hv0 = m.hvp(params, x, y, v), data.hvp(params, x, y, v)
    lam = {"W1": 0.05, "b1": 0.3, "W2": 0.0, "b2": 0.0, "W3": 0.05, "b3": 0.0}
    for k in params:
        assert np.allclose(gv[k] - gv0[k], lam[k] * v[k], rtol=1e-10, atol=1e-13), k
        assert np.allclose(hv[k] - hv0[k], lam[k] * v[k], rtol=1e-10, atol=1e-13), k


def test_hvp_matches_finite_differences_of_the_gradient():
    m = module_of(NET)
    rng = np.random.default_rng(11)
    params = sample_params(NET, rng)
    x, y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    v = {k: rng.normal(size=p.shape) for k, p in params.items()}
    h = 1e-5
    plus = m.loss_and_grad({k: p + h * v[k] for k, p in params.items()}, x, y)[1]
    minus = m.loss_and_grad({k: p - h * v[k] for k, p in params.items()}, x, y)[1]
    hv = m.hvp(params, x, y, v)
    for k in params:
        assert np.allclose(hv[k], (plus[k] - minus[k]) / (2 * h), rtol=1e-6, atol=1e-8), k


@pytest.mark.parametrize("net", [NET, Network("pen_soft", 4, [Dense(5, "relu", l1=0.01, bias_l1=0.02),
                                                              Dense(3, "softmax")], loss="sparse_cce",
                                              penalty={"l2": 0.1})], ids=["bce", "softmax"])
def test_penalised_networks_verify_three_ways(net):
    """The module check (symbolic reference with the penalty from the spec, finite differences, Taylor) and the
    curvature check at full size (hvp and u.G v against finite differences; the proof is the next test's)."""
    from derive.verify_curvature import check_curvature
    m = module_of(net)
    report = check_module(net, m, batches={"normal": (1, 5), "tails": (5,), "kinks": (5,)})
    assert report.ok, report.table()
    curvature = check_curvature(net, m, prove=False)
    assert curvature.ok, curvature.table()


def test_the_penalised_program_is_proven_exactly():
    """The Program's gradient and curvature statements against sp.diff of the expansion (penalty included),
    once and twice, to 40 digits: hvp has l2 on the diagonal, gnvp too."""
    from derive.proof import prove, prove_curvature
    net = Network("small", 2, [Dense(2, "tanh", l1=0.02, bias_l2=0.3), Dense(2, "identity")], loss="mse",
                  penalty={"l2": 0.05})
    assert max(w for _, w in prove(net)) < 1e-30
    assert max(w for _, w in prove_curvature(net)) < 1e-30


def test_a_planted_error_in_a_penalty_gradient_fails_the_check(tmp_path):
    text = module_outputs(NET)["pen.py"]
    line = next(l for l in text.splitlines() if l.strip().startswith("dW3 +="))
    planted = text.replace(line, line.replace("0.05", "0.0505"), 1)
    assert planted != text
    (tmp_path / "pen.py").write_text(planted)
    report = check_module(NET, load_module(tmp_path / "pen.py"), batches={"normal": (2,)})
    assert not report.ok
    failed = {(r.entry, r.param) for r in report.rows if not r.ok}
    assert ("loss_and_grad", "W3") in failed and ("loss_and_grad", "W1") not in failed, report.table()


def test_a_planted_error_in_the_penalty_value_fails_the_check(tmp_path):
    text = module_outputs(NET)["pen.py"]
    planted = text.replace("    return float(penalty)\n", "    return float(penalty) * 1.0001\n", 1)
    (tmp_path / "pen.py").write_text(planted)
    report = check_module(NET, load_module(tmp_path / "pen.py"), batches={"normal": (2,)})
    assert {("loss", "L"), ("loss_and_grad", "L")} <= {(r.entry, r.param) for r in report.rows if not r.ok}


# --- the spec ---------------------------------------------------------------------------------------------------

SPEC = 'name = "n"\ninputs = 2\nloss = "mse"\n{top}\n[[layers]]\nunits = 2\nactivation = "tanh"\n{layer}\n'


def test_penalty_keys_in_toml():
    net = parse_spec(SPEC.format(top="l2 = 1e-4\nbias_l1 = 0.5", layer="l1 = 0.25"), "p.toml")
    assert net.penalties(1) == {"l2": 1e-4, "l1": 0.25, "bias_l1": 0.5}


@pytest.mark.parametrize("top, layer, message", [
    ("l2 = -0.1", "", "p.toml: line 4, l2: l2 must be a number from 0 to 1e+06, got -0.1"),
    ("", 'l1 = "big"', "p.toml: line 8, layers[1].l1: l1 must be a number from 0 to 1e+06, got 'big'"),
    ("", "bias_l2 = true", "layers[1].bias_l2: bias_l2 must be a number"),
    ("l2 = inf", "", "l2: l2 must be a number from 0 to 1e+06, got inf"),
    ("", "l3 = 0.1", "unknown key 'l3' in a layer; a layer takes units, activation, formula, l2, l1, bias_l2, bias_l1"),
    ("weight_decay = 0.1", "", "unknown key 'weight_decay'"),
])
def test_bad_penalties_are_one_line_errors(top, layer, message):
    with pytest.raises(SpecError) as e:
        parse_spec(SPEC.format(top=top, layer=layer), "p.toml")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_nnderive_train_prints_the_data_term_and_the_penalty(tmp_path):
    from conftest import run_cli
    spec = tmp_path / "digits_l2.toml"
    spec.write_text('name = "digits_l2"\ninputs = 64\nloss = "sparse_cce"\nl2 = 0.01\n'
                    '[[layers]]\nunits = 8\nactivation = "relu"\n[[layers]]\nunits = 10\nactivation = "softmax"\n')
    done = run_cli("train", spec, "--data", "digits", "--epochs", "2", "--metrics", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    import json
    import re
    rows = json.loads((tmp_path / "m.json").read_text())["epochs"]
    for line, row in zip([l for l in done.stdout.splitlines() if l.startswith("epoch")], rows):
        m = re.search(r"train loss ([\d.]+) \(data ([\d.]+) \+ penalty ([\d.]+)\)", line)
        assert m, line
        assert float(m.group(1)) == pytest.approx(row["train_loss"], abs=1e-4)
        assert row["train_data_loss"] + row["penalty"] == pytest.approx(row["train_loss"], rel=1e-12)
        assert float(m.group(3)) == pytest.approx(row["penalty"], abs=1e-4) and row["penalty"] > 0


def test_the_proof_fails_on_a_planted_penalty_statement():
    import dataclasses

    import sympy as sp

    from derive.proof import prove
    net = Network("small", 2, [Dense(2, "tanh"), Dense(1, "identity", l2=0.1)], loss="mse")
    prog = program(net)
    wrong = tuple(dataclasses.replace(s, expr=s.expr * sp.Rational(101, 100)) if s.op == "+=" and s.name == "dW2"
                  else s for s in prog.backward)
    worst = dict(prove(dataclasses.replace(prog, backward=wrong)))
    assert worst["W2"] > 1e-6 and worst["W1"] < 1e-30 and worst["loss"] < 1e-30
