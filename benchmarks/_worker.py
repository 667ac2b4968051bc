"""Time one runtime's training step on one configuration; print the timings as JSON.

    python benchmarks/_worker.py RUNTIME NET BATCH DTYPE REPEATS [--min-time S] [--check] [--device D]

RUNTIME is one of RUNTIMES, CURVATURE_RUNTIMES or XP_RUNTIMES. Runs REPEATS timed steps, more until --min-time
seconds have passed. Prints one JSON object: per-step wall times in ns, CPU time
per step (process time over blocks of 8 steps), a probe of
the first step (loss, norm of the parameter update) for cross-checking the
runtimes against each other, or {"skip": reason} when the runtime is missing.
A curvature runtime times one product (H v, G v, ...) per step along the fixed direction
nets.make_direction; its probe is the product's norm and v . product, and with --check
(before timing) the relative error of its H v against the generated module's `hvp`,
computed in this process with NumPy (which every worker has loaded anyway).
An array-API runtime (xp_*) times the `--array-api` module <name>_xp.py of --generated-dir on
torch tensors (on --device), JAX arrays (jax.jit of its sgd_update) or CuPy arrays; with --check
(before timing) it also reports the hand-written NumPy step's probe from this process
("reference"), so that the driver can compare runtimes that never run the NumPy reference.
Each runtime runs in its own process: NumPy and PyTorch in one process slow
each other down (idle BLAS/OpenMP threads spin).
"""
import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import (ALL_NETS, CURVATURE_RUNTIMES, RUNTIMES, XP_RUNTIMES, make_batch, make_direction,  # noqa: E402
                  make_params)
import reference_numpy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-3


class Skip(Exception):
    """The runtime cannot run here; the message says why."""


def load_generated(net, generated_dir, suffix=""):
    """Import generated/<net><suffix>.py by path (suffix "_xp": the array-API module) and check it
    matches the network."""
    path = Path(generated_dir) / f"{net.name}{suffix}.py"
    if not path.exists():
        raise Skip(f"{path} does not exist yet")
    spec = importlib.util.spec_from_file_location(f"_generated_{net.name}{suffix}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shapes = {k: tuple(v) for k, v in getattr(mod, "PARAM_SHAPES", {}).items()}
    if shapes != net.param_shapes():
        raise Skip(f"{path}: PARAM_SHAPES {shapes} != expected {net.param_shapes()}")
    return mod


def make_step(runtime, net, params, x, y, generated_dir, device="cpu"):
    """Return (step, get_params, info): step() does one SGD step and returns the loss or None."""
    info = {}
    if runtime.startswith("xp_"):
        return make_xp_step(runtime, net, params, x, y, generated_dir, device)

    def numpy_params():
        return {k: v.copy() for k, v in params.items()}

    if runtime in ("generated", "generated_sgd_step"):
        mod = load_generated(net, generated_dir)
        info["module"] = str(Path(generated_dir) / f"{net.name}.py")
        if runtime == "generated_sgd_step":
            if not hasattr(mod, "sgd_step"):
                raise Skip("the generated module has no sgd_step")
            return (lambda: mod.sgd_step(params, x, y, LR)), numpy_params, info

        _, grads = mod.loss_and_grad(params, x, y)
        info["grad_dtypes"] = sorted({str(g.dtype) for g in grads.values()})

        def step():
            loss, grads = mod.loss_and_grad(params, x, y)
            for k, g in grads.items():
                params[k] -= LR * g
            return loss

        return step, numpy_params, info
    if runtime == "numpy":
        return (lambda: reference_numpy.sgd_step(params, x, y, LR, net.head)), numpy_params, info
    if runtime == "numpy_opt":
        fused = reference_numpy.FusedSGD(params, net.head)
        return (lambda: fused(x, y, LR)), numpy_params, info
    if runtime == "gemm":
        gemm = reference_numpy.GemmOnly(params)
        return (lambda: gemm(x, y, LR)), numpy_params, info
    if runtime in ("torch", "torch_nn", "jax"):
        lib = runtime.split("_")[0]
        try:
            importlib.import_module(lib)
        except ImportError as e:
            raise Skip(f"{lib} is not importable ({e})") from None
        import peers

        if lib == "torch":
            import torch

            if device == "cuda" and not torch.cuda.is_available():
                raise Skip("torch.cuda.is_available() is False")
            info["threads"] = torch.get_num_threads()
            make = peers.make_torch_nn_step if runtime == "torch_nn" else peers.make_torch_step
            return (*make(params, x, y, LR, net.head, device), info)
        return (*peers.make_jax_step(params, x, y, LR, net.head), info)
    raise SystemExit(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES + XP_RUNTIMES)}")


def _xp_arrays(ns, dtype, device):
    """(to, to_numpy, info) for namespace ns: NumPy array -> ns's array on device, and back."""
    try:
        lib = importlib.import_module(ns)
    except ImportError as e:
        raise Skip(f"{ns} is not importable ({e})") from None
    if ns == "torch":
        if device == "cuda" and not lib.cuda.is_available():
            raise Skip("torch.cuda.is_available() is False")
        return ((lambda a: lib.from_numpy(a.copy()).to(device)),
                (lambda t: t.detach().cpu().numpy().copy()), {"threads": lib.get_num_threads()})
    if ns == "cupy":
        if device != "cuda":
            raise Skip("CuPy arrays live on a GPU: run with --device cuda (benchmarks/array_api_gpu.py)")
        try:
            count = lib.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001  (no driver, no device: CuPy raises its own errors)
            raise Skip(f"CuPy finds no GPU ({type(e).__name__}: {e})") from None
        if not count:
            raise Skip("CuPy finds no GPU")
        return lib.asarray, lib.asnumpy, {}
    import peers

    _, jnp = peers._import_jax(dtype)
    return jnp.asarray, np.array, {}


def make_xp_step(runtime, net, params, x, y, generated_dir, device):
    """The array-API module's step on another namespace's arrays: xp_<ns>_<what>, ns torch, jax or
    cupy; what sgd_step (in place), loss_and_grad (then the caller's update in place: on torch
    p.sub_(g, alpha=lr), as the PyTorch peer's, elsewhere p -= lr * g) or, on
    JAX, sgd_update under jax.jit (params donated, as the JAX peer's). Every step returns
    float(loss), as the PyTorch peer's loss.item() (on a GPU that waits for the step)."""
    _, ns, what = runtime.split("_", 2)
    to, to_numpy, info = _xp_arrays(ns, params["W1"].dtype, device)
    mod = load_generated(net, generated_dir, "_xp")
    info["module"] = str(Path(generated_dir) / f"{net.name}_xp.py")
    P = {k: to(v) for k, v in params.items()}
    tx, ty = to(x), to(y)
    state = {"p": P}

    def get_params():
        return {k: to_numpy(v) for k, v in state["p"].items()}

    if what == "sgd_step":
        return (lambda: float(mod.sgd_step(P, tx, ty, LR))), get_params, info
    if what == "loss_and_grad":
        _, grads = mod.loss_and_grad(P, tx, ty)
        info["grad_dtypes"] = sorted({str(g.dtype).replace("torch.", "") for g in grads.values()})

        def step():
            loss, grads = mod.loss_and_grad(P, tx, ty)
            for k, g in grads.items():
                P[k] -= LR * g
            return float(loss)

        def torch_step():
            # the update the PyTorch peer makes (and the README advises): one kernel, no lr * g temporary
            loss, grads = mod.loss_and_grad(P, tx, ty)
            for k, g in grads.items():
                P[k].sub_(g, alpha=LR)
            return float(loss)

        return (torch_step if ns == "torch" else step), get_params, info

    if what == "sgd_update" and ns == "jax":
        import jax

        # The README's usage, jax.jit(m.sgd_update), with the JAX peer's buffer donation.
        fn = jax.jit(mod.sgd_update, donate_argnums=0)

        def step():
            loss, state["p"] = fn(state["p"], tx, ty, LR)
            return float(loss)  # waits for the result

        return step, get_params, info
    raise SystemExit(f"unknown array-API runtime {runtime!r}")


def _flat(d, keys):
    """The arrays of a dict of products (NumPy, torch or JAX) as one float64 vector, in params order."""
    return np.concatenate([np.asarray(d[k], dtype=np.float64).ravel() for k in keys])


def make_curvature(runtime, net, params, x, y, v, generated_dir):
    """Return (call, parts, info): call() computes one product; parts(call's result) gives
    (the product as a dict, its H v as a dict or None where the runtime computes none)."""
    info = {}
    if runtime.startswith("generated_"):
        mod = load_generated(net, generated_dir)
        info["module"] = str(Path(generated_dir) / f"{net.name}.py")
        what = runtime[len("generated_"):]
        if not hasattr(mod, what):
            raise Skip(f"the generated module has no {what}")
        fn = getattr(mod, what)
        if what == "loss_and_grad":
            return (lambda: fn(params, x, y)), (lambda out: (out[1], None)), info
        if what == "loss_grad_hvp":
            return (lambda: fn(params, x, y, v)), (lambda out: (out[2], out[2])), info
        if what == "gnvp":
            return (lambda: fn(params, x, y, v)), (lambda out: (out, None)), info
        return (lambda: fn(params, x, y, v)), (lambda out: (out, out)), info
    peer = runtime[:-len("_hvp")]
    try:
        importlib.import_module(peer)
    except ImportError as e:
        raise Skip(f"{peer} is not importable ({e})") from None
    import peers

    if peer == "torch":
        import torch

        info["threads"] = torch.get_num_threads()
        return peers.make_torch_hvp(params, x, y, v, net.head), (lambda out: (out, out)), info
    return peers.make_jax_hvp(params, x, y, v, net.head), (lambda out: (out, out)), info


def curvature_probe(net, params, x, y, v, call, parts, generated_dir, check):
    """The first call's product: its norm, v . product and dtypes; with check, the relative error
    |Hv - Hv_gen| / |Hv_gen| (2-norm over all parameters) of its H v against the generated hvp."""
    keys = list(params)
    product, hv = parts(call())  # the first call also compiles (jax)
    flat = _flat(product, keys)
    probe = {"norm": float(np.linalg.norm(flat)), "v_dot": float(flat @ _flat(v, keys))}
    dtypes = sorted({str(product[k].dtype).replace("torch.", "") for k in keys})
    if check and hv is not None:
        try:
            ref = _flat(load_generated(net, generated_dir).hvp(params, x, y, v), keys)
            probe["rel_err"] = float(np.linalg.norm(_flat(hv, keys) - ref) / np.linalg.norm(ref))
        except Skip as e:
            probe["rel_err_skip"] = str(e)
    return probe, dtypes


def time_calls(call, repeats, min_time):
    """Warm up, then time call() separately, gc off, for at least `repeats` calls and `min_time`
    seconds; return (wall ns per call, CPU ns per call over blocks of 8 calls, the last result)."""
    t_end = time.perf_counter() + 0.05
    for _ in range(3):
        call()
    while time.perf_counter() < t_end:
        call()

    times, cpu_times = [], []
    gc.disable()
    t_end = time.perf_counter() + min_time
    clock, cpu = time.perf_counter_ns, time.process_time_ns
    c0 = cpu()
    for i in range(200_000):
        t0 = clock()
        out = call()
        times.append(clock() - t0)
        if i & 7 == 7:
            # CPU time of the process (every thread) per step, over blocks of 8 steps: unlike the
            # wall clock it does not count the time other processes hold the core.
            c1 = cpu()
            cpu_times.append((c1 - c0) / 8)
            c0 = c1
            if i + 1 >= repeats and time.perf_counter() >= t_end:
                break
    gc.enable()
    return times, cpu_times, out


def measure_curvature(runtime, net_name, batch, dtype, repeats, min_time, generated_dir, check):
    """The probe (and --check), a warm-up and the timed products; return the result dict."""
    net = ALL_NETS[net_name]
    dtype = np.dtype(dtype)
    params = make_params(net, dtype)
    x, y = make_batch(net, batch, dtype)
    v = make_direction(net, dtype)
    result = {"runtime": runtime, "net": net_name, "batch": batch, "dtype": dtype.name}
    try:
        call, parts, info = make_curvature(runtime, net, params, x, y, v, generated_dir)
    except Skip as e:
        return {**result, "skip": str(e)}
    result.update(info)
    result["probe"], result["grad_dtypes"] = curvature_probe(net, params, x, y, v, call, parts,
                                                             generated_dir, check)
    result["times_ns"], result["cpu_ns"], _ = time_calls(call, repeats, min_time)
    return result


def reference_probe(net, params, x, y):
    """The hand-written NumPy step's loss and update norm on a copy of params."""
    ref = {k: v.copy() for k, v in params.items()}
    loss = reference_numpy.sgd_step(ref, x, y, LR, net.head)
    update = math.sqrt(sum(float(np.sum((ref[k].astype(np.float64) - params[k]) ** 2)) for k in ref))
    # ||params||: storing each updated entry in the params' dtype rounds it by up to eps |entry|, so two
    # correct steps' update norms (after - before) may differ by ~eps ||params||, whatever the tolerance
    norm = math.sqrt(sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in ref))
    return {"loss": float(loss), "update_norm": update, "param_norm": norm}


def measure(runtime, net_name, batch, dtype, repeats, min_time, generated_dir, device="cpu", check=False):
    """Run the probe, a warm-up and the timed steps; return the result dict."""
    net = ALL_NETS[net_name]
    dtype = np.dtype(dtype)
    params = make_params(net, dtype)
    x, y = make_batch(net, batch, dtype)
    result = {"runtime": runtime, "net": net_name, "batch": batch, "dtype": dtype.name}
    if device != "cpu":
        result["device"] = device
    try:
        step, get_params, info = make_step(runtime, net, params, x, y, generated_dir, device)
    except Skip as e:
        return {**result, "skip": str(e)}
    result.update(info)
    if check:
        result["reference"] = reference_probe(net, params, x, y)

    before = get_params()
    loss = step()  # also compiles (jax)
    after = get_params()
    update = math.sqrt(sum(float(np.sum((after[k].astype(np.float64) - before[k]) ** 2)) for k in before))
    norm = math.sqrt(sum(float(np.sum(np.asarray(after[k], np.float64) ** 2)) for k in after))
    result["probe"] = {"loss": None if loss is None else float(loss), "update_norm": update, "param_norm": norm}
    result["dtypes_after"] = sorted({str(v.dtype) for v in after.values()})

    times, cpu_times, loss = time_calls(step, repeats, min_time)
    result["times_ns"] = times
    result["cpu_ns"] = cpu_times
    result["final_loss"] = None if loss is None else float(loss)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runtime", choices=sorted(set(RUNTIMES + CURVATURE_RUNTIMES + XP_RUNTIMES)))
    parser.add_argument("net", choices=sorted(ALL_NETS))
    parser.add_argument("batch", type=int)
    parser.add_argument("dtype", choices=("float32", "float64"))
    parser.add_argument("repeats", type=int)
    parser.add_argument("--min-time", type=float, default=0.0, help="time at least this many seconds")
    parser.add_argument("--generated-dir", default=str(ROOT / "generated"))
    parser.add_argument("--check", action="store_true",
                        help="curvature runtimes: compare the first H v with the generated module's hvp; "
                             "training steps: report the hand-written NumPy step's probe too")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the torch and CuPy runtimes put their arrays")
    args = parser.parse_args(argv)
    if args.runtime in CURVATURE_RUNTIMES:
        result = measure_curvature(args.runtime, args.net, args.batch, args.dtype, args.repeats,
                                   args.min_time, args.generated_dir, args.check)
    else:
        result = measure(args.runtime, args.net, args.batch, args.dtype, args.repeats,
                         args.min_time, args.generated_dir, args.device, args.check)
    result["pid"] = os.getpid()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
