"""Hostile values through the Python API: subclasses of int, float and str whose repr, str or
format is code. What the generators print is the validated value, never the object's own text."""
import pytest

from codegen.document import render_document
from codegen.render import generate_module
from derive import Dense, Network
from derive.errors import SpecError

CODE = '__import__("os").system("touch PWNED") or 3'


class EvilInt(int):
    def __repr__(self):
        return CODE

    __str__ = __repr__

    def __format__(self, spec):
        return CODE

    def __int__(self):
        return 7

    def __index__(self):
        return 7


class EvilFloat(float):
    def __repr__(self):
        return CODE

    __str__ = __repr__

    def __format__(self, spec):
        return CODE

    def __float__(self):
        return 2.0

    def __sympy__(self):
        return True


class EvilStr(str):
    def __repr__(self):
        return CODE

    __str__ = __repr__

    def __format__(self, spec):
        return CODE

    def isidentifier(self):
        return True

    def isprintable(self):
        return True

    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class EvilDense(Dense):
    @property
    def formula_text(self):
        return CODE


def _nets():
    plain = Network("n", 3, [Dense(2, "leaky_relu", alpha=0.1), Dense(2, "mish", formula="x*tanh(softplus(x))"),
                             Dense(1, "sigmoid")], loss="bce", source="a.toml")
    evil = Network(EvilStr("n"), EvilInt(3),
                   [Dense(EvilInt(2), EvilStr("leaky_relu"), alpha=EvilFloat(0.1)),
                    EvilDense(EvilInt(2), EvilStr("mish"), formula=EvilStr("x*tanh(softplus(x))")),
                    Dense(EvilInt(1), "sigmoid")], loss=EvilStr("bce"), source=EvilStr("a.toml"))
    return plain, evil


def test_subclass_values_are_copied_to_their_exact_builtin_type():
    _, evil = _nets()
    assert type(evil.name) is str and type(evil.inputs) is int and type(evil.loss) is str
    assert type(evil.source) is str
    for layer in evil.layers:
        assert type(layer) is Dense and type(layer.units) is int and type(layer.activation) is str
        assert all(type(v) in (int, float) for v in layer.params.values())
    assert type(evil.layers[1].formula) is str and evil.sizes == [3, 2, 2, 1]


def test_generated_module_and_documents_print_values_not_objects():
    plain, evil = _nets()
    module = generate_module(evil)
    assert "system" not in module and "__import__" not in module
    assert module == generate_module(plain)
    for markdown in (False, True):
        doc = render_document(evil, markdown=markdown)
        assert "system" not in doc and doc == render_document(plain, markdown=markdown)


def test_a_subclass_cannot_slip_an_invalid_value_past_validation():
    """EvilStr claims to be an identifier; its real characters are checked."""
    with pytest.raises(SpecError, match="not a Python identifier"):
        Network(EvilStr("not an identifier; import os"), 3, [Dense(1, "sigmoid")], loss="bce")
    with pytest.raises(SpecError, match="unknown loss"):
        Network("n", 3, [Dense(1, "sigmoid")], loss=EvilStr("anything"))
