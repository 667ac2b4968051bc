"""The array-API benchmark on a GPU: the `--array-api` module on torch CUDA tensors and CuPy arrays
against PyTorch eager autograd on CUDA, batch 4096, 784-256-128-10 and 784-512-512-10, float32.

    python benchmarks/array_api_gpu.py [--out benchmarks/ARRAY_API_GPU.md]

array_api.py's driver and table (each runtime in its own process, interleaved rounds, medians,
paired ratios, the first step checked against the hand-written NumPy step), with the workers'
`--device cuda`. Every step ends with float(loss), which waits for the GPU, so a step's wall time
is the GPU's. Runs what it finds: torch CUDA if torch.cuda.is_available(), CuPy if it sees a
device; where neither is there it prints one line, "no GPU here: skipped (...)", and exits 0.
--device cpu runs the same torch rows on the CPU (a dry run of this script where there is no
GPU; the tests use it). The thread settings are the libraries' defaults (--threads 0) unless
--threads says otherwise.
"""
import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import array_api  # noqa: E402
import bench  # noqa: E402

GPU_RUNTIMES = ["xp_torch_sgd_step", "xp_torch_loss_and_grad", "torch", "torch_nn",
                "xp_cupy_sgd_step", "xp_cupy_loss_and_grad"]
FULL = dict(configs=[("mlp_784_256_128_10", 4096, "float32"), ("mlp_784_512_512_10", 4096, "float32")],
            runtimes=GPU_RUNTIMES, rounds=11, repeats=20, min_time=0.3)

PROBE = r"""
import json
out = {}
try:
    import torch
    if torch.cuda.is_available():
        out["torch"] = f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    else:
        out["torch_why"] = f"torch {torch.__version__}: torch.cuda.is_available() is False"
except ImportError as e:
    out["torch_why"] = f"torch is not importable ({e})"
try:
    import cupy
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        n, out["cupy_why"] = 0, f"CuPy {cupy.__version__} finds no GPU ({type(e).__name__})"
    if n:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        out["cupy"] = f"{name.decode() if isinstance(name, bytes) else name}, CuPy {cupy.__version__}"
    else:
        out.setdefault("cupy_why", f"CuPy {cupy.__version__} finds no GPU")
except ImportError as e:
    out["cupy_why"] = f"cupy is not importable ({e})"
print(json.dumps(out))
"""


def gpu_status(env):
    """{"torch": description or absent, "torch_why": why not, "cupy": ..., "cupy_why": ...}, probed
    in a child process (the driver itself imports neither library)."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        return {"torch_why": f"the probe failed: {proc.stderr.strip().splitlines()[-1:]}", "cupy_why": ""}
    return json.loads(proc.stdout)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    array_api.add_common_arguments(parser, threads_default=0)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: the torch rows on the CPU, a dry run where there is no GPU")
    args = parser.parse_args(argv)
    cfg = array_api.configure(args, FULL)
    env = bench.thread_env(args.threads or None)

    status = gpu_status(env)
    if args.device == "cuda":
        if "torch" not in status and "cupy" not in status:
            print(f"no GPU here: skipped ({status.get('torch_why')}; {status.get('cupy_why')})")
            return 0
        keep = [rt for rt in cfg["runtimes"] if ("cupy" in status if "cupy" in rt else "torch" in status)]
        for rt in sorted(set(cfg["runtimes"]) - set(keep)):
            array_api.log(f"{array_api.LABELS[rt]}: not run ({status.get('cupy_why' if 'cupy' in rt else 'torch_why')})")
        cfg["runtimes"] = keep
    gpu_line = (f"- GPU: {'; '.join(status[k] for k in ('torch', 'cupy') if k in status)}" if args.device == "cuda"
                else "- GPU: none (--device cpu: a dry run of the GPU script on the CPU)")

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    results, info, load = array_api.run(cfg, env, args.xp_dir, array_api.log, device_args=["--device", args.device])
    report = array_api.render(results, cfg, info, argv, started, time.perf_counter() - t0, load,
                              title="Array-API module benchmarks on a GPU",
                              command="python benchmarks/array_api_gpu.py", targets=(), method_extra=[gpu_line])
    array_api.log_skips(results, array_api.log)
    if args.json:
        array_api.save_json(args.json, results, info)
    if args.out:
        Path(args.out).write_text(report + "\n")
        array_api.log(f"wrote {args.out}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
