"""Generated modules stay finite and accurate at extreme pre-activations (|z| up to 1e4), in float64
and float32, against mpmath references typed here from the textbook formulas (not from the derivation).
NaN inputs give NaN losses and gradients, never a finite confident number; wrong shapes raise ValueError.
"""
import itertools

import mpmath
import numpy as np
import pytest

from codegen.build import module_outputs, write_outputs
from conftest import expects_spec_warning
from derive.spec import Dense, Network
from derive.verify import load_module

DPS = 30
# mse on softmax and step, sign layers are tested on purpose
pytestmark = [expects_spec_warning("slow_softmax"), expects_spec_warning("untrainable")]
MISH = "x*tanh(log(1 + exp(x)))"
EXTREME = [-1e4, -1e3, -50.0, -5.0, -0.3, 0.7, 5.0, 50.0, 1e3, 1e4]
TOLERANCE = {np.float64: (1e-6, 1e-12), np.float32: (2e-5, 1e-6)}   # relative, absolute (times the scale)
_counter = itertools.count()


def _sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


def _softplus(z):
    return mpmath.log1p(mpmath.exp(z))


# name -> (layer, f in mpmath): the activations as textbooks write them.
REFERENCE = {
    "identity": (Dense(1, "identity"), lambda z: z),
    "sigmoid": (Dense(1, "sigmoid"), _sigmoid),
    "tanh": (Dense(1, "tanh"), mpmath.tanh),
    "relu": (Dense(1, "relu"), lambda z: max(z, 0)),
    "leaky_relu": (Dense(1, "leaky_relu", alpha=0.2), lambda z: z if z > 0 else z / 5),
    "elu": (Dense(1, "elu", alpha=0.5), lambda z: z if z > 0 else (mpmath.exp(z) - 1) / 2),
    "gelu": (Dense(1, "gelu"), lambda z: z * mpmath.erfc(-z / mpmath.sqrt(2)) / 2),
    "gelu_tanh": (Dense(1, "gelu_tanh"),
                  lambda z: z * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (z + mpmath.mpf("0.044715") * z**3))) / 2),
    "softplus": (Dense(1, "softplus"), _softplus),
    "swish": (Dense(1, "swish", beta=2.0), lambda z: z * _sigmoid(2 * z)),
    "step": (Dense(1, "step"), lambda z: mpmath.mpf(1 if z > 0 else 0)),
    "sign": (Dense(1, "sign"), mpmath.sign),
    "mish": (Dense(1, "mish", formula=MISH), lambda z: z * mpmath.tanh(_softplus(z))),
}


def _log_softmax(z):
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
    return [v - lse for v in z]


# loss -> per-example loss in mpmath from the output pre-activations z (logits) and targets y.
def _mse(a, y):
    return mpmath.fsum((ak - yk) ** 2 for ak, yk in zip(a, y)) / 2


def _mae(a, y):
    return mpmath.fsum(abs(ak - yk) for ak, yk in zip(a, y))


LOSS_CASES = {
    # name: (output layer, units, per-example loss of (z, y))
    "identity+mse": (lambda k: Dense(k, "identity"), "mse", lambda z, y: _mse(z, y)),
    "identity+mae": (lambda k: Dense(k, "identity"), "mae", lambda z, y: _mae(z, y)),
    "sigmoid+bce": (lambda k: Dense(k, "sigmoid"), "bce",   # -y log s - (1-y) log(1-s) = softplus(z) - y z
                    lambda z, y: mpmath.fsum(_softplus(zk) - yk * zk for zk, yk in zip(z, y))),
    "sigmoid+mse": (lambda k: Dense(k, "sigmoid"), "mse", lambda z, y: _mse([_sigmoid(v) for v in z], y)),
    "tanh+mse": (lambda k: Dense(k, "tanh"), "mse", lambda z, y: _mse([mpmath.tanh(v) for v in z], y)),
    "softplus+mse": (lambda k: Dense(k, "softplus"), "mse", lambda z, y: _mse([_softplus(v) for v in z], y)),
    "softmax+cce": (lambda k: Dense(k, "softmax"), "cce",
                    lambda z, y: -mpmath.fsum(yk * lp for yk, lp in zip(y, _log_softmax(z)))),
    "softmax+sparse_cce": (lambda k: Dense(k, "softmax"), "sparse_cce",
                           lambda z, y: -mpmath.fsum(yk * lp for yk, lp in zip(y, _log_softmax(z)))),
    "softmax+mse": (lambda k: Dense(k, "softmax"), "mse",
                    lambda z, y: _mse([mpmath.exp(lp) for lp in _log_softmax(z)], y)),
    "softmax+mae": (lambda k: Dense(k, "softmax"), "mae",
                    lambda z, y: _mae([mpmath.exp(lp) for lp in _log_softmax(z)], y)),
}
LOGITS = [[1e4, -1e4, 0.5], [-1e4, 1e4, -1e4], [30.0, -30.0, 0.0], [700.0, 0.0, -700.0]]


_modules = {}


def _module(name, net, tmp_path_factory):
    if name not in _modules:
        out = tmp_path_factory.mktemp(f"stab{next(_counter)}")
        write_outputs(module_outputs(net), out)
        _modules[name] = load_module(out / f"{net.name}.py")
    return _modules[name]


def _gradient(loss, params: dict) -> dict:
    """dL/dp of an mpmath loss of the parameters, entry by entry, by mpmath.diff at DPS digits."""
    with mpmath.workdps(DPS):
        values = {k: [[mpmath.mpf(float(v)) for v in row] for row in np.atleast_2d(p)] for k, p in params.items()}
        grads = {}
        for k, p in params.items():
            g = np.zeros(np.atleast_2d(p).shape)
            for i, j in np.ndindex(g.shape):
                def moved(t, k=k, i=i, j=j):
                    v = {name: [row[:] for row in rows] for name, rows in values.items()}
                    v[k][i][j] = t
                    return loss(v)
                g[i, j] = float(mpmath.diff(moved, values[k][i][j]))
            grads[k] = g.reshape(np.shape(p))
        return grads, float(loss(values))


def _check(module, params, x, y, loss, dtype):
    """The module's loss and gradient at (params, x, y) in `dtype` match the mpmath reference."""
    cast = {k: v.astype(dtype) for k, v in params.items()}
    x = x.astype(dtype)
    y = y if y.dtype.kind in "iu" else y.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no inf, no NaN inside
        value, grads = module.loss_and_grad(cast, x, y)
    exact = {k: v.astype(np.float64) for k, v in cast.items()}   # the reference sees the rounded inputs
    ref, ref_value = _gradient(loss, exact)
    rtol, atol = TOLERANCE[dtype]
    scale = max(1.0, abs(ref_value), *(float(np.max(np.abs(g))) for g in ref.values()))
    assert np.isfinite(value) and abs(value - ref_value) <= rtol * abs(ref_value) + atol * scale, (value, ref_value)
    worst = 0.0
    for k, g in grads.items():
        assert g.dtype == dtype and np.isfinite(g).all(), (k, g)
        err = np.abs(g.astype(np.float64) - ref[k])
        assert np.all(err <= rtol * np.abs(ref[k]) + atol * scale), (k, g, ref[k])
        worst = max(worst, float(np.max(err / (np.abs(ref[k]) + atol * scale))))
    return worst


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_hidden_activation_is_stable_at_extreme_pre_activations(name, dtype, tmp_path_factory):
    """1 -> 1 (act) -> 1 (identity), mse: z1 = W1 spans -1e4 .. 1e4; every gradient vs mpmath."""
    layer, f = REFERENCE[name]
    module = _module(name, Network(f"act_{name}", 1, [layer, Dense(1, "identity")], loss="mse"), tmp_path_factory)

    def loss(v):
        a = f(v["W1"][0][0] * v["x"][0][0] + v["b1"][0][0])
        return (v["W2"][0][0] * a + v["b2"][0][0] - mpmath.mpf(0.3)) ** 2 / 2

    for z in EXTREME:
        params = {"W1": np.array([[z]]), "b1": np.array([0.0]), "W2": np.array([[0.5]]), "b2": np.array([0.1])}
        x = np.array([[1.0]])

        def with_x(v, x=x):
            return loss({**v, "x": [[mpmath.mpf(float(x[0, 0]))]]})

        _check(module, params, x, np.array([[0.3]]), with_x, dtype)


def _loss_case(case, logits, tmp_path_factory):
    out, loss_name, per_example = LOSS_CASES[case]
    k = len(logits) if "softmax" in case else 2
    logits = logits[:k]
    module = _module(case + str(k), Network("loss_" + case.replace("+", "_"), k, [out(k)], loss=loss_name),
                     tmp_path_factory)
    params = {"W1": np.diag(logits), "b1": np.zeros(k)}
    x = np.ones((1, k))
    if loss_name == "sparse_cce":
        y, y_ref = np.array([1]), [0] * k
        y_ref[1] = 1
    elif loss_name in ("cce",):
        y_ref = [0] * k
        y_ref[1] = 1
        y = np.array([y_ref], dtype=float)
    elif loss_name == "bce":
        y_ref = [0.0, 1.0]
        y = np.array([y_ref])
    else:
        y_ref = [0.3, -0.2][:k] + [0.1] * (k - 2)
        y = np.array([y_ref])

    def loss(v):
        z = [mpmath.fsum(w * mpmath.mpf(1) for w in v["W1"][i]) + v["b1"][0][i] for i in range(k)]
        return per_example(z, [mpmath.mpf(t) for t in y_ref])

    return module, params, x, y, loss


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_loss_is_stable_at_extreme_logits(case, dtype, tmp_path_factory):
    """Output pre-activations at +-1e4 (and 30, 700): loss and gradients finite and vs mpmath."""
    for logits in LOGITS:
        module, params, x, y, loss = _loss_case(case, logits, tmp_path_factory)
        _check(module, params, x, y, loss, dtype)


def test_reference_check_can_fail(tmp_path_factory):
    """The comparison is not vacuous: a naive sigmoid (1/(1 + exp(-z))) breaks it at z = -1e4."""
    layer, f = REFERENCE["sigmoid"]
    module = _module("sigmoid", Network("act_sigmoid", 1, [layer, Dense(1, "identity")], loss="mse"),
                     tmp_path_factory)

    class Naive:
        def loss_and_grad(self, params, x, y):
            with np.errstate(all="ignore"):
                z = x @ params["W1"].T + params["b1"]
                a = 1 / (1 + np.exp(-z))
                d = (a @ params["W2"].T + params["b2"] - y)
                dz = d @ params["W2"] * np.exp(-z) / (1 + np.exp(-z)) ** 2
                return float(np.sum(d**2) / 2), {"W1": dz.T @ x, "b1": dz.sum(0), "W2": d.T @ a, "b2": d.sum(0)}

    def loss(v):
        a = f(v["W1"][0][0] + v["b1"][0][0])
        return (v["W2"][0][0] * a + v["b2"][0][0] - mpmath.mpf(0.3)) ** 2 / 2

    params = {"W1": np.array([[-1e4]]), "b1": np.array([0.0]), "W2": np.array([[0.5]]), "b2": np.array([0.1])}
    _check(module, params, np.array([[1.0]]), np.array([[0.3]]), loss, np.float64)
    with pytest.raises((AssertionError, FloatingPointError)):
        _check(Naive(), params, np.array([[1.0]]), np.array([[0.3]]), loss, np.float64)


# --- NaN: propagated, never turned into a confident number --------------------------------------------

TRAINABLE = [n for n in sorted(REFERENCE) if n not in ("step", "sign")]
NAN_OUTPUTS = [("identity", "mse"), ("sigmoid", "bce"), ("softmax", "cce"), ("softmax", "sparse_cce"),
               ("tanh", "mae"), ("softmax", "mse")]


def _nan_net(hidden, out, loss):
    layer = REFERENCE[hidden][0]
    hidden_layer = Dense(3, layer.activation, layer.formula, **layer.params)
    return Network(f"nan_{hidden}_{out}_{loss}", 4, [hidden_layer, Dense(3, out)], loss=loss)


def _targets(net, rng, batch):
    if net.loss == "sparse_cce":
        return rng.integers(0, 3, size=batch)
    if net.loss in ("cce",):
        return np.eye(3)[rng.integers(0, 3, size=batch)]
    return rng.uniform(0.1, 0.9, size=(batch, 3))


@pytest.mark.parametrize("out, loss", NAN_OUTPUTS, ids=[f"{o}+{l}" for o, l in NAN_OUTPUTS])
@pytest.mark.parametrize("hidden", TRAINABLE)
def test_nan_input_gives_nan_loss_and_gradients(hidden, out, loss, tmp_path_factory):
    """A NaN anywhere in x makes the loss and every gradient entry NaN (documented in the module)."""
    net = _nan_net(hidden, out, loss)
    module = _module(net.name, net, tmp_path_factory)
    rng = np.random.default_rng(0)
    params = module.init_params(seed=1)
    x = rng.normal(size=(5, 4))
    y = _targets(net, rng, 5)
    x[2, 1] = np.nan
    x_before = x.copy()
    with np.errstate(invalid="ignore"):
        value, grads = module.loss_and_grad(params, x, y)
    assert np.isnan(value)
    for k, g in grads.items():
        assert np.isnan(g).all(), (k, g)
    np.testing.assert_array_equal(x, x_before)   # the caller's array is untouched


@pytest.mark.parametrize("hidden", ["step", "sign"])
def test_nan_input_is_not_hidden_by_a_step_layer(hidden, tmp_path_factory):
    """A step is (z > 0) as a mask, but as a value it keeps NaN: the loss is NaN, not a confident number.
    (Their derivative is 0 by convention, so the layers below get zero gradients either way.)"""
    net = _nan_net(hidden, "identity", "mse")
    module = _module(net.name, net, tmp_path_factory)
    x = np.random.default_rng(0).normal(size=(3, 4))
    x[1, 2] = np.nan
    value, grads = module.loss_and_grad(module.init_params(seed=1), x, np.zeros((3, 3)))
    assert np.isnan(value) and np.isnan(grads["W2"]).all() and np.isnan(grads["b2"]).all()
    assert module.predict(module.init_params(seed=1), x).dtype == np.float64


@pytest.mark.parametrize("hidden", ["relu", "elu", "leaky_relu"])
def test_nan_target_reaches_exactly_the_gradients_that_depend_on_it(hidden, tmp_path_factory):
    """y[0, 0] = NaN: output unit 0's weights and everything below it are NaN; units 1, 2 are unaffected."""
    net = _nan_net(hidden, "identity", "mse")
    module = _module(net.name, net, tmp_path_factory)
    rng = np.random.default_rng(0)
    params, x = module.init_params(seed=1), rng.normal(size=(5, 4))
    y = _targets(net, rng, 5)
    clean = module.loss_and_grad(params, x, y)[1]
    y[0, 0] = np.nan
    value, grads = module.loss_and_grad(params, x, y)
    assert np.isnan(value)
    assert np.isnan(grads["W2"][0]).all() and np.isnan(grads["b2"][0])
    assert np.isnan(grads["W1"]).all() and np.isnan(grads["b1"]).all()
    np.testing.assert_array_equal(grads["W2"][1:], clean["W2"][1:])


# --- shapes ------------------------------------------------------------------------------------------

def test_wrong_shapes_raise_value_error_naming_the_expected_shape(tmp_path_factory):
    net = Network("shapes_values", 4, [Dense(3, "relu"), Dense(2, "sigmoid")], loss="bce")
    m = _module(net.name, net, tmp_path_factory)
    p = m.init_params()
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        m.forward(p, np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        m.predict(p, np.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        m.loss(p, np.zeros((2, 4)), np.zeros((2, 3)))
    labels = Network("shapes_labels", 4, [Dense(3, "softmax")], loss="sparse_cce")
    m = _module(labels.name, labels, tmp_path_factory)
    p = m.init_params()
    with pytest.raises(ValueError, match=r"\(2,\)"):
        m.loss_and_grad(p, np.zeros((2, 4)), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        m.loss(p, np.zeros((2, 4)), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer labels"):
        m.loss(p, np.zeros((2, 4)), np.array([0.0, 1.0]))
