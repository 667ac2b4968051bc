"""Training data: digits, MNIST IDX files, CSV and .npz loaded as float arrays shaped for a spec's loss."""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np

from .errors import SpecError
from .losses import LOSSES

# Losses whose targets are class labels as integers; every other loss takes float targets.
LABEL_LOSSES = {name for name, loss in LOSSES.items() if loss.target == "labels"}
KNOWN_LOSSES = set(LOSSES)
SOURCES = "digits, mnist:DIR, csv:PATH or PATH.npz"

# IDX type byte -> big-endian element dtype (http://yann.lecun.com/exdb/mnist/).
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_PARTS = ("train", "t10k")


class DataError(SpecError):
    """A data source is missing, malformed or does not fit the spec; names the file and the fix."""


def load(source: str, *, n_outputs: int, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Load a data source and shape its targets for the spec's loss.

    Args:
        source: `digits`, `mnist:DIR`, `csv:PATH` (or PATH.csv) or `PATH.npz`.
        n_outputs: units of the output layer.
        loss: the spec's loss: class labels become one-hot rows for cce, mse, mae and
            bce with n_outputs > 1, stay integers for sparse_cce, and become a
            column for a 1-output regression or bce.

    Returns:
        (x, y): x float64 of shape (n, features); y int64 (n,) or float64 (n, n_outputs).

    Raises:
        DataError: a missing or unreadable file, or labels that do not fit the output layer.

    >>> x, y = load("digits", n_outputs=10, loss="sparse_cce")  # doctest: +SKIP
    >>> x.shape, y[:3]                                          # doctest: +SKIP
    ((1797, 64), array([0, 1, 2]))
    """
    if loss not in KNOWN_LOSSES:
        raise DataError(source, "loss", f"unknown loss {loss!r}", f"use one of {', '.join(sorted(KNOWN_LOSSES))}")
    x, y = load_raw(source)
    return x, targets(y, n_outputs=n_outputs, loss=loss, source=source)


def load_raw(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Load (x, y) as stored: x float64 (n, features); y as in the source (labels or targets)."""
    if source == "digits":
        return load_digits()
    if source.startswith("mnist:"):
        return load_mnist(source[len("mnist:"):])
    if source.startswith("csv:"):
        return load_csv(source[len("csv:"):])
    if source.endswith(".csv"):
        return load_csv(source)
    if source.endswith(".npz"):
        return load_npz(source)
    raise DataError(source, "", "unknown data source", f"use {SOURCES}")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download): 1797 x 64 pixels in [0, 1], labels 0-9."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("digits", "", "scikit-learn is not installed", "pip install 'nnderive[data]'") from None
    digits = sklearn_digits()
    return digits.data.astype(np.float64) / 16.0, digits.target.astype(np.int64)


def load_mnist(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (or Fashion-MNIST) IDX files in `directory`, gzipped or not: train, then t10k if present.

    Pixels are scaled by 1/255 and each image flattened to 784 features.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(str(directory), "", "no such directory", "pass mnist:DIR with the IDX files in DIR")
    xs, ys = [], []
    for part in MNIST_PARTS:
        images = _find_idx(directory, f"{part}-images", "idx3-ubyte")
        labels = _find_idx(directory, f"{part}-labels", "idx1-ubyte")
        if images is None and labels is None and part != "train":
            continue
        if images is None or labels is None:
            missing = f"{part}-images-idx3-ubyte" if images is None else f"{part}-labels-idx1-ubyte"
            raise DataError(str(directory), missing, "file not found",
                            "download the MNIST IDX files (gzipped or not) into this directory")
        x, y = read_idx(images), read_idx(labels)
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise DataError(str(images), "", f"{len(x)} images of shape {x.shape[1:]} but labels of shape {y.shape}",
                            f"use the labels file that belongs to {images.name}")
        xs.append(x.reshape(len(x), -1).astype(np.float64) / 255.0)
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _find_idx(directory: Path, stem: str, kind: str) -> Path | None:
    # Both spellings are in circulation: train-images-idx3-ubyte and train-images.idx3-ubyte.
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = directory / f"{stem}{sep}{kind}{suffix}"
            if path.is_file():
                return path
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not): magic 0 0 TYPE NDIM, NDIM big-endian uint32 sizes, data."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(str(path), "", f"broken gzip data ({_one_line(e)})", "download the file again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise DataError(str(path), "header", f"bad IDX magic number {raw[:4].hex() or '(empty file)'}",
                        "expected 0000 08 03 for images or 0000 08 01 for labels; is this an IDX file?")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(str(path), "header", f"truncated IDX header for {ndim} dimensions", "download the file again")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(str(path), "data", f"{len(raw) - header} bytes of data but the header's shape {shape} "
                        f"needs {expected}", "the file is truncated or corrupt; download it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Comma-separated rows: features, then the target in the last column; a non-numeric first line is a header."""
    path = Path(path)
    text = _read_bytes(path).decode("utf-8-sig", errors="replace")
    rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in row)]
    if rows and not any(_parses(c) for c in rows[0][1]):
        rows = rows[1:]  # a header line: no cell reads as a number
    if not rows:
        raise DataError(str(path), "", "no data rows", "write one example per line: features, then the target")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(str(path), f"line {rows[0][0]}", "one column only",
                        "write the features, then the target as the last column")
    values = np.empty((len(rows), width))
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(str(path), f"line {line}", f"{len(row)} columns, but the first row has {width}",
                            "give every row the same number of columns")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise DataError(str(path), f"line {line}, column {j + 1}", f"{cell.strip()!r} is not a finite number",
                                "write finite numbers only (a header is allowed on the first line)")
            values[i, j] = float(cell)
    return values[:, :-1], values[:, -1]


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (n, features...) and `y` (labels (n,) or targets (n, k)) from a NumPy .npz file."""
    path = Path(path)
    _read_bytes(path, check_only=True)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                found = ", ".join(arrays.files) or "none"
                raise DataError(str(path), "", f"no array named {missing[0]!r} (found {found})",
                                "save it with np.savez(path, x=features, y=targets)")
            x, y = arrays["x"], arrays["y"]
    except DataError:
        raise
    except Exception as e:  # zipfile, pickle and format errors differ by NumPy version
        raise DataError(str(path), "", f"not a readable .npz file ({_one_line(e)})",
                        "save it with np.savez(path, x=features, y=targets)") from None
    for key, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "biuf":
            raise DataError(str(path), key, f"dtype {a.dtype} is not numeric",
                            f"save {key} as a float or integer array")
    if x.ndim == 0 or y.ndim == 0 or y.ndim > 2 or len(x) != len(y):
        raise DataError(str(path), "y", f"x of shape {x.shape} and y of shape {y.shape} do not pair up",
                        "give x shape (n, features) and y shape (n,) or (n, outputs)")
    x = x.reshape(len(x), -1).astype(np.float64)
    return x, y if y.dtype.kind in "biu" else y.astype(np.float64)


def targets(y: np.ndarray, *, n_outputs: int, loss: str, source: str = "") -> np.ndarray:
    """Shape targets for a loss: int labels (n,) for sparse_cce, else float64 (n, n_outputs).

    Labels (a 1-D y) become one-hot rows when the output layer has more than one
    unit; with one unit they become a column, which for bce must hold 0s and 1s.
    """
    y = np.asarray(y)
    if not np.all(np.isfinite(y)):
        raise DataError(source, "y", "targets contain NaN or infinity", "remove or fill the missing targets")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if loss in LABEL_LOSSES or (y.ndim == 1 and n_outputs > 1):
        if y.ndim != 1:
            raise DataError(source, "y", f"{loss} takes integer class labels of shape (n,), not {y.shape}",
                            "store one label per example (np.argmax(y, axis=1) of one-hot rows)")
        labels = _labels(y, n_outputs, source)
        if loss in LABEL_LOSSES:
            return labels
        return np.eye(n_outputs)[labels]
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[1] != n_outputs:
        raise DataError(source, "y", f"targets have {y.shape[1]} columns but the output layer has {n_outputs} units",
                        f"set the last layer's units = {y.shape[1]} or give {n_outputs} target columns")
    y = y.astype(np.float64)
    if LOSSES[loss].needs == "probability" and (y.min() < 0 or y.max() > 1):
        raise DataError(source, "y", f"bce targets must lie in [0, 1], found {y.min():g}..{y.max():g}",
                        "use 0/1 labels or probabilities, or another loss (mse) for regression")
    return y


def _labels(y: np.ndarray, n_outputs: int, source: str) -> np.ndarray:
    """Class labels as int64, each in 0..n_outputs-1."""
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        bad = y[y != np.round(y)][0]
        raise DataError(source, "y", f"class label {bad:g} is not an integer",
                        "use integer class labels 0..K-1, or mse for regression targets")
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(source, "y", f"class label {labels.min()} is negative", "use class labels 0..K-1")
    if labels.size and labels.max() >= n_outputs:
        raise DataError(source, "y", f"class label {labels.max()} does not fit an output layer of {n_outputs} units",
                        f"set the last layer's units = {labels.max() + 1} or relabel to 0..{n_outputs - 1}")
    return labels


def check_width(x: np.ndarray, inputs: int, source: str) -> None:
    """Raise DataError unless x has `inputs` features per example (the spec's `inputs`)."""
    if x.ndim != 2 or x.shape[1] != inputs:
        width = x.shape[1] if x.ndim == 2 else x.shape
        raise DataError(source, "x", f"{width} features per example but the spec has inputs = {inputs}",
                        f"set inputs = {width} in the spec or pick data with {inputs} features")


def split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0):
    """Shuffle deterministically and split off a test set: (x_train, y_train, x_test, y_test).

    >>> xt, yt, xs, ys = split(np.arange(10.0)[:, None], np.arange(10))
    >>> len(xt), len(xs)
    (8, 2)
    """
    if not 0 <= test_fraction < 1:
        raise DataError("", "test_fraction", f"{test_fraction} is outside [0, 1)", "use e.g. 0.2 for an 80/20 split")
    if len(x) != len(y):
        raise DataError("", "split", f"{len(x)} examples in x but {len(y)} in y", "pass x and y of the same length")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _read_bytes(path: Path, check_only: bool = False) -> bytes:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "file not found"
        raise DataError(str(path), "", what, "check the path (relative paths start at the working directory)")
    if check_only:
        return b""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(str(path), "", f"cannot read ({_one_line(e)})", "check the file's permissions") from None


def _parses(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_number(cell: str) -> bool:
    return _parses(cell) and bool(np.isfinite(float(cell)))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
