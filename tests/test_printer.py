"""Golden strings: how the printer spells each construct."""
import pytest
import sympy as sp

from codegen.printer import NumPyPrinter, print_numpy

z, a, y = sp.symbols("z1 a1 y", real=True)

GOLDEN = [
    (sp.tanh(z), "np.tanh(z1)"),
    (sp.Max(z, 0), "np.maximum(z1, 0)"),
    (sp.Max(0, z), "np.maximum(z1, 0)"),
    (sp.Heaviside(z, 0), "(z1 > 0)"),
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
