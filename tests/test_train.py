"""Training and the cost surface: determinism, metrics, parameter files, plots, digits, and every error as one line."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from derive import Dense, Network, load_spec
from derive.errors import SpecError
from codegen.train_cli import fresh_modules
from derive.params import load_params, save_params
from derive.surface import parse_element
from derive.data import split
from derive.train import (TrainingDiverged, accuracy, accuracy_kind, check_settings, epoch_line, error_metric,
                          format_number, regression_error, train)

ROOT = Path(__file__).resolve().parents[1]
DIGITS_SPEC = ROOT / "examples" / "digits_64_32_10.toml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY = """\
name = "tiny"
inputs = 4
loss = "sparse_cce"

[[layers]]
units = 8
activation = "tanh"

[[layers]]
units = 3
activation = "softmax"
"""

REGRESSION = """\
name = "tiny_regression"
inputs = 2
loss = "mse"

[[layers]]
units = 6
activation = "tanh"

[[layers]]
units = 1
activation = "identity"
"""

# Every run in a subprocess starts here: `python -m codegen.cli ARGS`, or with matplotlib hidden.
CLI = [sys.executable, "-m", "codegen.cli"]
NO_MATPLOTLIB = [sys.executable, "-c",
                 "import sys; sys.modules['matplotlib'] = None\n"
                 "from codegen.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module", autouse=True)
def _quiet_matplotlib(matplotlib_config):
    """Every subprocess here asserts an empty stderr: matplotlib's first-run font cache message is built away."""
    yield matplotlib_config


def blobs(n=150, seed=0):
    """Three well separated Gaussian blobs in 4-D: labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centers[y] + 0.5 * rng.standard_normal((n, 4)), y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Specs and data files, written once for the module."""
    d = tmp_path_factory.mktemp("train")
    (d / "tiny.toml").write_text(TINY)
    (d / "reg.toml").write_text(REGRESSION)
    x, y = blobs()
    np.savez(d / "blobs.npz", x=x, y=y)
    np.savez(d / "labels5.npz", x=x, y=np.where(y == 2, 5, y))
    np.savez(d / "wide.npz", x=np.hstack([x, x[:, :1]]), y=y)
    np.savez(d / "wrong_params.npz", W1=np.zeros((3, 3)), b1=np.zeros(3))
    rows = np.random.default_rng(1).uniform(-1, 1, (80, 2))
    lines = ["x1,x2,y"] + [f"{a:.6f},{b:.6f},{np.sin(2 * a) + b * b:.6f}" for a, b in rows]
    (d / "reg.csv").write_text("\n".join(lines) + "\n")
    (d / "bad.csv").write_text("1,2,3,4,0\n1,2,three,4,1\n")
    return d


def start(args, cwd, base=CLI):
    return subprocess.Popen(base + [str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def run(args, cwd, base=CLI):
    return finish(start(args, cwd, base))


def without_seconds(path):
    metrics = json.loads(Path(path).read_text())
    assert isinstance(metrics.pop("seconds"), float)
    return metrics


# ---------------------------------------------------------------- training runs from the command line

TRAIN = ["train", "tiny.toml", "--data", "blobs.npz", "--epochs", "6", "--batch-size", "16", "--lr", "0.05"]


@pytest.fixture(scope="module")
def runs(files):
    """Three runs side by side: two with seed 3 (with every output), one with seed 4."""
    plot = ["--plot", "a.png"] if _has_matplotlib() else []
    processes = {
        "a": start(TRAIN + ["--seed", "3", "--metrics", "a.json", "--save", "a.npz"] + plot, files),
        "b": start(TRAIN + ["--seed", "3", "--metrics", "b.json"], files),
        "c": start(TRAIN + ["--seed", "4", "--metrics", "c.json"], files),
    }
    results = {name: finish(p) for name, p in processes.items()}
    for name, (code, out, err) in results.items():
        assert code == 0, (name, out, err)
    return results


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_same_seed_same_metrics(files, runs):
    assert without_seconds(files / "a.json") == without_seconds(files / "b.json")
    assert without_seconds(files / "a.json") != without_seconds(files / "c.json")


def test_metrics_format(files, runs):
    metrics = json.loads((files / "a.json").read_text())
    assert set(metrics) == {"epochs", "seconds"} and metrics["seconds"] >= 0
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3, 4, 5, 6]
    for row in metrics["epochs"]:
        assert list(row) == ["epoch", "train_loss", "test_loss", "test_accuracy"]
        assert all(isinstance(row[k], float) for k in ("train_loss", "test_loss", "test_accuracy"))
        assert 0 <= row["test_accuracy"] <= 1
    first, last = metrics["epochs"][0], metrics["epochs"][-1]
    assert last["train_loss"] < first["train_loss"] and last["test_accuracy"] >= 0.9  # the blobs separate


def test_one_line_per_epoch_and_quiet_without_a_terminal(runs):
    code, out, err = runs["a"]
    assert err == ""  # stderr is a pipe, not a terminal: no progress bar
    lines = out.splitlines()
    assert lines[0].startswith("tiny: 4 -> 8 (tanh) -> 3 (softmax), loss sparse_cce; 120 train / 30 test examples")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 6 and "train loss" in epochs[0] and "test accuracy" in epochs[0]
    assert "wrote a.json" in out and "wrote a.npz" in out


def test_save_then_load_round_trip(files, runs):
    shapes = {"W1": (8, 4), "b1": (8,), "W2": (3, 8), "b2": (3,)}
    saved = load_params(files / "a.npz", shapes)
    assert {k: v.shape for k, v in saved.items()} == shapes
    # Continue from the saved point with a step too small to move it: the loss is where run a ended.
    code, out, err = run(["train", "tiny.toml", "--data", "blobs.npz", "--seed", "3", "--epochs", "1",
                          "--optimizer", "sgd", "--lr", "1e-300", "--load", "a.npz", "--metrics", "again.json"], files)
    assert code == 0, err
    before = json.loads((files / "a.json").read_text())["epochs"][-1]
    after = json.loads((files / "again.json").read_text())["epochs"][0]
    assert after["train_loss"] == pytest.approx(before["train_loss"], rel=1e-12)
    assert after["test_accuracy"] == before["test_accuracy"]


def test_params_file_api_round_trip(tmp_path):
    params = {"W1": np.arange(6.0).reshape(2, 3), "b1": np.array([0.5, -0.25])}
    save_params(params, tmp_path / "p.npz")
    loaded = load_params(tmp_path / "p.npz", {"W1": (2, 3), "b1": (2,)})
    assert all(np.array_equal(loaded[k], params[k]) for k in params)
    assert load_params(tmp_path / "p.npz", {"W1": (2, 3), "b1": (2,)}, np.float32)["W1"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left behind


def test_curves_png(files, runs):
    pytest.importorskip("matplotlib")
    data = (files / "a.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_surface_png_at_the_trained_point(files, runs):
    pytest.importorskip("matplotlib")
    code, out, err = run(["surface", "tiny.toml", "--data", "blobs.npz", "--seed", "3", "--load", "a.npz",
                          "--params", "W2[0,1]", "b1[2]", "--steps", "9", "--span", "2", "-o", "s.png"], files)
    assert code == 0 and err == "", err
    data = (files / "s.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    # The surface is centred on the saved point: its loss is the one training ended with.
    loss = float(out.split()[1])
    assert loss == pytest.approx(json.loads((files / "a.json").read_text())["epochs"][-1]["train_loss"], rel=1e-5)


def test_regression_reports_the_error_that_fits_its_loss(files):
    """mse: no accuracy but the test RMSE, printed and in --metrics, the same number as computed here."""
    pytest.importorskip("matplotlib")
    code, out, err = run(["train", "reg.toml", "--data", "reg.csv", "--epochs", "3", "--optimizer", "rmsprop",
                          "--dtype", "float32", "--metrics", "reg.json", "--plot", "reg.png", "--save", "reg.npz"],
                         files)
    assert code == 0, err
    rows = json.loads((files / "reg.json").read_text())["epochs"]
    assert all(row["test_accuracy"] is None and isinstance(row["test_rmse"], float) for row in rows)
    assert "test accuracy" not in out and out.count("test RMSE ") == 3
    # The last epoch's RMSE, from the saved parameters on the same seeded split.
    from derive.data import load, split
    net = load_spec(files / "reg.toml")
    module, _ = fresh_modules(net)
    x, y = load(str(files / "reg.csv"), n_outputs=1, loss="mse")
    _, _, x_test, y_test = split(x, y, 0.2, 0)
    params = load_params(files / "reg.npz", net.param_shapes())
    rmse = np.sqrt(np.mean((module.predict(params, x_test) - y_test) ** 2))
    assert rows[-1]["test_rmse"] == pytest.approx(rmse, rel=1e-5)
    (last,) = [line for line in out.splitlines() if line.startswith("epoch 3/3")]
    assert f"test RMSE {rows[-1]['test_rmse']:.4f}" in last
    assert (files / "reg.png").read_bytes().startswith(PNG_MAGIC)


MNIST_SPEC = """\
name = "tiny_mnist"
inputs = 20
loss = "sparse_cce"

[[layers]]
units = 10
activation = "softmax"
"""


def fake_mnist(folder, n_train=30, n_test=10):
    """MNIST-format IDX files of 4x5 images, gzipped: train and t10k."""
    import gzip
    import struct
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 4, 5))), ("labels-idx1", np.arange(n) % 10)):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
            (folder / f"{part}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.astype(">u1").tobytes()))


def test_mnist_trains_on_train_and_tests_on_t10k_unless_resplit(tmp_path, capsys):
    from codegen.cli import main
    fake_mnist(tmp_path)
    (tmp_path / "m.toml").write_text(MNIST_SPEC)
    base = ["train", str(tmp_path / "m.toml"), "--data", f"mnist:{tmp_path}", "--epochs", "1"]
    assert main(base + ["--metrics", str(tmp_path / "official.json"), "--save", str(tmp_path / "official.npz")]) == 0
    out = capsys.readouterr().out
    assert "30 train / 10 test examples from mnist:" in out and "its own split: train and t10k; --resplit" in out
    assert main(base + ["--resplit", "--test-fraction", "0.25"]) == 0
    assert "30 train / 10 test examples" in capsys.readouterr().out        # 25% of the 40 pooled examples
    assert main(base + ["--resplit"]) == 0
    assert "32 train / 8 test examples" in capsys.readouterr().out         # the default 0.2
    # The official run's test loss is the loss on t10k itself, from the parameters it saved.
    from derive.data import load_split
    _, _, (x_test, y_test) = load_split(f"mnist:{tmp_path}", n_outputs=10, loss="sparse_cce")
    net = load_spec(tmp_path / "m.toml")
    module, _ = fresh_modules(net)
    params = load_params(tmp_path / "official.npz", net.param_shapes())
    row = json.loads((tmp_path / "official.json").read_text())["epochs"][0]
    assert row["test_loss"] == pytest.approx(float(module.loss(params, x_test, y_test)), rel=1e-12)
    code = main(base + ["--test-fraction", "0.3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--test-fraction" in err and "--resplit" in err and "t10k" in err


def test_a_diverging_run_stops_with_one_line_exit_1_and_writes_nothing(files, tmp_path, monkeypatch, capsys):
    from codegen.cli import main
    folder = tmp_path / "diverged"
    folder.mkdir()
    monkeypatch.chdir(folder)
    code = main(["train", str(files / "reg.toml"), "--data", str(files / "reg.csv"), "--optimizer", "sgd", "--lr",
                 "100", "--epochs", "100", "--metrics", "m.json", "--plot", "p.png", "--save", "p.npz"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, (code, err)
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert err.startswith("nnderive: training diverged at epoch ") and "the loss is no longer finite" in err
    assert f"({len(epochs)} of 100 epochs completed)" in err and "try a smaller --lr than 100, e.g. --lr 10" in err
    assert f"at epoch {len(epochs) + 1}, " in err and "nothing written" in err
    words = [w for line in epochs for w in line.split()]
    assert max(map(len, words)) <= len("-1.234e+300") and "e+" in epochs[-1]   # scientific, not 300 digits
    assert list(folder.iterdir()) == [] and "trained in" not in out


@pytest.mark.parametrize("loss, error", [("mse", "rmse"), ("mae", "mae"), ("huber", "mae"), ("log_cosh", "mae")])
def test_error_metric_is_derived_from_the_loss_element(loss, error):
    assert error_metric(loss) == error


def test_error_metric_of_custom_losses():
    """Growth in the residual decides, so a loss the registry does not know gets an error too."""
    from derive.losses import Loss
    from derive.naming import Y, YHAT
    import sympy as sp
    r = YHAT - Y
    assert error_metric(Loss("quartic", r ** 4 / 4, "values", "quartic")) == "rmse"
    assert error_metric(Loss("cauchy", sp.log(1 + r ** 2), "values", "Cauchy")) == "mae"      # grows like log
    assert error_metric(Loss("scaled_abs", 3 * sp.Abs(r), "values", "scaled")) == "mae"
    assert error_metric(Loss("weighted", Y * r ** 2, "values", "weighted")) == "rmse"  # not a function of r alone
    assert error_metric(None) == "rmse"


def test_regression_error_against_numpy(rng):
    y_hat, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    assert regression_error(y_hat, y, "rmse") == pytest.approx(float(np.sqrt(((y_hat - y) ** 2).mean())), rel=1e-15)
    assert regression_error(y_hat, y, "mae") == pytest.approx(float(np.abs(y_hat - y).mean()), rel=1e-15)
    assert regression_error(np.array([[np.inf]]), np.array([[0.0]]), "rmse") is None
    with pytest.raises(ValueError, match="rmse, mae"):
        regression_error(y_hat, y, "r2")


def test_mae_network_reports_mae(modules_mae):
    module, optimizers = modules_mae
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (60, 2))
    y = (x[:, :1] - x[:, 1:]) * 0.5
    params, metrics = train(module, optimizers, x, y, epochs=2, batch_size=20, loss="mae", seed=2)
    row = metrics["epochs"][-1]
    assert "test_rmse" not in row and row["test_accuracy"] is None
    _, _, x_test, y_test = split(x, y, 0.2, 2)
    assert row["test_mae"] == pytest.approx(float(np.abs(module.predict(params, x_test) - y_test).mean()), rel=1e-12)


def test_numbers_print_in_a_sane_format():
    assert [format_number(v) for v in (0.30104, 1147.45563, 0.0, None)] == ["0.3010", "1147.4556", "0.0000", "-"]
    assert format_number(7.490274241315196e46) == "7.490e+46" and format_number(2.5e-5) == "2.500e-05"
    assert format_number(-3e9) == "-3.000e+09"


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

# The list, each in a process of its own: name -> (command line, fragments the message must hold).
ERRORS = {
    "data file missing": (["train", "tiny.toml", "--data", "nothere.npz"], ["nothere.npz", "file not found"]),
    "data does not parse": (["train", "tiny.toml", "--data", "bad.csv"], ["bad.csv", "line 2", "'three'"]),
    "labels do not fit": (["train", "tiny.toml", "--data", "labels5.npz"], ["labels5.npz", "label 5", "3 units"]),
    "width differs": (["train", "tiny.toml", "--data", "wide.npz"], ["wide.npz", "5 features", "inputs = 4"]),
    "epochs zero": (TRAIN[:4] + ["--epochs", "0"], ["--epochs", "got 0"]),
    "batch size zero": (TRAIN[:4] + ["--batch-size", "0"], ["--batch-size", "got 0"]),
    "lr zero": (TRAIN[:4] + ["--lr", "0"], ["--lr", "positive"]),
    "unknown optimizer": (TRAIN[:4] + ["--optimizer", "adma"], ["--optimizer", "'adma'", "did you mean 'adam'"]),
    "unknown parameter": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "W3[0,0]", "W1[0,0]"],
                          ["--params", "'W3'", "W1 (8, 4), b1 (8,), W2 (3, 8), b2 (3,)"]),
    "index out of range": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "W1[0,0]", "W1[8,0]"],
                           ["--params", "W1[8,0]", "(8, 4)"]),
}
# With matplotlib hidden, which only a fresh process can do.
NO_PLOT = {
    "plot without matplotlib": (["train", "tiny.toml", "--data", "blobs.npz", "--plot", "c.png"],
                                ["--plot", "matplotlib", "nnderive[plot]"]),
}
# More of the same, through codegen.cli.main in this process (a process each costs a second of imports).
MORE_ERRORS = {
    "epochs negative": (TRAIN[:4] + ["--epochs", "-3"], ["--epochs", "got -3"]),
    "epochs not a number": (TRAIN[:4] + ["--epochs", "ten"], ["--epochs", "'ten' is not a whole number"]),
    "batch size negative": (TRAIN[:4] + ["--batch-size", "-1"], ["--batch-size", "got -1"]),
    "lr negative": (TRAIN[:4] + ["--lr", "-0.1"], ["--lr", "positive"]),
    "lr nan": (TRAIN[:4] + ["--lr", "nan"], ["--lr", "positive"]),
    "seed negative": (TRAIN[:4] + ["--seed", "-1"], ["--seed"]),
    "dtype": (TRAIN[:4] + ["--dtype", "float16"], ["--dtype", "float32"]),
    "test fraction one": (TRAIN[:4] + ["--test-fraction", "1"], ["--test-fraction"]),
    "spec missing": (["train", "nothere.toml", "--data", "blobs.npz"], ["nothere.toml", "no such file"]),
    "unknown data source": (["train", "tiny.toml", "--data", "blobs.txt"], ["blobs.txt", "unknown data source"]),
    "params file shapes": (TRAIN[:4] + ["--load", "wrong_params.npz"], ["wrong_params.npz", "W1 (8, 4)"]),
    "params file missing": (TRAIN[:4] + ["--load", "nothere.npz"], ["nothere.npz", "file not found"]),
    "params file not npz": (TRAIN[:4] + ["--load", "bad.csv"], ["bad.csv", "not a readable .npz"]),
    "output folder missing": (TRAIN[:4] + ["--metrics", "nothere/m.json"], ["--metrics", "nothere"]),
    "not an element": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "W1", "W1[0,0]"],
                       ["--params", "'W1'", "W1[0,0]"]),
    "too few indices": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "W1[0]", "W1[0,0]"],
                        ["--params", "W1[0]", "(8, 4)"]),
    "same element twice": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "b1[0]", "b1[ 0 ]"],
                           ["--params", "same element"]),
    "surface steps": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "b1[0]", "b1[1]", "--steps", "1"],
                      ["--steps"]),
    "surface span": (["surface", "tiny.toml", "--data", "blobs.npz", "--params", "b1[0]", "b1[1]", "--span", "0"],
                     ["--span"]),
    "surface data width": (["surface", "tiny.toml", "--data", "wide.npz", "--params", "b1[0]", "b1[1]"],
                           ["wide.npz", "5 features"]),
}
OUTPUTS = {"train": ["--metrics", "m.json", "--save", "p.npz"], "surface": ["-o", "s.png"]}


def bad_call(files, folder, args):
    """Inputs resolve against `files`; outputs (added unless the case names one) land in `folder`."""
    folder.mkdir(parents=True)
    args = [str(files / a) if (files / a).exists() else a for a in args]
    if not any(a in args for a in ("-o", "--metrics", "--plot")):
        args += OUTPUTS[args[0]]
    return args


def check_one_line_error(code, out, err, folder, fragments):
    assert code == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("nnderive: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert list(folder.iterdir()) == [], "an output file was written"


@pytest.fixture(scope="module")
def error_runs(files):
    """The subprocess cases, run side by side, each in a folder of its own that should stay empty."""
    processes = {}
    for cases, base in ((ERRORS, CLI), (NO_PLOT, NO_MATPLOTLIB)):
        for name, (args, _) in cases.items():
            folder = files / "errors" / name.replace(" ", "_")
            processes[name] = (start(bad_call(files, folder, args), folder, base), folder)
    return {name: finish(p) + (folder,) for name, (p, folder) in processes.items()}


@pytest.mark.parametrize("name", sorted(ERRORS) + sorted(NO_PLOT))
def test_bad_input_is_one_line_and_exit_2(error_runs, name):
    check_one_line_error(*error_runs[name], {**ERRORS, **NO_PLOT}[name][1])


@pytest.mark.parametrize("name", sorted(MORE_ERRORS))
def test_more_bad_input(files, tmp_path, monkeypatch, capsys, name):
    from codegen.cli import main
    args, fragments = MORE_ERRORS[name]
    folder = tmp_path / "out"
    args = bad_call(files, folder, args)
    monkeypatch.chdir(folder)
    code = main(args)
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, folder, fragments)


# ---------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def modules():
    net = Network("api_net", 4, [Dense(8, "tanh"), Dense(3, "softmax")], loss="sparse_cce")
    return fresh_modules(net)


@pytest.fixture(scope="module")
def modules_mae():
    return fresh_modules(Network("api_mae", 2, [Dense(4, "tanh"), Dense(1, "identity")], loss="mae"))


def test_train_api(modules):
    module, optimizers = modules
    x, y = blobs()
    stream, seen = io.StringIO(), []
    params, metrics = train(module, optimizers, x, y, epochs=3, batch_size=10, optimizer="momentum", lr=0.05,
                            seed=1, test_fraction=0.2, progress=stream, on_epoch=lambda row, s: seen.append(row))
    assert seen == metrics["epochs"] and len(seen) == 3
    drawn = stream.getvalue()      # tqdm, one bar per epoch over its 12 batches, cleared when the epoch ends
    assert all(f"epoch {e}/3" in drawn for e in (1, 2, 3)) and "/12 [" in drawn and drawn.endswith("\r")
    assert set(params) == set(module.PARAM_SHAPES) and params["W1"].dtype == np.float64
    again, _ = train(module, optimizers, x, y, epochs=3, batch_size=10, optimizer="momentum", lr=0.05, seed=1)
    assert all(np.array_equal(params[k], again[k]) for k in params)


def test_train_api_prints_the_cli_lines_when_verbose(modules, capsys):
    module, optimizers = modules
    x, y = blobs()
    stream, seconds = io.StringIO(), []
    _, metrics = train(module, optimizers, x, y, epochs=2, batch_size=50, verbose=stream,
                       on_epoch=lambda row, s: seconds.append(s))
    expected = [epoch_line(row, 2, s) for row, s in zip(metrics["epochs"], seconds)]
    assert stream.getvalue().splitlines() == expected
    assert expected[0].startswith("epoch 1/2  train loss ") and "test accuracy 0." in expected[0]
    train(module, optimizers, x, y, epochs=2, batch_size=50, verbose=True)
    out, err = capsys.readouterr()
    assert [line.split("  ")[:4] for line in out.splitlines()] == [line.split("  ")[:4] for line in expected]
    assert err == ""                # progress=False by default: no bar, even on a terminal
    train(module, optimizers, x, y, epochs=1, batch_size=50, progress=True)   # stderr is not a terminal here
    assert capsys.readouterr() == ("", "")


def test_train_api_refuses_an_unknown_loss(modules):
    module, optimizers = modules
    x, y = blobs()
    with pytest.raises(SpecError, match="unknown loss 'sparse_ce'; did you mean 'sparse_cce'"):
        train(module, optimizers, x, y, epochs=1, loss="sparse_ce")


def test_train_api_float32_and_no_test_set(modules):
    module, optimizers = modules
    x, y = blobs()
    params, metrics = train(module, optimizers, x, y, epochs=2, batch_size=200, test_fraction=0, dtype=np.float32)
    assert params["W1"].dtype == np.float32
    assert metrics["epochs"][-1]["test_loss"] is None and metrics["epochs"][-1]["test_accuracy"] is None


def test_train_api_with_a_test_set_of_its_own(modules):
    module, optimizers = modules
    x, y = blobs(150)
    x_test, y_test = blobs(30, seed=9)
    params, metrics = train(module, optimizers, x, y, epochs=2, batch_size=25, seed=3, test=(x_test, y_test))
    last = metrics["epochs"][-1]
    assert last["test_loss"] == pytest.approx(float(module.loss(params, x_test, y_test)), rel=1e-12)
    assert last["test_accuracy"] == float(np.mean(module.predict(params, x_test).argmax(axis=1) == y_test))
    # All 150 examples trained on: the training loss is over them, not over 80% of them.
    assert last["train_loss"] == pytest.approx(float(module.loss(params, x, y)), rel=1e-12)


def test_divergence_stops_at_the_step(modules):
    module, optimizers = modules
    x, y = blobs()
    with pytest.raises(TrainingDiverged) as info:
        train(module, optimizers, x * 1e3, y, epochs=3, batch_size=10, optimizer="sgd", lr=1e300)
    e = info.value
    assert (e.epoch, e.steps, e.lr, e.metrics["epochs"]) == (1, 12, 1e300, []) and 1 < e.step <= 12
    assert str(e) == (f"training diverged at epoch 1, step {e.step} of 12 (0 complete epochs before it): the loss is "
                      f"no longer finite; use a smaller learning rate than 1e+300, e.g. 1e+299")
    assert not isinstance(e, SpecError)      # valid input, a failed run
    assert TrainingDiverged(4, None, 12, 0.5, {"epochs": [{}] * 3}).where == "at the end of epoch 4"


def regression_data(n=80, seed=1):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    return x, np.sin(2 * x[:, :1]) + x[:, 1:] ** 2


@pytest.fixture(scope="module")
def modules_mse():
    return fresh_modules(Network("api_mse", 2, [Dense(6, "tanh"), Dense(1, "identity")], loss="mse"))


def test_divergence_after_complete_epochs(modules_mse):
    """sgd at lr 100 on mse grows the loss ~1e10 times an epoch until it overflows: the epochs before it are
    kept in the error, as train() would have returned them."""
    module, optimizers = modules_mse
    x, y = regression_data()
    seen = []
    with pytest.raises(TrainingDiverged) as info:
        train(module, optimizers, x, y, epochs=100, optimizer="sgd", lr=100.0, loss="mse",
              on_epoch=lambda row, s: seen.append(row))
    e = info.value
    assert e.metrics["epochs"] == seen and len(seen) == e.epoch - 1 >= 5
    assert seen[-1]["train_loss"] > 1e100 and f"({len(seen)} complete epochs before it)" in str(e)


@pytest.mark.parametrize("settings, fragment", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 2.5}, "batch_size"), ({"optimizer": "lbfgs"}, "lbfgs"),
    ({"lr": -1.0}, "lr"), ({"lr": True}, "lr"), ({"seed": -1}, "seed"), ({"test_fraction": 1.0}, "test_fraction"),
])
def test_check_settings(settings, fragment):
    good = {"epochs": 1, "batch_size": 1, "optimizer": "adam", "lr": None, "seed": 0, "test_fraction": 0.2}
    check_settings(**good, optimizers=["sgd", "adam"])
    with pytest.raises(SpecError, match=fragment):
        check_settings(**{**good, **settings}, optimizers=["sgd", "adam"])


@pytest.mark.parametrize("loss, y, kind", [
    ("sparse_cce", np.array([0, 2, 1]), "argmax"),
    ("mse", np.eye(3)[[0, 2, 1]], "argmax"),
    ("bce", np.array([[0.0], [1.0]]), "threshold"),
    ("bce", np.array([[0.2], [0.9]]), "threshold"),
    ("mse", np.array([[0.0], [1.0]]), "threshold"),
    ("mse", np.array([[0.3], [1.7]]), None),
    ("mae", np.array([[0.3, 0.1], [1.7, 0.0]]), None),
    ("hinge", np.array([[-1.0], [1.0]]), "sign"),
    ("mse", np.array([[-1.0], [0.5]]), None),
])
def test_accuracy_kind(loss, y, kind):
    assert accuracy_kind(loss, y) == kind


def test_accuracy():
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), "argmax") == 0.5
    assert accuracy(np.array([[0.7], [0.2]]), np.array([[1.0], [0.0]]), "threshold") == 1.0
    assert accuracy(np.array([[0.7]]), np.array([[0.3]]), None) is None
    assert accuracy(np.array([[0.2], [-0.1], [3.0]]), np.array([[1.0], [1.0], [-1.0]]), "sign") == 1 / 3


def test_parse_element():
    shapes = {"W1": (2, 4), "b1": (2,)}
    assert parse_element("W1[1,3]", shapes) == ("W1", (1, 3))
    assert parse_element(" b1[ 1 ] ", shapes) == ("b1", (1,))
    for bad in ("W1[2,0]", "W1[0]", "b1[0,0]", "W2[0,0]", "W1(0,0)", "W1[-1,0]"):
        with pytest.raises(SpecError, match="W1 \\(2, 4\\), b1 \\(2,\\)"):
            parse_element(bad, shapes)


# ---------------------------------------------------------------- the acceptance run


def test_digits_reaches_95_percent_with_adam():
    """Bounded by its count of work, 20 epochs of 45 steps, not by a clock."""
    pytest.importorskip("sklearn")
    from derive.data import check_width, load
    net = load_spec(DIGITS_SPEC)
    x, y = load("digits", n_outputs=10, loss=net.loss)
    check_width(x, net.inputs, "digits")
    module, optimizers = fresh_modules(net)
    _, metrics = train(module, optimizers, x, y, epochs=20, batch_size=32, optimizer="adam", seed=0)
    last = metrics["epochs"][-1]
    assert len(metrics["epochs"]) == 20 and last["test_accuracy"] >= 0.95
