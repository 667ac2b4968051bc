"""The layer-level derivation equals sp.diff of the fully expanded loss; fused deltas are derived."""
import pytest
import sympy as sp
from conftest import count_calls, expects_spec_warning

from derive.backprop import derive
from derive.naming import A, Y, YSUM
from derive.spec import Dense, Network
from derive.verify import prove

PAIRINGS = [  # hidden activation(s), output activation, loss
    (["relu"], "sigmoid", "mse"),
    (["tanh"], "softmax", "cce"),
    (["sigmoid"], "softmax", "sparse_cce"),
    (["leaky_relu"], "sigmoid", "bce"),
    (["softplus", "tanh"], "identity", "mae"),
    pytest.param(["elu"], "softmax", "mse",  # softmax without a fused form: the Jacobian-vector product
                 marks=expects_spec_warning("slow_softmax")),
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


def _planted(prog, name, change):
    """The Program with the first statement writing `name` that `change(expr)` alters, altered."""
    import dataclasses
    passes, done = {}, False
    for key, statements in prog.passes().items():
        out = []
        for s in statements:
            if s.name == name and not done and change(s.expr) != s.expr:
                s, done = dataclasses.replace(s, expr=change(s.expr)), True
            out.append(s)
        passes[key] = tuple(out)
    assert done, f"nothing to plant in {name}"
    return dataclasses.replace(prog, **passes)


@pytest.mark.parametrize("name, change, wrong", [
    ("delta1", lambda e: e.xreplace({sp.Symbol("a1", real=True) ** 2: sp.Symbol("a1", real=True)}), "W1"),
    ("dW1", lambda e: 1.001 * e, "W1"),
    ("delta2", lambda e: e + sp.Symbol("y", real=True) * sp.Rational(1, 100), "W2"),
    ("total", lambda e: e * sp.Rational(101, 100), "loss"),
])
def test_proof_catches_a_planted_error_in_the_printed_statements(name, change, wrong):
    """The proof is not vacuous: it runs the Program's own statements, so an error in one is found."""
    from derive.program import program
    from derive.proof import prove as prove_program
    prog = program(Network("proof", 2, [Dense(2, "tanh"), Dense(2, "softmax")], loss="cce"))
    assert max(dict(prove_program(prog)).values()) < 1e-30
    worst = dict(prove_program(_planted(prog, name, change)))
    assert worst[wrong] > 1e-6
    if name == "delta1":
        assert worst["W2"] < 1e-30          # the error enters at layer 1: layer 2 stays right


@pytest.mark.parametrize("out, loss", [("sigmoid", "bce"), ("softmax", "cce"), ("softmax", "sparse_cce")])
def test_fused_deltas_come_out_of_the_derivation(out, loss):
    d = derive(Network("fused", 3, [Dense(2 if out == "softmax" else 1, out)], loss=loss))
    assert d.output.kind == "fused"
    if loss == "cce":
        # a cce target need not be one-hot: the delta holds for any row sum, a * sum(y) - y
        assert sp.expand(d.output.expr - (A * YSUM - Y)) == 0 and d.output.condition is None
    else:
        assert sp.expand(d.output.expr - (A - Y)) == 0
    if loss == "sparse_cce":
        assert d.output.condition is not None      # sum(y) = 1 by construction: one-hot of a label


@expects_spec_warning("slow_softmax")
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
    """derive() touches no per-unit work: counted in function calls (the same on every machine), a
    network 100x wider costs exactly as much as a narrow one of the same depth, and a wide deeper one
    no more than a few layers' bookkeeping."""
    def calls(sizes):
        net = Network("n", sizes[0], [Dense(s, "relu") for s in sizes[1:-1]] + [Dense(sizes[-1], "softmax")],
                      loss="cce")
        derive(net)                      # warm the per-formula caches
        return count_calls(derive, net)[1]

    small = calls([4, 2, 3])
    assert calls([784, 512, 10]) == small
    assert calls([4, 2, 2, 3]) == calls([784, 512, 512, 10]) < 5 * small
