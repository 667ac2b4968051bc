"""What the generated module's loss() docstring and `nnderive list` say each loss is, checked against
what the module computes and against the library the note compares it with."""
import numpy as np
import pytest

from derive.losses import LOSSES
from derive.spec import Dense, Network

K = 3      # outputs: every factor in K is checked at a K where it is not 1

# loss -> (output activation, what the note must say, torch's loss of (z, a, y) as a float64, K -> torch / L)
COMPARED = {
    "mse": ("identity", "torch.nn.MSELoss", "is 2/K of it", lambda t, z, a, y: t.nn.MSELoss()(a, y), lambda k: 2 / k),
    "mae": ("identity", "torch.nn.L1Loss", "is 1/K of it", lambda t, z, a, y: t.nn.L1Loss()(a, y), lambda k: 1 / k),
    "bce": ("sigmoid", "torch.nn.BCELoss", "is 1/K of it", lambda t, z, a, y: t.nn.BCELoss()(a, y), lambda k: 1 / k),
    "cce": ("softmax", "torch.nn.CrossEntropyLoss", "equals it",
            lambda t, z, a, y: t.nn.CrossEntropyLoss()(z, y), lambda k: 1),
    "sparse_cce": ("softmax", "torch.nn.CrossEntropyLoss", "equals it",
                   lambda t, z, a, y: t.nn.CrossEntropyLoss()(z, y), lambda k: 1),
    "huber": ("identity", "torch.nn.HuberLoss", "is 1/K of it",
              lambda t, z, a, y: t.nn.HuberLoss(delta=1.0)(a, y), lambda k: 1 / k),
}


def test_every_note_is_checked_here():
    assert {name for name, loss in LOSSES.items() if loss.note} == set(COMPARED)


def _point(net, rng, n=7):
    x = rng.normal(size=(n, net.inputs))
    if net.loss == "sparse_cce":
        y = rng.integers(0, K, size=n)
    elif net.loss == "cce":
        y = rng.dirichlet(np.ones(K), size=n)
    elif net.loss == "bce":
        y = rng.uniform(size=(n, K))
    else:
        y = rng.normal(scale=2.0, size=(n, K))      # beyond huber's delta for some entries
    return x, y


@pytest.mark.parametrize("name", sorted(COMPARED))
def test_the_docstring_states_the_convention_the_module_computes(name, build_module, rng):
    activation, library, relation, torch_loss, factor = COMPARED[name]
    net = Network(f"conv_{name}", 2, [Dense(K, activation)], loss=name)
    module = build_module(net)
    doc = " ".join(module.loss.__doc__.split())
    loss = LOSSES[name]
    assert f"summed over the K = {K} outputs and averaged over the N examples, where l is the {loss.title}" in doc
    assert f"{library}" in doc and f"{relation}." in doc and loss.note in doc
    params = {k: rng.normal(size=v) for k, v in module.PARAM_SHAPES.items()}
    x, y = _point(net, rng)
    # L = (1/N) sum_n sum_k l(yhat[n, k], y[n, k]), l the registry's element, evaluated on its own
    import sympy as sp

    from derive.naming import Y, YHAT
    yhat, _ = module.forward(params, x)
    target = np.eye(K)[y] if loss.target == "labels" else y
    element = sp.lambdify((YHAT, Y), loss.bind().element, "numpy")
    assert np.isclose(module.loss(params, x, y), np.sum(element(yhat, target)) / len(x), rtol=1e-12)

    torch = pytest.importorskip("torch")
    z = torch.tensor(x @ params["W1"].T + params["b1"])
    a = torch.tensor(yhat)
    t = torch.tensor(y) if loss.target == "labels" else torch.tensor(target)
    theirs = float(torch_loss(torch, z, a, t))
    assert np.isclose(theirs, factor(K) * module.loss(params, x, y), rtol=1e-10), (theirs, module.loss(params, x, y))


def test_list_states_the_convention_and_every_note():
    from codegen.listing import listing
    text = " ".join(listing().split())
    assert "L = (1/N) sum_n sum_k l(yhat[n, k], y[n, k])" in text
    for loss in LOSSES.values():
        assert " ".join(loss.note.split()) in text and loss.title in text
