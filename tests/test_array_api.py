"""The array-API module (<name>_xp.py) on NumPy, array-api-strict, PyTorch and JAX arrays: the NumPy module's results.

Tolerances are relative to the largest entry of each result: 1e-12 in float64, 1e-5 in float32.
"""
import ast
import contextlib
import re
import warnings

import numpy as np
import pytest

from codegen.build import array_api_outputs, write_outputs
from codegen.printer import HELPERS
from codegen.printer_xp import XP_HELPERS
from derive.spec import Dense, Network, load_spec
from derive.verify import check_module, load_module
from conftest import ROOT, run_cli

pytest.importorskip("array_api_compat", reason="the array-API module needs array-api-compat (the `xp` extra)")

MISH = "x*tanh(log(1 + exp(x)))"
NETS = {
    "mlp_4_2_3": load_spec(ROOT / "examples" / "mlp_4_2_3.toml"),                       # relu, sigmoid, mse
    "tanh_cce": Network("tanh_cce", 4, [Dense(5, "tanh"), Dense(3, "softmax")], loss="cce"),
    "mish": load_spec(ROOT / "examples" / "mish_custom.toml"),                           # custom formula, leaky_relu
    "gelu": Network("gelu", 3, [Dense(4, "gelu"), Dense(2, "identity")], loss="mse"),   # erf helpers
    "elu_bce": Network("elu_bce", 3, [Dense(4, "elu"), Dense(2, "sigmoid")], loss="bce"),
    "sparse": Network("sparse", 4, [Dense(5, "swish"), Dense(3, "softmax")], loss="sparse_cce"),
    "mae": Network("mae", 3, [Dense(4, "leaky_relu", alpha=0.2), Dense(2, "softplus")], loss="mae"),   # steps
    "penalised": Network("penalised", 3, [Dense(5, "tanh", l1=0.02, l2=0.1, bias_l2=0.3), Dense(4, "relu", l2=0.05),
                                          Dense(2, "sigmoid")], loss="bce"),                  # l1, l2, bias_l2
}
TOL = {"float64": 1e-12, "float32": 1e-5}
BATCH = 6


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    return jax, jnp


def _namespace(name):
    """The namespace module, or a skip with the reason."""
    if name == "numpy":
        return np
    if name == "array_api_strict":
        return pytest.importorskip("array_api_strict", reason="array-api-strict is not installed (the `test` extra)")
    if name == "torch":
        return pytest.importorskip("torch", reason="PyTorch is not installed (the `bench` extra)")
    if name == "jax":
        if _jax() is None:
            pytest.skip("JAX is not installed: it is an optional run (pip install jax), not part of CI")
        return _jax()[1]
    raise ValueError(name)


NAMESPACES = ["numpy", "array_api_strict", "torch", "jax"]


def _precision(ns_name, dtype):
    """JAX makes float64 arrays only with 64-bit types enabled: scoped to the test."""
    if ns_name == "jax" and dtype == "float64":
        return _jax()[0].enable_x64(True)
    return contextlib.nullcontext()


@pytest.fixture(scope="session")
def modules(tmp_path_factory):
    """name -> (NumPy module, array-API module), generated together from one derivation, once."""
    out = tmp_path_factory.mktemp("xp")
    built = {}

    def get(name):
        if name not in built:
            net = NETS[name]
            write_outputs(array_api_outputs(net), out)
            built[name] = (load_module(out / f"{net.name}.py"), load_module(out / f"{net.name}_xp.py"))
        return built[name]

    return get


def _data(net, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, net.inputs))
    k = net.sizes[-1]
    if net.loss == "sparse_cce":
        y = rng.integers(0, k, size=BATCH)
    elif net.loss == "cce":
        y = np.eye(k)[rng.integers(0, k, size=BATCH)]
    elif net.loss == "bce":
        y = rng.uniform(0.05, 0.95, size=(BATCH, k))
    else:
        y = rng.normal(size=(BATCH, k))
    v = {p: rng.normal(size=s) for p, s in net.param_shapes().items()}
    return x, y, v


def _params(m, dtype, seed=1):
    """init_params moved off zero biases, so that every unit is in a generic place."""
    rng = np.random.default_rng(seed)
    return {k: (a + 0.3 * rng.normal(size=a.shape)).astype(dtype) for k, a in m.init_params(seed).items()}


def _to(xp, tree, dtype=None):
    """NumPy data as xp arrays (copies: torch.asarray would share the NumPy memory)."""
    if isinstance(tree, dict):
        return {k: _to(xp, a, dtype) for k, a in tree.items()}
    a = np.array(tree, dtype=dtype if dtype and np.asarray(tree).dtype.kind == "f" else None, copy=True)
    return xp.asarray(a)


def _close(got, ref, dtype, what):
    got = np.asarray(got).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    err = np.max(np.abs(got - ref)) if ref.size else 0.0
    assert err <= TOL[dtype] * max(scale, np.finfo(np.float64).tiny), f"{what}: {err:.3g} relative {err / scale:.3g}"


def _same_kind(xp_name, arrays, dtype):
    """Every result is an array of the namespace, in the working dtype (float32 stays float32)."""
    import array_api_compat
    for what, a in arrays.items():
        ns = array_api_compat.array_namespace(a)
        assert xp_name.split("_")[0] in ns.__name__, (what, ns.__name__)
        assert str(a.dtype).endswith(dtype), (what, a.dtype)


# Eager JAX compiles every operation once per shape (~2 s a case here): float64 on three networks only.
CASES = [(name, ns, dtype) for name in NETS for ns in NAMESPACES for dtype in ("float64", "float32")
         if not (ns == "jax" and dtype == "float64" and name not in ("mlp_4_2_3", "gelu", "sparse"))]


@pytest.mark.parametrize("name, ns_name, dtype", CASES, ids=["-".join(c) for c in CASES])
def test_every_entry_point_equals_the_numpy_module(modules, name, ns_name, dtype):
    xp = _namespace(ns_name)
    m, mx = modules(name)
    x, y, v = _data(NETS[name])
    p0 = _params(m, dtype)
    ref_loss, ref_grads = m.loss_and_grad(p0, x.astype(dtype), y)
    ref_hvp, ref_gnvp = m.hvp(p0, x.astype(dtype), y, v), m.gnvp(p0, x.astype(dtype), y, v)
    stepped = {k: a.copy() for k, a in p0.items()}
    ref_step = m.sgd_step(stepped, x.astype(dtype), y, 0.1)
    with _precision(ns_name, dtype):
        P, X, Y, V = _to(xp, p0), _to(xp, x, dtype), _to(xp, y), _to(xp, v, dtype)
        loss, grads = mx.loss_and_grad(P, X, Y)
        y_hat, cache = mx.forward(P, X)
        from_cache = mx.backward(P, cache, Y)
        hv, gv = mx.hvp(P, X, Y, V), mx.gnvp(P, X, Y, V)
        loss3, grads3, hv3 = mx.loss_grad_hvp(P, X, Y, V)
        new = _to(xp, p0)
        step_loss = mx.sgd_step(new, X, Y, 0.1)
        update_loss, updated = mx.sgd_update(P, X, Y, 0.1)
        results = {"loss": loss, "y_hat": y_hat, "predict": mx.predict(P, X), "loss()": mx.loss(P, X, Y),
                   "sgd_step": step_loss, "sgd_update": update_loss, "loss_grad_hvp": loss3,
                   **{f"d{k}": g for k, g in grads.items()}, **{f"backward d{k}": g for k, g in from_cache.items()},
                   **{f"hvp {k}": h for k, h in hv.items()}, **{f"gnvp {k}": h for k, h in gv.items()},
                   **{f"new {k}": a for k, a in new.items()}, **{f"updated {k}": a for k, a in updated.items()}}
        if hasattr(m, "penalty"):
            results["penalty"] = mx.penalty(P)
            _close(results["penalty"], m.penalty(p0), dtype, "penalty")
        _same_kind(ns_name, results, dtype)
        assert loss.shape == () and step_loss.shape == ()           # 0-d arrays, never a Python float
        for what in ("loss", "loss()", "sgd_step", "sgd_update", "loss_grad_hvp"):
            _close(results[what], ref_loss, dtype, what)
        for what in ("y_hat", "predict"):
            _close(results[what], m.predict(p0, x.astype(dtype)), dtype, what)
        for k in p0:
            for got in (grads[k], from_cache[k], grads3[k]):
                _close(got, ref_grads[k], dtype, f"d{k}")
            _close(hv[k], ref_hvp[k], dtype, f"hvp {k}")
            _close(hv3[k], ref_hvp[k], dtype, f"loss_grad_hvp {k}")
            _close(gv[k], ref_gnvp[k], dtype, f"gnvp {k}")
            _close(new[k], stepped[k], dtype, f"sgd_step {k}")
            _close(updated[k], stepped[k], dtype, f"sgd_update {k}")
            _close(P[k], p0[k], dtype, f"params[{k!r}] unchanged")    # only sgd_step writes into params
        _close(X, x.astype(dtype), dtype, "x unchanged")


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_hessian_equals_the_numpy_module(modules, ns_name):
    xp = _namespace(ns_name)
    m, mx = modules("mlp_4_2_3")
    x, y, _ = _data(NETS["mlp_4_2_3"])
    p0 = _params(m, "float32")
    H = mx.hessian(_to(xp, p0), _to(xp, x, "float32"), _to(xp, y))
    _same_kind(ns_name, {"hessian": H}, "float32")
    _close(H, m.hessian(p0, x.astype(np.float32), y), "float32", "hessian")


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_init_params_are_the_numpy_modules_on_any_namespace(modules, ns_name):
    xp = _namespace(ns_name)
    m, mx = modules("sparse")
    for dtype in ("float32", "float64"):
        with _precision(ns_name, dtype):
            params = mx.init_params(3, dtype=dtype, xp=xp)
            _same_kind(ns_name, params, dtype)
            for k, ref in m.init_params(3, dtype=getattr(np, dtype)).items():
                np.testing.assert_array_equal(np.asarray(params[k]), ref)
    import array_api_compat
    own = array_api_compat.array_namespace(xp.asarray(0.0)).float32          # a dtype of the namespace itself
    assert mx.init_params(0, dtype=own, xp=xp)["W1"].dtype == own
    assert mx.init_params(0, dtype=np.float32, xp=xp.__name__)["W1"].dtype == own   # a NumPy dtype, a module name


def test_init_params_refuses_jax_float64_without_x64(modules):
    if _jax() is None:
        pytest.skip("JAX is not installed: it is an optional run (pip install jax), not part of CI")
    jax, jnp = _jax()
    _, mx = modules("mlp_4_2_3")
    with jax.enable_x64(False), pytest.raises(TypeError, match="jax_enable_x64"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # JAX's own: "float64 ... will be truncated"
        mx.init_params(0, dtype="float64", xp=jnp)


def test_torch_device_and_conversions(modules):
    torch = _namespace("torch")
    m, mx = modules("sparse")
    x, y, _ = _data(NETS["sparse"])
    params = mx.init_params(0, dtype="float32", xp=torch, device="cpu")
    ref = m.loss(m.init_params(0, np.float32), x.astype(np.float32), y)
    # x and y as NumPy arrays or lists are converted to the parameters' namespace, dtype and device
    for X, Y in [(torch.asarray(x, dtype=torch.float32), torch.asarray(y)), (x, y), (x.tolist(), y.tolist())]:
        value = mx.loss(params, X, Y)
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.device.type == "cpu"
        assert abs(float(value) - ref) <= 1e-5 * abs(ref)


def test_jax_jit_of_loss_and_grad_and_of_sgd_update(modules):
    if _jax() is None:
        pytest.skip("JAX is not installed: it is an optional run (pip install jax), not part of CI")
    jax, jnp = _jax()
    for name in ("sparse", "gelu"):
        m, mx = modules(name)
        x, y, _ = _data(NETS[name])
        p0 = _params(m, "float32")
        ref_loss, ref_grads = m.loss_and_grad(p0, x.astype(np.float32), y)
        P = _to(jnp, p0)
        loss, grads = jax.jit(mx.loss_and_grad)(P, x.astype(np.float32), y)
        _close(loss, ref_loss, "float32", "jit loss")
        for k in p0:
            _close(grads[k], ref_grads[k], "float32", f"jit d{k}")
        step = jax.jit(mx.sgd_update)
        stepped = {k: a.copy() for k, a in p0.items()}
        for _ in range(3):
            m.sgd_step(stepped, x.astype(np.float32), y, 0.1)
            loss, P = step(P, x.astype(np.float32), y, 0.1)     # lr traced: one compilation serves every rate
        assert all(P[k].dtype == jnp.float32 for k in P)
        for k in p0:
            _close(P[k], stepped[k], "float32", f"three jitted steps: {k}")


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_labels_out_of_range(modules, ns_name):
    """Host arrays are checked (a ValueError, as the NumPy module); JAX is never waited for: the loss is NaN."""
    xp = _namespace(ns_name)
    _, mx = modules("sparse")
    x, y, _ = _data(NETS["sparse"])
    y[2] = 3
    params = mx.init_params(0, dtype="float32", xp=xp)
    if ns_name == "jax":
        loss, grads = mx.loss_and_grad(params, _to(xp, x, "float32"), _to(xp, y))
        assert np.isnan(float(loss)) and all(np.isnan(np.asarray(g)).any() for g in grads.values())
    else:
        with pytest.raises(ValueError, match="labels must lie in 0..2"):
            mx.loss(params, _to(xp, x, "float32"), _to(xp, y))


@pytest.mark.parametrize("ns_name", ["numpy", "torch"])
def test_stable_at_extreme_inputs_and_nan_is_not_hidden(modules, ns_name):
    xp = _namespace(ns_name)
    for name in ("elu_bce", "tanh_cce", "gelu", "mish"):
        m, mx = modules(name)
        x, y, _ = _data(NETS[name])
        p0 = _params(m, "float64")
        for scale in (1e3, 1e6):
            with np.errstate(over="raise", invalid="raise", divide="raise"):   # no overflow, as the NumPy module
                loss, grads = mx.loss_and_grad(_to(xp, p0), _to(xp, x * scale), _to(xp, y))
            ref_loss, ref_grads = m.loss_and_grad(p0, x * scale, y)
            assert np.isfinite(float(loss)) and np.isfinite(ref_loss)
            _close(loss, ref_loss, "float64", f"{name} loss at x * {scale:g}")
        x[1, 0] = np.nan
        with np.errstate(invalid="ignore"):       # NumPy's logaddexp warns of a NaN argument
            loss, grads = mx.loss_and_grad(_to(xp, p0), _to(xp, x), _to(xp, y))
            _, ref_grads = m.loss_and_grad(p0, x, y)
        assert np.isnan(float(loss))
        for k in p0:
            np.testing.assert_array_equal(np.isnan(np.asarray(grads[k])), np.isnan(ref_grads[k]))


def test_cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the CUDA run needs a GPU machine")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("no CUDA device: CuPy tests run only where a GPU exists")
    pytest.skip("a GPU exists: run this file's NumPy comparisons with cupy added to NAMESPACES")


@pytest.mark.parametrize("name", ["mlp_4_2_3", "sparse"])
def test_three_way_verifier_passes_on_the_xp_module_with_numpy_arrays(modules, name):
    report = check_module(NETS[name], modules(name)[1])
    assert report.ok, report.table()


def test_curvature_verifier_passes_on_the_xp_module(modules):
    from derive.verify_curvature import check_curvature
    report = check_curvature(NETS["mlp_4_2_3"], modules("mlp_4_2_3")[1])
    assert report.ok, report.table()


# --- the helpers and the text -------------------------------------------------------------------------

def _floats(text):
    return [float(f) for f in re.findall(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?", text)]


def test_xp_erf_has_the_numpy_helpers_constants():
    """Cody's coefficients are written twice (one helper per flavour): digit for digit the same."""
    for name in ("_erf", "_erfc"):
        assert _floats(XP_HELPERS[name]) == _floats(HELPERS[name])
    # beside the NumPy module's helpers, the namespace's fast paths of a step
    assert set(XP_HELPERS) - set(HELPERS) == {"_as_factor", "_matmul_add", "_step", "_sub_matmul"}
    assert set(HELPERS) <= set(XP_HELPERS)


@pytest.mark.parametrize("ns_name", ["numpy", "array_api_strict", "torch"])
def test_xp_helpers_equal_the_numpy_helpers(ns_name):
    import array_api_compat
    xp = array_api_compat.array_namespace(_namespace(ns_name).asarray(0.0))
    grid = np.concatenate([np.linspace(-30, 30, 2001), [0.46875, 4.0, 27.3, 1e4, -1e4, 0.0, np.nan, np.inf, -np.inf]])
    ref_ns, xp_ns = {"np": np}, {"array_api_compat": array_api_compat}
    for name in ("_sigmoid", "_erf", "_erfc", "_log_softmax"):
        exec(HELPERS[name], ref_ns)    # trusted text: the printers' own helper source
        exec(XP_HELPERS[name], xp_ns)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name in ("_sigmoid", "_erf", "_erfc"):
            got = np.asarray(xp_ns[name](xp, xp.asarray(grid)))
            ref = ref_ns[name](grid)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            ok = ~np.isnan(ref)
            assert np.all(np.abs(got[ok] - ref[ok]) <= 4e-16 * np.maximum(np.abs(ref[ok]), 1e-300)), name
        z = np.linspace(-800, 800, 24).reshape(4, 6)
        got = np.asarray(xp_ns["_log_softmax"](xp, xp.asarray(z)))
        np.testing.assert_allclose(got, ref_ns["_log_softmax"](z), rtol=1e-15, atol=1e-12)


@pytest.mark.parametrize("ns_name", ["numpy", "array_api_strict", "torch"])
def test_xp_fast_paths_compute_what_the_standard_spelling_does(ns_name):
    """_sub_matmul (PyTorch: addmm_) is w - a @ b into w, _matmul_add (addmm) a @ b + c in a new array;
    _as_factor leaves u *= mask what the cast gives."""
    import array_api_compat
    xp = array_api_compat.array_namespace(_namespace(ns_name).asarray(0.0))
    ns = {"array_api_compat": array_api_compat}
    exec(XP_HELPERS["_sub_matmul"], ns)    # trusted text: the printer's own helper source
    exec(XP_HELPERS["_as_factor"], ns)
    exec(XP_HELPERS["_matmul_add"], ns)
    exec(XP_HELPERS["_step"], ns)
    rng = np.random.default_rng(3)
    w0, a, b = rng.standard_normal((5, 7)), rng.standard_normal((5, 4)), rng.standard_normal((4, 7))
    c = rng.standard_normal(7)
    np.testing.assert_allclose(np.asarray(ns["_matmul_add"](xp, xp.asarray(a), xp.asarray(b), xp.asarray(c))),
                               a @ b + c, rtol=1e-14, atol=1e-14)
    w = xp.asarray(w0.copy())
    out = ns["_sub_matmul"](xp, w, xp.asarray(a), xp.asarray(b))
    assert out is w                                    # in place: every one of these is mutable
    np.testing.assert_allclose(np.asarray(w), w0 - a @ b, rtol=1e-14, atol=1e-14)
    u0, z = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    z[0, :5] = [0.0, -0.0, np.nan, np.inf, -np.inf]
    for factor in (ns["_as_factor"](xp, xp.asarray(z) > 0, xp.asarray(u0)), ns["_step"](xp, xp.asarray(z))):
        u = xp.asarray(u0.copy())
        u *= factor
        assert u.dtype == xp.float64
        np.testing.assert_array_equal(np.asarray(u), u0 * (z > 0))   # 0 at 0, -0 and NaN, as the comparison


def test_the_xp_module_imports_array_api_compat_and_numpy_only_for_init_params(modules):
    _, mx = modules("gelu")
    tree = ast.parse(open(mx.__file__).read())
    top = {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top == {"math", "array_api_compat"}
    inner = {(f.name, a.name) for f in tree.body if isinstance(f, ast.FunctionDef)
             for node in ast.walk(f) if isinstance(node, ast.Import) for a in node.names}
    assert inner == {("init_params", "importlib"), ("init_params", "numpy")}
    assert "np." not in "".join(ast.get_source_segment(open(mx.__file__).read(), f)
                                for f in tree.body if isinstance(f, ast.FunctionDef) and f.name != "init_params")


def test_generate_array_api_writes_both_deterministically(tmp_path, capsys):
    from codegen.cli import main
    spec = ROOT / "examples" / "mlp_4_2_3.toml"
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert main(["generate", "--array-api", str(spec), "-o", str(out)]) == 0
    assert sorted(p.name for p in first.iterdir()) == ["mlp_4_2_3.py", "mlp_4_2_3_xp.py"]
    for name in ("mlp_4_2_3.py", "mlp_4_2_3_xp.py"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "mlp_4_2_3.py").read_bytes() == (ROOT / "generated" / "mlp_4_2_3.py").read_bytes()


def test_generate_array_api_refuses_two_specs_writing_one_file(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text('name = "net"\ninputs = 2\nloss = "mse"\n[[layers]]\nunits = 1\n')
    b = tmp_path / "b.toml"
    b.write_text('name = "net_xp"\ninputs = 2\nloss = "mse"\n[[layers]]\nunits = 1\n')
    out = tmp_path / "out"
    r = run_cli("generate", "--array-api", a, b, "-o", out)      # as a user runs it: one line, exit 2
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "net_xp.py" in r.stderr, r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_the_penalised_modules_loss_includes_its_penalty(modules):
    """The array-API module takes a spec's weight penalties as the NumPy module does (checked entry by
    entry above); here the penalty is seen to be part of the loss, and not zero."""
    m, mx = modules("penalised")
    x, y, _ = _data(NETS["penalised"])
    p0 = _params(m, "float64")
    assert float(mx.penalty(p0)) > 0
    without = float(mx.loss(p0, x, y)) - float(mx.penalty(p0))
    assert abs(without - float(m.loss(p0, x, y) - m.penalty(p0))) <= 1e-12 * abs(without)
