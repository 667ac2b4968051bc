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


def _zero_everywhere(expr) -> bool:
    """expr == 0 for every real x: simplified on each piece of the line where it is one formula."""
    e = sp.piecewise_fold(expr.rewrite(sp.Piecewise))
    pairs = e.as_expr_set_pairs(sp.S.Reals) if isinstance(e, sp.Piecewise) else [(e, sp.S.Reals)]
    return all(sp.simplify(value) == 0 for value, _ in pairs)


def _same_a_different_slope(d):
    """Two points x1, x2 with f(x1) == f(x2) and f'(x1) != f'(x2), so that no g has f' = g(f): one on
    each side of a stationary point of f near x = -1 (swish's and gelu's minimum). None if not found."""
    with mpmath.workdps(30):
        def f(x):
            return evaluate(d.f, {X: x})

        def fp(x):
            return evaluate(d.fprime, {X: x})

        try:
            x0 = mpmath.findroot(fp, mpmath.mpf(-1))
            x1 = x0 - 1
            x2 = mpmath.findroot(lambda x: f(x) - f(x1), (x0 + mpmath.mpf("1e-6"), x0 + 3), solver="illinois")
        except (ValueError, ZeroDivisionError):
            return None
        if abs(f(x2) - f(x1)) < 1e-20 and abs(fp(x2) - fp(x1)) > 1e-3:
            return x1, x2
    return None


# The entries with a non-constant f' and no form in a: not one-to-one, with f' differing at equal a.
NO_FORM = {"gelu", "gelu_tanh", "swish"}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_output_form_is_the_derivative(name):
    """Where f' was rewritten in a = f(x), the rewrite equals f' exactly (symbolically, piece by piece, at
    points and at the kink x = 0); where it was not, f' is a constant or the entry is in NO_FORM."""
    d = derive_elementwise(ACTIVATIONS[name].bind())
    if d.fprime_a is None:
        assert not d.fprime.has(X) or name in NO_FORM, f"{name}' = {d.fprime} has no form in a = f(x)"
        return
    assert name not in NO_FORM, f"{name}' has the form {d.fprime_a}: take it out of NO_FORM"
    assert not d.fprime_a.has(X)
    assert _zero_everywhere(d.fprime_a.subs(A, d.f) - d.fprime)
    for x in POINTS:
        a = _value(d.f, x)
        with mpmath.workdps(30):
            assert abs(evaluate(d.fprime_a, {A: a}) - _value(d.fprime, x)) < 1e-25
    assert d.fprime_a.subs(A, d.f.subs(X, 0)) == d.fprime.subs(X, 0)     # the kink convention, in a too


@pytest.mark.parametrize("name", sorted(NO_FORM))
def test_no_form_in_a_exists(name):
    d = derive_elementwise(ACTIVATIONS[name].bind())
    assert d.fprime_a is None
    assert _same_a_different_slope(d) is not None


def test_the_no_form_witness_and_the_proof_can_fail():
    """The two checks above are not vacuous: sigmoid (one-to-one) has no such pair, a wrong elu form fails."""
    assert _same_a_different_slope(derive_elementwise(ACTIVATIONS["sigmoid"].bind())) is None
    elu = derive_elementwise(ACTIVATIONS["elu"].bind())
    assert _zero_everywhere(elu.fprime_a.subs(A, elu.f) - elu.fprime)
    wrong = sp.Piecewise((1, A > 0), (A + 2, True))
    assert not _zero_everywhere(wrong.subs(A, elu.f) - elu.fprime)


@pytest.mark.parametrize("formula, has_form", [
    ("max(x, 0.2*x)", True),        # leaky relu by max: the sign of a is the sign of x
    ("min(x, 0)", False),           # a = 0 at the kink (f' = 1, left) and beyond it (f' = 0)
    ("abs(x)", False),              # a = 1 at x = -1 and 1, f' = -1 and 1
    ("min(max(x, 0), 6)", False),   # relu6: a = 6 at the kink (f' = 1) and beyond it (f' = 0)
    ("max(x, 0) - 1", False),       # a > -1 is x > 0 exactly, but not in floating point: 1e-20 - 1 == -1
])
def test_output_forms_of_piecewise_formulas(formula, has_form):
    """A form in a is taken only where a tells the pieces apart, at the kink too, and in floating point."""
    from derive.formula import parse_formula
    d = derive_elementwise(parse_formula(formula))
    assert (d.fprime_a is not None) == has_form, d.fprime_a
    if has_form:
        assert _zero_everywhere(d.fprime_a.subs(A, d.f) - d.fprime)
        assert d.fprime_a.subs(A, d.f.subs(X, 0)) == d.fprime.subs(X, 0)


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
