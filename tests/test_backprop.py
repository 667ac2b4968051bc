"""The layer-level derivation equals sp.diff of the fully expanded loss; fused deltas are derived."""
import time

import pytest
import sympy as sp

from derive.backprop import derive
from derive.naming import A, Y
from derive.spec import Dense, Network
from derive.verify import prove

PAIRINGS = [  # hidden activation(s), output activation, loss
    (["relu"], "sigmoid", "mse"),
    (["tanh"], "softmax", "cce"),
    (["sigmoid"], "softmax", "sparse_cce"),
    (["leaky_relu"], "sigmoid", "bce"),
    (["softplus", "tanh"], "identity", "mae"),
    (["elu"], "softmax", "mse"),          # softmax without a fused form: the Jacobian-vector product
    (["swish"], "identity", "mse"),
    (["gelu_tanh"], "tanh", "mse"),
    (["softmax"], "sigmoid", "mse"),      # a softmax hidden layer
]


@pytest.mark.parametrize("hidden, out, loss", PAIRINGS)
def test_layer_derivation_equals_expanded_derivative(hidden, out, loss):
    layers = [Dense(2, a) for a in hidden] + [Dense(2 if out != "sigmoid" else 1, out)]
    net = Network("proof", 2, layers, loss=loss)
    for param, worst in prove(net):
        assert worst < 1e-30, (param, worst)


def test_proof_catches_a_wrong_recurrence(monkeypatch):
    """The proof is not vacuous: a wrong activation derivative in the recurrence is detected."""
    import derive.verify as verify
    net = Network("proof", 2, [Dense(2, "tanh"), Dense(2, "softmax")], loss="cce")
    real = verify.layer_gradients

    def wrong(d, P, x, y):
        layers = list(d.layers)
        layers[0] = type(layers[0])(**{**layers[0].__dict__, "factor": 1 - A})   # tanh' = 1 - a, not 1 - a**2
        return real(type(d)(d.network, tuple(layers), d.output, d.loss, d.indexed), P, x, y)

    monkeypatch.setattr(verify, "layer_gradients", wrong)
    worst = dict(verify.prove(net))
    assert worst["W1"] > 1e-6 and worst["W2"] < 1e-30


@pytest.mark.parametrize("out, loss", [("sigmoid", "bce"), ("softmax", "cce"), ("softmax", "sparse_cce")])
def test_fused_deltas_come_out_of_the_derivation(out, loss):
    d = derive(Network("fused", 3, [Dense(2 if out == "softmax" else 1, out)], loss=loss))
    assert d.output.kind == "fused"
    assert sp.expand(d.output.expr - (A - Y)) == 0
    if out == "softmax":
        assert d.output.condition is not None      # it used sum(y) = 1


def test_unfused_softmax_uses_the_jacobian_vector_product():
    d = derive(Network("jvp", 3, [Dense(3, "softmax")], loss="mse"))
    assert d.output.kind == "jvp"
    assert sp.expand(d.output.expr - (A - Y)) == 0     # g = dL/da for mse


def test_losses_from_logits_where_the_output_allows():
    assert derive(Network("n", 2, [Dense(1, "sigmoid")], loss="bce")).output.loss_from == "logits"
    assert derive(Network("n", 2, [Dense(3, "softmax")], loss="cce")).output.loss_from == "log_softmax"
    assert derive(Network("n", 2, [Dense(1, "sigmoid")], loss="mse")).output.loss_from == "output"


def test_indexed_form_gives_the_matrix_rules():
    steps = derive(Network("n", 2, [Dense(1, "sigmoid")], loss="bce")).indexed
    s = steps["symbols"]
    assert steps["du_dw"] == sp.KroneckerDelta(s["k"], s["q"]) * s["a"][s["r"]]
    assert steps["du_da"] == s["w"][s["k"], s["r"]]
    assert steps["du_db"] == sp.KroneckerDelta(s["k"], s["q"])


def test_derivation_cost_does_not_depend_on_width():
    def timed(sizes):
        net = Network("n", sizes[0], [Dense(s, "relu") for s in sizes[1:-1]] + [Dense(sizes[-1], "softmax")],
                      loss="cce")
        derive(net)                      # warm the per-formula caches
        t = time.perf_counter()
        for _ in range(20):
            derive(net)
        return time.perf_counter() - t

    small, large = timed([4, 2, 3]), timed([784, 512, 512, 10])
    # derive() touches no per-unit work: the wide network costs no more than a few layers' bookkeeping.
    assert large < 5 * small + 0.05
