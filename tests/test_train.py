"""Training and the cost surface: determinism, metrics, parameter files, plots, digits, and every error as one line."""
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from derive import Dense, Network, load_spec
from derive.errors import SpecError
from codegen.train_cli import fresh_modules
from derive.params import load_params, save_params
from derive.surface import parse_element
from derive.train import accuracy, accuracy_kind, check_settings, train

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


def test_regression_has_no_accuracy(files):
    pytest.importorskip("matplotlib")
    code, out, err = run(["train", "reg.toml", "--data", "reg.csv", "--epochs", "3", "--optimizer", "rmsprop",
                          "--dtype", "float32", "--metrics", "reg.json", "--plot", "reg.png"], files)
    assert code == 0, err
    rows = json.loads((files / "reg.json").read_text())["epochs"]
    assert all(row["test_accuracy"] is None for row in rows)
    assert "test accuracy -" in out
    assert (files / "reg.png").read_bytes().startswith(PNG_MAGIC)


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


def test_train_api(modules):
    module, optimizers = modules
    x, y = blobs()
    stream, seen = io.StringIO(), []
    params, metrics = train(module, optimizers, x, y, epochs=3, batch_size=10, optimizer="momentum", lr=0.05,
                            seed=1, test_fraction=0.2, progress=stream, on_epoch=lambda row, s: seen.append(row))
    assert seen == metrics["epochs"] and len(seen) == 3
    assert "epoch 1/3 [" in stream.getvalue() and "12/12" in stream.getvalue()
    assert set(params) == set(module.PARAM_SHAPES) and params["W1"].dtype == np.float64
    again, _ = train(module, optimizers, x, y, epochs=3, batch_size=10, optimizer="momentum", lr=0.05, seed=1)
    assert all(np.array_equal(params[k], again[k]) for k in params)


def test_train_api_float32_and_no_test_set(modules):
    module, optimizers = modules
    x, y = blobs()
    params, metrics = train(module, optimizers, x, y, epochs=2, batch_size=200, test_fraction=0, dtype=np.float32)
    assert params["W1"].dtype == np.float32
    assert metrics["epochs"][-1]["test_loss"] is None and metrics["epochs"][-1]["test_accuracy"] is None


def test_divergence_is_an_error(modules):
    module, optimizers = modules
    x, y = blobs()
    with pytest.raises(SpecError, match="diverged.*smaller learning rate"):
        train(module, optimizers, x * 1e3, y, epochs=3, optimizer="sgd", lr=1e300)


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
])
def test_accuracy_kind(loss, y, kind):
    assert accuracy_kind(loss, y) == kind


def test_accuracy():
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), "argmax") == 0.5
    assert accuracy(np.array([[0.7], [0.2]]), np.array([[1.0], [0.0]]), "threshold") == 1.0
    assert accuracy(np.array([[0.7]]), np.array([[0.3]]), None) is None


def test_parse_element():
    shapes = {"W1": (2, 4), "b1": (2,)}
    assert parse_element("W1[1,3]", shapes) == ("W1", (1, 3))
    assert parse_element(" b1[ 1 ] ", shapes) == ("b1", (1,))
    for bad in ("W1[2,0]", "W1[0]", "b1[0,0]", "W2[0,0]", "W1(0,0)", "W1[-1,0]"):
        with pytest.raises(SpecError, match="W1 \\(2, 4\\), b1 \\(2,\\)"):
            parse_element(bad, shapes)


# ---------------------------------------------------------------- the acceptance run


def test_digits_reaches_95_percent_with_adam():
    pytest.importorskip("sklearn")
    from derive.data import check_width, load
    began = time.perf_counter()
    net = load_spec(DIGITS_SPEC)
    x, y = load("digits", n_outputs=10, loss=net.loss)
    check_width(x, net.inputs, "digits")
    module, optimizers = fresh_modules(net)
    _, metrics = train(module, optimizers, x, y, epochs=20, batch_size=32, optimizer="adam", seed=0)
    seconds = time.perf_counter() - began
    last = metrics["epochs"][-1]
    print(f"digits 64-32-10 tanh/softmax, adam, 20 epochs: test accuracy {last['test_accuracy']:.4f}, "
          f"{metrics['seconds']:.2f} s training, {seconds:.2f} s in all")
    assert last["test_accuracy"] >= 0.95
    assert seconds < 60
