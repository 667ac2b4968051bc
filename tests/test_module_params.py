"""A generated module given wrong params (missing or extra keys, wrong shapes, integer or mixed dtypes,
not arrays) answers one ValueError naming the parameter and what it must be, from every entry point
that takes params; right params, float64 and float32, still work. The NumPy module and the array-API
module, on NumPy and array-api-strict arrays."""
import warnings

import numpy as np
import pytest

from codegen.build import array_api_outputs, module_outputs, write_outputs
from derive.spec import Dense, Network
from derive.verify import load_module

# Penalised (so that penalty(params) is checked too); the array-API module takes no penalties yet.
NUMPY_NET = Network("params_np", 3, [Dense(4, "tanh", l2=0.01), Dense(2, "sigmoid")], loss="bce")
XP_NET = Network("params_xp", 3, [Dense(4, "tanh"), Dense(2, "sigmoid")], loss="bce")
SHAPES = {"W1": (4, 3), "b1": (4,), "W2": (2, 4), "b2": (2,)}
LR = 0.1


@pytest.fixture(scope="module")
def numpy_module(tmp_path_factory):
    out = tmp_path_factory.mktemp("params_np")
    write_outputs(module_outputs(NUMPY_NET), out)
    return load_module(out / f"{NUMPY_NET.name}.py")


@pytest.fixture(scope="module")
def xp_module(tmp_path_factory):
    pytest.importorskip("array_api_compat", reason="the array-API module needs array-api-compat (the `xp` extra)")
    out = tmp_path_factory.mktemp("params_xp")
    write_outputs(array_api_outputs(XP_NET), out)
    return load_module(out / f"{XP_NET.name}_xp.py")


def _namespace(name):
    if name == "numpy":
        return np
    return pytest.importorskip("array_api_strict", reason="array-api-strict is not installed (the `test` extra)")


def _data(dtype="float64"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(dtype)
    y = rng.uniform(0.1, 0.9, size=(5, 2)).astype(dtype)
    params = {p: rng.normal(scale=0.5, size=s).astype(dtype) for p, s in SHAPES.items()}
    v = {p: rng.normal(size=s).astype(dtype) for p, s in SHAPES.items()}
    return params, x, y, v


def entry_points(m, xp=np):
    """name -> call(params): every public function that takes params, on good x, y and v."""
    _, x, y, v = _data()
    x, y, v = xp.asarray(x), xp.asarray(y), {p: xp.asarray(a) for p, a in v.items()}
    good = {p: xp.asarray(a) for p, a in _data()[0].items()}
    cache = m.forward(good, x)[1]
    calls = {
        "forward": lambda p: m.forward(p, x), "backward": lambda p: m.backward(p, cache, y),
        "loss": lambda p: m.loss(p, x, y), "loss_and_grad": lambda p: m.loss_and_grad(p, x, y),
        "predict": lambda p: m.predict(p, x), "sgd_step": lambda p: m.sgd_step(p, x, y, LR),
        "hvp": lambda p: m.hvp(p, x, y, v), "gnvp": lambda p: m.gnvp(p, x, y, v),
        "loss_grad_hvp": lambda p: m.loss_grad_hvp(p, x, y, v), "hessian": lambda p: m.hessian(p, x, y)}
    for optional in ("penalty", "sgd_update"):
        if hasattr(m, optional):
            fn = getattr(m, optional)
            calls[optional] = (lambda p, fn=fn: fn(p)) if optional == "penalty" else (lambda p, fn=fn: fn(p, x, y, LR))
    return calls


def wrong_params(xp, array_word):
    """case -> (params, the fragments the message must hold: the parameter and what it must be)."""
    good, *_ = _data()
    to = {p: xp.asarray(a) for p, a in good.items()}

    def but(**changes):
        out = dict(to)
        for k, a in changes.items():
            if a is None:
                del out[k]
            else:
                out[k] = a
        return out

    return {
        "missing key": (but(b2=None), ["'b2'", "['W1', 'b1', 'W2', 'b2']"]),
        "extra key": (but(W3=xp.asarray(np.zeros((2, 2)))), ["'W3'", "['W1', 'b1', 'W2', 'b2']"]),
        "W transposed": (but(W1=xp.asarray(good["W1"].T.copy())), ["params['W1']", "(4, 3)", "(3, 4)"]),
        "b as a column": (but(b1=xp.asarray(good["b1"].reshape(4, 1))), ["params['b1']", "(4,)", "(4, 1)"]),
        "integer W": (but(W2=xp.asarray(np.ones((2, 4), np.int64))), ["params['W2']", "int64", "float", "(2, 4)"]),
        "every param integer": ({p: xp.asarray(np.ones(s, np.int32)) for p, s in SHAPES.items()},
                                ["params['W1']", "int32", "float", "(4, 3)"]),
        "mixed dtypes": (but(b1=xp.asarray(good["b1"].astype(np.float32))),
                         ["params['b1']", "float32", "params['W1']", "float64", "same dtype"]),
        "a list": (but(W1=good["W1"].tolist()), ["params['W1']", f"must be {array_word} of shape (4, 3)", "list"]),
        "not a dict": ([to[p] for p in SHAPES], ["params must be a dict", "['W1', 'b1', 'W2', 'b2']", "list"]),
    }


def _assert_refused(call, params, fragments, entry, case):
    with pytest.raises(ValueError) as info:
        call(params)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (entry, case, fragment, message)


@pytest.mark.parametrize("entry", ["forward", "backward", "loss", "loss_and_grad", "predict", "sgd_step", "hvp",
                                   "gnvp", "loss_grad_hvp", "hessian", "penalty"])
def test_numpy_module_refuses_wrong_params_naming_the_parameter(numpy_module, entry):
    call = entry_points(numpy_module)[entry]
    cases = wrong_params(np, "a NumPy array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)     # np.matrix is on its way out, not gone
        matrix = np.asmatrix(_data()[0]["W2"])
    cases["np.matrix"] = ({**_data()[0], "W2": matrix}, ["params['W2']", "NumPy array", "matrix"])
    for case, (params, fragments) in cases.items():
        _assert_refused(call, params, fragments, entry, case)


@pytest.mark.parametrize("ns_name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("entry", ["forward", "backward", "loss", "loss_and_grad", "predict", "sgd_step", "sgd_update",
                                   "hvp", "gnvp", "loss_grad_hvp", "hessian"])
def test_array_api_module_refuses_wrong_params_naming_the_parameter(xp_module, ns_name, entry):
    xp = _namespace(ns_name)
    call = entry_points(xp_module, xp)[entry]
    cases = wrong_params(xp, "an array")
    if ns_name != "numpy":                    # one parameter of another namespace
        good = {p: xp.asarray(a) for p, a in _data()[0].items()}
        cases["two namespaces"] = ({**good, "b2": np.zeros(2)}, ["params['b2']", "numpy", "one namespace"])
    for case, (params, fragments) in cases.items():
        _assert_refused(call, params, fragments, entry, case)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_right_params_still_work_in_both_dtypes(numpy_module, dtype):
    params, x, y, v = _data(dtype)
    m = numpy_module
    loss, grads = m.loss_and_grad(params, x, y)
    assert np.isfinite(loss) and all(grads[p].dtype == np.dtype(dtype) and grads[p].shape == s for p, s in SHAPES.items())
    assert m.loss(params, x, y) == loss and m.predict(params, x).dtype == np.dtype(dtype)
    P = sum(int(np.prod(s)) for s in SHAPES.values())
    assert m.hessian(params, x, y).shape == (P, P) and m.penalty(params) > 0
    step = {p: a.copy() for p, a in params.items()}
    assert m.sgd_step(step, x, y, LR) == loss
    assert all(np.allclose(step[p], params[p] - LR * grads[p], rtol=1e-5) for p in SHAPES)


def test_an_ndarray_subclass_is_taken_on_the_careful_path(numpy_module, tmp_path):
    """np.memmap weights (np.load(..., mmap_mode="r+")) are arrays too: the same loss and step."""
    params, x, y, _ = _data()
    mapped = {}
    for p, a in params.items():
        mapped[p] = np.memmap(tmp_path / f"{p}.dat", dtype=a.dtype, mode="w+", shape=a.shape)
        mapped[p][...] = a
    assert numpy_module.loss(mapped, x, y) == numpy_module.loss(params, x, y)
    numpy_module.sgd_step(mapped, x, y, LR)
    numpy_module.sgd_step(params, x, y, LR)
    assert all(np.array_equal(mapped[p], params[p]) for p in SHAPES)


@pytest.mark.parametrize("ns_name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_right_params_still_work_on_the_array_api_module(xp_module, ns_name, dtype):
    xp = _namespace(ns_name)
    params, x, y, v = _data(dtype)
    p = {k: xp.asarray(a) for k, a in params.items()}
    loss, grads = xp_module.loss_and_grad(p, xp.asarray(x), xp.asarray(y))
    assert float(loss) > 0 and all(grads[k].dtype == p[k].dtype and tuple(grads[k].shape) == s for k, s in SHAPES.items())
    new_loss, new = xp_module.sgd_update(p, xp.asarray(x), xp.asarray(y), LR)
    assert float(new_loss) == float(loss) and set(new) == set(SHAPES)
    assert xp_module.init_params(0, dtype, xp=ns_name)["W1"].dtype == p["W1"].dtype
