"""Mini-batch training of a generated module (passed in: derive never imports codegen)."""
from __future__ import annotations

import difflib
import inspect
import sys
import time

import numpy as np

from .data import DataError, split
from .errors import SpecError
from .params import fit_params
from .sharpness import EXAMPLES, ITERATIONS, stability_threshold, top_eigenvalue
from .surface import _one_blas_thread

DEFAULTS = {"epochs": 20, "batch_size": 32, "optimizer": "adam", "seed": 0, "test_fraction": 0.2}
BAR_WIDTH = 30
DTYPES = {"float64": np.float64, "float32": np.float32}



def train(module, optimizers, x, y, *, epochs: int = 20, batch_size: int = 32, optimizer: str = "adam",
          lr: float | None = None, seed: int = 0, test_fraction: float = 0.2, progress=False,
          params: dict | None = None, dtype=np.float64, accuracy: str | None = "auto", on_epoch=None,
          sharpness: bool = False):
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
        sharpness: also measure the top eigenvalue of the training loss's Hessian after each
            epoch (and at the start), with derive.sharpness.top_eigenvalue on module.hvp: Lanczos,
            ITERATIONS products on the first min(N, EXAMPLES) training examples (the split is
            shuffled, so a seeded sample), warm-started from the previous epoch's eigenvector.

    Returns:
        (params, {"epochs": [{"epoch", "train_loss", "test_loss", "test_accuracy"}, ...],
        "seconds": training time}). Losses are the batch mean over the whole training and
        test set after each epoch (the module's loss(): with a weight penalty, the data term plus
        the penalty, whose rows then also have "penalty" and "train_data_loss", the data term alone);
        test values are None without a test set. With sharpness,
        every row also has "sharpness" and "sharpness_residual" (||H v - value v||), and the
        metrics a "sharpness" entry: {"method", "iterations", "examples", "initial" (at the
        starting parameters), "threshold" and "threshold_formula" (2/lr for sgd, see
        stability_threshold; else None)}.

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
    params = module.init_params(seed, dtype) if params is None else fit_params(params, module.PARAM_SHAPES, dtype)
    kind = accuracy_kind(None, np.asarray(y)) if accuracy == "auto" else accuracy

    rng = np.random.default_rng([seed, 1])  # its own stream: not the split's nor init_params'
    penalised = callable(getattr(module, "penalty", None))   # a module of a penalised network
    n = len(x_train)
    batches = -(-n // batch_size)
    bar = _Bar(progress, epochs, batches)
    state, rows = {}, []
    # Overflow in a diverging run is reported once, below, not as a RuntimeWarning per batch.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if sharpness:   # at the start, before the clock: the curve's epoch 0
            x_eval, y_eval = x_train[:EXAMPLES], y_train[:EXAMPLES]
            eigen = _sharpness(module, params, x_eval, y_eval, None, seed)
            threshold = stability_threshold(optimizer, {**step_defaults(step), "lr": lr}) or (None, None)
            about = {"method": "lanczos", "iterations": ITERATIONS, "examples": len(x_eval),
                     "initial": _finite(eigen.value), "threshold": threshold[0], "threshold_formula": threshold[1]}
        start = time.perf_counter()
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
            if penalised:        # loss() is the whole objective; the data term is what is left without the penalty
                row["penalty"] = _finite(module.penalty(params))
                row["train_data_loss"] = None if None in (row["train_loss"], row["penalty"]) else \
                    row["train_loss"] - row["penalty"]
            row.update(evaluate(module, params, x_test, y_test, kind, prefix="test_"))
            if row["train_loss"] is None:
                raise SpecError("train", f"epoch {epoch}", "the training loss is no longer finite: training diverged",
                                f"use a smaller learning rate than {lr:g}")
            if sharpness:
                eigen = _sharpness(module, params, x_eval, y_eval, eigen.vector, seed)
                row.update(sharpness=_finite(eigen.value), sharpness_residual=_finite(eigen.residual))
            rows.append(row)
            if on_epoch is not None:
                on_epoch(row, time.perf_counter() - began)
    metrics = {"epochs": rows, "seconds": round(time.perf_counter() - start, 3)}
    if sharpness:
        metrics["sharpness"] = about
    return params, metrics


def _sharpness(module, params, x, y, start, seed):
    """The top Hessian eigenvalue of the loss on (x, y) at params (see derive.sharpness).

    On one BLAS thread: 20 products on a 1000-row batch are small matrix products, measured 20x
    slower with two BLAS threads on two busy cores (100 ms per hvp instead of 5 ms).
    """
    with _one_blas_thread():
        return top_eigenvalue(lambda v: module.hvp(params, x, y, v), params, iterations=ITERATIONS, start=start,
                              seed=seed)


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


def step_defaults(step) -> dict:
    """A step function's hyperparameters and their defaults (adam_step -> {"lr": 0.001, "beta1": 0.9, ...})."""
    return {name: p.default for name, p in inspect.signature(step).parameters.items()
            if p.default is not inspect.Parameter.empty}


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
