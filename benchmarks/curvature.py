"""Time the generated curvature products (hvp, gnvp) against loss_and_grad, JAX jit and torch.func.

    python benchmarks/curvature.py [--smoke] [--out benchmarks/CURVATURE.md]

The design of bench.py, whose driver code this reuses: every (runtime, configuration) is timed
by `_worker.py` in its own process, the runtimes of a configuration take turns round after
round (the order rotating), and the report gives the median of the round medians, wall clock
and CPU time, and ratios paired within rounds. One call is one product along a fixed random
direction v (nets.make_direction) on one fixed batch: the generated module's `hvp`, `gnvp`,
`loss_grad_hvp` and `loss_and_grad` (the yardstick), JAX's jitted
`jax.jvp(jax.grad(loss), (params,), (v,))[1]` and torch.func's `jvp(grad(loss), ...)` in eager
mode, all of the same batch-mean loss (peers.jax_loss, peers.torch_loss). Before the first
round is timed, each worker checks its H v against the generated module's `hvp` (relative
error in the 2-norm over all parameters, the check column).

Every library runs single-threaded by default (bench.py's `--threads 1`; `--threads 0` keeps
the libraries' defaults). Writes benchmarks/CURVATURE.md and refreshes its section of
RESULTS.md (bench.py quotes CURVATURE.md there too). --smoke: a few seconds, small
configurations, one round, stdout only; JAX is skipped, and the report says so, where it is
not installed.
"""
import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (no NumPy: the driver loads no BLAS)
from nets import CURVATURE_RUNTIMES  # noqa: E402

HERE = Path(__file__).resolve().parent

LABELS = {
    "generated_hvp": "generated `hvp`",
    "generated_gnvp": "generated `gnvp`",
    "generated_loss_grad_hvp": "generated `loss_grad_hvp`",
    "generated_loss_and_grad": "generated `loss_and_grad`",
    "jax_hvp": "JAX jit jvp(grad)",
    "torch_hvp": "torch.func jvp(grad), eager",
}
FULL = dict(configs=[("mlp_784_256_128_10", 128, "float32"), ("mlp_4_2_3", 1, "float32"),
                     ("mlp_4_2_3", 1, "float64")],
            runtimes=list(CURVATURE_RUNTIMES), rounds=15, repeats=20, min_time=0.3)
SMOKE = dict(configs=[("mlp_4_2_3", 1, "float64")], runtimes=list(CURVATURE_RUNTIMES),
             rounds=1, repeats=3, min_time=0.0)

# (what, configuration, runtime, yardstick, limit, strict): runtime / yardstick must be <= limit
# (< limit where strict: "faster than").
TARGETS = [
    ("hvp ≤ 2.2 × loss_and_grad", ("mlp_784_256_128_10", 128, "float32"), "generated_hvp",
     "generated_loss_and_grad", 2.2, False),
    ("hvp faster than JAX jit's hvp", ("mlp_784_256_128_10", 128, "float32"), "generated_hvp", "jax_hvp", 1.0, True),
    ("hvp faster than torch.func's hvp", ("mlp_784_256_128_10", 128, "float32"), "generated_hvp",
     "torch_hvp", 1.0, True),
]


def check_cell(out, dtype):
    """The relative error of the runtime's H v against the generated hvp, and ok / MISMATCH."""
    probe = out.get("probe") or {}
    if "rel_err" in probe:
        err = probe["rel_err"]
        return f"{err:.1e} {'ok' if err <= bench.TOLERANCE[dtype] else 'MISMATCH'}"
    if "rel_err_skip" in probe:
        return "no reference"
    return "–"


def ratio_cells(res, rt, base):
    """rt / base in this run: paired (median over rounds of the within-round ratio), and of the CPU medians."""
    a, b = res.get(rt, {}), res.get(base, {})
    paired = bench.paired_ratio(a, b)
    cpu = a["cpu_median"] / b["cpu_median"] if a.get("cpu_median") and b.get("cpu_median") else None
    return [f"{paired:.2f}" if paired else "–", f"{cpu:.2f}" if cpu else "–"]


def targets_lines(results):
    lines = ["## Targets", "",
             "On 784-256-128-10, batch 128, float32; ✓ met, ✗ not. paired: the median over rounds of the "
             "ratio within each round (the steadiest figure on a shared machine); median: of the round "
             "medians, wall clock; CPU: the same in process CPU time; best round: of the fastest round "
             "medians.", "",
             "| target | limit | paired | median | CPU | best round |", "|---|---:|---:|---:|---:|---:|"]
    for what, key, rt, base, limit, strict in TARGETS:
        res = results.get(key)
        if res is None:
            continue
        a, b = res.get(rt, {}), res.get(base, {})
        cells = []
        for ratio in (bench.paired_ratio(a, b),
                      *(a[k] / b[k] if a.get(k) and b.get(k) else None
                        for k in ("median", "cpu_median", "best"))):
            if ratio is None:
                cells.append("– (" + (b.get("skip") or b.get("error") or a.get("skip") or "not run") + ")")
            else:
                cells.append(f"{ratio:.2f} {'✓' if (ratio < limit if strict else ratio <= limit) else '✗'}")
        lines.append(f"| {what} | {'<' if strict else '≤'} {limit:.2f} | " + " | ".join(cells) + " |")
    if not lines[-1].startswith("| hvp"):
        lines[-2:] = ["(784-256-128-10 at batch 128, float32 was not measured in this run.)"]
    return lines + [""]


def render(results, cfg, info, argv, started, elapsed, load):
    lines = ["# Curvature benchmarks", "",
             f"`{' '.join(['python benchmarks/curvature.py', *argv])}`, {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s. "
             "One call = one product along a fixed direction v (N(0, 1) entries) on one fixed batch.", "",
             *bench.machine_lines(info, load), "", "## Method", "",
             "- generated: the module's public functions as a caller uses them (inputs checked, forward "
             "pass included): `hvp(params, x, y, v)` (H v by Pearlmutter's R-operator), `gnvp` (Gauss-Newton "
             "G v), `loss_grad_hvp` (loss, gradient and H v from one forward pass), `loss_and_grad` (the "
             "yardstick). JAX jit: `jax.jit` of `jax.jvp(jax.grad(loss), (params,), (v,))[1]`, waited "
             "for; torch.func: `torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1]`, eager (what "
             "`torch.func.hvp` computes). The same batch-mean loss everywhere (cce of softmax, or 1/2 the "
             "squared error of sigmoid, over the batch).",
             f"- Each runtime runs in its own process (`benchmarks/_worker.py`); for each configuration "
             f"the runtimes take turns for {cfg['rounds']} round(s), the order rotating each round. A round "
             f"times each call separately (gc off) after a warm-up: at least {cfg['repeats']} calls and "
             f"{cfg['min_time']} s.",
             "- median: the median over rounds of each round's median wall-clock time; round medians: "
             "their spread; CPU µs: the same median of the process's CPU time per call.",
             "- × l&g, × hvp: this runtime's time over the generated `loss_and_grad`'s or `hvp`'s, paired "
             "(the median over rounds of the ratio within each round) and by CPU time.",
             "- check: before the first round is timed, the runtime's H v against the generated `hvp`'s "
             "in the same process: relative error in the 2-norm over all parameters (ok within "
             "float32 1e-4, float64 1e-9). – where the runtime computes no H v.", ""]
    lines += targets_lines(results)
    notes = {}
    lines += ["## Results", "",
              "| net | batch | dtype | runtime | median µs | round medians µs | CPU µs | × l&g paired "
              "| × l&g CPU | × hvp paired | × hvp CPU | check |",
              "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (net, batch, dtype), res in results.items():
        for rt in cfg["runtimes"]:
            out = res.get(rt, {})
            if "median" not in out:
                reason = out.get("skip") or out.get("error") or "not run"
                notes.setdefault(f"{LABELS[rt]} skipped: {reason}", []).append(f"{net} batch {batch} {dtype}")
                lines.append(f"| {net} | {batch} | {dtype} | {LABELS[rt]} | skipped | | | | | | | see Notes |")
                continue
            rm, cpu = out["round_medians"], out.get("cpu_median")
            lines.append(f"| {net} | {batch} | {dtype} | {LABELS[rt]} | {bench.fmt(out['median'])} "
                         f"| {bench.fmt(min(rm))}–{bench.fmt(max(rm))} | {bench.fmt(cpu) if cpu else '–'} | "
                         + " | ".join(ratio_cells(res, rt, "generated_loss_and_grad")
                                      + ratio_cells(res, rt, "generated_hvp"))
                         + f" | {check_cell(out, dtype)} |")
    lines.append("")
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {note} ({', '.join(where)})" for note, where in notes.items()]
        lines.append("")
    return "\n".join(lines)


def update_results_md(path, section_lines, begin=bench.CURVATURE_BEGIN, end=bench.CURVATURE_END):
    """Replace the curvature section of RESULTS.md (between bench.CURVATURE_BEGIN and _END; or
    between other markers begin, end) with section_lines, or append it; the rest of the file is
    left as it is."""
    if not path.exists():
        return False
    text = path.read_text()
    section = "\n".join(section_lines)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    return True


def parse_config(text):
    net, batch, dtype = text.split(":")
    return net, int(batch), dtype


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, small configurations (for tests)")
    parser.add_argument("--out", help="write the Markdown here (default: benchmarks/CURVATURE.md, and its "
                                      "section of RESULTS.md; --smoke: stdout only)")
    parser.add_argument("--configs", nargs="+", type=parse_config, metavar="NET:BATCH:DTYPE")
    parser.add_argument("--runtimes", nargs="+", choices=CURVATURE_RUNTIMES)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--min-time", type=float, help="seconds per runtime per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/OPENBLAS/MKL threads, and XLA's if 1 (default 1; 0: library defaults)")
    parser.add_argument("--generated-dir", default=str(bench.ROOT / "generated"))
    args = parser.parse_args(argv)

    cfg = dict(SMOKE if args.smoke else FULL)
    for k in ("configs", "runtimes", "rounds", "min_time"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    env = bench.thread_env(args.threads or None)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info = bench.machine_info(env)
    results = bench.measure_all(cfg, env, args.generated_dir, log,
                                extra_args=lambda rt, r: ["--check"] if r == 0 else [])
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for res in results.values():
        bench.summarise(res)
        info["torch_threads"] = info.get("torch_threads") or res.get("torch_hvp", {}).get("threads")
    report = render(results, cfg, info, argv, started, time.perf_counter() - t0, (load0, load1))
    for (net, batch, dtype), res in results.items():
        for rt, out in res.items():
            if "median" not in out:
                log(f"{net} batch {batch} {dtype}: {LABELS[rt]} skipped: "
                    f"{out.get('skip') or out.get('error') or 'not run'}")

    out_path = args.out or (None if args.smoke else str(HERE / "CURVATURE.md"))
    if out_path:
        Path(out_path).write_text(report + "\n")
        log(f"wrote {out_path}")
        if args.out is None and update_results_md(HERE / "RESULTS.md", bench.curvature_section()):
            log(f"updated its section of {HERE / 'RESULTS.md'}")
    print(report)


if __name__ == "__main__":
    main()
