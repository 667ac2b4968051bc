"""Time today's generated NumPy modules against those of an earlier commit, in one interleaved run.

    python benchmarks/regression.py [--commit 9cc3a4e] [--configs NET:BATCH:DTYPE ...] [--rounds 11]

Has the NumPy module become slower? Ratios to a committed RESULTS.md mix in whatever changed on the
machine since (CPU model, library builds, load); this runs the old module (`git show
COMMIT:generated/<net>.py`) and today's (generated/) side by side: `_worker.py`'s `generated_sgd_step`
and `generated` runtimes for each, with the hand-written NumPy step and PyTorch eager, each in its
own process, the order rotating round after round (bench.py's `run_worker`), single-threaded
(bench.py's --threads 1). Prints, per configuration, the median of the round medians and ratios
paired within rounds: new / old, and each runtime over the hand-written NumPy step and over
PyTorch eager.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import curvature  # noqa: E402

DEFAULT_CONFIGS = [("mlp_784_256_128_10", 128, "float32"), ("mlp_4_2_3", 1, "float32"), ("mlp_4_2_3", 1, "float64")]


def old_modules(commit, nets, out_dir):
    """Write generated/<net>.py as of commit into out_dir."""
    for net in nets:
        text = subprocess.run(["git", "-C", str(bench.ROOT), "show", f"{commit}:generated/{net}.py"],
                              capture_output=True, text=True, check=True).stdout
        (Path(out_dir) / f"{net}.py").write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="9cc3a4e", help="the modules to compare with (default: the ones "
                                                            "benchmarks/RESULTS.md's training-step run timed)")
    parser.add_argument("--configs", nargs="+", type=curvature.parse_config, default=DEFAULT_CONFIGS,
                        metavar="NET:BATCH:DTYPE")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--min-time", type=float, default=0.3)
    args = parser.parse_args(argv)
    env = bench.thread_env(1)
    cfg = dict(repeats=20, min_time=args.min_time)
    runs = [(rt, d) for rt in ("generated_sgd_step", "generated") for d in ("old", "new")]
    runs += [("numpy", "new"), ("torch", "new")]
    print(f"Generated NumPy modules of {args.commit} (old) and of the working tree (new); "
          f"{args.rounds} interleaved rounds, single-threaded.")
    with tempfile.TemporaryDirectory() as tmp:
        old_modules(args.commit, sorted({c[0] for c in args.configs}), tmp)
        dirs = {"old": tmp, "new": str(bench.ROOT / "generated")}
        for net, batch, dtype in args.configs:
            rounds = {r: [] for r in runs}
            for i in range(args.rounds):
                k = i % len(runs)
                for rt, d in runs[k:] + runs[:k]:
                    out = bench.run_worker(rt, net, batch, dtype, cfg, env, dirs[d])
                    if "times_ns" not in out:
                        sys.exit(f"{rt} ({d}) on {net} batch {batch} {dtype}: {out.get('skip') or out.get('error')}")
                    rounds[(rt, d)].append(statistics.median(out["times_ns"]) / 1e3)
                print(f"{net} batch {batch} {dtype}: round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)

            def paired(a, b):
                return statistics.median(x / y for x, y in zip(rounds[a], rounds[b]))

            print(f"\n{net}, batch {batch}, {dtype}\n")
            print("| runtime | module | median µs | × old (paired) | × NumPy hand-written (paired) "
                  "| × PyTorch eager (paired) |")
            print("|---|---|---:|---:|---:|---:|")
            for rt, d in runs:
                gen = rt.startswith("generated")
                vs_old = f"{paired((rt, d), (rt, 'old')):.2f}" if gen else "–"
                print(f"| {bench.LABELS[rt]} | {d if gen else '–'} | {bench.fmt(statistics.median(rounds[(rt, d)]))} "
                      f"| {vs_old} | {paired((rt, d), ('numpy', 'new')):.2f} | {paired((rt, d), ('torch', 'new')):.2f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
