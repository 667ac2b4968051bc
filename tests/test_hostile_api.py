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


# --- validation gaps (issue 11, item 8) ----------------------------------------------------------------

SINGULAR = {"1/x": "x = 0", "sin(x)/x": "x = 0", "log(abs(x))": "x = 0", "tan(x + pi/2)": "pole",
            "1/(x - 0.5)": "x = 1/2", "tan(x)": "pole", "x/(x**2 - 2*x + 0.9)": "x = ", "x**(1/3)": "x = -3",
            "sqrt(x - 0.1)": "x = -3", "x/(exp(x) - 1)": "cannot be shown", "exp(1/x)": "x = 0",
            "1/(x**5 - 3*x + 7)": "x = -1.64169", "log(x**2 - 1)": "x = ", "1/sqrt(x**2)": "x = 0"}
DEFINED = ["x*tanh(log(1 + exp(x)))", "x/(1 + abs(x))", "tan(sin(tan(sin(tan(sin(2*x))))))", "1/(x**2 - 2*x + 2)",
           "sqrt(x**2 + 1)", "log(cosh(x))", "sqrt(abs(x))", "exp(-x**2)", "1/(sin(x) + cos(3*x) + 2.5)",
           "tan(1/(1 + x**2))", "log(1 + x**2)", "x*sigmoid(x)", "0.5*x*(1 + erf(x/sqrt(2)))", "max(x, 0.1*x)"]


# Function calls (conftest.count_calls), not seconds: at most 18 thousand measured (1/(x**5 - 3*x + 7)).
CALLS_SINGULAR = 200_000


@pytest.mark.parametrize("formula", SINGULAR)
def test_singular_formulas_are_refused_symbolically(formula):
    from conftest import count_calls
    error, calls = count_calls(Network, "n", 2, [Dense(2, "custom", formula=formula), Dense(1, "identity")],
                               loss="mse", source="s.toml", expect=SpecError)
    assert isinstance(error, SpecError), error
    assert calls < CALLS_SINGULAR
    message = str(error)
    assert "s.toml" in message and "layers[1].formula" in message and SINGULAR[formula] in message, message


@pytest.mark.parametrize("formula", DEFINED)
def test_formulas_defined_everywhere_are_accepted(formula):
    from derive.formula import parse_formula, undefined_where
    assert undefined_where(parse_formula(formula)) is None
    Network("n", 2, [Dense(2, "custom", formula=formula), Dense(1, "identity")], loss="mse")


def test_a_pole_between_the_finiteness_probes_is_found():
    """x/(x**2 - 2x + 0.9) has poles at 1 -+ sqrt(0.1): every probe point (+-0.25, +-1, +-3) misses them."""
    from derive.formula import parse_formula, undefined_where
    from derive.spec import PROBES, _value
    f = parse_formula("x/(x**2 - 2*x + 0.9)")
    assert all(abs(_value(f, x)) < 100 for x in PROBES)
    assert "x = 0.683772" in undefined_where(f)


@pytest.mark.parametrize("formula", ["x*x  # a comment", "x #-*- coding: utf-7 -*-", "x#"])
def test_formula_comments_are_refused(formula):
    with pytest.raises(SpecError, match="comment"):
        Network("n", 2, [Dense(2, "custom", formula=formula)], loss="mse")


@pytest.mark.parametrize("name", ["sitecustomize", "usercustomize", "pytest", "numpy", "sympy", "jinja2"])
def test_names_that_shadow_site_hooks_or_installed_modules_are_refused(name):
    with pytest.raises(SpecError, match="reserved|installed module"):
        Network(name, 2, [Dense(1, "sigmoid")], loss="bce")


def test_integer_params_do_not_truncate_x(build_module):
    import numpy as np
    module = build_module(Network("intparams", 1, [Dense(1, "identity")], loss="mse"))
    params = {"W1": np.ones((1, 1), np.int64), "b1": np.zeros(1, np.int64)}
    for call in (lambda: module.predict(params, [[0.9]]), lambda: module.loss(params, [[0.9]], [[0.0]]),
                 lambda: module.sgd_step(params, [[0.9]], [[0.0]], 0.1)):
        with pytest.raises(ValueError, match="float arrays"):
            call()
    floats = {k: v.astype(np.float64) for k, v in params.items()}
    assert module.predict(floats, [[0.9]])[0, 0] == 0.9
