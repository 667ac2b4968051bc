"""ACTIVATIONS: name -> the activation's SymPy formula in x; everything else is derived from it."""
from dataclasses import dataclass, field
from fractions import Fraction

import sympy as sp

from .naming import X

ALPHA = sp.Symbol("alpha", positive=True)
BETA = sp.Symbol("beta", positive=True)

# softmax is the one activation that acts on a whole layer: x_k over K units.
K = sp.Symbol("K", integer=True, positive=True)
_k, _j = sp.symbols("k j", integer=True, positive=True)
XV = sp.IndexedBase("x")


@dataclass(frozen=True)
class Activation:
    """One activation: a SymPy formula in `X` (or, for a vector activation, in x[k] over K units)."""

    name: str
    formula: sp.Expr
    params: dict = field(default_factory=dict)   # parameter Symbol -> default value
    vector: bool = False
    title: str = ""
    gain: float = 1          # weights start normal with variance gain / n_in (2: He, for rectifiers; 1: LeCun)
    outputs: str = ""        # what the outputs are, for pairing with a loss: "probability" (each in (0, 1)),
                             # "distribution" (also summing to 1 over the units), or "" (any real)

    def bind(self, **values) -> sp.Expr:
        """The formula with its parameters replaced by numbers (defaults where not given), as exact
        rationals of their shortest decimal form (0.1 -> 1/10), without SymPy's string parser."""
        subs = {sym: sp.Rational(*Fraction(repr(float(values.get(sym.name, default)))).as_integer_ratio())
                for sym, default in self.params.items()}
        return self.formula.xreplace(subs)


ACTIVATIONS: dict[str, Activation] = {}


def register(name: str, formula: sp.Expr, title: str = "", vector: bool = False, gain: float = 1,
             outputs: str = "", **defaults) -> Activation:
    """Add an activation; its derivative, code, LaTeX and tests all follow from `formula`.

    >>> softsign = register("softsign", X / (1 + sp.Abs(X)))
    >>> del ACTIVATIONS["softsign"]
    """
    params = {sp.Symbol(k, positive=True): v for k, v in defaults.items()}
    ACTIVATIONS[name] = Activation(name, formula, params, vector, title or name, gain, outputs)
    return ACTIVATIONS[name]


_phi = (1 + sp.erf(X / sp.sqrt(2))) / 2    # the standard normal CDF

register("identity", X, "identity")
register("sigmoid", 1 / (1 + sp.exp(-X)), r"\sigma", outputs="probability")
register("tanh", sp.tanh(X), r"\tanh")
register("relu", sp.Max(X, 0), "ReLU", gain=2)
register("leaky_relu", sp.Piecewise((X, X > 0), (ALPHA * X, True)), "LeakyReLU", gain=2, alpha=0.01)
register("elu", sp.Piecewise((X, X > 0), (ALPHA * (sp.exp(X) - 1), True)), "ELU", gain=2, alpha=1.0)
register("gelu", X * _phi, "GELU", gain=2)
register("gelu_tanh",
         X * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (X + sp.Rational(44715, 1000000) * X**3))) / 2,
         r"GELU_{\tanh}", gain=2)
register("softplus", sp.log(1 + sp.exp(X)), "softplus", gain=2)
register("swish", X / (1 + sp.exp(-BETA * X)), "swish", gain=2, beta=1.0)
register("step", sp.Heaviside(X, 0), "step")
register("sign", sp.sign(X), "sign")
register("softmax", sp.exp(XV[_k]) / sp.Sum(sp.exp(XV[_j]), (_j, 1, K)), "softmax", vector=True, outputs="distribution")


def softmax_instance(zs: list) -> list:
    """softmax of a concrete list of expressions, from the registry's indexed formula."""
    f = ACTIVATIONS["softmax"].formula
    out = []
    for k in range(1, len(zs) + 1):
        e = f.xreplace({_k: k, K: len(zs)}).doit()
        out.append(e.replace(lambda t: isinstance(t, sp.Indexed) and t.base == XV,
                             lambda t: zs[int(t.indices[0]) - 1]))
    return out
