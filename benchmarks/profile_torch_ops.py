"""Where a step on torch CPU tensors spends its time, by ATen operator (torch.profiler): the
array-API module's `sgd_step` and `loss_and_grad` + update against PyTorch eager autograd.

    python benchmarks/profile_torch_ops.py [--net mlp_784_256_128_10] [--batch 128] [--steps 200]
                                           [--module FILE_xp.py] [--top 12]

One thread. Each step is profiled for --steps steps after a warm-up; the table gives each
operator's self CPU time per step (the profiler's own overhead included, more of it where there
are more operators), and the summary line splits the step into its matmuls (aten::mm,
aten::addmm, aten::addmm_: the same eight GEMMs in every step here) and the rest. py-spy
(`profile_step.py --xp torch`) gives the same per line of the module.
"""
import argparse
import collections
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import ALL_NETS, make_batch, make_params  # noqa: E402

LR = 1e-3
MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_")


def steps(mod, net, batch):
    """{name: step()} on fresh copies of the benchmark's parameters and batch."""
    import torch

    import peers

    params = make_params(net, "float32")
    x, y = make_batch(net, batch, "float32")
    eager, _ = peers.make_torch_step(params, x, y, LR, net.head)
    nn_step, _ = peers.make_torch_nn_step(params, x, y, LR, net.head)
    tp = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    tq = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def xp_lg():
        loss, grads = mod.loss_and_grad(tq, tx, ty)
        for k, g in grads.items():
            tq[k].sub_(g, alpha=LR)     # the PyTorch peer's update, as benchmarks/_worker.py makes it
        return float(loss)

    return {"PyTorch eager (F.linear, autograd, p.sub_)": eager,
            "PyTorch nn.Linear + optim.SGD": nn_step,
            "xp `sgd_step`": lambda: float(mod.sgd_step(tp, tx, ty, LR)),
            "xp `loss_and_grad` + update": xp_lg}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mlp_784_256_128_10", choices=sorted(ALL_NETS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--module", help="the array-API module (default: generated into a temporary directory)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    net = ALL_NETS[args.net]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.module
        if not path:
            import array_api

            array_api.generate_modules([args.net], tmp, lambda msg: print(msg, file=sys.stderr))
            path = str(Path(tmp) / f"{args.net}_xp.py")
        spec = importlib.util.spec_from_file_location("_profiled_xp", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)

    print(f"{args.net}, batch {args.batch}, float32, torch {torch.__version__}, 1 thread; self CPU time per step "
          f"over {args.steps} profiled steps\n")
    print("| step | self CPU µs/step | matmuls µs | matmuls share | the rest µs | operators/step |")
    print("|---|---:|---:|---:|---:|---:|")
    tables = []
    for name, step in steps(mod, net, args.batch).items():
        for _ in range(20):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        self_us, count = collections.Counter(), collections.Counter()
        for e in prof.key_averages():
            self_us[e.key] += e.self_cpu_time_total / args.steps
            count[e.key] += e.count / args.steps
        total = sum(self_us.values())
        mm = sum(self_us[k] for k in MATMULS)
        print(f"| {name} | {total:,.0f} | {mm:,.0f} | {100 * mm / total:.0f}% | {total - mm:,.0f} "
              f"| {sum(count.values()):.0f} |")
        tables.append((name, [(k, v, count[k]) for k, v in self_us.most_common(args.top)]))
    for name, rows in tables:
        print(f"\n{name}: the most expensive operators\n")
        print("| operator | self CPU µs/step | calls/step |")
        print("|---|---:|---:|")
        for k, v, c in rows:
            print(f"| `{k}` | {v:.1f} | {c:.1f} |")


if __name__ == "__main__":
    main()
