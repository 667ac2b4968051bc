"""Generated modules: three-way agreement, and agreement with an independent autograd (PyTorch)."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import spec_warnings_expected
from derive.activations import ACTIVATIONS
from derive.spec import Dense, Network, load_spec
from derive.verify import check_module, load_module, sample_batch, sample_params

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
HIDDEN = sorted(n for n, a in ACTIVATIONS.items() if not a.vector and n not in ("step", "sign")) + ["softmax"]
OUTPUTS = [("identity", "mse"), ("identity", "mae"), ("tanh", "mse"), ("sigmoid", "bce"), ("sigmoid", "mse"),
           ("softmax", "cce"), ("softmax", "sparse_cce"), ("softmax", "mse"), ("relu", "mse"), ("softplus", "mae")]
MISH = "x*tanh(log(1 + exp(x)))"


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_committed_module_agrees_three_ways(spec):
    net = load_spec(spec)
    report = check_module(net, load_module(ROOT / "generated" / f"{net.name}.py"))
    assert report.ok, report.table()


@st.composite
def networks(draw, max_width=6):
    depth = draw(st.integers(1, 4))
    out, loss = draw(st.sampled_from(OUTPUTS))
    layers = []
    for _ in range(depth - 1):
        act = draw(st.sampled_from(HIDDEN + ["custom"]))
        units = draw(st.integers(2 if act == "softmax" else 1, max_width))
        if act == "custom":
            layers.append(Dense(units, "mish", formula=MISH))
        else:
            params = {p.name: draw(st.sampled_from([0.05, 0.3, 1.5])) for p in ACTIVATIONS[act].params}
            layers.append(Dense(units, act, **params))
    units = draw(st.integers(2, max_width)) if out == "softmax" else draw(st.integers(1, max_width))
    layers.append(Dense(units, out))
    with spec_warnings_expected("slow_softmax"):      # mse on a softmax: drawn on purpose
        return Network("random_net", draw(st.integers(1, max_width)), layers, loss=loss)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=networks(max_width=6))
def test_random_architectures_agree_three_ways(net, build_module):
    report = check_module(net, build_module(net), fd_samples=6)
    assert report.ok, report.table()


# --- an independent implementation: PyTorch autograd ------------------------------------------------

def torch_loss(net, params, x, y):
    import torch
    F = torch.nn.functional
    acts = {
        "identity": lambda z, p: z, "sigmoid": lambda z, p: torch.sigmoid(z), "tanh": lambda z, p: torch.tanh(z),
        "relu": lambda z, p: torch.relu(z), "leaky_relu": lambda z, p: F.leaky_relu(z, p.get("alpha", 0.01)),
        "elu": lambda z, p: F.elu(z, p.get("alpha", 1.0)), "gelu": lambda z, p: F.gelu(z),
        "gelu_tanh": lambda z, p: F.gelu(z, approximate="tanh"), "softplus": lambda z, p: F.softplus(z),
        "swish": lambda z, p: z * torch.sigmoid(p.get("beta", 1.0) * z), "softmax": lambda z, p: torch.softmax(z, 1),
        "mish": lambda z, p: z * torch.tanh(F.softplus(z)),
    }
    a = torch.tensor(x)
    for l, layer in enumerate(net.layers, start=1):
        z = a @ params[f"W{l}"].T + params[f"b{l}"]
        a = acts[layer.activation](z, layer.params)
    if net.loss == "sparse_cce":
        y = F.one_hot(torch.tensor(y), a.shape[1]).double()
    else:
        y = torch.tensor(np.asarray(y, dtype=float).reshape(a.shape))
    # bce of a sigmoid from its logits, as any careful implementation computes it: log(1 - a) of a
    # saturated sigmoid has lost the digits the reference must keep.
    sigmoid_out = net.layers[-1].activation == "sigmoid"
    per = {"mse": lambda: 0.5 * (a - y) ** 2, "mae": lambda: (a - y).abs(),
           "bce": lambda: (F.softplus(z) - y * z) if sigmoid_out else -(y * torch.log(a) + (1 - y) * torch.log(1 - a)),
           "cce": lambda: -y * torch.log(a), "sparse_cce": lambda: -y * torch.log(a)}[net.loss]()
    return per.sum() / a.shape[0]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=networks(max_width=6), seed=st.integers(0, 2**16))
def test_random_architectures_match_torch_autograd(net, seed, build_module):
    torch = pytest.importorskip("torch")
    module = build_module(net)
    rng = np.random.default_rng(seed)
    x, y = sample_batch(net, rng, batch=5)
    params = sample_params(net, rng)
    loss, grads = module.loss_and_grad(params, x, y)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tloss = torch_loss(net, tparams, x, y)
    tloss.backward()
    assert abs(loss - tloss.item()) <= 1e-10 * max(1.0, abs(loss))
    for k, v in tparams.items():
        ref = v.grad.numpy()
        assert np.allclose(grads[k], ref, rtol=1e-9, atol=1e-11), (k, grads[k], ref)


def test_float32_stays_float32(build_module):
    net = Network("f32", 3, [Dense(4, "gelu"), Dense(4, "elu"), Dense(3, "softmax")], loss="sparse_cce")
    m = build_module(net)
    p = m.init_params(seed=1, dtype=np.float32)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    y_hat, cache = m.forward(p, x)
    assert y_hat.dtype == np.float32 and all(v.dtype == np.float32 for v in cache.values() if v.dtype.kind == "f")
    loss, g = m.loss_and_grad(p, x, np.array([0, 1, 2, 1, 0]))
    assert all(v.dtype == np.float32 for v in g.values())


def test_shapes_are_checked(build_module):
    m = build_module(Network("shapes", 3, [Dense(2, "softmax")], loss="sparse_cce"))
    p = m.init_params()
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        m.forward(p, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        m.loss(p, np.zeros((2, 3)), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="0..1"):
        m.loss(p, np.zeros((2, 3)), np.array([0, 2]))


def test_output_is_deterministic():
    from codegen.build import module_outputs
    net = load_spec(EXAMPLES[0])
    assert module_outputs(net) == module_outputs(load_spec(EXAMPLES[0]))
