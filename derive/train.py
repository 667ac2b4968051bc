"""Mini-batch training of a generated module (passed in: derive never imports codegen)."""
from __future__ import annotations

import difflib
import inspect
import sys
import time

import numpy as np
import sympy as sp

from .data import DataError, split
from .errors import NnderiveError, SpecError
from .losses import LOSSES, Loss
from .naming import Y, YHAT
from .params import fit_params
from .sharpness import EXAMPLES, ITERATIONS, stability_threshold, top_eigenvalue
from .surface import _one_blas_thread

DEFAULTS = {"epochs": 20, "batch_size": 32, "optimizer": "adam", "seed": 0, "test_fraction": 0.2}
DTYPES = {"float64": np.float64, "float32": np.float32}
# The regression errors a run can report, by the key its rows get ("test_" + key) -> how it is printed.
ERRORS = {"rmse": "RMSE", "mae": "MAE"}


class TrainingDiverged(NnderiveError):
    """The loss stopped being finite during training: the learning rate is too large for this network and data.

    Not a SpecError: the input was valid, the run failed (the CLI exits 1, not 2). Attributes: epoch and
    step (1-based; step None when the loss over the whole training set overflowed after the epoch's last
    step), steps (per epoch), lr, and metrics: the epochs that completed, as train() returns them.
    """

    def __init__(self, epoch: int, step: int | None, steps: int, lr: float, metrics: dict):
        self.epoch, self.step, self.steps, self.lr, self.metrics = epoch, step, steps, lr, metrics
        ran = len(metrics["epochs"])
        super().__init__(f"training diverged {self.where} ({ran} complete epoch{'s' * (ran != 1)} before it): the "
                         f"loss is no longer finite; use a smaller learning rate than {lr:g}, e.g. {lr / 10:g}")

    @property
    def where(self) -> str:
        """"at epoch 3, step 12 of 45" (or "at the end of epoch 3")."""
        if self.step is None:
            return f"at the end of epoch {self.epoch}"
        return f"at epoch {self.epoch}, step {self.step} of {self.steps}"


def train(module, optimizers, x, y, *, epochs: int = 20, batch_size: int = 32, optimizer: str = "adam",
          lr: float | None = None, seed: int = 0, test_fraction: float = 0.2, test=None,
          loss: "str | Loss | None" = None, progress=False, verbose=False, params: dict | None = None,
          dtype=np.float64, accuracy: str | None = "auto", on_epoch=None, sharpness: bool = False):
    """Train a generated module's network with shuffled mini-batches; return (params, metrics).

    NumPy only: `module` is a generated network module, `optimizers` a generated
    optimizers module (one `<name>_step(params, grads, state, **hyper)` per optimizer).

    Args:
        x, y: the data, shaped for the module (see derive.data.load); a seeded
            shuffle splits off `test_fraction` of it as the test set.
        test: (x_test, y_test), a test set of the data's own (MNIST's t10k: derive.data.load_split);
            then all of x, y is the training set and test_fraction is not used.
        epochs, batch_size: passes over the training set and examples per step
            (the last batch of an epoch may be smaller). The order is reshuffled every epoch.
        optimizer, lr: the step function and its learning rate (None: the optimizer's default).
        seed: seeds the split, the initial parameters and the shuffles: same seed, same numbers.
        loss: the network's loss (a name in derive.losses.LOSSES, or the Loss: net.loss_entry). It picks
            the accuracy for "auto" (see accuracy_kind) and, for regression, the error reported with it:
            RMSE or MAE (see error_metric; RMSE when None).
        progress: True for a progress bar (tqdm) on stderr when it is a terminal, or a stream to draw it on.
        verbose: True to print one line per epoch on stdout, as `nnderive train` does (see epoch_line),
            or a stream to print them on.
        params: start from these parameters instead of module.init_params(seed).
        dtype: np.float64 or np.float32, for the parameters and x.
        accuracy: "argmax" (classes), "threshold" (one output at 0.5), "sign" (one output, targets -1
            and 1), None (regression: no accuracy), or "auto" to tell from y and loss (see accuracy_kind).
        on_epoch: called as on_epoch(row, seconds) after each epoch: the epoch's row of metrics
            (below) and the seconds it took.
        sharpness: also measure the top eigenvalue of the training loss's Hessian after each
            epoch (and at the start), with derive.sharpness.top_eigenvalue on module.hvp: Lanczos,
            ITERATIONS products on the first min(N, EXAMPLES) training examples (shuffled with the
            seed, so a seeded sample), warm-started from the previous epoch's eigenvector.

    Returns:
        (params, {"epochs": [{"epoch", "train_loss", "test_loss", "test_accuracy"}, ...],
        "seconds": training time}). Losses are the batch mean over the whole training and
        test set after each epoch (the module's loss(): with a weight penalty, the data term plus
        the penalty, whose rows then also have "penalty" and "train_data_loss", the data term alone);
        test values are None without a test set. A regression run (accuracy None) has "test_rmse"
        or "test_mae" too, over every output of every test example. With sharpness,
        every row also has "sharpness" and "sharpness_residual" (||H v - value v||), and the
        metrics a "sharpness" entry: {"method", "iterations", "examples", "initial" (at the
        starting parameters), "threshold" and "threshold_formula" (2/lr for sgd, see
        stability_threshold; else None)}.

    Raises:
        SpecError: a setting is out of range or params do not fit.
        TrainingDiverged: a batch's loss, or the training loss after an epoch, is not finite; it holds
            where, and the metrics of the epochs that completed.

    >>> params, metrics = train(module, optimizers, x, y, epochs=5, optimizer="adam")  # doctest: +SKIP
    >>> metrics["epochs"][-1]["test_accuracy"]                                          # doctest: +SKIP
    0.94
    """
    names = optimizer_names(optimizers)
    check_settings(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed,
                   test_fraction=test_fraction, optimizers=names)
    if not (loss is None or isinstance(loss, Loss) or loss in LOSSES):
        match = difflib.get_close_matches(str(loss), LOSSES, n=1)
        raise SpecError("loss", "", f"unknown loss {loss!r}", f"did you mean '{match[0]}'?" if match else
                        "pass a name in derive.losses.LOSSES, or the network's Loss (net.loss_entry)")
    step = getattr(optimizers, f"{optimizer}_step")
    lr = default_lr(step) if lr is None else float(lr)
    if test is None:
        x_train, y_train, x_test, y_test = split(np.asarray(x), np.asarray(y), test_fraction, seed)
    else:   # the data's own test set; the training set is shuffled all the same (the sharpness sample)
        x_train, y_train, _, _ = split(np.asarray(x), np.asarray(y), 0.0, seed)
        x_test, y_test = (np.asarray(a) for a in test)
        if len(x_test) != len(y_test):
            raise DataError("", "test", f"{len(x_test)} test examples in x but {len(y_test)} in y",
                            "pass x_test and y_test of the same length")
    if len(x_train) == 0:
        raise DataError("", "x", f"{len(x)} examples leave none to train on",
                        "use more data or a smaller test fraction")
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    if y_train.dtype.kind == "f":
        y_train, y_test = y_train.astype(dtype), y_test.astype(dtype)
    params = module.init_params(seed, dtype) if params is None else fit_params(params, module.PARAM_SHAPES, dtype)
    kind = accuracy_kind(_loss_name(loss), np.asarray(y)) if accuracy == "auto" else accuracy
    error = error_metric(loss) if kind is None else None
    show = _printer(verbose, epochs)

    rng = np.random.default_rng([seed, 1])  # its own stream: not the split's nor init_params'
    penalised = callable(getattr(module, "penalty", None))   # a module of a penalised network
    n = len(x_train)
    batches = -(-n // batch_size)
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

        def diverged(epoch, b):
            return TrainingDiverged(epoch, b, batches, lr, {"epochs": rows, "seconds": _since(start)})

        for epoch in range(1, epochs + 1):
            began = time.perf_counter()
            order = rng.permutation(n)
            bar = _progress_bar(progress, f"epoch {epoch}/{epochs}", batches)
            try:
                for b, lo in enumerate(range(0, n, batch_size), start=1):
                    batch = order[lo:lo + batch_size]
                    value, grads = module.loss_and_grad(params, x_train[batch], y_train[batch])
                    if not np.isfinite(value):      # a scalar: no cost a step notices
                        raise diverged(epoch, b)
                    step(params, grads, state, lr=lr)
                    if bar is not None:
                        bar.update()
            finally:
                if bar is not None:
                    bar.close()                     # cleared (leave=False): the epoch's line goes where it was
            row = {"epoch": epoch, "train_loss": _finite(module.loss(params, x_train, y_train))}
            if row["train_loss"] is None:
                raise diverged(epoch, None)
            if penalised:        # loss() is the whole objective; the data term is what is left without the penalty
                row["penalty"] = _finite(module.penalty(params))
                row["train_data_loss"] = None if row["penalty"] is None else row["train_loss"] - row["penalty"]
            row.update(evaluate(module, params, x_test, y_test, kind, prefix="test_", error=error))
            if sharpness:
                eigen = _sharpness(module, params, x_eval, y_eval, eigen.vector, seed)
                row.update(sharpness=_finite(eigen.value), sharpness_residual=_finite(eigen.residual))
            rows.append(row)
            seconds = time.perf_counter() - began
            if show is not None:
                show(row, seconds)
            if on_epoch is not None:
                on_epoch(row, seconds)
    metrics = {"epochs": rows, "seconds": _since(start)}
    if sharpness:
        metrics["sharpness"] = about
    return params, metrics


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _loss_name(loss) -> str | None:
    return loss.name if isinstance(loss, Loss) else loss


def _progress_bar(progress, label: str, total: int):
    """A tqdm bar over an epoch's batches, on stderr when it is a terminal (progress=True) or on the
    given stream; None (nothing drawn, nothing imported) otherwise."""
    stream = (sys.stderr if sys.stderr.isatty() else None) if progress is True else (progress or None)
    if stream is None:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="batch", file=stream, leave=False, dynamic_ncols=True)


def _printer(verbose, epochs: int):
    """show(row, seconds) printing epoch_line on stdout (verbose=True) or on a stream; None when quiet."""
    if not verbose:
        return None

    def show(row, seconds):
        print(epoch_line(row, epochs, seconds), file=sys.stdout if verbose is True else verbose, flush=True)
    return show


def epoch_line(row: dict, epochs: int, seconds: float | None = None) -> str:
    """One epoch's row as `nnderive train` prints it: losses, the test accuracy (or the regression error),
    the sharpness when measured, and the seconds the epoch took.

    >>> epoch_line({"epoch": 2, "train_loss": 0.25, "test_loss": 3.5e7, "test_accuracy": None, "test_rmse": 0.5}, 10)
    'epoch  2/10  train loss 0.2500  test loss 3.500e+07  test RMSE 0.5000'
    """
    fmt = format_number
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}", f"train loss {fmt(row['train_loss'])}"
             + (f" (data {fmt(row['train_data_loss'])} + penalty {fmt(row['penalty'])})" if "penalty" in row else ""),
             f"test loss {fmt(row.get('test_loss'))}"]
    error = next((key for key in ERRORS if f"test_{key}" in row), None)
    if error is None:
        parts.append(f"test accuracy {fmt(row.get('test_accuracy'))}")
    else:
        parts.append(f"test {ERRORS[error]} {fmt(row[f'test_{error}'])}")
    if "sharpness" in row:
        parts.append(f"sharpness {'-' if row['sharpness'] is None else format(row['sharpness'], '.4g')}")
    if seconds is not None:
        parts.append(f"{seconds:.2f} s")
    return "  ".join(parts)


def format_number(value: float | None) -> str:
    """A loss or metric for a line of output: 4 decimals from 0.001 to 10,000, else 4 significant digits in
    scientific notation (a diverging loss is 1.042e+47, not 48 digits); "-" for None.

    >>> format_number(0.30104), format_number(1147.45563), format_number(2.5e-05), format_number(None)
    ('0.3010', '1147.4556', '2.500e-05', '-')
    """
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _sharpness(module, params, x, y, start, seed):
    """The top Hessian eigenvalue of the loss on (x, y) at params (see derive.sharpness).

    On one BLAS thread: 20 products on a 1000-row batch are small matrix products, measured 20x
    slower with two BLAS threads on two busy cores (100 ms per hvp instead of 5 ms).
    """
    with _one_blas_thread():
        return top_eigenvalue(lambda v: module.hvp(params, x, y, v), params, iterations=ITERATIONS, start=start,
                              seed=seed)


def evaluate(module, params, x, y, kind: str | None, prefix: str = "", error: str | None = None) -> dict:
    """{"loss", "accuracy"} of params on (x, y), and the regression error when one is named ("rmse" or
    "mae", see ERRORS); None for each without examples, accuracy None if kind is."""
    keys = ["loss", "accuracy"] + ([error] if error is not None else [])
    if len(x) == 0:
        return {f"{prefix}{key}": None for key in keys}
    y_hat = module.predict(params, x)
    values = {"loss": _finite(module.loss(params, x, y)), "accuracy": accuracy(y_hat, y, kind)}
    if error is not None:
        values[error] = regression_error(y_hat, y, error)
    return {f"{prefix}{key}": values[key] for key in keys}


def accuracy_kind(loss: str | None, y: np.ndarray) -> str | None:
    """How accuracy is counted for these targets: "argmax", "threshold", "sign" or None (regression).

    Integer labels and one-hot rows are classes (argmax); one output holding 0s and 1s,
    or any bce target, is a yes/no at 0.5 (threshold); one output holding -1s and 1s (a margin
    classifier's targets, hinge) is a yes/no at 0 (sign); anything else is regression.

    >>> accuracy_kind("sparse_cce", np.array([0, 2, 1])), accuracy_kind("mse", np.array([[0.3], [1.7]]))
    ('argmax', None)
    """
    y = np.asarray(y)
    if y.ndim == 1 or loss in ("cce", "sparse_cce"):
        return "argmax"
    binary = bool(np.isin(y, (0, 1)).all())
    if y.shape[1] == 1:
        if binary or loss == "bce":
            return "threshold"
        return "sign" if bool(np.isin(y, (-1, 1)).all()) else None
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
    if kind == "sign":
        return float(np.mean((y_hat > 0) == (y > 0)))
    raise ValueError(f"unknown accuracy kind {kind!r}: use 'argmax', 'threshold', 'sign' or None")


_R = sp.Symbol("r", positive=True)   # the residual yhat - y, in error_metric


def error_metric(loss: "str | Loss | None") -> str:
    """The regression error that fits a loss: "mae" when its element, as a function of the residual
    r = yhat - y alone, grows at most linearly in r (mae, huber, log_cosh: losses that give outliers a
    bounded pull, as the mean absolute error does), else "rmse" (mse, faster-growing losses, losses that
    are not a function of the residual alone, and None).

    Derived from the element, so a custom loss gets its error too: its growth exponent
    log(l(10^8) / l(10^4)) / log(10^4), evaluated exactly by SymPy (2 for r^2/2, 1 for |r|, 1.00001 for
    huber), against 1.5.

    >>> error_metric("mse"), error_metric("mae"), error_metric("huber"), error_metric("bce")
    ('rmse', 'mae', 'mae', 'rmse')
    """
    if loss is None:
        return "rmse"
    entry = (loss if isinstance(loss, Loss) else LOSSES[loss]).bind()   # parameters at their defaults, if unbound
    element = entry.element.xreplace({YHAT: Y + _R})
    if element.free_symbols != {_R}:
        return "rmse"
    low, high = (sp.N(element.xreplace({_R: sp.Integer(10) ** k}), 30) for k in (4, 8))
    if not (low.is_positive and high.is_positive and low.is_finite and high.is_finite):
        return "rmse"
    return "mae" if float(sp.log(high / low) / sp.log(10 ** 4)) < 1.5 else "rmse"


def regression_error(y_hat: np.ndarray, y: np.ndarray, error: str) -> float | None:
    """RMSE or MAE of predictions over every output of every example (None if it is not finite).

    >>> regression_error(np.array([[1.0], [2.0]]), np.array([[0.0], [0.0]]), "rmse")  # sqrt((1 + 4) / 2)
    1.5811388300841898
    """
    residual = np.asarray(y_hat, dtype=np.float64) - y
    if error == "rmse":
        return _finite(np.sqrt(np.mean(residual * residual)))
    if error == "mae":
        return _finite(np.mean(np.abs(residual)))
    raise ValueError(f"unknown regression error {error!r}: use one of {', '.join(ERRORS)}")


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
