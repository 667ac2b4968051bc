"""The generated modules' fast paths: sgd_step, batch 1, in-place work that never reaches the caller's arrays."""
from pathlib import Path

import numpy as np
import pytest

from derive.spec import load_spec
from derive.verify import load_module, sample_batch, sample_params

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.fixture(params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def case(request):
    net = load_spec(request.param)
    module = load_module(ROOT / "generated" / f"{net.name}.py")
    rng = np.random.default_rng(0)
    x, y = sample_batch(net, rng, batch=5)
    return net, module, sample_params(net, rng), x, y


def copies(d):
    return {k: np.copy(v) for k, v in d.items()}


def test_sgd_step_is_loss_and_grad_then_the_update(case):
    net, m, params, x, y = case
    lr = 0.05
    loss, grads = m.loss_and_grad(copies(params), x, y)
    stepped = copies(params)
    assert m.sgd_step(stepped, x, y, lr) == pytest.approx(loss, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(stepped[k], params[k] - lr * grads[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_step_updates_in_place_and_keeps_the_dtype(case, dtype):
    net, m, params, x, y = case
    params = {k: v.astype(dtype) for k, v in params.items()}
    arrays = dict(params)
    m.sgd_step(params, x.astype(dtype), y if y.dtype.kind in "iu" else y.astype(dtype), 0.1)
    assert all(params[k] is arrays[k] and params[k].dtype == dtype for k in params)


def test_the_callers_arrays_are_never_written(case):
    net, m, params, x, y = case
    before = (copies(params), x.copy(), y.copy())
    y_hat, cache = m.forward(params, x)
    saved = copies(cache)
    m.backward(params, cache, y)
    m.loss_and_grad(params, x, y)
    m.loss(params, x, y)
    m.predict(params, x)
    for k in params:
        np.testing.assert_array_equal(params[k], before[0][k])
    np.testing.assert_array_equal(x, before[1])
    np.testing.assert_array_equal(y, before[2])
    for k in cache:
        np.testing.assert_array_equal(cache[k], saved[k])


def test_batch_one_matches_a_batch_of_two_equal_rows(case):
    """At batch 1 the bias gradients take a shortcut (the delta row itself)."""
    net, m, params, x, y = case
    loss1, g1 = m.loss_and_grad(params, x[:1], y[:1])
    loss2, g2 = m.loss_and_grad(params, np.repeat(x[:1], 2, axis=0), np.repeat(y[:1], 2, axis=0))
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    for k in params:
        assert g1[k].shape == params[k].shape
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-15)


def test_an_empty_batch_is_a_value_error(case):
    net, m, params, x, y = case
    with pytest.raises(ValueError, match="batch >= 1"):
        m.loss_and_grad(params, x[:0], y[:0])
