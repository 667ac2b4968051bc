"""Mini-batch training of a generated module, the cost surface, and the `train` and `surface` commands."""
from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import DataError, check_width, load, read_npz, split
from .errors import SpecError
from .files import check_distinct, check_output, write_atomic

DEFAULTS = {"epochs": 20, "batch_size": 32, "optimizer": "adam", "seed": 0, "test_fraction": 0.2}
SURFACE_DEFAULTS = {"span": 1.0, "steps": 41}
MAX_STEPS = 401          # a 401 x 401 surface is 160k loss evaluations: plenty
BAR_WIDTH = 30
DTYPES = {"float64": np.float64, "float32": np.float32}
PLOT_FIX = "pip install 'nnderive[plot]' (the plot extra: matplotlib)"


# ---------------------------------------------------------------- training


def train(module, optimizers, x, y, *, epochs: int = 20, batch_size: int = 32, optimizer: str = "adam",
          lr: float | None = None, seed: int = 0, test_fraction: float = 0.2, progress=False,
          params: dict | None = None, dtype=np.float64, accuracy: str | None = "auto", on_epoch=None):
    """Train a generated module's network with shuffled mini-batches; return (params, metrics).

    NumPy only: `module` is a generated network module, `optimizers` a generated
    optimizers module (one `<name>_step(params, grads, state, **hyper)` per optimizer).

    Args:
        x, y: all the data, shaped for the module (see derive.data.load); a seeded
            shuffle splits off `test_fraction` of it as the test set.
        epochs, batch_size: passes over the training set and examples per step
            (the last batch of an epoch may be smaller). The order is reshuffled every epoch.
        optimizer, lr: the step function and its learning rate (None: the optimizer's default).
        seed: seeds the split, the initial parameters and the shuffles: same seed, same numbers.
        progress: True for a progress bar on stderr when it is a terminal, or a stream to draw it on.
        params: start from these parameters instead of module.init_params(seed).
        dtype: np.float64 or np.float32, for the parameters and x.
        accuracy: "argmax" (classes), "threshold" (one output at 0.5), None (regression:
            no accuracy), or "auto" to tell from y (see accuracy_kind).
        on_epoch: called as on_epoch(row, seconds) after each epoch.

    Returns:
        (params, {"epochs": [{"epoch", "train_loss", "test_loss", "test_accuracy"}, ...],
        "seconds": training time}). Losses are the batch mean over the whole training and
        test set after each epoch; test values are None without a test set.

    Raises:
        SpecError: a setting is out of range, params do not fit, or the training diverged.

    >>> params, metrics = train(module, optimizers, x, y, epochs=5, optimizer="adam")  # doctest: +SKIP
    >>> metrics["epochs"][-1]["test_accuracy"]                                          # doctest: +SKIP
    0.94
    """
    names = optimizer_names(optimizers)
    check_settings(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed,
                   test_fraction=test_fraction, optimizers=names)
    step = getattr(optimizers, f"{optimizer}_step")
    lr = default_lr(step) if lr is None else float(lr)
    x_train, y_train, x_test, y_test = split(np.asarray(x), np.asarray(y), test_fraction, seed)
    if len(x_train) == 0:
        raise DataError("", "x", f"{len(x)} examples leave none to train on",
                        "use more data or a smaller test fraction")
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    if y_train.dtype.kind == "f":
        y_train, y_test = y_train.astype(dtype), y_test.astype(dtype)
    params = module.init_params(seed, dtype) if params is None else _fit_params(params, module.PARAM_SHAPES, dtype)
    kind = accuracy_kind(None, np.asarray(y)) if accuracy == "auto" else accuracy

    rng = np.random.default_rng([seed, 1])  # its own stream: not the split's nor init_params'
    n = len(x_train)
    batches = -(-n // batch_size)
    bar = _Bar(progress, epochs, batches)
    state, rows = {}, []
    start = time.perf_counter()
    # Overflow in a diverging run is reported once, below, not as a RuntimeWarning per batch.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for epoch in range(1, epochs + 1):
            began = time.perf_counter()
            order = rng.permutation(n)
            for b, lo in enumerate(range(0, n, batch_size), start=1):
                batch = order[lo:lo + batch_size]
                _, grads = module.loss_and_grad(params, x_train[batch], y_train[batch])
                step(params, grads, state, lr=lr)
                bar.update(epoch, b)
            bar.clear()
            row = {"epoch": epoch, "train_loss": _finite(module.loss(params, x_train, y_train))}
            row.update(evaluate(module, params, x_test, y_test, kind, prefix="test_"))
            if row["train_loss"] is None:
                raise SpecError("train", f"epoch {epoch}", "the training loss is no longer finite: training diverged",
                                f"use a smaller learning rate than {lr:g}")
            rows.append(row)
            if on_epoch is not None:
                on_epoch(row, time.perf_counter() - began)
    return params, {"epochs": rows, "seconds": round(time.perf_counter() - start, 3)}


def evaluate(module, params, x, y, kind: str | None, prefix: str = "") -> dict:
    """{"loss", "accuracy"} of params on (x, y); None for both without examples, accuracy None if kind is."""
    if len(x) == 0:
        return {f"{prefix}loss": None, f"{prefix}accuracy": None}
    y_hat = module.predict(params, x)
    return {f"{prefix}loss": _finite(module.loss(params, x, y)), f"{prefix}accuracy": accuracy(y_hat, y, kind)}


def accuracy_kind(loss: str | None, y: np.ndarray) -> str | None:
    """How accuracy is counted for these targets: "argmax", "threshold" or None (regression).

    Integer labels and one-hot rows are classes (argmax); one output holding 0s and 1s,
    or any bce target, is a yes/no at 0.5 (threshold); anything else is regression.

    >>> accuracy_kind("sparse_cce", np.array([0, 2, 1])), accuracy_kind("mse", np.array([[0.3], [1.7]]))
    ('argmax', None)
    """
    y = np.asarray(y)
    if y.ndim == 1 or loss in ("cce", "sparse_cce"):
        return "argmax"
    binary = bool(np.isin(y, (0, 1)).all())
    if y.shape[1] == 1:
        return "threshold" if binary or loss == "bce" else None
    return "argmax" if binary and bool((y.sum(axis=1) == 1).all()) else None


def accuracy(y_hat: np.ndarray, y: np.ndarray, kind: str | None) -> float | None:
    """The fraction of examples predicted right (see accuracy_kind)."""
    if kind is None:
        return None
    if kind == "argmax":
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return float(np.mean(y_hat.argmax(axis=1) == labels))
    if kind == "threshold":
        return float(np.mean((y_hat > 0.5) == (y > 0.5)))
    raise ValueError(f"unknown accuracy kind {kind!r}: use 'argmax', 'threshold' or None")


def optimizer_names(optimizers) -> list[str]:
    """The optimizers a generated optimizers module offers: one per `<name>_step` function."""
    return [name[:-len("_step")] for name, f in vars(optimizers).items() if name.endswith("_step") and callable(f)]


def default_lr(step) -> float:
    """A step function's default learning rate (adam_step(..., lr=0.001) -> 0.001)."""
    return float(inspect.signature(step).parameters["lr"].default)


def check_settings(*, epochs, batch_size, optimizer, lr, seed, test_fraction, optimizers, flag=lambda name: name):
    """Raise SpecError for the first setting out of range; `flag` spells a setting's name (e.g. as --batch-size)."""
    def fail(name, what, fix):
        raise SpecError(flag(name), "", what, fix)

    for name, value, example in (("epochs", epochs, 20), ("batch_size", batch_size, 32)):
        if not _is_int(value) or value < 1:
            fail(name, f"must be a whole number of at least 1, got {value!r}", f"e.g. {flag(name)} {example}")
    if optimizer not in optimizers:
        match = difflib.get_close_matches(str(optimizer), optimizers, n=1)
        hint = f"did you mean '{match[0]}'? " if match else ""
        fail("optimizer", f"unknown optimizer {optimizer!r}", f"{hint}use one of {', '.join(optimizers)}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf")):
        fail("lr", f"the learning rate must be a positive number, got {lr!r}", f"e.g. {flag('lr')} 0.001")
    check_split(seed=seed, test_fraction=test_fraction, flag=flag)


def check_split(*, seed, test_fraction, flag=lambda name: name):
    """Raise SpecError unless seed is a whole number >= 0 and test_fraction lies in [0, 1)."""
    def fail(name, what, fix):
        raise SpecError(flag(name), "", what, fix)

    if not _is_int(seed) or seed < 0:
        fail("seed", f"must be a whole number of at least 0, got {seed!r}", f"e.g. {flag('seed')} 0")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        fail("test_fraction", f"must be at least 0 and below 1, got {test_fraction!r}",
             f"e.g. {flag('test_fraction')} 0.2 for an 80/20 split")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _fit_params(params: dict, shapes: dict, dtype, source: str = "params") -> dict:
    """Copies of params in dtype, checked against the module's PARAM_SHAPES."""
    expected = {k: tuple(v) for k, v in shapes.items()}
    found = {k: tuple(np.shape(v)) for k, v in params.items()}
    if found != expected:
        raise DataError(source, "", f"parameters {_shapes(found)} do not fit the network's {_shapes(expected)}",
                        "load parameters saved by training this spec")
    return {k: np.array(params[k], dtype=dtype) for k in expected}


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()) or "(none)"


class _Bar:
    """A one-line progress bar for the batches of an epoch, redrawn in place; silent without a stream."""

    def __init__(self, progress, epochs: int, batches: int):
        if progress is True:
            progress = sys.stderr if sys.stderr.isatty() else None
        self.stream, self.epochs, self.batches = progress or None, epochs, batches
        self.drawn, self.width = -1, 0

    def update(self, epoch: int, done: int) -> None:
        if self.stream is None:
            return
        filled = BAR_WIDTH * done // self.batches
        if filled == self.drawn:
            return
        self.drawn = filled
        text = f"epoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.batches}"
        self.width = len(text)
        self.stream.write("\r" + text)
        self.stream.flush()

    def clear(self) -> None:
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        self.drawn = -1


# ---------------------------------------------------------------- modules and parameter files


def fresh_modules(net):
    """(network module, optimizers module), generated from `net` now and imported from a temporary folder.

    So any spec trains, not only those whose modules are committed in generated/.
    codegen is imported here, not at the top: codegen depends on derive, not the reverse.
    """
    from codegen.build import module_outputs, write_outputs
    from codegen.optimizers import render_optimizers

    from .verify import load_module
    with tempfile.TemporaryDirectory(prefix="nnderive-train-") as tmp:
        module = load_module(write_outputs(module_outputs(net), Path(tmp))[0])
        # Written after the module is imported, so a spec named `optimizers` cannot collide with it.
        path = Path(tmp) / "optimizers.py"
        path.write_text(render_optimizers(), encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"_nnderive_optimizers_{id(path)}", path)
        optimizers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(optimizers)
    return module, optimizers


def save_params(params: dict, path) -> None:
    """Write params to an .npz file (one array per name), atomically."""
    _write_atomic(Path(path), lambda f: np.savez(f, **params))


def load_params(path, shapes: dict, dtype=np.float64) -> dict:
    """Read params saved by save_params (or np.savez) and check them against `shapes`."""
    path = Path(path)
    # Names, dtypes and shapes are checked from the .npy headers before any array is decompressed.
    params = read_npz(path, shapes=shapes, fix="name a .npz file written by nnderive train --save of this spec")
    for k, v in params.items():
        if not np.all(np.isfinite(v)):
            raise DataError(str(path), k, "holds NaN or infinity", "load parameters from a run that did not diverge")
    return _fit_params(params, shapes, dtype, str(path))


def _write_atomic(path: Path, write) -> None:
    """Call write(binary file) on a temporary file beside path, then rename: no half-written files."""
    write_atomic(path, write)   # refuses a device or FIFO as the target; honours the umask


# ---------------------------------------------------------------- the cost surface

_ELEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*,?\s*\]\s*$")


def parse_element(text: str, shapes: dict, flag: str = "--params") -> tuple[str, tuple[int, ...]]:
    """'W1[0,2]' -> ("W1", (0, 2)), checked against the parameter shapes.

    >>> parse_element("W1[1, 0]", {"W1": (2, 4), "b1": (2,)})
    ('W1', (1, 0))
    """
    valid = f"the parameters are {_shapes(shapes)}"
    match = _ELEMENT.match(text)
    if not match:
        raise SpecError(flag, "", f"{text!r} is not a parameter element like W1[0,0] or b1[0]", valid)
    name, index = match[1], tuple(int(i) for i in match[2].split(","))
    if name not in shapes:
        raise SpecError(flag, "", f"{text!r}: the network has no parameter {name!r}", valid)
    shape = tuple(shapes[name])
    if len(index) != len(shape) or any(i >= n for i, n in zip(index, shape)):
        raise SpecError(flag, "", f"{text!r} is outside {name}'s shape {shape}",
                        f"give {len(shape)} index(es), each below {shape}; {valid}")
    return name, index


def loss_surface(module, params: dict, x, y, elements, span: float, steps: int):
    """The loss over a steps x steps grid moving two parameter elements by -span..span, the rest fixed.

    Returns (u, v, losses): u and v the values of the first and second element,
    losses[i, j] the loss at (u[j], v[i]).
    """
    (k1, i1), (k2, i2) = elements
    p = {k: np.array(v, copy=True) for k, v in params.items()}
    u = p[k1][i1] + np.linspace(-span, span, steps)
    v = p[k2][i2] + np.linspace(-span, span, steps)
    losses = np.empty((steps, steps))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for i, vi in enumerate(v):
            p[k2][i2] = vi
            for j, uj in enumerate(u):
                p[k1][i1] = uj
                losses[i, j] = module.loss(p, x, y)
    return u, v, losses


def _one_blas_thread():
    """Limit BLAS to one thread when threadpoolctl (a scikit-learn dependency) is at hand.

    The surface is thousands of small matrix products: BLAS threads cost more than
    they save there, and many times more when the cores are busy (measured 3-4x).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)


# ---------------------------------------------------------------- plots (matplotlib, Agg, no pyplot state)


def _figure(flag: str, **kwargs):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SpecError(flag, "", "matplotlib is not installed", PLOT_FIX) from None
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def plot_curves(metrics: dict, path, title: str = "") -> None:
    """Write a PNG of the train and test loss per epoch, beside the test accuracy (when there is one)."""
    rows = metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    has_accuracy = any(r["test_accuracy"] is not None for r in rows)
    figure = _figure("--plot", figsize=(11, 4.2) if has_accuracy else (6, 4.2), layout="constrained")
    axes = figure.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
    ax = axes[0]
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", ms=3, label="train")
    if any(r["test_loss"] is not None for r in rows):
        ax.plot(epochs, [r["test_loss"] for r in rows], "s-", ms=3, label="test")
    ax.set(xlabel="epoch", ylabel="loss (batch mean)", yscale="log", title="loss")
    from matplotlib.ticker import FuncFormatter  # importable: _figure succeeded
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.2, not 2 x 10^-1
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if has_accuracy:
        ax = axes[1]
        acc = [r["test_accuracy"] for r in rows]
        ax.plot(epochs, acc, "o-", ms=3, color="C2")
        ax.set(xlabel="epoch", ylabel="test accuracy", title=f"test accuracy (last {acc[-1]:.3f})")
        ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    _write_atomic(Path(path), lambda f: figure.savefig(f, format="png", dpi=110))


def plot_surface(u, v, losses, labels, point, gradient, path, title: str = "") -> None:
    """Write a PNG of the cost surface: a 3-D view beside a contour map with the current point.

    point: (u0, v0, loss0), the current values and loss; gradient: (dL/du, dL/dv) there,
    drawn as the step gradient descent would take (-gradient).
    """
    figure = _figure("surface", figsize=(12, 5), layout="constrained")
    U, V = np.meshgrid(u, v)
    shown = np.where(np.isfinite(losses), losses, np.nan)
    from matplotlib.ticker import MaxNLocator  # importable: _figure succeeded
    ax3 = figure.add_subplot(1, 2, 1, projection="3d", computed_zorder=False)  # keep the point above the surface
    ax3.plot_surface(U, V, shown, cmap="viridis", rstride=1, cstride=1, linewidth=0, antialiased=True, alpha=0.9)
    ax3.scatter([point[0]], [point[1]], [point[2]], color="red", s=40, depthshade=False, zorder=5,
                label="current point")
    ax3.set(xlabel=labels[0], ylabel=labels[1], title="cost surface")
    ax3.set_zlabel("loss", labelpad=12)
    for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax3.legend(loc="upper left")
    ax = figure.add_subplot(1, 2, 2)
    filled = ax.contourf(U, V, shown, levels=30, cmap="viridis")
    ax.contour(U, V, shown, levels=15, colors="white", linewidths=0.5, alpha=0.6)
    figure.colorbar(filled, ax=ax, label="loss")
    ax.plot(point[0], point[1], "o", color="red", label=f"current point (loss {point[2]:.4g})")
    g = np.asarray(gradient, dtype=float)
    if np.all(np.isfinite(g)) and np.linalg.norm(g) > 0:
        d = -g / np.linalg.norm(g) * (u[-1] - u[0]) / 5  # a fixed length: the direction is what counts
        ax.annotate("", xy=(point[0] + d[0], point[1] + d[1]), xytext=(point[0], point[1]),
                    arrowprops={"arrowstyle": "-|>", "color": "red", "lw": 2, "mutation_scale": 18})
        ax.plot([], [], color="red", label="-gradient (steepest descent)")
    ax.set(xlabel=labels[0], ylabel=labels[1], title="contours", aspect="equal")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        figure.suptitle(title)
    _write_atomic(Path(path), lambda f: figure.savefig(f, format="png", dpi=100))


# ---------------------------------------------------------------- the commands


def add_parsers(sub) -> None:
    """Add the `train` and `surface` commands to an argparse subparsers object."""
    from .optimizers import OPTIMIZERS
    default = DEFAULTS["optimizer"]
    t = sub.add_parser("train", help="train a spec's network on data with mini-batches",
                       description="Generate the spec's module, then train it with shuffled mini-batches on "
                                   "a train/test split, printing one line per epoch.")
    t.add_argument("spec", metavar="SPEC")
    _data_arguments(t)
    t.add_argument("--epochs", default=str(DEFAULTS["epochs"]), metavar="N", help="passes over the training set (20)")
    t.add_argument("--batch-size", default=str(DEFAULTS["batch_size"]), metavar="B", help="examples per step (32)")
    t.add_argument("--optimizer", default=default, metavar="NAME", help=f"{', '.join(OPTIMIZERS)} ({default})")
    t.add_argument("--lr", metavar="LR", help=f"learning rate (default: the optimizer's own, "
                                              f"{default} {OPTIMIZERS[default].defaults['lr']:g})")
    t.add_argument("--dtype", default="float64", metavar="TYPE", help="float64 or float32 (float64)")
    t.add_argument("--metrics", metavar="FILE.json", help="write the per-epoch losses and accuracy as JSON")
    t.add_argument("--plot", metavar="FILE.png", help="write the loss and accuracy curves (needs matplotlib)")
    t.add_argument("--save", metavar="FILE.npz", help="write the trained parameters")
    t.add_argument("--load", metavar="FILE.npz", help="start from these parameters instead of a fresh init")
    t.set_defaults(run=cmd_train)

    s = sub.add_parser("surface", help="plot the loss over two chosen weights around the current point",
                       description="Plot the training loss as two parameter elements move around the current "
                                   "point (init_params(seed), or --load), all other parameters fixed.")
    s.add_argument("spec", metavar="SPEC")
    _data_arguments(s)
    s.add_argument("--params", nargs=2, required=True, metavar=("P1", "P2"),
                   help="two parameter elements, e.g. 'W1[0,0]' 'W1[0,1]' (quote them in the shell)")
    s.add_argument("-o", "--output", metavar="FILE.png", help="the PNG to write (default: NAME_surface.png)")
    s.add_argument("--load", metavar="FILE.npz", help="take the point from trained parameters")
    s.add_argument("--span", default=str(SURFACE_DEFAULTS["span"]), metavar="S",
                   help="move each element by -S..S (1.0)")
    s.add_argument("--steps", default=str(SURFACE_DEFAULTS["steps"]), metavar="N",
                   help="grid points per axis (41)")
    s.set_defaults(run=cmd_surface)


def _data_arguments(p) -> None:
    p.add_argument("--data", required=True, metavar="SOURCE", help="digits, mnist:DIR, csv:PATH, PATH.csv or PATH.npz")
    p.add_argument("--seed", default=str(DEFAULTS["seed"]), metavar="S",
                   help="seeds the split, the initial parameters and the shuffles (0)")
    p.add_argument("--test-fraction", default=str(DEFAULTS["test_fraction"]), metavar="F",
                   help="share of the data held out for testing (0.2)")


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


def _data(net, source: str):
    """The data source loaded and checked against the spec: (x, y)."""
    x, y = load(source, n_outputs=net.sizes[-1], loss=net.loss)
    check_width(x, net.inputs, source)
    return x, y


def cmd_train(args) -> int:
    """`nnderive train`: every argument is checked before generating, training or writing."""
    from .optimizers import OPTIMIZERS
    settings = {"epochs": _number(args, "epochs", int), "batch_size": _number(args, "batch_size", int),
                "optimizer": args.optimizer, "lr": _number(args, "lr", float), "seed": _number(args, "seed", int),
                "test_fraction": _number(args, "test_fraction", float)}
    check_settings(**settings, optimizers=list(OPTIMIZERS), flag=_flag)
    if args.dtype not in DTYPES:
        raise SpecError("--dtype", "", f"unknown dtype {args.dtype!r}", f"use {' or '.join(DTYPES)}")
    dtype = DTYPES[args.dtype]
    metrics_path, plot_path, save_path = _output(args, "metrics"), _output(args, "plot"), _output(args, "save")
    check_distinct({"--metrics": metrics_path, "--plot": plot_path, "--save": save_path})
    if plot_path is not None:
        _figure("--plot")  # fail now, not after training, when matplotlib is missing
    from .spec import load_spec
    net = load_spec(args.spec)
    x, y = _data(net, args.data)
    start = None if args.load is None else load_params(args.load, net.param_shapes(), dtype)

    if settings["lr"] is None:
        settings["lr"] = float(OPTIMIZERS[settings["optimizer"]].defaults["lr"])
    n_test = int(round(len(x) * settings["test_fraction"]))
    print(f"{net.name}: {net.describe()}; {len(x) - n_test} train / {n_test} test examples from {args.data}; "
          f"{settings['optimizer']} lr {settings['lr']:g}, batch size {settings['batch_size']}", flush=True)
    module, optimizers = fresh_modules(net)
    params, metrics = train(module, optimizers, x, y, **settings, progress=True, params=start, dtype=dtype,
                            accuracy=accuracy_kind(net.loss, y), on_epoch=_print_epoch(settings["epochs"]))
    print(f"trained in {metrics['seconds']:.2f} s")
    if save_path is not None:
        save_params(params, save_path)
        print(f"wrote {save_path}")
    if metrics_path is not None:
        text = json.dumps(metrics, indent=2) + "\n"
        _write_atomic(metrics_path, lambda f: f.write(text.encode("utf-8")))
        print(f"wrote {metrics_path}")
    if plot_path is not None:
        plot_curves(metrics, plot_path, f"{net.name} ({net.describe()}): {settings['optimizer']}, "
                                        f"lr {settings['lr']:g}, batch {settings['batch_size']}")
        print(f"wrote {plot_path}")
    return 0


def _print_epoch(epochs: int):
    width = len(str(epochs))

    def show(row, seconds):
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)
        print(f"epoch {row['epoch']:>{width}}/{epochs}  train loss {fmt(row['train_loss'], '.4f')}  "
              f"test loss {fmt(row['test_loss'], '.4f')}  test accuracy {fmt(row['test_accuracy'], '.4f')}  "
              f"{seconds:.2f} s", flush=True)
    return show


def cmd_surface(args) -> int:
    """`nnderive surface`: the loss over two parameter elements around the current point, as a PNG."""
    span, steps = _number(args, "span", float), _number(args, "steps", int)
    seed, test_fraction = _number(args, "seed", int), _number(args, "test_fraction", float)
    check_split(seed=seed, test_fraction=test_fraction, flag=_flag)
    if not 0 < span < float("inf"):
        raise SpecError("--span", "", f"must be a positive number, got {args.span!r}", "e.g. --span 1.0")
    if not 2 <= steps <= MAX_STEPS:
        raise SpecError("--steps", "", f"must be a whole number from 2 to {MAX_STEPS}, got {steps}", "e.g. --steps 41")
    from .spec import load_spec
    net = load_spec(args.spec)
    shapes = net.param_shapes()
    elements = [parse_element(text, shapes) for text in args.params]
    if elements[0] == elements[1]:
        raise SpecError("--params", "", f"{args.params[0]} and {args.params[1]} are the same element",
                        "name two different elements, e.g. 'W1[0,0]' 'W1[0,1]'")
    output = Path(args.output or f"{net.name}_surface.png")
    args.output = str(output)
    _output(args, "output")
    _figure("surface")
    x, y = _data(net, args.data)
    params = None if args.load is None else load_params(args.load, shapes)

    module, _ = fresh_modules(net)
    if params is None:
        params = module.init_params(seed)
    x_train, y_train, _, _ = split(x, y, test_fraction, seed)  # the loss training minimizes
    labels = [f"{k}[{','.join(map(str, i))}]" for k, i in elements]
    with _one_blas_thread():
        u, v, losses = loss_surface(module, params, x_train, y_train, elements, span, steps)
    loss0, grads = module.loss_and_grad(params, x_train, y_train)
    point = (params[elements[0][0]][elements[0][1]], params[elements[1][0]][elements[1][1]], loss0)
    gradient = (grads[elements[0][0]][elements[0][1]], grads[elements[1][0]][elements[1][1]])
    where = f"the parameters in {args.load}" if args.load else f"init_params(seed={seed})"
    plot_surface(u, v, losses, labels, point, gradient, output,
                 f"{net.name}: training loss over {labels[0]} and {labels[1]} around {where}, the rest fixed")
    print(f"loss {loss0:.6g} at {labels[0]} = {point[0]:.4g}, {labels[1]} = {point[1]:.4g}; "
          f"{np.nanmin(losses):.6g} to {np.nanmax(losses):.6g} over +-{span:g}")
    print(f"wrote {output}")
    return 0
