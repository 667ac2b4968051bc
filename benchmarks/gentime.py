"""Time `nnderive generate` (wall clock, interpreter start-up included) against network depth and width.

    python benchmarks/gentime.py [--depths 2 4 8 16 32] [--widths 4 64 512] [--repeats 3] [--out FILE]

Takes about 2 minutes with the defaults: 15 specs, each generated 3 times, at 1-2 s a run (fewer
--depths, --widths or --repeats take less). Writes one temporary spec per (depth, width): `depth`
layers, relu hidden layers of `width` units, a 10-unit softmax output, loss cce. Prints a Markdown
table of median wall seconds (and generated lines). Skips cleanly, exit 0, when the `nnderive`
command is missing or does not run yet.
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 600  # seconds per generate


def spec_toml(name, depth, width):
    """A spec of `depth` layers: relu hidden layers of `width` units, softmax output, cce."""
    lines = [f'name = "{name}"', f"inputs = {width}", 'loss = "cce"']
    for l in range(1, depth + 1):
        units, act = (10, "softmax") if l == depth else (width, "relu")
        lines += ["", "[[layers]]", f"units = {units}", f'activation = "{act}"']
    return "\n".join(lines) + "\n"


def timed(cmd):
    """(wall seconds, CompletedProcess) of one subprocess run."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    return time.perf_counter() - t0, proc


def last_line(proc):
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="About 2 minutes with the defaults (15 specs x 3 runs of 1-2 s).")
    parser.add_argument("--depths", nargs="+", type=int, default=[2, 4, 8, 16, 32])
    parser.add_argument("--widths", nargs="+", type=int, default=[4, 64, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)

    exe = shutil.which("nnderive")
    if exe is None:
        print("skipped: the nnderive command is not installed (pip install -e .)")
        return 0
    try:
        startup, proc = timed([exe, "--help"])
    except subprocess.TimeoutExpired:
        print("skipped: `nnderive --help` did not finish")
        return 0
    if proc.returncode != 0:
        print(f"skipped: `nnderive --help` fails: {last_line(proc)}")
        return 0
    startups = [startup] + [timed([exe, "--help"])[0] for _ in range(args.repeats - 1)]

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for depth in args.depths:
            for width in args.widths:
                name = f"gentime_d{depth}_w{width}"
                spec = tmp / f"{name}.toml"
                spec.write_text(spec_toml(name, depth, width))
                out = tmp / f"out_{name}"
                times, cell = [], None
                for _ in range(args.repeats):
                    try:
                        wall, proc = timed([exe, "generate", str(spec), "-o", str(out)])
                    except subprocess.TimeoutExpired:
                        cell = f"timeout (> {TIMEOUT} s)"
                        break
                    if proc.returncode != 0:
                        cell = f"error: {last_line(proc)}"
                        break
                    times.append(wall)
                if cell is None:
                    module = out / f"{name}.py"
                    n_lines = len(module.read_text().splitlines()) if module.exists() else "?"
                    cell = f"{statistics.median(times):.2f} s ({n_lines} lines)"
                rows[(depth, width)] = cell
                print(f"depth {depth} width {width}: {cell}", file=sys.stderr, flush=True)

    when = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = [f"`python benchmarks/gentime.py`, {when:%Y-%m-%d %H:%M} UTC, load average {load:.1f} at the end. "
             f"`nnderive generate` wall time, median of {args.repeats}, interpreter start-up included "
             f"(`nnderive --help` alone: {statistics.median(startups):.2f} s). "
             "Spec: depth layers, relu hidden layers of the given width, 10-unit softmax output, cce.",
             "", "| depth | " + " | ".join(f"width {w}" for w in args.widths) + " |",
             "|---:|" + "---:|" * len(args.widths)]
    for depth in args.depths:
        table.append(f"| {depth} | " + " | ".join(rows[(depth, w)] for w in args.widths) + " |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
