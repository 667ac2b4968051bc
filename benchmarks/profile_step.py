"""Profile one training step of a generated module with py-spy: which lines the time goes to.

    pip install py-spy
    python benchmarks/profile_step.py [--net mlp_4_2_3] [--batch 1] [--dtype float32]
                                      [--module FILE] [--fused | --curvature hvp] [--seconds 10] [--top 15]
                                      [--xp torch]

The step is the benchmark's: `loss_and_grad` followed by `params[k] -= lr * g` (the caller's
update), or with --fused the module's own `sgd_step`, or with --curvature F the module's
curvature function F (hvp, gnvp, loss_grad_hvp) along curvature.py's direction v. With
--xp torch the module is the array-API one (default: <net>_xp.py generated into a temporary
directory) on torch CPU tensors (one thread); the time of torch's C++ code, and of
array_api_compat's wrappers, is charged to the module's line that called it. py-spy
samples the running process from outside, so even a 20 µs step is profiled without
distortion; the time of NumPy's C code is charged to the Python line that called it. Prints a Markdown table: share of the step's
samples and estimated µs per step for the most expensive lines. Single-threaded BLAS.
"""
import argparse
import collections
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import NETS, make_batch, make_direction, make_params  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-3
FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def load(path):
    spec = importlib.util.spec_from_file_location(f"_profiled_{Path(path).stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def caller_step(mod, params, x, y):
    """The benchmark's plain step: the caller applies the gradients."""
    loss, grads = mod.loss_and_grad(params, x, y)
    for k, g in grads.items():
        params[k] -= LR * g
    return loss


def spin(module, net, batch, dtype, seconds, fused, curvature=None, xp=None):
    """Run steps for `seconds`; print the median step time (a busy machine inflates the mean)."""
    mod = load(module)
    params = make_params(NETS[net], dtype)
    x, y = make_batch(NETS[net], batch, dtype)
    if xp == "torch":
        import torch

        torch.set_num_threads(1)
        params = {k: torch.from_numpy(v) for k, v in params.items()}
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    if curvature:
        v, fn = make_direction(NETS[net], dtype), getattr(mod, curvature)
        step = lambda: fn(params, x, y, v)  # noqa: E731
    else:
        step = (lambda: mod.sgd_step(params, x, y, LR)) if fused else (lambda: caller_step(mod, params, x, y))
    for _ in range(10):
        step()
    times, clock = [], time.perf_counter_ns
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for _ in range(10):
            t0 = clock()
            step()
            times.append(clock() - t0)
    print(f"step_us {statistics.median(times) / 1e3:.2f} steps {len(times)}")


def attribute(raw: str, module: Path) -> tuple[collections.Counter, int]:
    """Samples per (function, line) of the module or of caller_step: the innermost such frame of each stack."""
    counts, total = collections.Counter(), 0
    for entry in raw.splitlines():
        stack, _, n = entry.rpartition(" ")
        frames = [FRAME.match(f) for f in stack.split(";")]
        if not any(f and f["name"] == "spin.<locals>.<lambda>" for f in frames):
            continue  # not inside a step: start-up (imports, parameters) or the timing loop
        total += int(n)
        for f in reversed(frames):
            # py-spy names files by their base name
            if f and (f["file"] == module.name or (f["file"] == Path(__file__).name and f["name"] == "caller_step")):
                path = module if f["file"] == module.name else Path(__file__)
                counts[(f["name"], int(f["line"]), str(path))] += int(n)
                break
        else:
            counts[("(elsewhere)", 0, "")] += int(n)
    return counts, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mlp_4_2_3", choices=sorted(NETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--module", help="the generated module (default generated/<net>.py)")
    parser.add_argument("--fused", action="store_true", help="profile sgd_step instead of loss_and_grad + update")
    parser.add_argument("--curvature", choices=("hvp", "gnvp", "loss_grad_hvp"),
                        help="profile this curvature function instead (direction: nets.make_direction)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--xp", choices=("torch",), help="the array-API module on torch CPU tensors")
    parser.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spin:
        return spin(Path(args.module), args.net, args.batch, args.dtype, args.seconds, args.fused,
                    args.curvature, args.xp)
    with tempfile.TemporaryDirectory() as tmp:
        if args.xp and not args.module:
            import array_api

            array_api.generate_modules([args.net], tmp, lambda msg: print(msg, file=sys.stderr))
            args.module = str(Path(tmp) / f"{args.net}_xp.py")
        return profile(args, Path(args.module or ROOT / "generated" / f"{args.net}.py"))


def profile(args, module):
    """py-spy the --spin child; print the table of the most expensive lines of module."""

    beside = Path(sys.executable).parent / "py-spy"   # a virtualenv's, when its bin/ is not on PATH
    pyspy = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if pyspy is None:
        sys.exit("profile_step.py needs py-spy: pip install py-spy")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.txt"
        cmd = [pyspy, "record", "--nonblocking", "--rate", "1000", "--format", "raw", "--output", str(raw_path), "--",
               sys.executable, __file__, "--spin", "--net", args.net, "--batch", str(args.batch),
               "--dtype", args.dtype, "--module", str(module), "--seconds", str(args.seconds)]
        if args.fused:
            cmd.append("--fused")
        if args.curvature:
            cmd += ["--curvature", args.curvature]
        if args.xp:
            cmd += ["--xp", args.xp]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not raw_path.exists():
            sys.exit(f"py-spy failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        step_us, steps = re.search(r"step_us (\S+) steps (\d+)", proc.stdout).groups()
        counts, total = attribute(raw_path.read_text(), module)

    step_us = float(step_us)
    lines = {}
    for name, line, file in counts:
        if file and file not in lines:
            lines[file] = Path(file).read_text().splitlines()
    what = (f"{args.curvature}(params, x, y, v)" if args.curvature
            else "sgd_step" if args.fused else "loss_and_grad + params[k] -= lr * g")
    print(f"{args.net}, batch {args.batch}, {args.dtype}, {what} ({module.name}"
          f"{', torch CPU tensors' if args.xp else ''}): "
          f"median step {step_us:.1f} µs over {steps} steps, {total} py-spy samples\n")
    print("| share | ≈ µs/step | function:line | code |")
    print("|---:|---:|---|---|")
    for (name, line, file), n in counts.most_common(args.top):
        code = lines[file][line - 1].strip() if file else ""
        print(f"| {100 * n / total:.1f}% | {step_us * n / total:.2f} | {name}:{line} | `{code}` |")


if __name__ == "__main__":
    main()
