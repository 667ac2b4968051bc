"""The benchmark suite: the smoke run writes its report, the NumPy references are right."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import reference_numpy as ref  # noqa: E402
from nets import NETS, make_batch, make_params  # noqa: E402

SMALL = NETS["mlp_4_2_3"]


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(BENCH / "bench.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


def test_smoke_report_has_machine_info_and_summary(smoke_report):
    assert "## Machine" in smoke_report and "NumPy" in smoke_report and "BLAS" in smoke_report
    header = next(l for l in smoke_report.splitlines() if l.startswith("| net | dtype | batch |"))
    for rt in bench.SMOKE["runtimes"]:
        assert f"| {bench.SHORT[rt]} " in header + " "
    for net in bench.SMOKE["nets"]:
        assert any(l.startswith(f"| {net} | float64 | 32 |") for l in smoke_report.splitlines())


@pytest.mark.parametrize("net", sorted(NETS))
def test_smoke_report_has_a_row_per_runtime(smoke_report, net):
    lines = smoke_report.splitlines()
    start = lines.index(f"## {net}, float64")
    table = [l for l in lines[start + 2:] if l.startswith("|")]
    columns = [c.strip() for c in table[0].strip("|").split("|")]
    assert columns == ["batch", "runtime", "median µs", "min–max µs", "round medians µs", "CPU µs",
                       "× gen.", "× gen. (CPU)", "GFLOP/s", "% of GEMM", "check"]
    rows = {cells[1]: cells for cells in
            ([c.strip() for c in l.strip("|").split("|")] for l in table[2:])}
    for rt in bench.SMOKE["runtimes"]:
        cells = rows[bench.LABELS[rt]]
        assert cells[0] == "32"
        if rt.startswith("generated") and cells[2] == "skipped":
            continue  # the module is not generated yet, or offers no sgd_step
        assert float(cells[2].replace(",", "")) > 0
        assert float(cells[5].replace(",", "")) > 0
        assert float(cells[8]) > 0
    assert rows[bench.LABELS["numpy"]][10] == "ok"
    assert rows[bench.LABELS["numpy_opt"]][10] == "ok"
    assert rows[bench.LABELS["generated_sgd_step"]][10] in ("ok", "see Notes")


def test_smoke_report_states_the_targets(smoke_report):
    lines = smoke_report.splitlines()
    start = lines.index("## The issue's targets")
    table = [l for l in lines[start:] if l.startswith("| mlp_")]
    assert any("vs NumPy hand-written, every batch and dtype" in l and ("✓" in l or "✗" in l) for l in table)


def test_targets_take_the_worst_configuration():
    cfg = {"dtypes": ["float32", "float64"], "batches": [1, 128]}
    results = {("mlp_4_2_3", b, d): {"generated": {"median": 10.0}, "numpy": {"median": 10.0 / r}}
               for (b, d), r in {(1, "float32"): 0.9, (128, "float32"): 1.2,
                                 (1, "float64"): 0.8, (128, "float64"): 1.0}.items()}
    every = next(t for t in bench.TARGETS if t[1] == "mlp_4_2_3" and t[4] == "numpy")
    assert bench.worst_ratio(results, cfg, "generated", every, "median") == (pytest.approx(1.2), "float32 batch 128")
    assert bench.worst_ratio(results, cfg, "generated_sgd_step", every, "median") is None


def test_paired_ratio_pairs_rounds():
    """A slow spell that hits both runtimes in round 2 moves the separate medians, not the paired one."""
    gen = {"round_medians": [10.0, 30.0, 10.0, 30.0, 11.0]}
    peer = {"round_medians": [12.5, 37.5, 12.5, 12.5, 13.75]}
    assert bench.paired_ratio(gen, peer) == pytest.approx(0.8)
    assert bench.paired_ratio(gen, {"round_medians": [1.0]}) is None     # a runtime that dropped out
    results = {("mlp_4_2_3", 1, "float32"): {"generated": gen, "jax": peer}}
    target = next(t for t in bench.TARGETS if t[1] == "mlp_4_2_3" and t[4] == "jax" and t[2] == ("float32",))
    assert bench.worst_ratio(results, {"dtypes": ["float32"], "batches": [1]}, "generated", target,
                             "paired") == (pytest.approx(0.8), "float32 batch 1")


def test_cross_check_flags_a_wrong_runtime():
    good = {"loss": 1.0, "update_norm": 0.5}
    res = {"numpy": {"probe": good, "dtypes_after": ["float64"]},
           "numpy_opt": {"probe": dict(good), "dtypes_after": ["float64"]},
           "torch": {"probe": {"loss": 1.0, "update_norm": 0.5001}, "dtypes_after": ["float64"]},
           "generated": {"probe": dict(good), "dtypes_after": ["float64"], "grad_dtypes": ["float32"]}}
    bench.cross_check(res, "float64")
    assert res["numpy_opt"]["check"] == "ok"
    assert res["torch"]["check"].startswith("MISMATCH: update_norm")
    assert "grads are" in res["generated"]["check"]


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("batch", [1, 5])
def test_plain_and_fused_steps_agree(net, batch):
    net = NETS[net]
    plain = make_params(net)
    fused_params = copy.deepcopy(plain)
    fused = ref.FusedSGD(fused_params, net.head)
    x, y = make_batch(net, batch)
    for _ in range(3):
        loss_plain = ref.sgd_step(plain, x, y, 0.1, net.head)
        loss_fused = fused(x, y, 0.1)
        assert loss_fused == pytest.approx(loss_plain, rel=1e-12)
    for k in plain:
        assert relative_error(fused_params[k], plain[k]) < 1e-12, k


@pytest.mark.parametrize("net", sorted(NETS))
def test_references_keep_float32(net):
    net = NETS[net]
    params = make_params(net, np.float32)
    x, y = make_batch(net, 4, np.float32)
    _, grads = ref.loss_and_grad(params, x, y, net.head)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    ref.sgd_step(params, x, y, 0.1, net.head)
    ref.FusedSGD(params, net.head)(x, y, 0.1)
    assert {p.dtype for p in params.values()} == {np.dtype(np.float32)}


def test_plain_gradient_matches_finite_differences():
    params = make_params(SMALL)
    x, y = make_batch(SMALL, 3)
    _, grads = ref.loss_and_grad(params, x, y, SMALL.head)
    h = 1e-6
    for k, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up, _ = ref.loss_and_grad(params, x, y, SMALL.head)
            p[i] = old - h
            down, _ = ref.loss_and_grad(params, x, y, SMALL.head)
            p[i] = old
            numeric[i] = (up - down) / (2 * h)
        assert np.allclose(grads[k], numeric, rtol=1e-6, atol=1e-9), k


def test_a_planted_error_fails_the_finite_difference_check():
    params = make_params(SMALL)
    x, y = make_batch(SMALL, 3)
    _, grads = ref.loss_and_grad(params, x, y, SMALL.head)
    h = 1e-6
    params["b2"][0] += h
    up, _ = ref.loss_and_grad(params, x, y, SMALL.head)
    params["b2"][0] -= 2 * h
    down, _ = ref.loss_and_grad(params, x, y, SMALL.head)
    assert (up - down) / (2 * h) == pytest.approx(grads["b2"][0], rel=1e-6)
    assert (up - down) / (2 * h) != pytest.approx(1.01 * grads["b2"][0], rel=1e-6)


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("batch", [1, 7])
def test_references_match_torch_autograd(net, batch):
    pytest.importorskip("torch")
    import peers

    net = NETS[net]
    params = make_params(net)
    x, y = make_batch(net, batch)
    loss, grads = ref.loss_and_grad(params, x, y, net.head)
    torch_loss, torch_grads = peers.torch_loss_and_grad(params, x, y, net.head)
    assert loss == pytest.approx(torch_loss, rel=1e-10)
    for k in params:
        assert relative_error(grads[k], torch_grads[k]) < 1e-10, k


# --- benchmarks/curvature.py: the Hessian-vector products ---

import curvature  # noqa: E402
from nets import make_direction  # noqa: E402


@pytest.fixture(scope="module")
def curvature_smoke(tmp_path_factory):
    """The smoke run with jax hidden (a stub that fails to import), as on CI where it is not installed."""
    tmp = tmp_path_factory.mktemp("curvature")
    (tmp / "hide" / "jax").mkdir(parents=True)
    (tmp / "hide" / "jax" / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp / "hide"),
                                                                   os.environ.get("PYTHONPATH")])))
    out = tmp / "CURVATURE.md"
    proc = subprocess.run([sys.executable, str(BENCH / "curvature.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return out.read_text(), proc.stderr


def _curvature_rows(report):
    lines = report.splitlines()
    table = [l for l in lines[lines.index("## Results"):] if l.startswith("| mlp_")]
    return {cells[3]: cells for cells in ([c.strip() for c in l.strip("|").split("|")] for l in table)}


def test_curvature_smoke_reports_every_runtime(curvature_smoke):
    report, _ = curvature_smoke
    assert "## Machine" in report and "Threads: {'OMP_NUM_THREADS': '1'" in report
    rows = _curvature_rows(report)
    assert set(rows) == {curvature.LABELS[rt] for rt in curvature.SMOKE["runtimes"]}
    for rt in ("generated_hvp", "generated_gnvp", "generated_loss_grad_hvp", "generated_loss_and_grad"):
        cells = rows[curvature.LABELS[rt]]
        assert float(cells[4].replace(",", "")) > 0 and float(cells[6].replace(",", "")) > 0, cells
    assert rows[curvature.LABELS["generated_hvp"]][11] == "0.0e+00 ok"
    assert rows[curvature.LABELS["generated_loss_grad_hvp"]][11].endswith(" ok")
    assert rows[curvature.LABELS["generated_loss_and_grad"]][7] == "1.00"


def test_curvature_smoke_skips_jax_and_says_so(curvature_smoke):
    report, stderr = curvature_smoke
    assert _curvature_rows(report)[curvature.LABELS["jax_hvp"]][4] == "skipped"
    assert "JAX jit jvp(grad) skipped: jax is not importable" in report
    assert "skipped: jax is not importable" in stderr


def test_curvature_smoke_checks_torch(curvature_smoke):
    pytest.importorskip("torch")
    cells = _curvature_rows(curvature_smoke[0])[curvature.LABELS["torch_hvp"]]
    assert cells[11].endswith(" ok"), cells


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize("net", sorted(NETS))
def test_peer_hvp_matches_the_generated_hvp(peer, net):
    pytest.importorskip(peer)
    import _worker
    import peers

    net = NETS[net]
    try:
        mod = _worker.load_generated(net, BENCH.parent / "generated")
    except _worker.Skip as e:
        pytest.skip(str(e))
    params, v = make_params(net), make_direction(net)
    x, y = make_batch(net, 3)
    out = getattr(peers, f"make_{peer}_hvp")(params, x, y, v, net.head)()
    ref = mod.hvp(params, x, y, v)
    for k in params:
        assert relative_error(np.asarray(out[k], dtype=np.float64), ref[k]) < 1e-10, k


def test_curvature_section_replaces_only_its_own(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Training-step benchmarks\n\nbody\n")
    assert curvature.update_results_md(results, [bench.CURVATURE_BEGIN, "first", bench.CURVATURE_END, ""])
    assert results.read_text() == f"# Training-step benchmarks\n\nbody\n\n{bench.CURVATURE_BEGIN}\nfirst\n{bench.CURVATURE_END}\n"
    text = results.read_text() + "\n## after\n"
    results.write_text(text)
    curvature.update_results_md(results, [bench.CURVATURE_BEGIN, "second", bench.CURVATURE_END, ""])
    assert results.read_text() == text.replace("first", "second")
    assert not curvature.update_results_md(tmp_path / "missing.md", [])


# --- benchmarks/array_api.py and array_api_gpu.py: the --array-api module on torch, JAX and CuPy arrays ---

import array_api  # noqa: E402


def _hide(tmp, *names):
    """An environment whose PYTHONPATH puts stubs that fail to import in front of the named modules."""
    for name in names:
        (tmp / "hide" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "hide" / name / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp / "hide"), os.environ.get("PYTHONPATH")])))


def _xp_rows(report):
    lines = report.splitlines()
    table = [l for l in lines[lines.index("## Results"):] if l.startswith("| mlp_")]
    return {cells[3]: cells for cells in ([c.strip() for c in l.strip("|").split("|")] for l in table)}


@pytest.fixture(scope="module")
def xp_smoke(tmp_path_factory):
    """The smoke run with jax hidden, as on CI where it is not installed."""
    tmp = tmp_path_factory.mktemp("xp")
    out = tmp / "ARRAY_API.md"
    proc = subprocess.run([sys.executable, str(BENCH / "array_api.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=_hide(tmp, "jax"))
    assert proc.returncode == 0, proc.stderr
    return out.read_text(), proc.stderr


def test_xp_smoke_reports_every_runtime(xp_smoke):
    report, stderr = xp_smoke
    assert "## Machine" in report and "Threads: {'OMP_NUM_THREADS': '1'" in report
    assert "generated mlp_4_2_3_xp.py" in stderr
    rows = _xp_rows(report)
    assert set(rows) == {array_api.LABELS[rt] for rt in array_api.SMOKE["runtimes"]}
    assert "(No target's configuration was measured in this run.)" in report


def test_xp_smoke_skips_jax_and_says_so(xp_smoke):
    report, stderr = xp_smoke
    rows = _xp_rows(report)
    for rt in ("xp_jax_sgd_update", "jax"):
        assert rows[array_api.LABELS[rt]][4] == "skipped"
    assert "jax.jit(xp `sgd_update`) skipped: jax is not importable" in report
    assert "JAX jit(value_and_grad + update) skipped: jax is not importable" in report
    assert "skipped: jax is not importable" in stderr


def test_xp_smoke_times_and_checks_torch(xp_smoke):
    pytest.importorskip("torch")
    rows = _xp_rows(xp_smoke[0])
    for rt in ("xp_torch_sgd_step", "xp_torch_loss_and_grad", "torch"):
        cells = rows[array_api.LABELS[rt]]
        assert float(cells[4].replace(",", "")) > 0 and float(cells[6].replace(",", "")) > 0, cells
        assert cells[11] == "ok", cells
    assert rows[array_api.LABELS["torch"]][7] == "1.00"
    assert rows[array_api.LABELS["xp_torch_sgd_step"]][9] == "–"     # no JAX peer in this run


def test_xp_check_cell_flags_a_wrong_step():
    ref = {"loss": 1.0, "update_norm": 0.5}
    good = {"probe": dict(ref), "reference": ref, "dtypes_after": ["float32"]}
    assert array_api.check_cell(good, "float32") == "ok"
    bad = {"probe": {"loss": 1.0, "update_norm": 0.51}, "reference": ref, "dtypes_after": ["float64"]}
    assert array_api.check_cell(bad, "float32").startswith("MISMATCH: update_norm")
    assert "params became" in array_api.check_cell(bad, "float32")
    assert array_api.check_cell({"probe": ref}, "float32") == "–"      # rounds after the first carry no reference


def test_xp_targets_cover_the_issue():
    by_peer = {(t[2], t[3]): t for t in array_api.TARGETS}
    for rt in ("xp_torch_sgd_step", "xp_torch_loss_and_grad"):
        assert by_peer[(rt, "torch")][1:] == (("mlp_784_256_128_10", 128, "float32"), rt, "torch", 0.85)
    assert {t[1][1] for t in array_api.TARGETS if t[3] == "jax" and t[4] == 1.0} == {32, 128, 1024}


def test_torch_nn_peer_steps_like_the_functional_peer():
    pytest.importorskip("torch")
    import peers

    net = NETS["mlp_784_256_128_10"]
    params = make_params(net, np.float32)
    x, y = make_batch(net, 5, np.float32)
    steps = [peers.make_torch_step(params, x, y, 0.1, net.head), peers.make_torch_nn_step(params, x, y, 0.1, net.head)]
    losses = [[step() for _ in range(3)] for step, _ in steps]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    after = [get() for _, get in steps]
    for k in params:
        assert relative_error(after[1][k], after[0][k]) < 1e-5, k


def _no_gpu():
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


@pytest.mark.skipif(not _no_gpu(), reason="a GPU is here: array_api_gpu.py would run the full benchmark")
def test_gpu_script_skips_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "array_api_gpu.py")], capture_output=True, text=True,
                          timeout=300, env=_hide(tmp_path, "cupy"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no GPU here: skipped (") and proc.stdout.count("\n") == 1, proc.stdout


def test_gpu_script_dry_run_on_the_cpu(tmp_path):
    """--device cpu: the GPU script's workers, table and checks on torch CPU tensors; CuPy skipped."""
    pytest.importorskip("torch")
    out = tmp_path / "GPU.md"
    proc = subprocess.run([sys.executable, str(BENCH / "array_api_gpu.py"), "--device", "cpu", "--configs",
                           "mlp_4_2_3:64:float32", "--runtimes", "xp_torch_sgd_step", "torch", "xp_cupy_sgd_step",
                           "--rounds", "1", "--min-time", "0", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=_hide(tmp_path, "cupy", "jax"))
    assert proc.returncode == 0, proc.stderr
    report = out.read_text()
    assert report.startswith("# Array-API module benchmarks on a GPU") and "- GPU: none (--device cpu" in report
    rows = _xp_rows(report)
    assert rows[array_api.LABELS["xp_torch_sgd_step"]][11] == "ok"
    assert rows[array_api.LABELS["torch"]][11] == "ok"
    assert rows[array_api.LABELS["xp_cupy_sgd_step"]][4] == "skipped"
    assert "xp `sgd_step` (CuPy) skipped: cupy is not importable" in report


def test_array_api_section_quotes_targets_and_machine(tmp_path, monkeypatch):
    (tmp_path / "ARRAY_API.md").write_text(
        "# Array-API module benchmarks\n\n`python benchmarks/array_api.py`, 2026-01-01 00:00 UTC, 9 s. One step = ...\n\n"
        "## Machine\n\n- CPU: Example\n- Python 3\n- Threads: 1\n\n## Method\n\n- m\n\n"
        "## Targets\n\n| target |\n|---|\n| xp sgd_step ≤ 0.85 × PyTorch eager |\n\n## Results\n\n| rows |\n")
    monkeypatch.setattr(bench, "HERE", tmp_path)
    section = bench.array_api_section()
    assert section[0] == bench.ARRAY_API_BEGIN and section[-2] == bench.ARRAY_API_END
    text = "\n".join(section)
    assert "`python benchmarks/array_api.py`, 2026-01-01 00:00 UTC, 9 s;" in text and "One step" not in text
    assert "- CPU: Example" in text and "### Targets" in text and "| xp sgd_step ≤ 0.85 × PyTorch eager |" in text
    assert "## Results" not in text and "| rows |" not in text
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# T\n\n{bench.CURVATURE_BEGIN}\nc\n{bench.CURVATURE_END}\n")
    curvature.update_results_md(results, section, bench.ARRAY_API_BEGIN, bench.ARRAY_API_END)
    curvature.update_results_md(results, section, bench.ARRAY_API_BEGIN, bench.ARRAY_API_END)
    assert results.read_text().count(bench.ARRAY_API_BEGIN) == 1 and f"{bench.CURVATURE_BEGIN}\nc\n" in results.read_text()
