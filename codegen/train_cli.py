"""The `train` and `surface` commands: generate the spec's module now, then train it or map its loss."""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from derive.data import check_width, load_split, split
from derive.errors import SpecError
from derive.files import check_distinct, check_output, write_file
from derive.params import load_params, save_params
from derive.plots import new_figure, plot_curves, plot_surface
from derive.sharpness import EXAMPLES as SHARPNESS_EXAMPLES, ITERATIONS as SHARPNESS_ITERATIONS, stability_threshold
from derive.surface import (MAX_STEPS, SURFACE_DEFAULTS, _one_blas_thread, line_minimum, loss_surface,
                            parse_element)
from derive.train import DEFAULTS, DTYPES, TrainingDiverged, check_settings, check_split, train

def fresh_modules(net):
    """(network module, optimizers module), generated from `net` now and imported from a temporary folder.

    So any spec trains, not only those whose modules are committed in generated/.
    """
    from derive.verify import load_module

    from .build import module_outputs, write_outputs
    from .optimizers import render_optimizers
    with tempfile.TemporaryDirectory(prefix="nnderive-train-") as tmp:
        module = load_module(write_outputs(module_outputs(net), Path(tmp))[0])
        # Written after the module is imported, so a spec named `optimizers` cannot collide with it.
        path = Path(tmp) / "optimizers.py"
        path.write_text(render_optimizers(), encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"_nnderive_optimizers_{id(path)}", path)
        optimizers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(optimizers)
    return module, optimizers




def add_parsers(sub) -> None:
    """Add the `train` and `surface` commands to an argparse subparsers object."""
    from derive.optimizers import OPTIMIZERS
    default = DEFAULTS["optimizer"]
    t = sub.add_parser("train", help="train a spec's network on data with mini-batches",
                       description="Generate the spec's module, then train it with shuffled mini-batches on "
                                   "a train/test split, printing one line per epoch: the losses and the test "
                                   "accuracy, or for regression the test error that fits the loss (RMSE, or MAE "
                                   "for losses growing linearly: mae, huber, log_cosh). Exit status 1, writing "
                                   "nothing, if the loss stops being finite (training diverged).")
    t.add_argument("spec", metavar="SPEC", help="a network spec, a TOML file (see examples/*.toml)")
    _data_arguments(t)
    t.add_argument("--epochs", default=str(DEFAULTS["epochs"]), metavar="N",
                   help="passes over the training set (%(default)s)")
    t.add_argument("--batch-size", default=str(DEFAULTS["batch_size"]), metavar="B",
                   help="examples per step (%(default)s)")
    t.add_argument("--optimizer", default=default, metavar="NAME", help=f"{', '.join(OPTIMIZERS)} ({default})")
    t.add_argument("--lr", metavar="LR", help=f"learning rate (default: the optimizer's own, "
                                              f"{default} {OPTIMIZERS[default].defaults['lr']:g})")
    t.add_argument("--dtype", default="float64", metavar="TYPE", help="float64 or float32 (%(default)s)")
    t.add_argument("--metrics", metavar="FILE.json", help="write the per-epoch losses and accuracy (or regression error) as JSON")
    t.add_argument("--plot", metavar="FILE.png", help="write the loss and accuracy curves (needs matplotlib)")
    t.add_argument("--sharpness", action="store_true",
                   help=f"after each epoch, also log the sharpness: the largest eigenvalue of the training "
                        f"loss's Hessian on the first {SHARPNESS_EXAMPLES} training examples (Lanczos, "
                        f"{SHARPNESS_ITERATIONS} Hessian-vector products, warm-started); "
                        f"--metrics and --plot get it too, with 2/lr for sgd")
    t.add_argument("--save", metavar="FILE.npz", help="write the trained parameters")
    t.add_argument("--load", metavar="FILE.npz", help="start from these parameters instead of a fresh init")
    t.set_defaults(run=cmd_train)

    s = sub.add_parser("surface", help="plot the loss over two chosen weights around the current point",
                       description="Plot the training loss as two parameter elements move around the current "
                                   "point (init_params(seed), or --load), all other parameters fixed.")
    s.add_argument("spec", metavar="SPEC", help="a network spec, a TOML file (see examples/*.toml)")
    _data_arguments(s)
    s.add_argument("--params", nargs=2, required=True, metavar=("P1", "P2"),
                   help="two parameter elements, e.g. 'W1[0,0]' 'W1[0,1]' (quote them in the shell)")
    s.add_argument("-o", "--output", metavar="FILE.png", help="the PNG to write (default: NAME_surface.png)")
    s.add_argument("--load", metavar="FILE.npz", help="take the point from trained parameters")
    s.add_argument("--span", default=str(SURFACE_DEFAULTS["span"]), metavar="S",
                   help="move each element by -S..S (%(default)s)")
    s.add_argument("--steps", default=str(SURFACE_DEFAULTS["steps"]), metavar="N",
                   help="grid points per axis (%(default)s)")
    s.set_defaults(run=cmd_surface)


def _data_arguments(p) -> None:
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="digits (scikit-learn's 8x8 digits), mnist:DIR (the MNIST IDX files in DIR, gzipped or "
                        "not: trains on train and tests on t10k, MNIST's own 60,000/10,000 split, when both "
                        "are there; see --resplit), csv:PATH or PATH.csv (comma-separated numbers, one example "
                        "per row: the features, then one target, a value or a class label, in the last column; "
                        "a first line with no number is a header), or PATH.npz (arrays x of shape "
                        "(n, features...) and y: targets (n, outputs) or integer class labels (n,)). Class "
                        "labels become one-hot rows for a loss other than sparse_cce when the output layer "
                        "has more than one unit")
    p.add_argument("--seed", default=str(DEFAULTS["seed"]), metavar="S",
                   help="seeds the split, the initial parameters and the shuffles (%(default)s)")
    p.add_argument("--test-fraction", metavar="F",
                   help=f"share of the data held out for testing, by a seeded shuffle ({DEFAULTS['test_fraction']}; "
                        f"not with a data set's own test set, MNIST's t10k, unless --resplit)")
    p.add_argument("--resplit", action="store_true",
                   help="pool a data set's own train and test sets (MNIST's train and t10k) and split them by "
                        "--test-fraction instead")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(args, name: str, kind):
    """Parse a numeric flag, naming it in the error (argparse would add a usage block)."""
    text = getattr(args, name)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        word = "whole number" if kind is int else "number"
        example = {**DEFAULTS, **SURFACE_DEFAULTS}.get(name, 1)
        raise SpecError(_flag(name), "", f"{text!r} is not a {word}", f"e.g. {_flag(name)} {example}") from None


def _output(args, name: str) -> Path | None:
    """An output path whose folder exists, checked before any work is done."""
    text = getattr(args, name)
    if text is None:
        return None
    path = Path(text)
    if path.is_dir():
        raise SpecError(_flag(name), "", f"{text} is a directory", "name a file")
    if not path.parent.is_dir():
        raise SpecError(_flag(name), "", f"the folder {path.parent} does not exist", "create it first")
    return check_output(path, _flag(name))   # a regular file (or none) in a folder we can write into


def _data(net, args):
    """The data source loaded and checked against the spec: (x, y, test).

    test is the source's own test set (MNIST's t10k, unless --resplit) or None; a --test-fraction
    cannot be honoured beside it and is refused (exit 2), as it would otherwise be ignored.
    """
    x, y, test = load_split(args.data, n_outputs=net.sizes[-1], loss=net.loss_entry, resplit=args.resplit)
    check_width(x, net.inputs, args.data)
    if test is not None and args.test_fraction is not None:
        raise SpecError("--test-fraction", "", f"{args.data} has its own test set (t10k: MNIST's official split)",
                        "drop --test-fraction to keep that split, "
                        "or add --resplit to pool train and t10k and split them")
    return x, y, test


def _test_fraction(args) -> float:
    return DEFAULTS["test_fraction"] if args.test_fraction is None else _number(args, "test_fraction", float)


def cmd_train(args) -> int:
    """`nnderive train`: every argument is checked before generating, training or writing.

    Exit status 0, 2 for bad input, 1 when training diverged: the input was valid but the run
    failed (as `verify` exits 1 on a mismatch), and nothing is written.
    """
    from derive.optimizers import OPTIMIZERS
    settings = {"epochs": _number(args, "epochs", int), "batch_size": _number(args, "batch_size", int),
                "optimizer": args.optimizer, "lr": _number(args, "lr", float), "seed": _number(args, "seed", int),
                "test_fraction": _test_fraction(args)}
    check_settings(**settings, optimizers=list(OPTIMIZERS), flag=_flag)
    if args.dtype not in DTYPES:
        raise SpecError("--dtype", "", f"unknown dtype {args.dtype!r}", f"use {' or '.join(DTYPES)}")
    dtype = DTYPES[args.dtype]
    metrics_path, plot_path, save_path = _output(args, "metrics"), _output(args, "plot"), _output(args, "save")
    check_distinct({"--metrics": metrics_path, "--plot": plot_path, "--save": save_path})
    if plot_path is not None:
        new_figure("--plot")  # fail now, not after training, when matplotlib is missing
    from derive.spec import load_spec
    net = load_spec(args.spec)
    x, y, test = _data(net, args)
    start = None if args.load is None else load_params(args.load, net.param_shapes(), dtype)

    if settings["lr"] is None:
        settings["lr"] = float(OPTIMIZERS[settings["optimizer"]].defaults["lr"])
    if test is None:
        n_test = int(round(len(x) * settings["test_fraction"]))
        sets = f"{len(x) - n_test} train / {n_test} test examples from {args.data}"
    else:
        sets = (f"{len(x)} train / {len(test[0])} test examples from {args.data} (its own split: train and t10k; "
                f"--resplit to pool and split them)")
    print(f"{net.name}: {net.describe()}; {sets}; "
          f"{settings['optimizer']} lr {settings['lr']:g}, batch size {settings['batch_size']}", flush=True)
    if args.sharpness:
        hyper = {**OPTIMIZERS[settings["optimizer"]].defaults, "lr": settings["lr"]}
        threshold = stability_threshold(settings["optimizer"], hyper)
        line = "" if threshold is None else f"; stability threshold {threshold[1]} = {threshold[0]:.4g}"
        n_train = len(x) if test is not None else len(x) - n_test
        print(f"sharpness: the largest eigenvalue of the training loss's Hessian on the first "
              f"{min(SHARPNESS_EXAMPLES, n_train)} training examples (Lanczos, "
              f"{SHARPNESS_ITERATIONS} Hessian-vector products){line}", flush=True)
    module, optimizers = fresh_modules(net)
    try:
        params, metrics = train(module, optimizers, x, y, **settings, test=test, loss=net.loss_entry, progress=True,
                                verbose=True, params=start, dtype=dtype, sharpness=args.sharpness)
    except TrainingDiverged as e:
        ran = len(e.metrics["epochs"])
        print(f"nnderive: training diverged {e.where} ({ran} of {settings['epochs']} epochs completed): the "
              f"loss is no longer finite; nothing written; try a smaller --lr than {e.lr:g}, e.g. --lr {e.lr / 10:g}",
              file=sys.stderr)
        return 1
    print(f"trained in {metrics['seconds']:.2f} s")
    if save_path is not None:
        save_params(params, save_path)
        print(f"wrote {save_path}")
    if metrics_path is not None:
        text = json.dumps(metrics, indent=2) + "\n"
        write_file(metrics_path, lambda f: f.write(text.encode("utf-8")))
        print(f"wrote {metrics_path}")
    if plot_path is not None:
        plot_curves(metrics, plot_path, f"{net.name} ({net.describe()}): {settings['optimizer']}, "
                                        f"lr {settings['lr']:g}, batch {settings['batch_size']}")
        print(f"wrote {plot_path}")
    return 0


def cmd_surface(args) -> int:
    """`nnderive surface`: the loss over two parameter elements around the current point, as a PNG."""
    span, steps = _number(args, "span", float), _number(args, "steps", int)
    seed, test_fraction = _number(args, "seed", int), _test_fraction(args)
    check_split(seed=seed, test_fraction=test_fraction, flag=_flag)
    if not 0 < span < float("inf"):
        raise SpecError("--span", "", f"must be a positive number, got {args.span!r}", "e.g. --span 1.0")
    if not 2 <= steps <= MAX_STEPS:
        raise SpecError("--steps", "", f"must be a whole number from 2 to {MAX_STEPS}, got {steps}", "e.g. --steps 41")
    from derive.spec import load_spec
    net = load_spec(args.spec)
    shapes = net.param_shapes()
    elements = [parse_element(text, shapes) for text in args.params]
    if elements[0] == elements[1]:
        raise SpecError("--params", "", f"{args.params[0]} and {args.params[1]} are the same element",
                        "name two different elements, e.g. 'W1[0,0]' 'W1[0,1]'")
    output = Path(args.output or f"{net.name}_surface.png")
    args.output = str(output)
    _output(args, "output")
    new_figure("surface")
    x, y, test = _data(net, args)
    params = None if args.load is None else load_params(args.load, shapes)

    module, _ = fresh_modules(net)
    if params is None:
        params = module.init_params(seed)
    # The loss training minimizes: on the training set (the source's own, or split off as train() does).
    x_train, y_train = (x, y) if test is not None else split(x, y, test_fraction, seed)[:2]
    labels = [f"{k}[{','.join(map(str, i))}]" for k, i in elements]
    with _one_blas_thread():
        u, v, losses = loss_surface(module, params, x_train, y_train, elements, span, steps)
        loss0, grads = module.loss_and_grad(params, x_train, y_train)
        gradient = (grads[elements[0][0]][elements[0][1]], grads[elements[1][0]][elements[1][1]])
        step = line_minimum(module, params, x_train, y_train, elements, gradient, span)
    point = (params[elements[0][0]][elements[0][1]], params[elements[1][0]][elements[1][1]], loss0)
    where = f"the parameters in {args.load}" if args.load else f"init_params(seed={seed})"
    plot_surface(u, v, losses, labels, point, gradient, output,
                 f"{net.name}: training loss over {labels[0]} and {labels[1]} around {where}, the rest fixed", step)
    print(f"loss {loss0:.6g} at {labels[0]} = {point[0]:.4g}, {labels[1]} = {point[1]:.4g}; "
          f"{np.nanmin(losses):.6g} to {np.nanmax(losses):.6g} over +-{span:g}")
    if step is not None:
        print(f"along -gradient (norm {np.hypot(*gradient):.4g}) the loss is lowest "
              f"{np.hypot(*step[:2]):.4g} away in the grid: {step[2]:.6g} (the arrow)")
    print(f"wrote {output}")
    return 0
