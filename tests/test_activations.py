"""Every activation: SymPy's derivative matches finite differences, and rewritten forms hold exactly."""
import mpmath
import pytest
import sympy as sp

from derive.activations import ACTIVATIONS, softmax_instance
from derive.elementwise import derive_elementwise
from derive.naming import A, X
from derive.verify import evaluate

ELEMENTWISE = sorted(n for n, a in ACTIVATIONS.items() if not a.vector)
POINTS = [-3.1, -1.2, -0.4, 0.3, 0.9, 2.7]     # away from kinks at 0


def _value(expr, x):
    with mpmath.workdps(30):
        return evaluate(expr, {X: mpmath.mpf(x)})


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_finite_differences(name):
    d = derive_elementwise(ACTIVATIONS[name].bind())
    for x in POINTS:
        with mpmath.workdps(30):
            h = mpmath.mpf("1e-10")
            fd = (_value(d.f, x + h) - _value(d.f, x - h)) / (2 * h)
            assert abs(_value(d.fprime, x) - fd) < 1e-12, (name, x)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_output_form_is_the_derivative(name):
    """Where f' was rewritten in a = f(x), the rewrite equals f' exactly (symbolically and at points)."""
    d = derive_elementwise(ACTIVATIONS[name].bind())
    if d.fprime_a is None:
        pytest.skip(f"{name}' has no form in a = f(x)")
    assert not d.fprime_a.has(X)
    assert sp.simplify(d.fprime_a.subs(A, d.f) - d.fprime) == 0
    for x in POINTS:
        a = _value(d.f, x)
        with mpmath.workdps(30):
            assert abs(evaluate(d.fprime_a, {A: a}) - _value(d.fprime, x)) < 1e-25


def test_known_rewrites_are_found():
    """The identities the seeds quote come out of the derivation (independent, hand-typed references)."""
    assert sp.expand(derive_elementwise(ACTIVATIONS["sigmoid"].bind()).fprime_a - A * (1 - A)) == 0
    assert sp.expand(derive_elementwise(ACTIVATIONS["tanh"].bind()).fprime_a - (1 - A**2)) == 0
    assert derive_elementwise(sp.exp(X)).fprime_a == A


@pytest.mark.parametrize("name, at, expected", [("relu", 0, 0), ("leaky_relu", 0, sp.Rational(1, 100)),
                                                ("step", 0, 0), ("sign", 0, 0), ("step", 1, 0), ("sign", -1, 0)])
def test_kink_conventions(name, at, expected):
    d = derive_elementwise(ACTIVATIONS[name].bind())
    assert d.fprime.subs(X, at) == expected


def test_parameters_bind():
    f = ACTIVATIONS["leaky_relu"].bind(alpha=0.2)
    assert f.subs(X, -1) == sp.Rational(-1, 5)
    assert ACTIVATIONS["swish"].bind(beta=2.0).has(sp.exp(-2 * X))


def test_softmax_jacobian_matches_finite_differences():
    z = sp.symbols("z1:4", real=True)
    p = softmax_instance(list(z))
    point = {z[0]: sp.Rational(3, 10), z[1]: sp.Rational(-7, 10), z[2]: sp.Rational(12, 10)}
    for i in range(3):
        for j in range(3):
            exact = sp.N(sp.diff(p[i], z[j]).subs(point), 30)
            h = sp.Rational(1, 10**12)
            fd = sp.N((p[i].subs({**point, z[j]: point[z[j]] + h}) - p[i].subs({**point, z[j]: point[z[j]] - h})) / (2 * h), 30)
            assert abs(exact - fd) < 1e-15
    # and sums to one
    assert sp.simplify(sum(p) - 1) == 0
