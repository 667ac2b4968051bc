"""The sharpness: Lanczos finds the top (algebraic) Hessian eigenvalue; `train --sharpness` logs, records and plots it."""
import json
import struct

import numpy as np
import pytest

from codegen.train_cli import fresh_modules
from derive import Dense, Network
from derive.data import split
from derive.params import load_params
from derive.sharpness import ITERATIONS, stability_threshold, top_eigenvalue
from derive.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def symmetric(eigenvalues, seed=0):
    """A dense symmetric matrix with these eigenvalues and random eigenvectors."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (q * np.asarray(eigenvalues, float)) @ q.T


def as_hvp(M):
    """M as an hvp over one parameter "w" (and a second, "b", to exercise the flattening)."""
    n = len(M)
    params = {"w": np.zeros((n - 3,)), "b": np.zeros((3,))}

    def hvp(v):
        out = M @ np.concatenate([v["w"], v["b"]])
        return {"w": out[:n - 3], "b": out[n - 3:]}
    return hvp, params


def lanczos(M, **kwargs):
    hvp, params = as_hvp(M)
    return top_eigenvalue(hvp, params, **kwargs).value


def power_iteration(M, iterations=ITERATIONS, **_):
    """The planted wrong routine: power iteration's Rayleigh quotient, the eigenvalue of largest |lambda|."""
    q = np.random.default_rng(0).standard_normal(len(M))
    for _ in range(iterations * 20):
        q = M @ q
        q /= np.linalg.norm(q)
    return float(q @ M @ q)


# name -> eigenvalues; the top one is the largest algebraically, not in magnitude.
SPECTRA = {
    "positive dominant": np.concatenate([[9.0], np.linspace(-2, 4, 29)]),
    "negative dominant": np.concatenate([[-12.0], np.linspace(-3, 2.5, 29)]),   # power iteration: -12
    "all negative": np.concatenate([[-20.0], np.linspace(-8, -0.5, 29)]),        # top -0.5, not -20
    "repeated top": np.concatenate([[5.0, 5.0, 5.0], np.linspace(-6, 1, 27)]),
    "indefinite, dominant pair": np.concatenate([[-7.0, 7.0 - 1e-3], np.linspace(-1, 1, 28)]),
}


def check_finds_top(routine):
    """The checker the planted routine must fail: every spectrum's top eigenvalue, to 1e-9."""
    for name, eigenvalues in SPECTRA.items():
        M = symmetric(eigenvalues, seed=len(name))
        assert routine(M, iterations=len(M)) == pytest.approx(eigenvalues.max(), abs=1e-9), name


def test_finds_the_top_eigenvalue_of_known_matrices():
    check_finds_top(lanczos)


def test_the_check_fails_for_largest_magnitude():
    """Power iteration converges, to the wrong eigenvalue: -12 where the top one is 2.5."""
    M = symmetric(SPECTRA["negative dominant"], seed=len("negative dominant"))
    assert power_iteration(M) == pytest.approx(-12.0)
    with pytest.raises(AssertionError, match="negative dominant"):
        check_finds_top(power_iteration)


def test_fewer_iterations_than_parameters_approach_from_below():
    """A Hessian-like spectrum, an outlier above a bulk: 20 products of 150 get the top to 1e-10,
    and every estimate is a Rayleigh quotient, so never above the truth."""
    eigenvalues = np.concatenate([[6.0, -4.0], np.random.default_rng(1).uniform(-1, 2, 148)])
    M = symmetric(eigenvalues, seed=2)
    values = [lanczos(M, iterations=k) for k in (2, 5, 10, 20)]
    assert all(v <= 6.0 + 1e-12 for v in values) and values == sorted(values)
    assert values[-1] == pytest.approx(6.0, abs=1e-10)
    hvp, params = as_hvp(M)
    top = top_eigenvalue(hvp, params)
    vector = np.concatenate([top.vector["w"], top.vector["b"]])
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert top.residual == pytest.approx(np.linalg.norm(M @ vector - top.value * vector), abs=1e-12)


def test_deterministic_and_warm_started():
    M = symmetric(SPECTRA["negative dominant"], seed=3)
    hvp, params = as_hvp(M)
    a, b = top_eigenvalue(hvp, params, iterations=8), top_eigenvalue(hvp, params, iterations=8)
    assert a.value == b.value and all(np.array_equal(a.vector[k], b.vector[k]) for k in params)
    assert top_eigenvalue(hvp, params, iterations=8, seed=1).value != a.value   # the seed picks the start
    exact = top_eigenvalue(hvp, params, iterations=30)
    # Warm-started from the eigenvector, one product is enough: the Rayleigh quotient there.
    assert top_eigenvalue(hvp, params, iterations=1, start=exact.vector).value == pytest.approx(2.5, abs=1e-12)


def test_a_start_in_an_invariant_subspace_is_left():
    """Started on the eigenvector of -12 (the Krylov space ends at once), it still finds 2.5."""
    eigenvalues = SPECTRA["negative dominant"]
    M = np.diag(eigenvalues)
    hvp, params = as_hvp(M)
    start = np.zeros(len(M))
    start[0] = 1.0
    top = top_eigenvalue(hvp, params, iterations=len(M), start={"w": start[:-3], "b": start[-3:]})
    assert top.value == pytest.approx(2.5, abs=1e-12)
    assert top_eigenvalue(lambda v: {k: 0 * a for k, a in v.items()}, params).value == 0.0


def test_inputs_and_non_finite_products():
    M = symmetric(SPECTRA["positive dominant"])
    hvp, params = as_hvp(M)
    f32 = {k: v.astype(np.float32) for k, v in params.items()}
    seen = []
    top = top_eigenvalue(lambda v: seen.append(v["w"].dtype) or hvp(v), f32, iterations=30)
    assert set(seen) == {np.dtype(np.float32)} and top.vector["w"].dtype == np.float64
    assert top.value == pytest.approx(9.0, rel=1e-6)
    assert np.isnan(top_eigenvalue(lambda v: {k: a * np.inf for k, a in v.items()}, params).value)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="iterations"):
            top_eigenvalue(hvp, params, iterations=bad)


def test_stability_threshold():
    assert stability_threshold("sgd", {"lr": 0.05}) == (40.0, "2/lr")
    assert stability_threshold("momentum", {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False}) \
        == (pytest.approx(38.0), "(2 + 2 momentum)/lr")
    assert stability_threshold("momentum", {"lr": 0.1, "momentum": 0.9, "nesterov": True}) is None
    assert stability_threshold("sgd", {"lr": 0.1, "weight_decay": 1e-4}) is None
    assert stability_threshold("adam", {"lr": 0.001}) is None


# ---------------------------------------------------------------- on a generated module's Hessian


@pytest.fixture(scope="module")
def modules():
    net = Network("sharp_net", 4, [Dense(6, "tanh"), Dense(3, "softmax")], loss="sparse_cce")
    return fresh_modules(net)


def blobs(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centers[y] + 0.5 * rng.standard_normal((n, 4)), y


@pytest.mark.parametrize("where", ["init", "moved"])
def test_matches_eigvalsh_of_the_module_hessian(modules, where):
    module, _ = modules
    x, y = blobs()
    params = module.init_params(0)
    if where == "moved":   # far from init, where the Hessian is indefinite
        rng = np.random.default_rng(5)
        params = {k: v + 1.5 * rng.standard_normal(v.shape) for k, v in params.items()}
    eigenvalues = np.linalg.eigvalsh(module.hessian(params, x, y))
    top = top_eigenvalue(lambda v: module.hvp(params, x, y, v), params, iterations=len(eigenvalues))
    assert top.value == pytest.approx(eigenvalues[-1], rel=1e-9, abs=1e-12)
    if where == "moved":   # the case the eigenvalue of largest |lambda| gets wrong
        assert -eigenvalues[0] > eigenvalues[-1] > 0
    again = top_eigenvalue(lambda v: module.hvp(params, x, y, v), params)   # the default count, 20 of 51
    assert again.value <= eigenvalues[-1] + 1e-12 and again.value == pytest.approx(eigenvalues[-1], rel=1e-6)


def test_train_records_sharpness(modules):
    module, optimizers = modules
    x, y = blobs()
    _, plain = train(module, optimizers, x, y, epochs=2, batch_size=16, optimizer="sgd", lr=0.05, seed=2)
    params, metrics = train(module, optimizers, x, y, epochs=2, batch_size=16, optimizer="sgd", lr=0.05, seed=2,
                            sharpness=True)
    for old, new in zip(plain["epochs"], metrics["epochs"]):   # the training is the same, the keys added
        assert list(new) == list(old) + ["sharpness", "sharpness_residual"]
        assert {k: new[k] for k in old} == old
    about = metrics["sharpness"]
    assert about == {"method": "lanczos", "iterations": ITERATIONS, "examples": 120, "initial": about["initial"],
                     "threshold": 40.0, "threshold_formula": "2/lr"}
    x_train, y_train, _, _ = split(x, y, 0.2, 2)
    top = np.linalg.eigvalsh(module.hessian(params, x_train, y_train))[-1]
    assert metrics["epochs"][-1]["sharpness"] == pytest.approx(top, rel=1e-6)


def test_cli_sharpness_end_to_end(modules, tmp_path, monkeypatch, capsys):
    """`nnderive train --sharpness`: one more column per epoch, the new keys in --metrics, a third plot panel."""
    pytest.importorskip("matplotlib")
    from codegen.cli import main
    x, y = blobs()
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    (tmp_path / "sharp.toml").write_text('name = "sharp_net"\ninputs = 4\nloss = "sparse_cce"\n\n'
                                         '[[layers]]\nunits = 6\nactivation = "tanh"\n\n'
                                         '[[layers]]\nunits = 3\nactivation = "softmax"\n')
    monkeypatch.chdir(tmp_path)
    args = ["train", "sharp.toml", "--data", "blobs.npz", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.5",
            "--seed", "1", "--save", "p.npz"]
    assert main(args + ["--metrics", "m.json", "--plot", "m.png", "--sharpness"]) == 0
    out = capsys.readouterr().out
    assert "stability threshold 2/lr = 4" in out and "first 120 training examples" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all("  sharpness " in line for line in epochs)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["sharpness"]["threshold"] == 4.0 and len(metrics["epochs"]) == 3
    last = metrics["epochs"][-1]
    assert f"sharpness {last['sharpness']:.4g}  " in epochs[-1]
    module, _ = modules
    params = load_params(tmp_path / "p.npz", module.PARAM_SHAPES)
    x_train, y_train, _, _ = split(x, y, 0.2, 1)
    assert last["sharpness"] == pytest.approx(np.linalg.eigvalsh(module.hessian(params, x_train, y_train))[-1],
                                              rel=1e-6)
    png = (tmp_path / "m.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    assert main(args + ["--plot", "plain.png"]) == 0   # without the flag: two panels, no sharpness column
    assert "sharpness" not in capsys.readouterr().out
    width = lambda data: struct.unpack(">I", data[16:20])[0]   # the PNG's IHDR
    assert width(png) > 1.4 * width((tmp_path / "plain.png").read_bytes())
