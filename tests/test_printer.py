"""Golden strings: how the printer spells each construct."""
import pytest
import sympy as sp

from codegen.printer import NumPyPrinter, print_numpy
from derive.nodes import BatchSum, Dot, Like, LogSoftmax, T, Total, UnitSum

z, a, y, g, delta, x = sp.symbols("z1 a1 y g delta1 x", real=True)

GOLDEN = [
    (sp.tanh(z), "np.tanh(z1)"),
    (sp.Max(z, 0), "np.maximum(z1, 0)"),
    (sp.Max(0, z), "np.maximum(z1, 0)"),
    (sp.Heaviside(z, 0), "np.heaviside(z1, 0)"),             # on its own: in z1's dtype
    (g * sp.Heaviside(z, 0), "g*(z1 > 0)"),                  # multiplying an array: a mask
    (-sp.Heaviside(z, 0) * sp.sign(y - a), "-np.sign(-a1 + y)*(z1 > 0)"),   # never -(mask)
    (g * (sp.Heaviside(-z, 1) / 5 + sp.Heaviside(z, 0)), "g*(0.2*np.heaviside(-z1, 1) + np.heaviside(z1, 0))"),
    (Dot(x, T(sp.Symbol("W1", real=True))), "x.dot(W1.T)"),
    (Dot(T(delta), x), "delta1.T.dot(x)"),
    (BatchSum(delta), "ones.dot(delta1) if n > 1 else delta1[0]"),
    (a * (g - UnitSum(a * g)), "a1*(g - (a1*g).sum(axis=1, keepdims=True))"),
    (-Total(a * y), "-np.vdot(a1, y)"),
    (Total(z**2) / 2, "0.5*np.vdot(z1, z1)"),
    (Total(sp.Abs(a - y)), "(np.abs(a1 - y)).sum()"),
    (Like(0, a), "np.zeros_like(a1)"),
    (Like(sp.Rational(1, 2), a), "np.full_like(a1, 0.5)"),
    (LogSoftmax(z), "_log_softmax(z1)"),
    (sp.Piecewise((z, z > 0), (z / 10, True)), "np.where(z1 > 0, z1, 0.1*z1)"),
    (1 / (1 + sp.exp(-z)), "_sigmoid(z1)"),
    (sp.log(1 + sp.exp(z)), "np.logaddexp(0, z1)"),
    (sp.exp(z) - 1, "np.expm1(z1)"),
    (sp.log(1 + z), "np.log1p(z1)"),
    (a * (1 - a), "a1*(1 - a1)"),
    (1 - a**2, "1 - a1**2"),
    (1 / z, "1/z1"),
    (z**-2, "1/z1**2"),
    (sp.sqrt(z), "np.sqrt(z1)"),
    (sp.Rational(1, 2) * (a - y) ** 2, "0.5*(a1 - y)**2"),
    (sp.sign(z), "np.sign(z1)"),
    (sp.Abs(z - y), "np.abs(y - z1)"),
    (sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi), "0.3989422804014327*np.exp(-0.5*z1**2)"),
]


@pytest.mark.parametrize("expr, text", GOLDEN, ids=[g[1] for g in GOLDEN])
def test_golden(expr, text):
    assert print_numpy(expr) == text


def test_no_float_exponents_and_no_reduce():
    text = print_numpy(z**-1 + sp.Max(z, 0) + z**3)
    assert "**(-1.0)" not in text and "reduce" not in text and "**3" in text


def test_helpers_are_recorded():
    p = NumPyPrinter()
    p.doprint(sp.erf(z) + 1 / (1 + sp.exp(-z)))
    assert p.helpers == {"_erf", "_sigmoid"}


def test_sigmoid_ratio_is_rewritten_without_overflow():
    """exp(-z)/(1 + exp(-z))**2 would be inf/inf at z = -1e4."""
    text = print_numpy(sp.exp(-z) / (1 + sp.exp(-z)) ** 2)
    assert "_sigmoid" in text and "np.exp(-z1)" not in text


def test_parameters_are_read_from_params():
    p = NumPyPrinter(params=["W2"])
    assert p.doprint(Dot(delta, sp.Symbol("W2", real=True))) == 'delta1.dot(params["W2"])'


def test_a_mask_factor_stays_a_comparison_in_place():
    assert NumPyPrinter().factor(sp.Heaviside(z, 0)) == "(z1 > 0)"
    assert NumPyPrinter().factor(1 - a**2) == "1 - a1**2"


# --- the array-API printer: the same nodes for any namespace `xp` -----------------------------------

XP_GOLDEN = [
    (sp.tanh(z), "xp.tanh(z1)"),
    (sp.Max(z, 0), "xp.clip(z1, min=0)"),
    (sp.Min(z, a, 1), "xp.clip(xp.minimum(a1, z1), max=1)"),
    (sp.Max(z, a), "xp.maximum(a1, z1)"),
    (g * sp.Heaviside(z, 0), "g*xp.astype(z1 > 0, z1.dtype)"),             # no bool * float in the standard
    (-sp.Heaviside(z, 0) * sp.sign(y - a), "-xp.sign(-a1 + y)*xp.astype(z1 > 0, z1.dtype)"),
    (sp.Heaviside(z, 0), "xp.sign(xp.clip(z1, min=0))"),                   # on its own: z1's dtype, NaN for NaN
    (sp.Heaviside(z, 1), "xp.where(z1 == 0, 1, xp.sign(xp.clip(z1, min=0)))"),
    (Dot(x, T(sp.Symbol("W1", real=True))), "x @ W1.T"),
    (Dot(T(delta), x), "delta1.T @ x"),
    (a * Dot(delta, x), "a1*(delta1 @ x)"),                                 # @ binds like *: bracketed in a product
    (-Dot(delta, x), "-(delta1 @ x)"),
    (Dot(a - y, x), "(a1 - y) @ x"),
    (T(Dot(delta, x)), "(delta1 @ x).T"),
    (Dot(x, Dot(delta, a)), "x @ (delta1 @ a1)"),
    (BatchSum(delta), "xp.sum(delta1, axis=0)"),
    (a * (g - UnitSum(a * g)), "a1*(g - xp.sum(a1*g, axis=1, keepdims=True))"),
    (-Total(a * y), "-xp.sum(a1*y)"),
    (Like(0, a), "xp.zeros_like(a1)"),
    (Like(sp.Rational(1, 2), a), "xp.full_like(a1, 0.5)"),
    (LogSoftmax(z), "_log_softmax(xp, z1)"),
    (1 / (1 + sp.exp(-z)), "_sigmoid(xp, z1)"),
    (sp.erf(z), "_erf(xp, z1)"),
    (sp.log(1 + sp.exp(z)), "xp.logaddexp(0, z1)"),
    (sp.exp(z) - 1, "xp.expm1(z1)"),
    (sp.sqrt(z), "xp.sqrt(z1)"),
    (sp.asinh(z) + sp.atan(z), "xp.asinh(z1) + xp.atan(z1)"),             # the standard's names, not arcsinh
    (sp.Piecewise((z, z > 0), (z / 10, True)), "xp.where(z1 > 0, z1, 0.1*z1)"),
    (sp.Piecewise((z, (z > 0) & (z < 1)), (0, True)), "xp.where(xp.logical_and(z1 > 0, z1 < 1), z1, 0)"),
]


@pytest.mark.parametrize("expr, text", XP_GOLDEN, ids=[g[1] for g in XP_GOLDEN])
def test_xp_golden(expr, text):
    from codegen.printer_xp import print_xp
    assert print_xp(expr) == text


def test_xp_mask_in_place_and_parameters():
    from codegen.printer_xp import ArrayAPIPrinter
    p = ArrayAPIPrinter(params=["W2"])
    # `u *= mask`: the comparison, cast by _as_factor only where the namespace cannot multiply by a bool
    assert p.factor(sp.Heaviside(z, 0)) == "_step(xp, z1)"
    assert p.factor(sp.Heaviside(z, 1)) == "_as_factor(xp, z1 >= 0, z1)"
    assert p.factor(z < 1) == "_as_factor(xp, z1 < 1, z1)"
    assert p.shown(sp.Heaviside(z, 0)) == "z1 > 0"
    assert p.helpers == {"_as_factor", "_step"}
    # inside a product the standard's cast stays
    assert p.doprint(delta * sp.Heaviside(z, 0)) == "delta1*xp.astype(z1 > 0, z1.dtype)"
    assert p.doprint(Dot(delta, sp.Symbol("W2", real=True))) == 'delta1 @ params["W2"]'
    p.helpers.clear()
    p.doprint(1 + sp.erf(z))
    assert p.helpers == {"_erfc", "_erf"}
