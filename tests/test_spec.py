"""Spec validation: every error names the file, the line or key, what was wrong and the fix; unusual but
workable pairings warn (one line) instead; the Python API is checked by the same code."""
import os
import warnings

import pytest

from derive.errors import SpecError, SpecWarning, one_line
from derive.spec import MAX_NAME, RESERVED, Dense, Network, load_spec, parse_spec

HEAD = 'name = "{name}"\ninputs = {inputs}\nloss = "{loss}"\n'
LAYER = '\n[[layers]]\nunits = {units}\nactivation = "{activation}"\n{extra}'


def spec(name="net", inputs=3, loss="mse", layers=((2, "relu", ""),)):
    return HEAD.format(name=name, inputs=inputs, loss=loss) + "".join(
        LAYER.format(units=u, activation=a, extra=e) for u, a, e in layers)


def error(text, source="net.toml") -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(source + ": ")
    return caught.value


@pytest.mark.parametrize("text, message", [
    (spec(layers=((2, "tanhh", ""),)),
     "net.toml: line 7, layers[1].activation: unknown activation 'tanhh'; did you mean 'tanh'?"),
    (spec(loss="msee"), "net.toml: line 3, loss: unknown loss 'msee'; did you mean 'mse'?"),
    (spec().replace("\n\n", "\noptimiser = 1\n\n", 1), "net.toml: line 4, optimiser: unknown key 'optimiser'; use one of:"),
    (spec() + "optimiser = 1\n", "net.toml: line 8, layers[1].optimiser: unknown key 'optimiser' in a layer"),
    (spec().replace("[[layers]]", "[[layer]]"), "net.toml: line 5, layer: unknown key 'layer'; did you mean 'layers'?"),
    (spec(layers=((2, "relu", "dropout = 0.5\n"),)),
     "net.toml: line 8, layers[1].dropout: unknown key 'dropout' in a layer; a layer takes units, activation, formula"),
    (spec().replace("units", "unit"), "net.toml: line 6, layers[1].unit: unknown key 'unit' in a layer; did you mean 'units'?"),
    (spec(layers=((2, "leaky_relu", "beta = 2\n"),)),
     "net.toml: line 8, layers[1].beta: unknown key 'beta' in a layer; leaky_relu takes alpha"),
    (spec(layers=((0, "relu", ""),)), "net.toml: line 6, layers[1].units: units must be a whole number from 1 to"),
    (spec(layers=((2, "relu", ""), ("true", "relu", ""))), "net.toml: line 10, layers[2].units: units must be"),
    (spec(inputs="4.0"), "net.toml: line 2, inputs: inputs must be a whole number"),
    (spec(layers=((2, "elu", "alpha = -1\n"),)), "net.toml: line 8, layers[1].alpha: alpha must be a number above 0"),
    (spec(name="import"), "net.toml: line 1, name: name 'import' is a Python keyword"),
    (spec(name="forward"), "net.toml: line 1, name: name 'forward' is reserved"),
    (spec(name="json"), "net.toml: line 1, name: name 'json' is reserved"),
    (spec(name="OS"), "net.toml: line 1, name: name 'OS' is reserved"),
    (spec(name="a-b"), "net.toml: line 1, name: name 'a-b' is not a Python identifier"),
    (spec(loss="cce", layers=((3, "relu", ""),)),
     "net.toml: line 3, loss: cce needs a softmax output layer, the last layer is relu; "
     'set activation = "softmax" on the last layer, or use loss = "mse"'),
    (spec(loss="sparse_cce", layers=((3, "sigmoid", ""),)), "net.toml: line 3, loss: sparse_cce needs a softmax output"),
    (spec(loss="bce", layers=((1, "tanh", ""),)),
     "net.toml: line 3, loss: bce needs outputs in (0, 1), but tanh can leave that range"),
    (spec(layers=((2, "mine", 'formula = "x +* 2"\n'),)), "net.toml: line 8, layers[1].formula: invalid syntax"),
    (spec(layers=((2, "mine", 'formula = "log(x)"\n'),)),
     "net.toml: line 8, layers[1].formula: 'log(x)' is not a finite real number at x = -3"),
    (spec(layers=((2, "relu", 'formula = "x"\n'),)),
     "net.toml: line 7, layers[1].activation: 'relu' is a built-in activation and cannot take a formula"),
    (spec(inputs=100_000, layers=((2000, "relu", ""),)), "net.toml: layers: the network has 200,002,000 weights"),
    ("", "net.toml: name: missing key 'name'"),
    ('name = "x"\nname = "y"\n', "net.toml: not valid TOML (Cannot overwrite a value (at line 2"),
])
def test_message_names_file_place_problem_and_fix(text, message):
    e = error(text)
    assert str(e).startswith(message), str(e)
    assert e.fix


def test_keys_and_values_with_control_characters_stay_on_one_line():
    e = error(spec() + '"a\\nb\\u202e" = 1\n')
    assert "a\\nb\\u202e" in str(e)


def test_name_length_limit():
    parse_spec(spec(name="n" * MAX_NAME))
    assert "longer than" in str(error(spec(name="n" * (MAX_NAME + 1))))


def test_reserved_names_cover_the_module_api_and_neighbours():
    assert {"forward", "backward", "loss", "predict", "init_params", "np", "math", "optimizers", "os", "sys",
            "conftest", "nul"} <= RESERVED
    for name in ("_loss", "__init__", "_private"):
        assert "reserved" in str(error(spec(name=name)))


def test_python_api_is_validated_by_the_same_code():
    with pytest.raises(SpecError, match=r"^<python>: layers\[2\]\.units: units must be"):
        Network("net", 3, [Dense(2, "relu"), Dense(-1, "sigmoid")], loss="mse")
    with pytest.raises(SpecError, match=r"^<python>: name: name 'class' is a Python keyword"):
        Network("class", 3, [Dense(2, "relu")], loss="mse")
    with pytest.raises(SpecError, match="custom activation name 'my act'"):
        Network("net", 3, [Dense(2, "my act", formula="x*x")], loss="mse")
    with pytest.raises(SpecError, match="did you mean 'sigmoid'"):
        Network("net", 3, [Dense(2, "sigmod")], loss="mse")


def test_source_with_control_characters_is_refused():
    """The spec's file name goes into the generated header comment: a newline there would be code."""
    with pytest.raises(SpecError, match="control characters") as caught:
        parse_spec(spec(), "x\nimport os\n.toml")
    assert "\n" not in str(caught.value)


def test_one_line_escapes_and_truncates():
    assert one_line("a\nb\r\x00\u2028c") == "a\\nb\\r\\x00\\u2028c"
    assert len(one_line("x" * 10_000)) == 400
    assert str(SpecError("f\n.toml", "k\ney", "what\nnow", "fix\n")).count("\n") == 0


@pytest.mark.parametrize("loss, activation, units, says", [
    ("mse", "softmax", 3, "mse on a softmax output"),
    ("mae", "softmax", 3, "mae on a softmax output"),
    ("bce", "softmax", 3, "bce on a softmax output"),
])
def test_unusual_pairings_warn_in_one_line(loss, activation, units, says):
    with pytest.warns(SpecWarning) as record:
        net = parse_spec(spec(loss=loss, layers=((4, "relu", ""), (units, activation, ""))), "odd.toml")
    assert net.loss == loss
    (w,) = [w for w in record if w.category is SpecWarning]
    assert str(w.message).startswith("odd.toml: line 3, loss: " + says) and "\n" not in str(w.message)


def test_a_step_layer_warns_that_nothing_below_it_trains():
    with pytest.warns(SpecWarning, match=r"layers\[2\]\.activation: step has zero derivative, so layers 1..2"):
        Network("net", 3, [Dense(2, "relu"), Dense(2, "step"), Dense(1, "identity")], loss="mse")


def test_the_examples_load_without_warnings():
    from pathlib import Path
    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        for path in examples:
            load_spec(path)


def test_load_spec_reads_regular_files_only(tmp_path):
    for path, says in [(tmp_path / "missing.toml", "no such file"), (tmp_path, "is a directory"),
                       (os.devnull, "not a regular file")]:
        with pytest.raises(SpecError, match=says):
            load_spec(path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec(fifo)                            # opening it would block until a writer came
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 1_000_001)
    with pytest.raises(SpecError, match="larger than"):
        load_spec(big)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + spec().encode())
    assert load_spec(path).name == "net"


def test_parse_spec_matches_load_spec(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(spec(layers=((4, "mish", 'formula = "x*tanh(log(1 + exp(x)))"\n'), (2, "sigmoid", ""))))
    assert load_spec(path) == parse_spec(path.read_text(), str(path))
