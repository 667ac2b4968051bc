"""Data loaders: IDX (gzipped or not), CSV, npz and digits, label shaping, and every error as one line."""
import builtins
import gzip
import struct

import numpy as np
import pytest

from derive.data import DataError, check_width, load, load_raw, load_split, mnist_parts, read_idx, split, targets
from derive.errors import NnderiveError, SpecError


def expect_error(fragments, fn, *args, **kwargs):
    """fn raises a SpecError whose message is one line and holds every fragment."""
    with pytest.raises(SpecError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def idx_bytes(array, type_code=0x08):
    """An IDX file written by hand: 0 0 TYPE NDIM, sizes as big-endian uint32, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def write_idx(path, array, type_code=0x08, gz=False):
    raw = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def mnist_dir(tmp_path, n_train=6, n_test=4, gz=True, sep="-", test=True):
    rng = np.random.default_rng(0)
    parts = {"train": n_train, "t10k": n_test} if test else {"train": n_train}
    data = {}
    for part, n in parts.items():
        images = rng.integers(0, 256, size=(n, 4, 5), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / f"{part}-images{sep}idx3-ubyte{suffix}", images, gz=gz)
        write_idx(tmp_path / f"{part}-labels{sep}idx1-ubyte{suffix}", labels, gz=gz)
        data[part] = images, labels
    return data


# IDX and MNIST

@pytest.mark.parametrize("type_code, values", [
    (0x08, np.arange(24).reshape(2, 3, 4)),
    (0x09, np.array([-3, 0, 5])),
    (0x0B, np.array([[-300, 2], [7, 30000]])),
    (0x0C, np.array([-70000, 1, 2**30])),
    (0x0D, np.array([1.5, -2.25, 2.0**40])),
    (0x0E, np.array([[np.pi, -1e-300]])),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, type_code, values, gz):
    got = read_idx(write_idx(tmp_path / "a.idx", values, type_code, gz=gz))
    np.testing.assert_array_equal(got, values)
    assert got.shape == values.shape and got.dtype.isnative


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sep", ["-", "."])
def test_mnist_loads_train_then_test(tmp_path, gz, sep):
    data = mnist_dir(tmp_path, gz=gz, sep=sep)
    x, y = load(f"mnist:{tmp_path}", n_outputs=10, loss="sparse_cce")
    images = np.concatenate([data["train"][0], data["t10k"][0]])
    labels = np.concatenate([data["train"][1], data["t10k"][1]])
    assert x.shape == (10, 20) and x.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images.reshape(10, 20) / 255.0)
    np.testing.assert_array_equal(y, labels)
    assert 0 <= x.min() and x.max() <= 1


def test_mnist_test_part_is_optional_and_one_hot_for_cce(tmp_path):
    data = mnist_dir(tmp_path, test=False)
    x, y = load(f"mnist:{tmp_path}", n_outputs=10, loss="cce")
    assert x.shape == (6, 20) and y.shape == (6, 10) and y.dtype == np.float64
    np.testing.assert_array_equal(y.argmax(axis=1), data["train"][1])
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)


@pytest.mark.parametrize("loss", ["sparse_cce", "cce"])
def test_mnist_official_split_keeps_t10k_as_the_test_set(tmp_path, loss):
    data = mnist_dir(tmp_path, n_train=6, n_test=4)
    x, y, (x_test, y_test) = load_split(f"mnist:{tmp_path}", n_outputs=10, loss=loss)
    np.testing.assert_array_equal(x, data["train"][0].reshape(6, 20) / 255.0)
    np.testing.assert_array_equal(x_test, data["t10k"][0].reshape(4, 20) / 255.0)
    labels = (y, y_test) if loss == "sparse_cce" else (y.argmax(axis=1), y_test.argmax(axis=1))
    np.testing.assert_array_equal(labels[0], data["train"][1])
    np.testing.assert_array_equal(labels[1], data["t10k"][1])
    # resplit: the pooled data, exactly what load gives
    pooled = load_split(f"mnist:{tmp_path}", n_outputs=10, loss=loss, resplit=True)
    assert pooled[2] is None
    for a, b in zip(pooled[:2], load(f"mnist:{tmp_path}", n_outputs=10, loss=loss)):
        np.testing.assert_array_equal(a, b)


def test_load_split_without_a_test_set_of_the_sources_own(tmp_path):
    mnist_dir(tmp_path, test=False)
    x, y, test = load_split(f"mnist:{tmp_path}", n_outputs=10, loss="sparse_cce")
    assert x.shape == (6, 20) and test is None
    path = tmp_path / "d.csv"
    path.write_text("1,2,0\n3,4,1\n")
    x, y, test = load_split(str(path), n_outputs=2, loss="sparse_cce")
    assert test is None and list(y) == [0, 1]
    expect_error(["loss: unknown loss 'l3'"], load_split, f"mnist:{tmp_path}", n_outputs=10, loss="l3")
    expect_error(["class label", "does not fit an output layer of 2 units"],
                 load_split, f"mnist:{tmp_path}", n_outputs=2, loss="cce")


def test_mnist_parts(tmp_path):
    data = mnist_dir(tmp_path, n_train=3, n_test=2, gz=False)
    parts = mnist_parts(tmp_path)
    assert list(parts) == ["train", "t10k"]
    np.testing.assert_array_equal(parts["t10k"][1], data["t10k"][1])


def test_mnist_errors(tmp_path):
    expect_error(["nope", "no such directory", "mnist:DIR"], load_raw, f"mnist:{tmp_path / 'nope'}")
    expect_error(["train-images-idx3-ubyte", "file not found", "download"], load_raw, f"mnist:{tmp_path}")
    mnist_dir(tmp_path, test=False)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((2, 4, 5)))))
    expect_error(["t10k-labels-idx1-ubyte", "file not found"], load_raw, f"mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3), gz=True)
    expect_error(["t10k-images-idx3-ubyte.gz", "2 images", "labels of shape (3,)"], load_raw, f"mnist:{tmp_path}")


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    expect_error([str(bad), "header", "bad IDX magic number 00000701", "IDX file"], read_idx, bad)
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    expect_error([str(png), "bad IDX magic"], read_idx, png)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    expect_error(["(empty file)"], read_idx, empty)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 2, 2)))[:-1]))
    expect_error([str(truncated), "11 bytes of data", "needs 12", "download it again"], read_idx, truncated)
    header = tmp_path / "header"
    header.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    expect_error(["truncated IDX header"], read_idx, header)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(np.zeros(4)))[:12])
    expect_error([str(broken), "broken gzip data"], read_idx, broken)
    expect_error(["missing-file", "file not found"], read_idx, tmp_path / "missing-file")


# CSV

def test_csv_with_header_labels_one_hot(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,label\n0.5,1,0\n2,-3.5,2\n\n1e-3,4,1\n")
    x, y = load(f"csv:{path}", n_outputs=3, loss="cce")
    np.testing.assert_array_equal(x, [[0.5, 1], [2, -3.5], [1e-3, 4]])
    np.testing.assert_array_equal(y, np.eye(3)[[0, 2, 1]])
    _, labels = load(str(path), n_outputs=3, loss="sparse_cce")  # a .csv path needs no prefix
    np.testing.assert_array_equal(labels, [0, 2, 1])
    assert labels.dtype == np.int64


def test_csv_without_header_regression_column(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("1,2,0.25\n3,4,-7.5\n")
    x, y = load(f"csv:{path}", n_outputs=1, loss="mse")
    assert x.shape == (2, 2) and y.shape == (2, 1) and y.dtype == np.float64
    np.testing.assert_array_equal(y[:, 0], [0.25, -7.5])


def test_csv_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x1,x2,y\n1,2,0\n3,oops,1\n")
    expect_error([str(path), "line 3, column 2", "'oops' is not a finite number"], load_raw, f"csv:{path}")
    path.write_text("1,2,0\n3,1\n")
    expect_error([str(path), "line 2", "2 columns, but the first row has 3"], load_raw, f"csv:{path}")
    path.write_text("1,2,nan\n")
    expect_error(["line 1, column 3", "'nan' is not a finite number"], load_raw, f"csv:{path}")
    path.write_text("1,2,0\n1,2,inf\n")
    expect_error(["line 2, column 3", "'inf' is not a finite number"], load_raw, f"csv:{path}")
    path.write_text("a,b,c\n")
    expect_error([str(path), "no data rows"], load_raw, f"csv:{path}")
    path.write_text("1\n2\n")
    expect_error([str(path), "one column only"], load_raw, f"csv:{path}")
    expect_error(["gone.csv", "file not found"], load_raw, f"csv:{tmp_path / 'gone.csv'}")
    expect_error([str(tmp_path), "is a directory"], load_raw, f"csv:{tmp_path}")


# npz

def test_npz_labels_and_targets(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(24, dtype=np.float32).reshape(3, 2, 4), y=np.array([1, 0, 1]))
    x, y = load(str(path), n_outputs=2, loss="bce")
    assert x.shape == (3, 8) and x.dtype == np.float64
    np.testing.assert_array_equal(y, [[0, 1], [1, 0], [0, 1]])
    _, y1 = load(str(path), n_outputs=1, loss="bce")
    np.testing.assert_array_equal(y1, [[1], [0], [1]])
    np.savez(path, x=np.ones((2, 3)), y=np.array([[0.2, 0.8], [0.5, 0.5]]))
    _, y = load(str(path), n_outputs=2, loss="cce")  # distributions pass through
    np.testing.assert_array_equal(y, [[0.2, 0.8], [0.5, 0.5]])


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((2, 3)))
    expect_error([str(path), "no array named 'y'", "np.savez"], load_raw, str(path))
    np.savez(path, x=np.ones((2, 3)), y=np.ones(3))
    expect_error([str(path), "do not pair up"], load_raw, str(path))
    np.savez(path, x=np.array(["a", "b"]), y=np.ones(2))
    expect_error([str(path), "x: dtype <U1 is not numeric"], load_raw, str(path))
    path.write_bytes(b"not a zip file at all")
    expect_error([str(path), "not a readable .npz file"], load_raw, str(path))
    expect_error(["missing.npz", "file not found"], load_raw, str(tmp_path / "missing.npz"))


# Targets against the spec

@pytest.mark.parametrize("loss", ["cce", "mse", "mae", "bce"])
def test_labels_become_one_hot_for_many_outputs(loss):
    y = targets(np.array([2.0, 0.0, 1.0]), n_outputs=3, loss=loss)
    np.testing.assert_array_equal(y, np.eye(3)[[2, 0, 1]])
    assert y.dtype == np.float64


@pytest.mark.parametrize("y, n_outputs, loss, fragments", [
    (np.array([0, 1.5]), 3, "cce", ["class label 1.5 is not an integer", "integer class labels"]),
    (np.array([0, -1]), 3, "sparse_cce", ["class label -1 is negative"]),
    (np.array([0, 3]), 3, "cce", ["class label 3 does not fit an output layer of 3 units", "units = 4"]),
    (np.array([0, 9]), 2, "mse", ["class label 9", "units = 10"]),
    (np.ones((4, 3)), 2, "mse", ["targets have 3 columns but the output layer has 2 units"]),
    (np.ones((4, 3)), 3, "sparse_cce", ["sparse_cce takes integer class labels", "np.argmax"]),
    (np.array([0.0, 2.0]), 1, "bce", ["bce targets must lie in [0, 1]", "found 0..2"]),
    (np.array([0.0, np.nan]), 1, "mse", ["NaN or infinity"]),
])
def test_targets_that_do_not_fit(y, n_outputs, loss, fragments):
    expect_error(["data.csv: y: ", *fragments], targets, y, n_outputs=n_outputs, loss=loss, source="data.csv")


def test_unknown_source_and_loss(tmp_path):
    expect_error(["cifar", "unknown data source", "digits, mnist:DIR, csv:PATH or PATH.npz"], load_raw, "cifar")
    expect_error(["digits: loss: unknown loss 'squared_hinge'", "sparse_cce"], load, "digits", n_outputs=10,
                 loss="squared_hinge")


def test_check_width():
    check_width(np.ones((5, 4)), 4, "d.csv")
    message = expect_error(["d.csv: x: 64 features per example but the spec has inputs = 4",
                            "set inputs = 64"], check_width, np.ones((5, 64)), 4, "d.csv")
    assert message.count(";") == 1


# split

def test_split_is_shuffled_deterministic_80_20():
    x, y = np.arange(50.0).reshape(25, 2), np.arange(25)
    x_train, y_train, x_test, y_test = split(x, y)
    assert (len(x_train), len(x_test)) == (20, 5)
    np.testing.assert_array_equal(x_train[:, 0] / 2, y_train)  # rows stay paired
    assert sorted(np.concatenate([y_train, y_test])) == list(range(25))
    assert list(y_train) != sorted(y_train)
    for a, b in zip(split(x, y), (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(a, b)
    assert list(split(x, y, seed=1)[3]) != list(y_test)
    assert len(split(x, y, test_fraction=0.0)[2]) == 0


def test_split_errors():
    expect_error(["test_fraction: 1.5 is outside [0, 1)"], split, np.ones((4, 1)), np.ones(4), 1.5)
    expect_error(["4 examples in x but 3 in y"], split, np.ones((4, 1)), np.ones(3))


# digits

def test_digits():
    pytest.importorskip("sklearn")
    x, y = load("digits", n_outputs=10, loss="sparse_cce")
    assert x.shape == (1797, 64) and x.dtype == np.float64 and x.min() == 0 and x.max() == 1
    assert y.shape == (1797,) and set(y) == set(range(10))
    _, onehot = load("digits", n_outputs=10, loss="mse")
    assert onehot.shape == (1797, 10)
    expect_error(["digits: y: class label 9 does not fit an output layer of 3 units"],
                 load, "digits", n_outputs=3, loss="cce")


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(NnderiveError) as info:
        load("digits", n_outputs=10, loss="cce")
    assert str(info.value) == "digits: scikit-learn is not installed; pip install 'nnderive[data]'"


def test_data_error_is_a_spec_error():
    assert issubclass(DataError, SpecError) and issubclass(DataError, NnderiveError)
