"""Fuzzing spec validation: random TOML documents and mutated example specs give a valid Network or a
one-line SpecError, nothing else, quickly; the networks that pass also derive and render cleanly."""
import datetime
import math
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import count_calls

from derive.activations import ACTIVATIONS
from derive.errors import NnderiveError, SpecError
from derive.losses import LOSSES
from derive.spec import LAYER_KEYS, TOP_KEYS, Network, network_from_dict, parse_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [p.read_text() for p in sorted((ROOT / "examples").glob("*.toml"))]
PARAMS = sorted({s.name for a in ACTIVATIONS.values() for s in a.params})
FAST = 1_000_000   # function calls for one validation, however hostile the input (~45k measured; ~1M is ~1 s
                   # of CPU): a count, not a clock, so a busy CI machine cannot fail it
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- values and documents as tomllib produces them ----------------------------------------------------

words = st.sampled_from(sorted(ACTIVATIONS) + sorted(LOSSES) + list(TOP_KEYS) + list(LAYER_KEYS) + PARAMS
                        + ["mish", "x*tanh(log(1 + exp(x)))", "x", "__import__('os')", "import", "np", "forward",
                           "", "tanhh", "ReLU", "net", "a" * 100])
scalars = st.one_of(
    words, st.text(max_size=30),
    st.integers(-3, 12), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.dates(), st.datetimes(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(words | st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)
keys_top = st.sampled_from(list(TOP_KEYS)) | words | st.text(max_size=10)
keys_layer = st.sampled_from(list(LAYER_KEYS) + PARAMS) | words | st.text(max_size=10)


def mostly(draw, good, bad=values):
    """Usually a plausible value (so validation gets deep), sometimes anything at all."""
    return draw(bad) if draw(st.integers(0, 4)) == 0 else draw(good)


@st.composite
def layer_tables(draw):
    table = {}
    if draw(st.integers(0, 9)):
        table["units"] = mostly(draw, st.integers(-1, 6))
    if draw(st.integers(0, 9)):
        table["activation"] = mostly(draw, st.sampled_from(sorted(ACTIVATIONS) + ["mish", "tanhh"]))
    if draw(st.integers(0, 4)) == 0:
        table["formula"] = mostly(draw, st.sampled_from(["x*tanh(log(1 + exp(x)))", "x**2", "log(x)", "max(x, 0.1*x)",
                                                         "exp(exp(exp(x)))", "x/(1 + abs(x))", "sin(x)*x"]))
    if draw(st.integers(0, 3)) == 0:
        table[draw(st.sampled_from(PARAMS))] = mostly(draw, st.floats(-1, 3))
    if draw(st.integers(0, 4)) == 0:
        table.update(draw(st.dictionaries(keys_layer, values, max_size=2)))
    return table


@st.composite
def documents(draw):
    doc = {}
    if draw(st.integers(0, 19)):
        doc["name"] = mostly(draw, st.sampled_from(["net", "mlp_1", "forward", "os", "_x", "class", "x" * 70]))
    if draw(st.integers(0, 19)):
        doc["inputs"] = mostly(draw, st.integers(-1, 8))
    if draw(st.integers(0, 19)):
        doc["loss"] = mostly(draw, st.sampled_from(sorted(LOSSES)))
    if draw(st.integers(0, 19)):
        doc["layers"] = mostly(draw, st.lists(layer_tables(), min_size=1, max_size=4))
    if draw(st.integers(0, 4)) == 0:
        doc.update(draw(st.dictionaries(keys_top, values, max_size=2)))
    return doc


def check_contract(call):
    """`call` returns a Network or raises a one-line SpecError, with a bounded amount of work."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # SpecWarnings for unusual but valid specs
        net, calls = count_calls(call, expect=SpecError)
    if isinstance(net, SpecError):
        message = str(net)
        assert message and "\n" not in message and "\r" not in message and len(message) <= 400
        assert net.fix or net.what     # says what was wrong (and mostly how to fix it)
        net = None
    assert calls < FAST
    if net is not None:
        assert isinstance(net, Network) and net.name.isidentifier() and net.layers
    return net


@settings(max_examples=250, **SETTINGS)
@given(documents())
def test_random_documents_give_a_network_or_a_spec_error(doc):
    check_contract(lambda: network_from_dict(doc, "fuzz.toml"))


@settings(max_examples=100, **SETTINGS)
@given(values)
def test_any_toml_value_as_a_document_gives_a_spec_error(doc):
    check_contract(lambda: network_from_dict(doc, "fuzz.toml"))


# --- mutated example specs, as text ---------------------------------------------------------------------

LINES = ['name = "fuzzed"', "inputs = 0", "inputs = 3.5", "units = -1", "units = 1e9", 'activation = "softmax"',
         'activation = "mish"', 'formula = "x*x"', 'formula = "__import__(\'os\')"', 'loss = "cce"', 'loss = "bce"',
         "alpha = 0.3", "beta = -1", "[[layers]]", "[layers]", "[extra]", "layers = []", 'name = "forward"',
         "units = 2", "inputs = 2", 'activation = "step"', "\x00", "\ufeff", "= =", '"', "[[", "name = '''x\ny'''"]
TOML_LITERALS = ["0", "-1", "1", "2", "3", "10", "1_000_000_000", "nan", "inf", "-inf", "1.5", "true", "false",
                 '""', '"relu"', '"softmax"', '"sigmoid"', '"mse"', '"x"', "[]", "[1, 2]", "{}", "{ a = 1 }",
                 "1979-05-27", '"\\u0000"', '"\\n"']


@st.composite
def mutated_examples(draw):
    lines = draw(st.sampled_from(EXAMPLES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        kind = draw(st.sampled_from(["value", "value", "value", "line", "delete", "duplicate", "chars", "swap"]))
        if not lines:
            lines = [draw(st.sampled_from(LINES))]
        elif kind == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.sampled_from(TOML_LITERALS))}"
        elif kind == "line":
            lines.insert(i, draw(st.sampled_from(LINES)))
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "chars":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=4)) + lines[i][at:]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + "\n"


@settings(max_examples=400, **SETTINGS)
@given(mutated_examples())
def test_mutated_examples_give_a_network_or_a_spec_error(text):
    check_contract(lambda: parse_spec(text, "mutated.toml"))


@settings(max_examples=100, **SETTINGS)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_bytes_give_a_spec_error(raw):
    check_contract(lambda: parse_spec(raw, "random.toml"))


# --- what passes validation also derives and renders (or fails with a one-line NnderiveError) ----------

@settings(max_examples=15, **SETTINGS)
@given(mutated_examples())
def test_valid_mutants_generate_cleanly(text):
    from codegen.build import module_outputs
    net = check_contract(lambda: parse_spec(text, "mutated.toml"))
    if net is None or max(net.sizes) > 1000:
        return
    try:
        (source,) = module_outputs(net).values()
    except NnderiveError as e:
        assert "\n" not in str(e)
        return
    compile(source, f"{net.name}.py", "exec")   # syntactically valid Python; never executed here
    assert source.startswith("# Code generated by nnderive") and "\n\n\n" in source


def test_examples_are_valid():
    for text in EXAMPLES:
        assert check_contract(lambda: parse_spec(text, "example.toml")) is not None


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.0, 2**63, datetime.date(2000, 1, 1), [], {}, None])
def test_odd_values_in_every_slot(value):
    base = {"name": "net", "inputs": 3, "loss": "mse", "layers": [{"units": 2, "activation": "relu"}]}
    for key in list(base):
        check_contract(lambda: network_from_dict({**base, key: value}, "odd.toml"))
    for key in ("units", "activation", "formula", "alpha"):
        layer = {"units": 2, "activation": "leaky_relu", key: value}
        check_contract(lambda: network_from_dict({**base, "layers": [layer]}, "odd.toml"))
