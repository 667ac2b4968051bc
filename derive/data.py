"""Training data: digits, MNIST IDX files, CSV and .npz loaded as float arrays shaped for a spec's loss."""
from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

import numpy as np

from .errors import SpecError, one_line
from .files import read_regular
from .losses import LOSSES, Loss

# Losses whose targets are class labels as integers; every other loss takes float targets.
LABEL_LOSSES = {name for name, loss in LOSSES.items() if loss.target == "labels"}
KNOWN_LOSSES = set(LOSSES)
SOURCES = "digits, mnist:DIR, csv:PATH or PATH.npz"

# IDX type byte -> big-endian element dtype (http://yann.lecun.com/exdb/mnist/).
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_PARTS = ("train", "t10k")
# Bounds on what a data file may make us read or allocate (the README states them).
MAX_DATA_BYTES = 1 << 30      # a data or parameter file, and the arrays decoded from it: 1 GiB
MAX_NPZ_MEMBERS = 1024        # arrays in an .npz
MAX_ELEMENTS = MAX_DATA_BYTES // 8   # numbers in one data set: its float64 copy fits in MAX_DATA_BYTES
MAX_CSV_BYTES = 128 << 20     # a CSV file: 128 MiB (parsed in Python, row by row)
MAX_IDX_DIMS = 4              # IDX dimensions (MNIST: 3 for images, 1 for labels)
MAX_UNITS_HINT = 1_000_000     # a label beyond it is not a class count to suggest
MAX_FEATURE = 1e30            # |feature|: beyond it a float32 forward pass overflows


class DataError(SpecError):
    """A data source is missing, malformed or does not fit the spec; names the file and the fix."""


def load(source: str, *, n_outputs: int, loss: "str | Loss") -> tuple[np.ndarray, np.ndarray]:
    """Load a data source and shape its targets for the spec's loss.

    Args:
        source: `digits`, `mnist:DIR`, `csv:PATH` (or PATH.csv) or `PATH.npz`.
        n_outputs: units of the output layer.
        loss: the spec's loss (a registry name, or the Loss itself: a custom loss's targets are
            its target kind): class labels become one-hot rows for cce, mse, mae and
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
    _check_loss(source, loss)
    x, y = load_raw(source)
    return x, targets(y, n_outputs=n_outputs, loss=loss, source=source)


def _check_loss(source: str, loss) -> None:
    if not isinstance(loss, Loss) and loss not in KNOWN_LOSSES:
        raise DataError(source, "loss", f"unknown loss {loss!r}", f"use one of {', '.join(sorted(KNOWN_LOSSES))}")


def load_split(source: str, *, n_outputs: int, loss: "str | Loss", resplit: bool = False):
    """Load a data source with its own test set kept apart: (x, y, test), test = (x_test, y_test) or None.

    `mnist:DIR` with both the train and the t10k files has one: MNIST's official split (60,000
    training and 10,000 test images), so results compare with published figures. Every other
    source, MNIST without t10k, and `resplit=True` give (x, y) as `load` does and test None: the
    caller splits off a test fraction itself (derive.data.split, derive.train.train).

    >>> x, y, test = load_split("mnist:MNIST", n_outputs=10, loss="sparse_cce")  # doctest: +SKIP
    >>> len(x), len(test[0])                                                        # doctest: +SKIP
    (60000, 10000)
    """
    if resplit or not source.startswith("mnist:"):
        return *load(source, n_outputs=n_outputs, loss=loss), None
    _check_loss(source, loss)
    parts = mnist_parts(source[len("mnist:"):])
    shaped = {part: (x, targets(y, n_outputs=n_outputs, loss=loss, source=source)) for part, (x, y) in parts.items()}
    if "t10k" not in shaped:
        return *shaped["train"], None
    return *shaped["train"], shaped["t10k"]


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
    """MNIST (or Fashion-MNIST) IDX files in `directory`, gzipped or not: train, then t10k if present,
    in one pair of arrays (see mnist_parts for them apart).

    Pixels are scaled by 1/255 and each image flattened to 784 features.
    """
    parts = mnist_parts(directory)
    return (np.concatenate([x for x, _ in parts.values()]), np.concatenate([y for _, y in parts.values()]))


def mnist_parts(directory: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The MNIST IDX files in `directory` by part: {"train": (x, y), "t10k": (x, y)}, t10k only if present.

    Pixels are scaled by 1/255 and each image flattened; the train files must be there.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(str(directory), "", "no such directory", "pass mnist:DIR with the IDX files in DIR")
    parts = {}
    shape, count = None, 0
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
        if parts and x.shape[1:] != shape:
            raise DataError(str(images), "header", f"images of shape {x.shape[1:]}, but the train images are "
                            f"{shape}", "use the train and t10k files of one data set")
        shape = x.shape[1:]
        count += x.size
        if count > MAX_ELEMENTS:
            raise DataError(str(images), "", f"train and t10k hold {count:,} numbers, more than {MAX_ELEMENTS:,}",
                            "use a smaller data set")
        flat = x.reshape(len(x), -1).astype(np.float64)
        parts[part] = np.divide(flat, 255.0, out=flat), y.astype(np.int64)
    return parts


def _find_idx(directory: Path, stem: str, kind: str) -> Path | None:
    # Both spellings are in circulation: train-images-idx3-ubyte and train-images.idx3-ubyte.
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = directory / f"{stem}{sep}{kind}{suffix}"
            if path.is_file():
                return path
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not): magic 0 0 TYPE NDIM, NDIM big-endian uint32 sizes, data.

    The header is read first and bounds everything after it: the dimensions' product (in Python
    ints) must fit MAX_ELEMENTS, and no more than the bytes it promises are decompressed.
    """
    import io
    path = Path(path)
    raw = _read_bytes(path)
    stream = io.BytesIO(raw)
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        stream = gzip.GzipFile(fileobj=stream)

    def take(n: int) -> bytes:
        try:
            return stream.read(n)
        except (OSError, EOFError, ValueError) as e:
            raise DataError(str(path), "", f"broken gzip data ({_one_line(e)})", "download the file again") from None

    magic = take(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES:
        raise DataError(str(path), "header", f"bad IDX magic number {magic.hex() or '(empty file)'}",
                        "expected 0000 08 03 for images or 0000 08 01 for labels; is this an IDX file?")
    ndim = magic[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DataError(str(path), "header", f"{ndim} dimensions, expected 1 to {MAX_IDX_DIMS}",
                        "is this an MNIST IDX file? images have 3 dimensions, labels 1")
    dims = take(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(str(path), "header", f"truncated IDX header for {ndim} dimensions", "download the file again")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[magic[2]])
    count = math.prod(shape)              # a Python int: 65536**4 does not wrap to 0
    if count > MAX_ELEMENTS:
        raise DataError(str(path), "header", f"shape {shape} is {count:,} numbers, more than {MAX_ELEMENTS:,}",
                        "use a smaller data set (or split it)")
    expected = count * dtype.itemsize
    data = take(expected + 1)
    if len(data) != expected:
        found = f"{len(data)} bytes" if len(data) < expected else "more bytes"
        raise DataError(str(path), "data", f"{found} of data but the header's shape {shape} needs {expected}",
                        "the file is truncated or corrupt; download it again")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Comma-separated rows: features, then the target in the last column; a non-numeric first line is a header."""
    import array
    import io
    path = Path(path)
    raw = read_regular(path, MAX_CSV_BYTES, DataError, "use at most 128 MiB of CSV, or an .npz file")
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
    values = array.array("d")
    width = first = None
    try:
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if width is None and first is None and not any(_parses(c) for c in row):
                first = line          # a header line: no cell reads as a number
                continue
            if width is None:
                width = len(row)
                if width < 2:
                    raise DataError(str(path), f"line {line}", "one column only",
                                    "write the features, then the target as the last column")
            if len(row) != width:
                raise DataError(str(path), f"line {line}", f"{len(row)} columns, but the first row has {width}",
                                "give every row the same number of columns")
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    raise DataError(str(path), f"line {line}, column {j + 1}",
                                    f"{one_line(repr(cell.strip()), 60)} is not a finite number",
                                    "write finite numbers only (a header is allowed on the first line)")
                values.append(float(cell))
    except csv.Error as e:
        raise DataError(str(path), f"line {reader.line_num}", f"not valid CSV ({_one_line(e)})",
                        "write one number per cell, comma-separated") from None
    if width is None:
        raise DataError(str(path), "", "no data rows", "write one example per line: features, then the target")
    values = np.frombuffer(values, np.float64).reshape(-1, width)
    check_features(values[:, :-1], str(path))
    return values[:, :-1], values[:, -1]


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (n, features...) and `y` (labels (n,) or targets (n, k)) from a NumPy .npz file."""
    path = Path(path)
    arrays = read_npz(path)
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 0 or y.ndim == 0 or y.ndim > 2 or len(x) != len(y):
        raise DataError(str(path), "y", f"x of shape {x.shape} and y of shape {y.shape} do not pair up",
                        "give x shape (n, features) and y shape (n,) or (n, outputs)")
    if len(x) == 0:
        raise DataError(str(path), "x", f"x of shape {x.shape} holds no examples", "save at least one example")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(str(path), "x", f"x of shape {x.shape} has no features per example",
                        "give x shape (n, features) with features >= 1")
    x = x.reshape(len(x), -1).astype(np.float64)
    check_features(x, str(path))
    return x, y if y.dtype.kind in "biu" else y.astype(np.float64)


def _npz_entries(path: Path, source: str, fix: str) -> None:
    """Refuse a zip whose end record claims more than MAX_NPZ_MEMBERS members, before zipfile reads them."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65_557))       # the end record: 22 bytes and a comment of at most 65,535
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        raise DataError(source, "", "not a readable .npz file (no zip end record)", fix)
    count = int.from_bytes(tail[at + 10: at + 12], "little")
    if count > MAX_NPZ_MEMBERS:
        raise DataError(source, "", f"holds {count:,} arrays, more than {MAX_NPZ_MEMBERS}", fix)


def read_npz(path, shapes: dict | None = None, names=("x", "y"), fix: str = "", limit: int | None = None) -> dict:
    """Arrays from an .npz file, each checked by its .npy header before a byte of it is decompressed.

    Args:
        path: the file (regular, at most `limit` bytes).
        shapes: name -> shape every array must have (e.g. PARAM_SHAPES), or None.
        names: the arrays to read when shapes is None (others in the file are not read).
        fix: the advice for a file that does not fit.
        limit: bound on the file and on the total bytes of the arrays read (default MAX_DATA_BYTES).

    Raises:
        DataError: naming the file, the array and the fix.
    """
    import zipfile
    path = Path(path)
    source = str(path)
    limit = MAX_DATA_BYTES if limit is None else limit
    fix = fix or "save it with np.savez(path, x=features, y=targets)"
    read_regular(path, limit, DataError, "use a smaller file", check_only=True)
    wanted = list(shapes) if shapes is not None else list(names)
    try:
        _npz_entries(path, source, fix)
        with zipfile.ZipFile(path) as zf:
            members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
            found = {}
            for key in (members if shapes is not None else [k for k in wanted if k in members]):
                with zf.open(members[key]) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                if dtype.kind not in "biuf" or dtype.hasobject:
                    raise DataError(source, key, f"dtype {dtype} is not numeric", f"save {key} as a float or integer array")
                found[key] = tuple(shape)
            if shapes is not None:
                expected = {k: tuple(v) for k, v in shapes.items()}
                if found != expected:
                    raise DataError(source, "", f"parameters {_shapes(found)} do not fit the network's "
                                    f"{_shapes(expected)}", fix)
            missing = [k for k in wanted if k not in found]
            if missing:
                names_found = one_line(", ".join(sorted(members)) or "none", 200)
                raise DataError(source, "", f"no array named {missing[0]!r} (found {names_found})", fix)
            total = 0
            for key in wanted:
                total += math.prod(found[key]) * 8        # Python ints (no overflow); the float64 copy
                if total > limit:
                    raise DataError(source, key, f"arrays of {total:,} bytes as float64, more than {limit:,}",
                                    "use a smaller data set")
            headers = found
            arrays = {}
            for key in wanted:
                with zf.open(members[key]) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                if arrays[key].shape != tuple(headers[key]):
                    raise DataError(source, key, "array data does not match its header", fix)
            return arrays
    except DataError:
        raise
    except Exception as e:  # zipfile, zlib and format errors differ by NumPy version
        raise DataError(source, "", f"not a readable .npz file ({_one_line(e)})", fix) from None


def _shapes(shapes: dict) -> str:
    return one_line(", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()) or "(none)", 200)


def targets(y: np.ndarray, *, n_outputs: int, loss: "str | Loss", source: str = "") -> np.ndarray:
    """Shape targets for a loss: int labels (n,) for sparse_cce, else float64 (n, n_outputs).

    Labels (a 1-D y) become one-hot rows when the output layer has more than one
    unit; with one unit they become a column, which for bce must hold 0s and 1s.
    """
    entry = loss if isinstance(loss, Loss) else LOSSES[loss]
    loss, labelled = entry.name, entry.target == "labels"
    y = np.asarray(y)
    if not np.all(np.isfinite(y)):
        raise DataError(source, "y", "targets contain NaN or infinity", "remove or fill the missing targets")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if labelled or (y.ndim == 1 and n_outputs > 1):
        if y.ndim != 1:
            raise DataError(source, "y", f"{loss} takes integer class labels of shape (n,), not {y.shape}",
                            "store one label per example (np.argmax(y, axis=1) of one-hot rows)")
        labels = _labels(y, n_outputs, source)
        if labelled:
            return labels
        return np.eye(n_outputs)[labels]
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[1] != n_outputs:
        raise DataError(source, "y", f"targets have {y.shape[1]} columns but the output layer has {n_outputs} units",
                        f"set the last layer's units = {y.shape[1]} or give {n_outputs} target columns")
    y = y.astype(np.float64)
    if entry.needs == "probability" and (y.min() < 0 or y.max() > 1):
        raise DataError(source, "y", f"bce targets must lie in [0, 1], found {y.min():g}..{y.max():g}",
                        "use 0/1 labels or probabilities, or another loss (mse) for regression")
    return y


def _labels(y: np.ndarray, n_outputs: int, source: str) -> np.ndarray:
    """Class labels as int64, each in 0..n_outputs-1."""
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        bad = y[y != np.round(y)][0]
        raise DataError(source, "y", f"class label {bad:g} is not an integer",
                        "use integer class labels 0..K-1, or mse for regression targets")
    # Range-checked before the cast to int64: 1e300 would wrap to a negative number.
    if y.size and y.min() < 0:
        raise DataError(source, "y", f"class label {y.min():g} is negative", "use class labels 0..K-1")
    if y.size and y.max() >= n_outputs:
        top = y.max()
        fix = (f"set the last layer's units = {int(top) + 1} or relabel to 0..{n_outputs - 1}"
               if top < MAX_UNITS_HINT else f"relabel to 0..{n_outputs - 1}")
        raise DataError(source, "y", f"class label {top:g} does not fit an output layer of {n_outputs} units", fix)
    return y.astype(np.int64)


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
    return read_regular(path, MAX_DATA_BYTES, DataError, "use a smaller data set (or split it)", check_only)


def check_features(x: np.ndarray, source: str) -> None:
    """Raise DataError, naming the file and the first bad example, unless every feature is finite and
    within +-MAX_FEATURE (a NaN or 1e308 would otherwise surface as "training diverged")."""
    bad = ~np.isfinite(x) | (np.abs(x) > MAX_FEATURE)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(source, f"x[{i}, {j}]", f"feature {float(x[i, j])!r} is not a finite number within "
                        f"+-{MAX_FEATURE:g}", "remove or fill missing values and scale the features")


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
