"""gradcheck names each hand-written mistake in tests/mistakes/ with the right sentence."""
from pathlib import Path

import pytest

from conftest import spec_warnings_expected
from derive.gradcheck import gradcheck
from derive.spec import Dense, Network
from derive.verify import read_module

MISTAKES = sorted((Path(__file__).parent / "mistakes").glob("[0-9]*.py"))


def network(spec: dict, name="corpus_net") -> Network:
    layers = [Dense(units, act, **(extra[0] if extra else {})) for units, act, *extra in spec["layers"]]
    with spec_warnings_expected("slow_softmax"):      # mistakes made on a softmax + mse network, on purpose
        return Network(name, spec["inputs"], layers, loss=spec["loss"])


def test_the_corpus_has_at_least_15_mistakes():
    assert len(MISTAKES) >= 15


@pytest.mark.parametrize("path", MISTAKES, ids=[p.stem for p in MISTAKES])
def test_mistake_is_diagnosed(path, build_module):
    candidate = read_module(path)
    net = network(candidate.SPEC)
    report = gradcheck(net, candidate, build_module(net))
    for param in net.param_shapes():
        finding = next(f for f in report.findings if f.param == param)
        if param in candidate.EXPECT:
            assert not finding.ok and candidate.EXPECT[param] in finding.sentence, report.text()
        else:
            assert finding.ok, report.text()
