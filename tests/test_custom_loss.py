"""Custom losses from formulas in y_hat and y, and the huber, log_cosh and hinge entries: specs, the
derivation (fused where SymPy simplifies, else the chain rule), the generated code against PyTorch
autograd (an independent implementation, ~1e-10 in float64) on networks drawn at random, stability at
|z| = 1e4, and the three-way check, which fails on a planted error in a custom loss's delta."""
import re

import mpmath
import numpy as np
import pytest

from codegen.build import module_outputs
from derive.backprop import derive
from derive.errors import SpecError
from derive.spec import Dense, Network, parse_spec
from derive.verify import check_module, load_module, sample_params

BCE = "-(y*log(y_hat) + (1 - y)*log(1 - y_hat))"
CCE = "-y*log(y_hat)"
FOCAL = "-(y*(1 - y_hat)**gamma*log(y_hat) + (1 - y)*y_hat**gamma*log(1 - y_hat))"
POISSON = "y_hat - y*log(y_hat)"
HIDDEN = ["tanh", "relu", "elu", "softplus", "sigmoid", "gelu", "leaky_relu"]


def custom(name, formula, **params):
    return {"loss": name, "loss_formula": formula, "loss_params": params}


# name -> (output activation, loss keywords for Network, targets drawn as ..., torch loss of (z, a, y))
def _torch_losses():
    import torch
    F = torch.nn.functional

    def focal(z, a, y, gamma=2.0):
        # torchvision.ops.sigmoid_focal_loss (alpha < 0: no weighting), written out
        p = torch.sigmoid(z)
        ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        return ce * (1 - p_t) ** gamma

    return {
        "huber": lambda z, a, y: F.huber_loss(a, y, reduction="none", delta=0.7),
        "log_cosh": lambda z, a, y: torch.log(torch.cosh(a - y)),
        "hinge": lambda z, a, y: torch.clamp(1 - y * a, min=0),
        "bce_spelled": lambda z, a, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"),
        "cce_spelled": lambda z, a, y: -y * F.log_softmax(z, dim=1),
        "focal": focal,
        "poisson": lambda z, a, y: a - y * torch.log(a),
    }


CASES = {
    "huber": ("identity", {"loss": "huber", "loss_params": {"delta": 0.7}}, "normal"),
    "log_cosh": ("tanh", {"loss": "log_cosh"}, "normal"),
    "hinge": ("identity", {"loss": "hinge"}, "sign"),
    "bce_spelled": ("sigmoid", custom("my_bce", BCE), "unit"),
    "cce_spelled": ("softmax", custom("my_cce", CCE), "onehot"),
    "focal": ("sigmoid", custom("focal", FOCAL, gamma=2.0), "binary"),
    "poisson": ("softplus", custom("poisson_nll", POISSON), "counts"),
}


def _targets(kind, rng, batch, k):
    if kind == "normal":
        return rng.normal(size=(batch, k))
    if kind == "sign":
        return rng.choice([-1.0, 1.0], size=(batch, k))
    if kind == "unit":
        return rng.uniform(0.05, 0.95, size=(batch, k))
    if kind == "binary":
        return rng.integers(0, 2, size=(batch, k)).astype(float)
    if kind == "onehot":
        return np.eye(k)[rng.integers(0, k, size=batch)]
    return rng.poisson(2.0, size=(batch, k)).astype(float)


def _random_net(case, rng):
    """A network not seen before: 1-3 hidden layers of random activations and widths, then the case's output."""
    out, loss, _ = CASES[case]
    layers = [Dense(int(rng.integers(1, 6)), str(rng.choice(HIDDEN))) for _ in range(int(rng.integers(1, 4)))]
    k = int(rng.integers(2, 5)) if out == "softmax" else int(rng.integers(1, 4))
    return Network(f"net_{case}", int(rng.integers(1, 5)), layers + [Dense(k, out)], **loss)


def _torch_forward(net, tparams, x):
    import torch
    F = torch.nn.functional
    acts = {"identity": lambda z: z, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "elu": F.elu, "softplus": F.softplus, "gelu": F.gelu, "leaky_relu": F.leaky_relu,
            "softmax": lambda z: torch.softmax(z, 1)}
    a = torch.tensor(x)
    for l, layer in enumerate(net.layers, start=1):
        z = a @ tparams[f"W{l}"].T + tparams[f"b{l}"]
        a = acts[layer.activation](z)
    return z, a


@pytest.mark.parametrize("case", sorted(CASES))
def test_custom_and_new_losses_match_torch_autograd(case, build_module):
    torch = pytest.importorskip("torch")
    reference = _torch_losses()[case]
    for seed in range(3):
        rng = np.random.default_rng([seed, len(case)])
        net = _random_net(case, rng)
        module = build_module(net)
        x = rng.normal(size=(5, net.inputs))
        y = _targets(CASES[case][2], rng, 5, net.sizes[-1])
        params = sample_params(net, rng)
        loss, grads = module.loss_and_grad(params, x, y)
        tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        z, a = _torch_forward(net, tparams, x)
        tloss = reference(z, a, torch.tensor(y)).sum() / len(x)
        tloss.backward()
        assert abs(loss - tloss.item()) <= 1e-10 * max(1.0, abs(loss)), (net.describe(), loss, tloss.item())
        for k, v in tparams.items():
            assert np.allclose(grads[k], v.grad.numpy(), rtol=1e-9, atol=1e-11), (net.describe(), k)


def _code(text: str) -> str:
    """A module's code without its docstrings, comments and header: what it computes."""
    text = re.sub(r'"""(?:.|\n)*?"""', '""""""', text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("spelled, builtin, out", [
    (custom("my_bce", BCE), {"loss": "bce"}, Dense(2, "sigmoid")),
    (custom("my_bce", "(y - 1)*log(1 - y_hat) - y*log(y_hat)"), {"loss": "bce"}, Dense(1, "sigmoid")),
    (custom("my_cce", CCE), {"loss": "cce"}, Dense(3, "softmax")),
    ({**custom("my_sparse", CCE), "loss_target": "labels"}, {"loss": "sparse_cce"}, Dense(3, "softmax")),
])
def test_spelled_out_cross_entropy_generates_the_builtin_code(spelled, builtin, out):
    """The fused delta (a - y, a*sum(y) - y) and the stable loss (logaddexp, log-softmax) come out of the
    derivation for the formula exactly as for the registry entry: the same module, but for its words."""
    hidden = [Dense(4, "tanh")]
    mine = Network("net", 3, hidden + [out], **spelled)
    theirs = Network("net", 3, hidden + [out], **builtin)
    assert derive(mine).output.kind == "fused"
    text_mine, text_theirs = (module_outputs(n)["net.py"] for n in (mine, theirs))
    assert _code(text_mine) == _code(text_theirs)
    assert "def _loss(" in text_mine and "logaddexp" in text_mine or "_log_softmax" in text_mine


def test_focal_loss_delta_is_fused_and_takes_its_logs_from_the_logits():
    """The chain rule would divide by a and 1 - a; SymPy cancels them, and log a, log(1 - a) come from z."""
    net = Network("focal", 2, [Dense(3, "sigmoid")], **custom("focal", FOCAL, gamma=2.0))
    out = derive(net).output
    assert out.kind == "fused" and out.in_a is not None and len(out.logs) == 2
    text = module_outputs(net)["focal.py"]
    delta = next(line for line in text.splitlines() if line.strip().startswith("delta1 ="))
    assert "/a1" not in delta.replace(" ", "") and "np.log(" not in delta and "logaddexp(0, z1)" in delta


def test_chain_rule_where_nothing_simplifies():
    out = derive(Network("p", 2, [Dense(2, "softplus")], **custom("poisson_nll", POISSON))).output
    assert out.kind == "chain"
    out = derive(Network("h", 2, [Dense(2, "identity")], loss="hinge")).output
    assert out.kind == "chain" and out.expr.has(__import__("sympy").Heaviside)


# --- stability: |z| up to 1e4, float64 and float32, against mpmath ---------------------------------------

def _sig(z):
    return 1 / (1 + mpmath.exp(-z))


def _softplus(z):
    return mpmath.log1p(mpmath.exp(z))


STABLE = {
    # case: (output, loss keywords, per-example loss of (z list, y list) in mpmath, targets)
    "bce_spelled": ("sigmoid", custom("my_bce", BCE),
                    lambda z, y: mpmath.fsum(_softplus(v) - t * v for v, t in zip(z, y)), [0.0, 1.0]),
    "focal": ("sigmoid", custom("focal", FOCAL, gamma=2.0),
              lambda z, y: mpmath.fsum(-(t * (1 - _sig(v)) ** 2 * -_softplus(-v) + (1 - t) * _sig(v) ** 2 * -_softplus(v))
                                       for v, t in zip(z, y)), [1.0, 0.0]),
    "cce_spelled": ("softmax", custom("my_cce", CCE),
                    lambda z, y: -mpmath.fsum(t * (v - mpmath.log(mpmath.fsum(mpmath.exp(u) for u in z)))
                                              for v, t in zip(z, y)), [0.0, 1.0, 0.0]),
    "log_cosh": ("identity", {"loss": "log_cosh"},
                 lambda z, y: mpmath.fsum(mpmath.log(mpmath.cosh(v - t)) for v, t in zip(z, y)), [0.3, -0.2]),
    "huber": ("identity", {"loss": "huber", "loss_params": {"delta": 0.7}},
              lambda z, y: mpmath.fsum((v - t) ** 2 / 2 if abs(v - t) <= 0.7 else 0.7 * (abs(v - t) - 0.35)
                                       for v, t in zip(z, y)), [0.3, -0.2]),
    "hinge": ("identity", {"loss": "hinge"}, lambda z, y: mpmath.fsum(max(0, 1 - t * v) for v, t in zip(z, y)),
              [1.0, -1.0]),
}
LOGITS = [[1e4, -1e4, 0.5], [-1e4, 1e4, -1e4], [30.0, -30.0, 0.0], [700.0, 0.2, -700.0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", sorted(STABLE))
def test_custom_losses_are_stable_at_extreme_logits(case, dtype, build_module):
    """Loss and gradients finite (no overflow, no NaN inside: errors raised) and equal to mpmath's."""
    from test_stability import _check
    out, loss, per_example, target = STABLE[case]
    k = len(target)
    module = build_module(Network(f"stable_{case}", k, [Dense(k, out)], **loss))
    for logits in LOGITS:
        params = {"W1": np.diag(logits[:k]), "b1": np.zeros(k)}

        def ref(v):
            z = [mpmath.fsum(v["W1"][i]) + v["b1"][0][i] for i in range(k)]
            return per_example(z, [mpmath.mpf(t) for t in target])

        _check(module, params, np.ones((1, k)), np.array([target]), ref, dtype)


# --- verified three ways; a planted error fails -------------------------------------------------------------

VERIFIED = {
    "focal": Network("v_focal", 3, [Dense(4, "relu"), Dense(2, "sigmoid")], **custom("focal", FOCAL, gamma=1.5)),
    "poisson": Network("v_poisson", 3, [Dense(3, "tanh"), Dense(2, "softplus")], **custom("poisson_nll", POISSON)),
    "huber": Network("v_huber", 2, [Dense(3, "elu"), Dense(2, "identity")], loss="huber", loss_params={"delta": 0.3}),
    "log_cosh": Network("v_log_cosh", 2, [Dense(3, "tanh"), Dense(2, "identity")], loss="log_cosh"),
    "hinge": Network("v_hinge", 2, [Dense(3, "tanh"), Dense(1, "identity")], loss="hinge"),
}


@pytest.mark.parametrize("name", sorted(VERIFIED))
def test_custom_losses_verify_three_ways(name, build_module):
    net = VERIFIED[name]
    report = check_module(net, build_module(net), batches={"normal": (1, 5), "tails": (5,), "kinks": (5,)})
    assert report.ok, report.table()
    from derive.proof import prove
    assert all(worst < 1e-30 for _, worst in prove(net.with_widths(2), points=1)), net.describe()


def test_a_planted_error_in_a_custom_loss_delta_fails_the_check(tmp_path):
    net = VERIFIED["focal"]
    text = module_outputs(net)["v_focal.py"]
    line = next(l for l in text.splitlines() if l.strip().startswith("delta2 ="))
    planted = text.replace(line, line.replace(" = ", " = 1.001*(", 1) + ")", 1)     # in _backward
    assert planted != text
    path = tmp_path / "v_focal.py"
    path.write_text(planted)
    report = check_module(net, load_module(path), batches={"normal": (2, 5)})
    assert not report.ok
    assert any(r.entry == "loss_and_grad" and r.param == "W2" and not r.ok for r in report.rows), report.table()


# --- the spec -------------------------------------------------------------------------------------------------

SPEC = """name = "n"
inputs = 2
{loss}

[[layers]]
units = 2
activation = "{act}"
"""


def spec(loss, act="sigmoid"):
    return parse_spec(SPEC.format(loss=loss, act=act), "net.toml")


def test_loss_tables():
    assert spec('loss = "mse"').loss_entry.name == "mse"
    huber = spec('[loss]\nname = "huber"\ndelta = 0.25', "identity")
    assert huber.loss_entry.settings == (("delta", 0.25),) and huber.describe().endswith("loss huber (delta 0.25)")
    inline = spec('loss = { name = "focal", formula = "-y*(1 - y_hat)**g*log(y_hat)", g = 2 }', "softmax")
    assert inline.loss_entry.custom and inline.loss_entry.target == "values"
    labels = spec('[loss]\nname = "mine"\nformula = "-y*log(y_hat)"\ntarget = "labels"', "softmax")
    assert labels.loss_entry.target == "labels"


BAD = {
    '[loss]\nname = "bce"\nformula = "y_hat"': "line 4, loss.name: 'bce' is a built-in loss and cannot take a formula",
    '[loss]\nname = "huber"\nalpha = 1': "line 5, loss.alpha: unknown key 'alpha' for loss huber; huber takes delta",
    '[loss]\nname = "huber"\ndelta = -1': "loss.delta: delta must be a number above 0",
    '[loss]\nname = "mine"\nformula = "-log(y_hat)"\ntarget = "onehots"': "loss.target: unknown target kind",
    '[loss]\nname = "mine"\nformula = "-log(y_hat)"\ngamma = 2': "loss.gamma: parameter 'gamma' is not used",
    '[loss]\nname = "mine"\nformula = "exp(y_hat)"\nexp = 2': "loss.exp: loss parameter name 'exp' is taken",
    '[loss]\nname = "mine"\nformula = "y_hat*g"\ng = "2"': "loss.g: g must be a number",
    '[loss]\nname = "mine"\nformula = "y_hat*g"\ng = nan': "loss.g: g must be a number",
    '[loss]\nname = "my loss"\nformula = "y_hat"': "custom loss name 'my loss' is not a Python identifier",
    '[loss]\nformula = "y_hat"': "loss: the loss table has no name",
    '[loss]\nname = "mine"\nformula = "-log(y_hat) - y*x"': "loss.formula: unknown name 'x'",
    '[loss]\nname = "mine"\nformula = "y*y"': "does not depend on y_hat",
    '[loss]\nname = "mine"\nformula = "y_hat - delta*y"': "unknown name 'delta' at column 9; a formula may use only y_hat, y",
    'loss = "mse"\nloss_formula = "y_hat"': "unknown key 'loss_formula'; write a custom loss as a [loss] table",
    'loss = "hubr"': "unknown loss 'hubr'; did you mean 'huber'?",
}


@pytest.mark.parametrize("loss", sorted(BAD))
def test_bad_loss_tables_are_one_line_errors(loss):
    with pytest.raises(SpecError) as e:
        spec(loss, "identity")
    text = str(e.value)
    assert "\n" not in text and text.startswith("net.toml: ") and BAD[loss] in text, text


def test_a_loss_undefined_where_the_output_can_be_is_refused():
    with pytest.raises(SpecError, match=r"loss.formula: .* is not a finite real number at y_hat = -3 \(what identity "
                                         r"gives at z = -3\), y = 0; the output layer's activation must keep y_hat"):
        spec(f'[loss]\nname = "mine"\nformula = "{BCE}"', "identity")
    spec(f'[loss]\nname = "mine"\nformula = "{BCE}"', "sigmoid")          # defined on (0, 1)


def test_the_python_api_takes_custom_losses():
    net = Network("api", 2, [Dense(1, "sigmoid")], loss="focal", loss_formula=FOCAL, loss_params={"gamma": 0.5})
    assert net.loss_entry.element.has(__import__("sympy").Rational(1, 2))
    with pytest.raises(SpecError, match="loss.formula: unknown function 'log2'"):
        Network("api", 2, [Dense(1, "sigmoid")], loss="mine", loss_formula="log2(y_hat)")


@pytest.mark.parametrize("name", sorted(VERIFIED))
def test_nan_is_never_hidden(name, build_module):
    """A NaN input gives a NaN loss and NaN in every gradient it reaches, never a confident number."""
    net = VERIFIED[name]
    m = build_module(net)
    rng = np.random.default_rng(0)
    params = sample_params(net, rng)
    x = rng.normal(size=(3, net.inputs))
    x[1, 0] = np.nan
    y = _targets({"hinge": "sign", "poisson": "counts", "focal": "binary"}.get(name, "normal"), rng, 3, net.sizes[-1])
    loss, grads = m.loss_and_grad(params, x, y)
    assert np.isnan(loss)
    assert all(np.isnan(g).any() for g in grads.values()), {k: g for k, g in grads.items()}
