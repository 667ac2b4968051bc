"""The printer's stability rewrites (golden strings) and its vectorised erf/erfc against mpmath."""
import mpmath
import numpy as np
import pytest
import sympy as sp

from codegen.printer import HELPERS, NumPyPrinter, print_numpy, stabilize

z, a, y = sp.symbols("z1 a1 y", real=True)

GOLDEN = [
    # exp(u) - 1 and 1 - exp(u), with any coefficient: expm1 (softplus' = 1 - exp(-a), ELU)
    (sp.exp(z) - 1, "np.expm1(z1)"),
    (1 - sp.exp(-a), "-np.expm1(-a1)"),
    (3 * sp.exp(z) - 3, "3*np.expm1(z1)"),
    (sp.exp(z) + 1, "np.exp(z1) + 1"),                              # not a complement: unchanged
    # 1 +- erf(u): erfc, accurate where erf(u) is near -1 (GELU's left tail)
    (1 + sp.erf(z), "_erfc(-z1)"),
    (1 - sp.erf(z), "_erfc(z1)"),
    (z * (sp.erf(sp.sqrt(2) * z / 2) / 2 + sp.S.Half), "0.5*z1*_erfc(-0.7071067811865476*z1)"),
    (sp.erf(z), "_erf(z1)"),
    # np.where computes every branch: each branch's exp sees only its own region
    (sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)), "np.where(z1 > 0, z1, np.expm1(np.minimum(z1, 0)))"),
    (sp.Piecewise((1, z > 0), (sp.Rational(1, 2) * sp.exp(z), True)),
     "np.where(z1 > 0, 1, 0.5*np.exp(np.minimum(z1, 0)))"),
    (sp.Piecewise((sp.exp(-z), z >= 1), (z, True)), "np.where(z1 >= 1, np.exp(-np.maximum(z1, 1)), z1)"),
    (sp.Piecewise((sp.exp(z), z < -1), (sp.exp(2 * z), z < 0), (z, True)),
     "np.where(z1 < -1, np.exp(np.minimum(z1, -1)), np.where(z1 < 0, np.exp(2*np.minimum(np.maximum(z1, -1), 0)), z1))"),
    (sp.Piecewise((z, z > 0), (z / 10, True)), "np.where(z1 > 0, z1, 0.1*z1)"),   # no exp: untouched
    # number-only parts are Python float literals (np.sqrt(2) is a float64 scalar: it upcasts float32)
    (sp.sqrt(2) * z, "1.4142135623730951*z1"),
    (sp.sqrt(2), "1.4142135623730951"),
    (sp.exp(-sp.Rational(1, 2)) + z, "z1 + 0.6065306597126334"),
    (sp.sqrt(2 / sp.pi) * z, "0.7978845608028654*z1"),
    # the sigmoid/softplus forms that cannot overflow
    (1 / (1 + sp.exp(-z)), "_sigmoid(z1)"),
    (sp.log(1 + sp.exp(z)), "np.logaddexp(0, z1)"),
    (sp.exp(-z) / (1 + sp.exp(-z)) ** 2, "_sigmoid(-z1)*_sigmoid(z1)"),
]


@pytest.mark.parametrize("expr, text", GOLDEN, ids=[g[1] for g in GOLDEN])
def test_golden(expr, text):
    assert print_numpy(expr) == text


def test_stabilize_is_idempotent():
    for expr, text in GOLDEN:
        assert print_numpy(stabilize(expr)) == text


def test_erfc_records_the_erf_helper_it_calls():
    p = NumPyPrinter()
    p.doprint(1 + sp.erf(z))
    assert p.helpers == {"_erfc", "_erf"}


def _helpers(*names):
    namespace = {"np": np}
    for name in names:
        exec(HELPERS[name], namespace)    # trusted text: the printer's own helper source
    return namespace


def _reference(fn, x):
    """mpmath at 30 digits; beyond |x| = 30 the values are 0, 1 or 2 to double precision."""
    if abs(x) > 30:
        return {"erf": float(np.sign(x)), "erfc": 0.0 if x > 0 else 2.0}[fn]
    with mpmath.workdps(30):
        return float(getattr(mpmath, fn)(mpmath.mpf(x)))


GRID = np.concatenate([
    np.linspace(-28, 28, 3001),                                       # every range of Cody's approximation
    np.geomspace(1e-300, 0.5, 150), -np.geomspace(1e-300, 0.5, 150),  # tiny arguments
    [0.46875, np.nextafter(0.46875, 1), np.nextafter(0.46875, 0), 4.0, np.nextafter(4.0, 5),
     26.5, 26.6, 27.0, 27.3, 1e4, -1e4, 1e300, -1e300, 0.0],
])


@pytest.mark.parametrize("fn, tol", [("erf", 1e-15), ("erfc", 2e-15)])
def test_vectorised_erf_matches_mpmath_in_float64(fn, tol):
    f = _helpers("_erf", "_erfc")["_" + fn]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = f(GRID)
    ref = np.array([_reference(fn, x) for x in GRID])
    assert got.dtype == np.float64 and got.shape == GRID.shape
    tiny = np.abs(ref) < 1e-300                 # erfc's deep right tail: subnormal or 0
    rel = np.abs(got[~tiny] - ref[~tiny]) / np.abs(ref[~tiny])
    assert rel.max() < tol, (GRID[~tiny][rel.argmax()], rel.max())
    assert np.all(np.abs(got[tiny]) < 1e-300)


@pytest.mark.parametrize("fn", ["erf", "erfc"])
def test_vectorised_erf_keeps_float32(fn):
    f = _helpers("_erf", "_erfc")["_" + fn]
    x = GRID[np.abs(GRID) < 1e30].astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = f(x)
    assert got.dtype == np.float32
    ref = np.array([_reference(fn, float(v)) for v in x])
    normal = np.abs(ref) > 1e-36
    assert np.max(np.abs(got[normal] - ref[normal]) / np.abs(ref[normal])) < 2e-6


def test_vectorised_erf_special_values():
    ns = _helpers("_erf", "_erfc")
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])
    np.testing.assert_array_equal(ns["_erf"](special), [np.nan, 1.0, -1.0, 0.0, -0.0])
    np.testing.assert_array_equal(ns["_erfc"](special), [np.nan, 0.0, 2.0, 1.0, 1.0])
    assert np.signbit(ns["_erf"](np.array([-0.0])))[0]
    assert ns["_erf"](np.float64(0.5)) == pytest.approx(0.5204998778130465, rel=1e-15)   # scalars work too


def test_erf_helper_does_not_use_math():
    """The old helper mapped math.erf over object arrays; the new one is NumPy throughout."""
    assert "math." not in HELPERS["_erf"] + HELPERS["_erfc"] and "frompyfunc" not in HELPERS["_erf"]


def test_float32_is_kept_by_constant_parts():
    """A constant printed as np.sqrt(2) would turn float32 into float64: printed as a literal, it does not."""
    namespace = {"np": np, "z1": np.ones(3, dtype=np.float32)}
    namespace.update(_helpers("_erf", "_erfc", "_sigmoid"))
    for expr in [sp.sqrt(2) * z, z * (1 + sp.erf(z / sp.sqrt(2))) / 2, sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi),
                 1 / (1 + sp.exp(-z)), sp.log(1 + sp.exp(z))]:
        value = eval(print_numpy(expr), namespace)    # trusted: the printer's output for a fixed expression
        assert value.dtype == np.float32, print_numpy(expr)


SIGMOID_GRID = np.concatenate([np.linspace(-60, 60, 2401), [-1e4, -745.0, -120.0, -88.0, 0.0, 88.0, 1e4]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", [1, 3, 64, 65, 4096], ids=lambda n: f"size{n}")
def test_sigmoid_helper_matches_mpmath_on_both_paths(dtype, size):
    """_sigmoid takes four calls (exp(-logaddexp(0, -z))) for <= 64 elements and a vectorised path
    above. Both keep the dtype, never warn and are accurate relative to the exact value, tails
    included: the short path within a few ulp times |z| (exp of a rounded log), the long one
    within a few ulp."""
    sigmoid = _helpers("_sigmoid")["_sigmoid"]
    x = np.resize(SIGMOID_GRID, (len(SIGMOID_GRID) // size + 1) * size).reshape(-1, size).astype(dtype)
    x = x[:max(1, 2500 // size)]
    with mpmath.workdps(40):
        exact = np.array([[float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in row] for row in x])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = np.stack([sigmoid(row) for row in x])
    assert got.dtype == dtype
    eps = np.finfo(dtype).eps
    allowed = 4 * eps * (1 + np.abs(x.astype(np.float64))) if size <= 64 else np.full(x.shape, 4 * eps)
    normal = exact > np.finfo(dtype).tiny          # leave out results in the subnormal range
    rel = np.abs(got - exact) / np.where(normal, exact, 1)
    assert np.all(rel[normal] <= allowed[normal]), (x[normal][np.argmax(rel[normal] / allowed[normal])])
    assert np.all(got[~normal] <= np.finfo(dtype).tiny)


@pytest.mark.parametrize("size", [3, 4096])
def test_sigmoid_helper_special_values(size):
    sigmoid = _helpers("_sigmoid")["_sigmoid"]
    x = np.resize([np.nan, np.inf, -np.inf, 0.0], size)
    with np.errstate(invalid="ignore"):   # NumPy's logaddexp flags inf - inf inside; the values are right
        got = sigmoid(x)
    expected = np.resize([np.nan, 1.0, 0.0, 0.5], size)
    np.testing.assert_array_equal(got, expected)
    assert sigmoid(np.float64(2.0)) == pytest.approx(0.8807970779778823, rel=1e-15)   # a scalar works too
