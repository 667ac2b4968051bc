"""Every independent problem of a spec is reported in one run, one line each; a problem that makes the
checks after it meaningless stops there."""
import pytest

from derive.errors import SpecError
from derive.spec import Dense, Network, parse_spec

GOOD = """name = "tiny"
inputs = 3
loss = "mse"

[[layers]]
units = 2
activation = "tanh"

[[layers]]
units = 1
activation = "identity"
"""


def problems(text, source="net.toml") -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source)
    e = caught.value
    lines = [str(one) for one in e.errors]                    # each problem is a line of its own
    assert all(line.startswith(source + ": ") and "\n" not in line for line in lines), lines
    assert all(one.fix for one in e.errors)
    assert "\n" not in str(e) and str(e).startswith(lines[0])  # the message stays one line: the first problem
    if len(lines) > 1:
        assert str(e).endswith(f" [and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''}: see .errors]")
    return e


def test_a_typo_in_the_second_layer_does_not_hide_behind_one_in_the_first():
    e = problems(GOOD.replace('"tanh"', '"tanhh"').replace('"identity"', '"identiy"'))
    assert [one.where for one in e.errors] == ["line 7, layers[1].activation", "line 11, layers[2].activation"]
    assert "did you mean 'tanh'?" in e.errors[0].fix and "did you mean 'identity'?" in e.errors[1].fix


def test_the_exception_stays_one_spec_error_with_the_first_problem_s_fields():
    e = problems(GOOD.replace("inputs = 3", "inputs = 0").replace('"mse"', '"msee"'))
    assert isinstance(e, ValueError) and len(e.errors) == 2
    assert (e.source, e.where) == ("net.toml", "line 2, inputs")
    assert e.what == e.errors[0].what and e.fix == e.errors[0].fix
    assert "unknown loss 'msee'" in str(e.errors[1])


def test_independent_problems_of_every_kind_are_reported_in_file_order():
    text = GOOD.replace('name = "tiny"', 'name = "my-net"').replace("inputs = 3", "inputs = 3\nl2 = -1") \
        .replace('activation = "tanh"', 'activation = "tanh"\nbeta = 2') \
        .replace('activation = "identity"', 'activation = "leaky_relu"\nalpha = "big"')
    e = problems(text)
    assert [one.where.split(", ")[1] for one in e.errors] == ["name", "l2", "layers[1].beta", "layers[2].alpha"]
    lines = [int(one.where.split()[1].rstrip(",")) for one in e.errors]
    assert lines == sorted(lines)


def test_a_misspelt_key_is_not_also_reported_missing():
    e = problems(GOOD.replace("units = 2", "unit = 2").replace("inputs = 3", "inpts = 3"))
    assert [one.what for one in e.errors] == ["unknown key 'inpts'", "unknown key 'unit' in a layer"]


def test_missing_keys_are_one_problem():
    e = problems('name = "tiny"\n')
    assert len(e.errors) == 1 and "missing key 'inputs' (and 'loss', 'layers')" in str(e)


def test_the_other_keys_are_checked_when_a_required_one_is_missing():
    e = problems(GOOD.replace('loss = "mse"\n', "").replace('"tanh"', '"tanhh"'))
    assert ["unknown activation 'tanhh'", "missing key 'loss'"] == [one.what for one in e.errors]   # no line: last


@pytest.mark.parametrize("text, first", [
    ("name = tiny\n[[", "not valid TOML"),                     # not TOML: nothing else can be read
    (GOOD.replace('"identity"', '"softmaks"').replace('"mse"', '"cce"'), "unknown activation 'softmaks'"),
    (GOOD.replace("units = 1", "units = 0").replace('"mse"', '"sparse_cce"'), "units must be"),
])
def test_a_problem_that_makes_later_checks_meaningless_stops_there(text, first):
    """A pairing (cce needs a softmax output) is not judged on an output layer that is itself wrong."""
    e = problems(text)
    assert len(e.errors) == 1 and first in e.what, str(e)


def test_the_python_api_reports_every_problem_too():
    with pytest.raises(SpecError) as caught:
        Network("net", 3, [Dense(0, "relu"), Dense(2, "sigmoidd")], loss="mse")
    assert [one.where for one in caught.value.errors] == ["layers[1].units", "layers[2].activation"]


def test_dependent_checks_run_once_the_rest_is_right():
    e = problems(GOOD.replace('"mse"', '"cce"'))
    assert len(e.errors) == 1 and "cce needs a softmax output layer" in e.what


def test_one_problem_keeps_its_single_line_message():
    e = problems(GOOD.replace('"tanh"', '"tanhh"'))
    assert e.errors == (e,) and "\n" not in str(e)


def test_combining_keeps_every_problem_of_every_error():
    a, b = problems(GOOD.replace('"tanh"', '"x1"').replace('"identity"', '"x2"')), problems(GOOD.replace("3", "0"))
    both = SpecError.of([a, b])
    assert both.errors == a.errors + b.errors and both.where == a.where
    assert SpecError.of([b]) is b


def test_the_message_of_many_problems_stays_within_the_length_limit():
    from derive.errors import MAX_MESSAGE
    long = SpecError("net.toml", "name", "x" * 1000, "fix it")
    e = SpecError.of([long, SpecError("net.toml", "inputs", "bad", "e.g. inputs = 4")])
    assert len(str(e)) == MAX_MESSAGE and str(e).endswith(" [and 1 more problem: see .errors]")
