"""Time one SGD training step of generated modules against hand-written NumPy, PyTorch and JAX.

    python benchmarks/bench.py [--smoke] [--out benchmarks/RESULTS.md]

Every (runtime, network, batch, dtype) is measured by `_worker.py` in its own
process; the runtimes of one configuration take turns, round after round, so
a slow spell of this shared machine hits them all alike. Reports the median
of the round medians (wall clock and CPU time), min-max over all steps, the
spread of the round medians, the ratio to the generated module, GFLOP/s, the
fraction of the GEMM-only floor and the issue's targets. --smoke runs a few
seconds of NumPy-only configurations (tests): one round of three steps, which
shows that every runtime runs and agrees, and whose times are not a measurement
(its report says so, and marks every ratio).
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import NETS, RUNTIMES  # noqa: E402  (no NumPy: the driver loads no BLAS)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "_worker.py"

LABELS = {
    "generated": "generated (loss_and_grad + p -= lr*g)",
    "generated_sgd_step": "generated sgd_step",
    "numpy": "NumPy hand-written",
    "numpy_opt": "NumPy hand-optimised",
    "torch": "PyTorch eager",
    "jax": "JAX jit",
    "gemm": "GEMM only (floor)",
}
SHORT = {
    "generated": "generated",
    "generated_sgd_step": "gen. sgd_step",
    "numpy": "NumPy",
    "numpy_opt": "NumPy opt.",
    "torch": "PyTorch",
    "jax": "JAX",
    "gemm": "GEMM only",
}
FULL = dict(nets=list(NETS), batches=[1, 32, 128, 1024], dtypes=["float64", "float32"],
            runtimes=list(RUNTIMES), rounds=7, repeats=20, min_time=0.2, smoke=False)
SMOKE = dict(nets=list(NETS), batches=[32], dtypes=["float64"],
             runtimes=["generated", "generated_sgd_step", "numpy", "numpy_opt", "gemm"],
             rounds=1, repeats=3, min_time=0.0, smoke=True)
# A smoke run's ratios come from three steps of a cold process each: they can say anything (sgd_step 3.23x
# loss_and_grad in one, the opposite of a full run's 0.9x), so its report marks every one of them.
SMOKE_MARK = " (smoke)"
SMOKE_NOTE = ("**A smoke run (`--smoke`), not a measurement:** one round of three steps per runtime, without "
              "warm-up time. It shows that every runtime runs and agrees with the hand-written NumPy step "
              "(the check column); its times and ratios (marked \"(smoke)\") are noise. For numbers: "
              "`python benchmarks/bench.py --threads 1`, or RESULTS.md, its last run.")
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}  # relative, for the cross-check of first steps
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23}   # machine epsilon, for the rounding of updated params


def thread_env(threads):
    """Environment for the workers; threads=None keeps every library's default."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
    return env


def run_worker(runtime, net, batch, dtype, cfg, env, generated_dir, extra=()):
    """Run one worker process; return its result dict (with "error" if it failed)."""
    cmd = [sys.executable, str(WORKER), runtime, net, str(batch), dtype, str(cfg["repeats"]),
           "--min-time", str(cfg["min_time"]), "--generated-dir", str(generated_dir), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"runtime": runtime, "error": f"exit {proc.returncode}: {lines[-1]}"}
    return json.loads(proc.stdout)


def configurations(cfg):
    """The (net, batch, dtype) configurations of cfg: its "configs" list if it has one, else
    every combination of its nets, batches and dtypes."""
    if cfg.get("configs"):
        return [tuple(c) for c in cfg["configs"]]
    return [(net, batch, dtype) for net in cfg["nets"] for batch in cfg["batches"] for dtype in cfg["dtypes"]]


def measure_all(cfg, env, generated_dir, log, extra_args=None):
    """Round-robin the runtimes of each configuration; return {(net, batch, dtype): {runtime: result}}.

    extra_args(runtime, round) gives more worker arguments (e.g. a check in the first round only);
    the first round's result keeps its probe."""
    results = {}
    for net, batch, dtype in configurations(cfg):
        key = (net, batch, dtype)
        res = results[key] = {}
        active = list(cfg["runtimes"])
        for r in range(cfg["rounds"]):
            k = r % len(active) if active else 0
            for rt in active[k:] + active[:k]:  # rotate the order each round
                extra = extra_args(rt, r) if extra_args else ()
                out = run_worker(rt, net, batch, dtype, cfg, env, generated_dir, extra)
                if "times_ns" in out:
                    agg = res.setdefault(rt, {**out, "rounds": [], "cpu_rounds": []})
                    agg["rounds"].append(out["times_ns"])
                    agg["cpu_rounds"].append(out.get("cpu_ns") or [])
                else:
                    res[rt] = out
            active = [rt for rt in active if "rounds" in res.get(rt, {})]
            log(f"{net} batch {batch} {dtype}: round {r + 1}/{cfg['rounds']} done")
    return results


def summarise(res):
    """Add the median over rounds of each round's median step time (wall and CPU, µs), the round
    medians, and min/max over all steps. A busy spell that slows one or two rounds moves the
    median of the round medians less than it moves the median of all steps pooled."""
    for out in res.values():
        if "rounds" in out:
            pooled = [t for rnd in out["rounds"] for t in rnd]
            out["round_medians"] = [statistics.median(rnd) / 1e3 for rnd in out["rounds"]]
            out["median"] = statistics.median(out["round_medians"])
            out["best"] = min(out["round_medians"])
            out["min"], out["max"] = min(pooled) / 1e3, max(pooled) / 1e3
            out["steps"] = len(pooled)
            cpu = [statistics.median(rnd) / 1e3 for rnd in out.get("cpu_rounds", []) if rnd]
            out["cpu_median"] = statistics.median(cpu) if cpu else None


def cross_check(res, dtype):
    """Compare every runtime's first step (loss, update norm) with the hand-written NumPy one."""
    ref = res.get("numpy", {}).get("probe")
    for rt, out in res.items():
        probe = out.get("probe")
        if not probe or rt == "gemm":
            out["check"] = "–"
            continue
        if ref is None:
            out["check"] = "no reference"
            continue
        bad = []
        for field in ("loss", "update_norm"):
            a, b = probe[field], ref[field]
            tol = TOLERANCE[dtype] * max(abs(b), 1e-30)
            if field == "update_norm":   # after - before: each runtime rounds every updated entry to its dtype
                tol += 2 * EPS[dtype] * ref.get("param_norm", 0.0)
            if a is None or abs(a - b) > tol:
                bad.append(f"{field} {a:.6g} vs {b:.6g}" if a is not None else f"{field} missing")
        if dtype not in out.get("dtypes_after", [dtype]) or len(out.get("dtypes_after", [])) > 1:
            bad.append(f"params became {out['dtypes_after']}")
        if any(d != dtype for d in out.get("grad_dtypes", [])):
            bad.append(f"grads are {out['grad_dtypes']}")
        out["check"] = "ok" if not bad else "MISMATCH: " + "; ".join(bad)


def machine_info(env):
    """CPU, cores, library versions and BLAS, read without timing anything."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
        flags = next((l for l in cpuinfo.splitlines() if l.startswith("flags")), "").split()
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags)
    except OSError:
        info["cpu"] = platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    info["usable_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    for pkg in ("numpy", "torch", "jax", "jaxlib"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = None
    code = ("import json, numpy as np\n"
            "try:\n b = np.show_config(mode='dicts')['Build Dependencies']['blas']\n"
            " print(json.dumps(f\"{b.get('name')} {b.get('version')}\"))\n"
            "except Exception as e:\n print(json.dumps('unknown'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    info["blas"] = json.loads(proc.stdout) if proc.returncode == 0 else "unknown"
    info["threads_env"] = {k: env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "MKL_NUM_THREADS", "XLA_FLAGS") if k in env}
    return info


def machine_lines(info, load):
    """The report's Machine section: CPU, library versions, BLAS, thread settings, load."""
    return ["## Machine", "",
            f"- CPU: {info['cpu']} ({info.get('simd', '')}), {info['cores']} logical cores "
            f"({info['usable_cores']} usable); {info['platform']}",
            f"- Python {info['python']}, NumPy {info['numpy']} (BLAS: {info['blas']}), "
            f"PyTorch {info['torch'] or 'not installed'}"
            + (f" ({info['torch_threads']} threads)" if info.get("torch_threads") else "")
            + f", JAX {info['jax'] or 'not installed'}",
            f"- Threads: {info['threads_env'] or 'library defaults (no *_NUM_THREADS set)'}; "
            f"load average {load[0]:.1f} at start, {load[1]:.1f} at end (a shared machine: other "
            f"processes ran during the measurements)"]


def fmt(t):
    """A time in µs with 3 significant digits."""
    return f"{t:.3g}" if t < 1000 else f"{t:,.0f}"


# The targets of GitHub issue 6: (what, net, dtypes, batches, peer, limit on generated / peer).
TARGETS = [
    ("vs NumPy hand-written, batch 128, float32", "mlp_784_256_128_10", ("float32",), (128,), "numpy", 0.95),
    ("vs NumPy hand-written, every batch and dtype", "mlp_784_256_128_10", None, None, "numpy", 1.0),
    ("vs NumPy hand-written, every batch and dtype", "mlp_4_2_3", None, None, "numpy", 1.0),
    ("vs PyTorch eager, batch 128, float32", "mlp_784_256_128_10", ("float32",), (128,), "torch", 0.80),
    ("vs JAX jit, batch 1, float32", "mlp_4_2_3", ("float32",), (1,), "jax", 1.0),
    ("vs JAX jit, batch 1, float64", "mlp_4_2_3", ("float64",), (1,), "jax", 1.0),
    ("vs GEMM only, batch 1024, float32", "mlp_784_256_128_10", ("float32",), (1024,), "gemm", 1.15),
]


def paired_ratio(a, b):
    """The median over rounds of a / b within each round (the two ran back to back, so a busy
    spell that lasts a round or more slows both), or None unless both ran every round."""
    ra, rb = a.get("round_medians"), b.get("round_medians")
    if not ra or not rb or len(ra) != len(rb):
        return None
    return statistics.median(x / y for x, y in zip(ra, rb))


def worst_ratio(results, cfg, gen, target, key):
    """(max over the target's configurations of gen / peer by `key`, where), or None if not measured."""
    _, net, dtypes, batches, peer, _ = target
    worst = None
    for dtype in dtypes or cfg["dtypes"]:
        for batch in batches or cfg["batches"]:
            res = results.get((net, batch, dtype), {})
            if key == "paired":
                ratio = paired_ratio(res.get(gen, {}), res.get(peer, {}))
            else:
                a, b = res.get(gen, {}).get(key), res.get(peer, {}).get(key)
                ratio = a / b if a and b else None
            if ratio and (worst is None or ratio > worst[0]):
                worst = (ratio, f"{dtype} batch {batch}")
    return worst


def targets_section(results, cfg):
    """The issue's targets, each as the worst ratio over its configurations, by wall and by CPU time."""
    gens = [g for g in ("generated", "generated_sgd_step") if g in cfg["runtimes"]]
    mark = SMOKE_MARK if cfg.get("smoke") else ""
    lines = ["## The issue's targets", "",
             *(["**Smoke run: not a measurement** (see the note at the top); the ✓ and ✗ only show the layout.", ""]
               if mark else []),
             "generated / peer in this run, the worst configuration where a target covers several; "
             "✓ within the limit, ✗ not. paired: the median over rounds of the ratio within each round "
             "(the runtimes of a round run back to back, so a busy spell that lasts a round slows both "
             "sides of the ratio: the steadiest figure on a shared machine); median: of the round medians, wall clock; CPU: the same in "
             "process CPU time (which leaves out the time other processes held the core); best round: "
             "the fastest round median of each runtime (leaves out rounds slowed by a busy machine, "
             "e.g. a process sharing the physical core).", "",
             "| net | target | limit | " + " | ".join(f"{SHORT[g]}: paired | median | CPU | best round"
                                                   for g in gens) + " |",
             "|---|---|---:|" + "---:|---:|---:|---:|" * len(gens)]
    for target in TARGETS:
        what, net, *_, limit = target
        if net not in cfg["nets"] or target[4] not in cfg["runtimes"]:
            continue
        cells = []
        for g in gens:
            for key in ("paired", "median", "cpu_median", "best"):
                w = worst_ratio(results, cfg, g, target, key)
                if w is None:
                    cells.append("–")
                else:
                    where = f" ({w[1]})" if target[2] is None else ""
                    cells.append(f"{w[0]:.2f} {'✓' if w[0] <= limit else '✗'}{where}{mark}")
        lines.append(f"| {net} | {what} | ≤ {limit:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def gentime_section():
    """The last `gentime.py --out benchmarks/GENTIME.md` table, if there is one."""
    path = HERE / "GENTIME.md"
    if not path.exists():
        return []
    return ["## Generation time (`benchmarks/gentime.py`, its last run: GENTIME.md)", "",
            path.read_text().strip(), ""]


CURVATURE_BEGIN = "<!-- benchmarks/curvature.py writes this section from CURVATURE.md: begin -->"
CURVATURE_END = "<!-- benchmarks/curvature.py: end -->"


def curvature_section():
    """The last `curvature.py` report (CURVATURE.md), its headings one level down, between markers
    that let curvature.py replace it in RESULTS.md without rerunning this benchmark."""
    path = HERE / "CURVATURE.md"
    if not path.exists():
        return []
    text = "\n".join("#" + l if l.startswith("#") else l for l in path.read_text().strip().splitlines())
    return [CURVATURE_BEGIN, text.replace("# Curvature benchmarks", "# Curvature benchmarks "
                                          "(`benchmarks/curvature.py`, its last run: CURVATURE.md)", 1),
            CURVATURE_END, ""]


ARRAY_API_BEGIN = "<!-- benchmarks/array_api.py writes this section from ARRAY_API.md: begin -->"
ARRAY_API_END = "<!-- benchmarks/array_api.py: end -->"


def array_api_section():
    """The last `array_api.py` run's targets (ARRAY_API.md holds its full report), between markers
    that let array_api.py replace it in RESULTS.md without rerunning this benchmark."""
    path = HERE / "ARRAY_API.md"
    if not path.exists():
        return []
    lines = path.read_text().strip().splitlines()
    head = (lines[2] if len(lines) > 2 else "").split(". One step")[0].strip()
    try:
        start = lines.index("## Targets")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        targets = ["#" + l if l.startswith("#") else l for l in lines[start:end]]
    except ValueError:
        targets = []
    machine = [l for l in lines if l.startswith(("- CPU:", "- Python", "- Threads:"))]
    return [ARRAY_API_BEGIN, "## The array-API module on PyTorch and JAX (`benchmarks/array_api.py`)", "",
            f"The targets of its last run, {head}; the full table, the machine and the method: "
            "[ARRAY_API.md](ARRAY_API.md); where the time goes: [PROFILE.md](PROFILE.md). Its machine (it may "
            "not be this file's):", "", *machine, "", *targets, ARRAY_API_END, ""]


def render(results, cfg, info, argv, started, elapsed, load):
    """The Markdown report."""
    mark = SMOKE_MARK if cfg.get("smoke") else ""
    lines = ["# Training-step benchmarks" + (": a smoke run, not a measurement" if mark else ""), "",
             *([SMOKE_NOTE, ""] if mark else []),
             f"`python benchmarks/bench.py {' '.join(argv)}`, {started:%Y-%m-%d %H:%M} UTC, "
             f"{elapsed:.0f} s. One step = forward, backward, SGD update (lr = 1e-3) on one fixed batch.",
             "", *machine_lines(info, load), "", "## Method", "",
             "- generated: the module's `loss_and_grad`, then the caller's `params[k] -= lr * g`; "
             "gen. sgd_step: the module's fused `sgd_step(params, x, y, lr)` (in place, lr folded into the "
             "output delta). NumPy: a hand-written step; NumPy opt.: hand-optimised (preallocated, in place, "
             "fused); GEMM only: just the 3L − 1 matmuls of a step.",
             f"- Each runtime runs in its own process (`benchmarks/_worker.py`); for each "
             f"configuration the runtimes take turns for {cfg['rounds']} round(s), the order "
             f"rotating each round. A round times each step separately (gc off) after a warm-up: "
             f"at least {cfg['repeats']} steps and {cfg['min_time']} s.",
             "- median: the median over rounds of each round's median wall-clock step time; min–max: over "
             "all steps of all rounds; round medians: the spread between rounds (a wide spread means the "
             "machine was busy). CPU µs: the same median of the process's CPU time per step (measured over "
             "blocks of 8 steps): steadier than the wall clock when other processes compete for the cores.",
             "- × gen.: median / median of the generated module (> 1 is slower than generated). When the "
             "module is missing, the ratio is to the hand-written NumPy step (× NumPy).",
             "- GFLOP/s: 6 · batch · Σ n_in·n_out per step (the usual count; it includes the "
             "gradient for x, which no step computes). % of GEMM: GEMM-only time / this time (wall), "
             "where GEMM only is the 3L − 1 matmuls a step needs in NumPy (OpenBLAS), "
             "preallocated, nothing else: the floor for a NumPy step. Runtimes with another BLAS "
             "or fused kernels (PyTorch, JAX) can pass it (> 100%).",
             "- check: the first step's loss and update norm agree with the hand-written NumPy step "
             "(float64 1e-9, float32 1e-4 relative; the update norm, after - before, also 2 eps ||params||: each updated entry is rounded to the dtype) and the dtype is kept.", ""]

    notes = {}  # note -> configurations it applies to
    rts = [rt for rt in RUNTIMES if rt in cfg["runtimes"]]
    summaries = {key: [f"## Summary: median step time ({label}) relative to the generated module", "",
                       "| net | dtype | batch | baseline µs | " + " | ".join(SHORT[rt] for rt in rts) + " |",
                       "|---|---|---:|---:|" + "---:|" * len(rts)]
                 for key, label in (("median", "wall clock"), ("cpu_median", "CPU time"))}
    sections = []
    for net in cfg["nets"]:
        for dtype in cfg["dtypes"]:
            sec = [f"## {net}, {dtype}", "",
                   "| batch | runtime | median µs | min–max µs | round medians µs | CPU µs | × gen. "
                   "| × gen. (CPU) | GFLOP/s | % of GEMM | check |",
                   "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for batch in cfg["batches"]:
                res = results[(net, batch, dtype)]
                base_rt = "generated" if "median" in res.get("generated", {}) else "numpy"
                base = res.get(base_rt, {}).get("median")
                base_cpu = res.get(base_rt, {}).get("cpu_median")
                gemm = res.get("gemm", {}).get("median")
                flops = NETS[net].nominal_flops(batch)
                cells = {"median": [], "cpu_median": []}
                for rt in rts:
                    out = res.get(rt, {})
                    if "median" not in out:
                        reason = out.get("skip") or out.get("error") or "not run"
                        notes.setdefault(f"{LABELS[rt]} skipped: {reason}", []).append((net, dtype, batch))
                        sec.append(f"| {batch} | {LABELS[rt]} | skipped | | | | | | | | see Notes |")
                        cells["median"].append("–")
                        cells["cpu_median"].append("–")
                        continue
                    med, cpu = out["median"], out.get("cpu_median")
                    ratio = f"{med / base:.2f}{mark}" if base else "–"
                    cpu_ratio = f"{cpu / base_cpu:.2f}{mark}" if cpu and base_cpu else "–"
                    if base_rt != "generated" and base:
                        ratio += " (× NumPy)"
                        cpu_ratio += " (× NumPy)"
                    cells["median"].append(f"{med / base:.2f}{mark}" if base else "–")
                    cells["cpu_median"].append(f"{cpu / base_cpu:.2f}{mark}" if cpu and base_cpu else "–")
                    rm = out["round_medians"]
                    sec.append(
                        f"| {batch} | {LABELS[rt]} | {fmt(med)} | {fmt(out['min'])}–{fmt(out['max'])} "
                        f"| {fmt(min(rm))}–{fmt(max(rm))} | {fmt(cpu) if cpu else '–'} | {ratio} | {cpu_ratio} "
                        f"| {flops / med / 1e3:.2f} "
                        f"| {f'{100 * gemm / med:.0f}%{mark}' if gemm else '–'} | {out.get('check', '')} |")
                    if out.get("check", "ok") not in ("ok", "–"):
                        notes.setdefault(f"{LABELS[rt]}: {out['check']}", []).append((net, dtype, batch))
                for key, b in (("median", base), ("cpu_median", base_cpu)):
                    base_txt = f"{fmt(b)} ({'gen.' if base_rt == 'generated' else 'NumPy'})" if b else "–"
                    summaries[key].append(f"| {net} | {dtype} | {batch} | {base_txt} | "
                                          + " | ".join(cells[key]) + " |")
            sections += sec + [""]
    lines += targets_section(results, cfg)
    lines += summaries["median"] + [""] + summaries["cpu_median"] + [""] + sections
    if notes:
        lines += ["## Notes", ""]
        for note, where in notes.items():
            scope = ("all configurations" if len(where) == len(results)
                     else ", ".join(f"{n} {d} batch {b}" for n, d, b in where))
            lines.append(f"- {note} ({scope})")
        lines.append("")
    lines += gentime_section()
    lines += curvature_section()
    lines += array_api_section()
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds, NumPy runtimes only, one round: that everything runs and agrees "
                             "(for tests); its times are not a measurement")
    parser.add_argument("--out", help="write the Markdown here (default: benchmarks/RESULTS.md; "
                                      "--smoke: stdout only)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--min-time", type=float, help="seconds per runtime per round")
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS))
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--dtypes", nargs="+", choices=("float64", "float32"))
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES)
    parser.add_argument("--threads", type=int, help="set OMP/OPENBLAS/MKL threads (and XLA's if 1)")
    parser.add_argument("--generated-dir", default=str(ROOT / "generated"))
    args = parser.parse_args(argv)

    cfg = dict(SMOKE if args.smoke else FULL)
    for k in ("rounds", "min_time", "nets", "batches", "dtypes", "runtimes"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    out_path = args.out or (None if args.smoke else str(HERE / "RESULTS.md"))
    env = thread_env(args.threads)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info = machine_info(env)
    results = measure_all(cfg, env, args.generated_dir, log)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for (net, batch, dtype), res in results.items():
        summarise(res)
        cross_check(res, dtype)
        info["torch_threads"] = info.get("torch_threads") or res.get("torch", {}).get("threads")
    report = render(results, cfg, info, argv, started, time.perf_counter() - t0, (load0, load1))

    if out_path:
        tmp = Path(out_path).with_suffix(".tmp")
        tmp.write_text(report)
        tmp.replace(out_path)
        log(f"wrote {out_path}")
    print(report)


if __name__ == "__main__":
    main()
