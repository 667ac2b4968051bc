"""A SpecWarning no test expects fails the test (pyproject.toml's filterwarnings); the expected ones pass by kind."""
import re

import pytest

from conftest import SPEC_WARNINGS, expects_spec_warning, spec_warnings_expected
from derive.errors import SpecWarning
from derive.spec import Dense, Network

ODD = {  # a network that warns, for each kind of SpecWarning
    "slow_softmax": lambda: Network("w_net", 2, [Dense(3, "softmax")], loss="mse"),
    "softmax_bce": lambda: Network("w_net", 2, [Dense(3, "softmax")], loss="bce"),
    "untrainable": lambda: Network("w_net", 2, [Dense(2, "tanh"), Dense(2, "step"), Dense(1, "identity")],
                                   loss="mse"),
}


def test_an_unexpected_spec_warning_fails_the_test():
    with pytest.raises(SpecWarning, match="has zero derivative"):
        ODD["untrainable"]()


@pytest.mark.parametrize("kind", sorted(ODD))
def test_each_kind_matches_its_warning_and_no_other(kind):
    with pytest.warns(SpecWarning) as record:
        ODD[kind]()
    [message] = [str(w.message) for w in record if w.category is SpecWarning]
    assert {k for k, pattern in SPEC_WARNINGS.items() if re.match(pattern, message, re.I)} == {kind}, message


def test_an_expected_kind_passes_and_the_others_still_fail():
    with spec_warnings_expected("slow_softmax"):
        ODD["slow_softmax"]()
        with pytest.raises(SpecWarning, match="zero derivative"):
            ODD["untrainable"]()


@expects_spec_warning("slow_softmax")
def test_the_mark_lets_its_kind_pass():
    ODD["slow_softmax"]()
    with pytest.raises(SpecWarning, match="as independent"):
        ODD["softmax_bce"]()
