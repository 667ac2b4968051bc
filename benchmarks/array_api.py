"""Time the array-API module (`nnderive generate --array-api`) on torch CPU tensors and JAX arrays
against PyTorch eager autograd and JAX jit of value_and_grad.

    python benchmarks/array_api.py [--smoke] [--out benchmarks/ARRAY_API.md]

The design of bench.py, whose driver this reuses (as curvature.py does): every (runtime,
configuration) is timed by `_worker.py` in its own process, the runtimes of a configuration take
turns round after round (the order rotating), and the report gives the median of the round
medians, wall clock and CPU time, and ratios paired within rounds. One step = forward, backward,
SGD update (lr = 1e-3) on one fixed batch, returning the loss as a Python float:

- xp sgd_step: the module's `sgd_step(params, x, y, lr)` on torch tensors (in place);
- xp loss_and_grad + update: `loss_and_grad`, then the caller's update in place (on torch
  `params[k].sub_(g, alpha=lr)`, the PyTorch peer's own update; elsewhere `params[k] -= lr * g`);
- PyTorch eager: autograd on F.linear layers, `p.sub_(p.grad, alpha=lr)` (bench.py's peer);
- nn.Linear + optim.SGD: the textbook PyTorch step (nn.Sequential, zero_grad, torch.optim.SGD);
- xp sgd_update, jax.jit: `jax.jit(m.sgd_update, donate_argnums=0)` on JAX arrays;
- JAX jit: `jax.jit` of a JAX reimplementation's value_and_grad and the update (bench.py's peer,
  params donated too).

The modules are generated (`nnderive generate --array-api`) into a temporary directory first,
from examples/<net>.toml where there is one, else from the network's spec (nets.Net.spec_toml);
--xp-dir uses modules already there. In the first round each worker also runs the hand-written
NumPy step and compares the first step's loss and update norm with it (the check column).

Every library runs single-threaded by default (bench.py's `--threads 1`, as RESULTS.md was
measured; `--threads 0` keeps the libraries' defaults). Writes benchmarks/ARRAY_API.md and
refreshes its section of RESULTS.md. --smoke: a few seconds, 4-2-3 at batch 32, one round,
stdout only, without nn.Linear + optim.SGD; JAX (and anything else missing) is skipped, and the
report says so.
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (no NumPy: the driver loads no BLAS)
import curvature  # noqa: E402
from nets import ALL_NETS  # noqa: E402

HERE = Path(__file__).resolve().parent

LABELS = {
    "xp_torch_sgd_step": "xp `sgd_step` (torch)",
    "xp_torch_loss_and_grad": "xp `loss_and_grad` + update (torch)",
    "torch": "PyTorch eager (F.linear, autograd, p.sub_)",
    "torch_nn": "PyTorch nn.Linear + optim.SGD",
    "xp_jax_sgd_update": "jax.jit(xp `sgd_update`)",
    "jax": "JAX jit(value_and_grad + update)",
    "xp_cupy_sgd_step": "xp `sgd_step` (CuPy)",
    "xp_cupy_loss_and_grad": "xp `loss_and_grad` + update (CuPy)",
}
CPU_RUNTIMES = ["xp_torch_sgd_step", "xp_torch_loss_and_grad", "torch", "torch_nn", "xp_jax_sgd_update", "jax"]
NET = "mlp_784_256_128_10"
FULL = dict(configs=[(NET, 32, "float32"), (NET, 128, "float32"), (NET, 1024, "float32")],
            runtimes=CPU_RUNTIMES, rounds=21, repeats=20, min_time=0.3)
# The smoke run leaves out nn.Linear + optim.SGD (one more torch process; tests check that peer directly).
SMOKE = dict(configs=[("mlp_4_2_3", 32, "float32")], runtimes=[rt for rt in CPU_RUNTIMES if rt != "torch_nn"],
             rounds=1, repeats=3, min_time=0.0)

# (what, configuration, runtime, peer, limit): runtime / peer must be <= limit.
TARGETS = [
    ("xp sgd_step ≤ 0.85 × PyTorch eager", (NET, 128, "float32"), "xp_torch_sgd_step", "torch", 0.85),
    ("xp loss_and_grad + update ≤ 0.85 × PyTorch eager", (NET, 128, "float32"), "xp_torch_loss_and_grad",
     "torch", 0.85),
    ("xp sgd_step ≤ 0.85 × nn.Linear + optim.SGD", (NET, 128, "float32"), "xp_torch_sgd_step", "torch_nn", 0.85),
    ("xp loss_and_grad + update ≤ 0.85 × nn.Linear + optim.SGD", (NET, 128, "float32"),
     "xp_torch_loss_and_grad", "torch_nn", 0.85),
    *[(f"jax.jit(xp sgd_update) ≤ 1.00 × JAX jit, batch {b}", (NET, b, "float32"), "xp_jax_sgd_update", "jax", 1.0)
      for b in (32, 128, 1024)],
]


def generate_modules(nets, out_dir, log):
    """Write <net>.py and <net>_xp.py for every net into out_dir with `nnderive generate --array-api`."""
    out_dir = Path(out_dir)
    specs = []
    for name in nets:
        spec = bench.ROOT / "examples" / f"{name}.toml"
        if not spec.exists():
            spec = out_dir / "specs" / f"{name}.toml"
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(ALL_NETS[name].spec_toml())
        specs.append(str(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(bench.ROOT), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "codegen.cli", "generate", "--array-api", *specs,
                           "-o", str(out_dir), "--force"], capture_output=True, text=True, env=env,
                          cwd=bench.ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"nnderive generate --array-api failed:\n{proc.stdout}{proc.stderr}")
    log(f"generated {', '.join(f'{n}_xp.py' for n in nets)} in {out_dir} ({time.perf_counter() - t0:.0f} s)")


def check_cell(out, dtype):
    """The first step's loss and update norm against the hand-written NumPy step's (the worker's
    reference, first round), and the dtype kept: bench.cross_check's rules."""
    if not out.get("reference"):
        return "–"
    res = {"numpy": {"probe": out["reference"]}, "rt": dict(out)}
    bench.cross_check(res, dtype)
    return res["rt"]["check"]


def ratio(res, rt, peer, key):
    """rt / peer: paired (the median over rounds of the within-round ratio) or of `key`'s medians."""
    a, b = res.get(rt, {}), res.get(peer, {})
    if key == "paired":
        return bench.paired_ratio(a, b)
    return a[key] / b[key] if a.get(key) and b.get(key) else None


def targets_lines(results, targets):
    lines = ["## Targets", "",
             "✓ met, ✗ not. paired: the median over rounds of the ratio within each round (the runtimes "
             "of a round run back to back: the steadiest figure on a shared machine); median: of the round "
             "medians, wall clock; CPU: the same in process CPU time; best round: of the fastest round "
             "medians.", "",
             "| target | net, batch, dtype | limit | paired | median | CPU | best round |",
             "|---|---|---:|---:|---:|---:|---:|"]
    n = len(lines)
    for what, key, rt, peer, limit in targets:
        res = results.get(key)
        if res is None:
            continue
        cells = []
        for k in ("paired", "median", "cpu_median", "best"):
            r = ratio(res, rt, peer, k)
            if r is None:
                why = (res.get(peer, {}).get("skip") or res.get(peer, {}).get("error")
                       or res.get(rt, {}).get("skip") or res.get(rt, {}).get("error") or "not run")
                cells.append(f"– ({why})")
            else:
                cells.append(f"{r:.2f} {'✓' if r <= limit else '✗'}")
        lines.append(f"| {what} | {key[0]}, {key[1]}, {key[2]} | ≤ {limit:.2f} | " + " | ".join(cells) + " |")
    if len(lines) == n:
        lines[-2:] = ["(No target's configuration was measured in this run.)"]
    return lines + [""]


def results_lines(results, cfg):
    """The table: one row per configuration and runtime; the notes say why a runtime was skipped."""
    lines = ["## Results", "",
             "| net | batch | dtype | runtime | median µs | round medians µs | CPU µs | × PyTorch eager paired "
             "| × PyTorch eager CPU | × JAX jit paired | × JAX jit CPU | check |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = {}
    for (net, batch, dtype), res in results.items():
        for rt in cfg["runtimes"]:
            out = res.get(rt, {})
            if "median" not in out:
                reason = out.get("skip") or out.get("error") or "not run"
                notes.setdefault(f"{LABELS[rt]} skipped: {reason}", []).append(f"{net} batch {batch} {dtype}")
                lines.append(f"| {net} | {batch} | {dtype} | {LABELS[rt]} | skipped | | | | | | | see Notes |")
                continue
            rm, cpu = out["round_medians"], out.get("cpu_median")
            cells = []
            for peer in ("torch", "jax"):
                for k in ("paired", "cpu_median"):
                    r = ratio(res, rt, peer, k)
                    cells.append(f"{r:.2f}" if r else "–")
            lines.append(f"| {net} | {batch} | {dtype} | {LABELS[rt]} | {bench.fmt(out['median'])} "
                         f"| {bench.fmt(min(rm))}–{bench.fmt(max(rm))} | {bench.fmt(cpu) if cpu else '–'} | "
                         + " | ".join(cells) + f" | {check_cell(out, dtype)} |")
    lines.append("")
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {note} ({', '.join(where)})" for note, where in notes.items()]
        lines.append("")
    return lines


METHOD = [
    "- xp: the `--array-api` module (`<name>_xp.py`) as a caller uses it (inputs checked with "
    "`xp.asarray`, the namespace found by array_api_compat on every call). xp `sgd_step`: in place, lr "
    "folded into the output delta; xp `loss_and_grad` + update: then the caller's update in place (on torch "
    "`params[k].sub_(g, alpha=lr)`, as the PyTorch peer updates; elsewhere `params[k] -= lr * g`). "
    "jax.jit(xp `sgd_update`): the README's `jax.jit(m.sgd_update)`, with `donate_argnums=0` "
    "as the JAX peer, lr passed as an argument.",
    "- PyTorch eager: bench.py's peer (autograd through `F.linear` and `F.cross_entropy` on probability "
    "targets, then `p.sub_(p.grad, alpha=lr)` and `p.grad = None` under no_grad); nn.Linear + optim.SGD: "
    "`nn.Sequential` of `nn.Linear`/`nn.ReLU`, `opt.zero_grad(set_to_none=True)`, the same loss, "
    "`loss.backward()`, `torch.optim.SGD(lr).step()` (its defaults). JAX jit: bench.py's peer, one "
    "`jax.jit` of `jax.value_and_grad` of a JAX reimplementation of the loss and the SGD update, "
    "params donated. Every step returns the loss as a Python float (`loss.item()`, `float(loss)`), "
    "which on a GPU waits for the step.",
]


def render(results, cfg, info, argv, started, elapsed, load, *, title, command, targets, method_extra=()):
    lines = [f"# {title}", "",
             f"`{' '.join([command, *argv])}`, {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s. One step = "
             "forward, backward, SGD update (lr = 1e-3) on one fixed batch.", "",
             *bench.machine_lines(info, load), *method_extra, "", "## Method", "", *METHOD,
             f"- Each runtime runs in its own process (`benchmarks/_worker.py`); for each configuration "
             f"the runtimes take turns for {cfg['rounds']} round(s), the order rotating each round. A round "
             f"times each step separately (gc off) after a warm-up: at least {cfg['repeats']} steps and "
             f"{cfg['min_time']} s.",
             "- median: the median over rounds of each round's median wall-clock step time; round medians: "
             "their spread; CPU µs: the same median of the process's CPU time per step (over blocks of 8 "
             "steps; every thread of the process, so a GPU step's CPU time is the host's share).",
             "- × PyTorch eager, × JAX jit: this runtime's time over the peer's, paired (the median over "
             "rounds of the ratio within each round) and by CPU time; < 1 is faster than the peer.",
             "- check: in the first round the worker also runs the hand-written NumPy step "
             "(benchmarks/reference_numpy.py) on the same parameters and batch; ok when the first step's loss "
             "and update norm agree with it (float32 1e-4, float64 1e-9 relative; the update norm, after - before, also 2 eps ||params||: each updated entry is rounded to the dtype) and the dtype is kept.", ""]
    if targets:
        lines += targets_lines(results, targets)
    lines += results_lines(results, cfg)
    return "\n".join(lines)


def run(cfg, env, xp_dir, log, device_args=()):
    """Generate the modules unless xp_dir has them, run every worker, summarise; return (results, info, loads)."""
    info = bench.machine_info(env)
    nets = sorted({net for net, _, _ in bench.configurations(cfg)})
    with tempfile.TemporaryDirectory(prefix="nnderive-xp-") as tmp:
        directory = Path(xp_dir) if xp_dir else Path(tmp)
        missing = [n for n in nets if not (directory / f"{n}_xp.py").exists()]
        if missing:
            generate_modules(missing, directory, log)
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        results = bench.measure_all(cfg, env, directory, log,
                                    extra_args=lambda rt, r: [*device_args, *(["--check"] if r == 0 else [])])
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for res in results.values():
        bench.summarise(res)
        for out in res.values():
            info["torch_threads"] = info.get("torch_threads") or out.get("threads")
    return results, info, (load0, load1)


def log_skips(results, log):
    for (net, batch, dtype), res in results.items():
        for rt, out in res.items():
            if "median" not in out:
                log(f"{net} batch {batch} {dtype}: {LABELS[rt]} skipped: {out.get('skip') or out.get('error') or 'not run'}")


def add_common_arguments(parser, threads_default):
    parser.add_argument("--out", help="write the Markdown here")
    parser.add_argument("--configs", nargs="+", type=curvature.parse_config, metavar="NET:BATCH:DTYPE")
    parser.add_argument("--runtimes", nargs="+", choices=list(LABELS))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--min-time", type=float, help="seconds per runtime per round")
    parser.add_argument("--threads", type=int, default=threads_default,
                        help=f"OMP/OPENBLAS/MKL threads, and XLA's if 1 (default {threads_default}; 0: library defaults)")
    parser.add_argument("--json", help="also write every worker's raw result (per-step times) here")
    parser.add_argument("--xp-dir", help="a directory with <net>_xp.py already generated (default: generate "
                                         "them into a temporary directory)")


def configure(args, base):
    cfg = dict(base)
    for k in ("configs", "runtimes", "rounds", "min_time"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    return cfg


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def save_json(path, results, info):
    """The raw results, keyed "net:batch:dtype", and the machine description, as JSON."""
    import json

    Path(path).write_text(json.dumps({"machine": info, "results": {":".join(map(str, k)): v
                                                                   for k, v in results.items()}}))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, 4-2-3 at batch 32 (for tests)")
    add_common_arguments(parser, threads_default=1)
    args = parser.parse_args(argv)
    cfg = configure(args, SMOKE if args.smoke else FULL)
    env = bench.thread_env(args.threads or None)

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    results, info, load = run(cfg, env, args.xp_dir, log)
    report = render(results, cfg, info, argv, started, time.perf_counter() - t0, load,
                    title="Array-API module benchmarks", command="python benchmarks/array_api.py",
                    targets=TARGETS)
    log_skips(results, log)
    if args.json:
        save_json(args.json, results, info)
    out_path = args.out or (None if args.smoke else str(HERE / "ARRAY_API.md"))
    if out_path:
        Path(out_path).write_text(report + "\n")
        log(f"wrote {out_path}")
        if args.out is None and curvature.update_results_md(HERE / "RESULTS.md", bench.array_api_section(),
                                                            bench.ARRAY_API_BEGIN, bench.ARRAY_API_END):
            log(f"updated its section of {HERE / 'RESULTS.md'}")
    print(report)


if __name__ == "__main__":
    main()
