"""LOSSES: name -> the per-element SymPy formula in yhat and y; the per-example loss sums it over outputs."""
from dataclasses import dataclass, replace
from fractions import Fraction

import sympy as sp

from .naming import Y, YHAT

DELTA = sp.Symbol("delta", positive=True)
TARGETS = ("values", "onehot", "labels")


@dataclass(frozen=True)
class Loss:
    """A loss: `element` summed over the outputs is the per-example loss; the batch loss is its mean,
    L = (1/N) sum_n sum_k element(yhat[n, k], y[n, k]) for N examples and K outputs.

    target: "values" (y has the output's shape), "onehot" (a distribution, sum(y) = 1),
    or "labels" (integer class labels of shape (batch,), one-hot inside).
    params: (Symbol, default) pairs the element is written in (huber's delta); bind() replaces them.
    formula: the spec's text of a custom loss (None for a registry entry); settings: the
    (name, value) pairs the element was bound with, for the documents.
    title: what one element is called ("half squared error"); note: how L compares with a library's
    loss of the same name, in N and K (the generated module's docstring quotes it).

    >>> LOSSES["huber"].bind(delta=0.5).element
    Piecewise(((-y + yhat)**2/2, Abs(y - yhat) <= 1/2), (Abs(y - yhat)/2 - 1/8, True))
    """

    name: str
    element: sp.Expr
    target: str
    title: str
    needs: str = ""          # what the output layer must give: "probability", "distribution" or "" (activations.py)
    params: tuple = ()
    formula: str | None = None
    settings: tuple = ()
    note: str = ""

    def bind(self, **values) -> "Loss":
        """The loss with its parameters replaced by numbers (defaults where not given), as exact
        rationals of their shortest decimal form (0.1 -> 1/10), without SymPy's string parser."""
        if not self.params:
            return self
        settings = tuple((sym.name, float(values.get(sym.name, default))) for sym, default in self.params)
        subs = {sym: exact(value) for (sym, _), (_, value) in zip(self.params, settings)}
        return replace(self, element=self.element.xreplace(subs), params=(), settings=settings)

    @property
    def custom(self) -> bool:
        return self.formula is not None


def exact(value: float) -> sp.Rational:
    """A number from a spec as the exact rational of its shortest decimal form (0.1 -> 1/10)."""
    return sp.Rational(*Fraction(repr(float(value))).as_integer_ratio())


LOSSES: dict[str, Loss] = {}


def register(name: str, element: sp.Expr, target: str, title: str, needs: str = "", note: str = "",
             **defaults) -> Loss:
    """Add a loss; its output delta, code, LaTeX and tests all follow from `element` (in YHAT, Y).

    Parameters are Symbols of the element named like the keyword defaults (huber: delta=1.0).

    >>> quartic = register("quartic", (YHAT - Y) ** 4 / 4, "values", "quartic error")
    >>> del LOSSES["quartic"]
    """
    symbols = {s.name: s for s in element.free_symbols}
    params = tuple((symbols.get(k, sp.Symbol(k, positive=True)), float(v)) for k, v in defaults.items())
    LOSSES[name] = Loss(name, element, target, title, needs, params, note=note)
    return LOSSES[name]


_r = YHAT - Y

# L sums the element over the K outputs and takes the mean over the N examples of the batch: where a
# library of the same name takes the mean over all N*K entries (or over an element twice as big), the
# note says by how much the two differ.
register("mse", _r ** 2 / 2, "values", "half squared error",
         note="torch.nn.MSELoss, the mean of (yhat - y)**2 over all N*K entries, is 2/K of it")
register("mae", sp.Abs(_r), "values", "absolute error",
         note="torch.nn.L1Loss, the mean of |yhat - y| over all N*K entries, is 1/K of it")
register("bce", -(Y * sp.log(YHAT) + (1 - Y) * sp.log(1 - YHAT)), "values", "binary cross-entropy", "probability",
         note="torch.nn.BCELoss, the mean over all N*K entries, is 1/K of it")
register("cce", -Y * sp.log(YHAT), "onehot", "categorical cross-entropy", "distribution",
         note="torch.nn.CrossEntropyLoss of the last layer's z, with y as probability targets, equals it")
register("sparse_cce", -Y * sp.log(YHAT), "labels", "sparse categorical cross-entropy", "distribution",
         note="torch.nn.CrossEntropyLoss of the last layer's z, with the integer labels, equals it")
# Huber (1964): quadratic within delta of the target, linear beyond, continuous with its slope.
register("huber", sp.Piecewise((_r ** 2 / 2, sp.Abs(_r) <= DELTA), (DELTA * (sp.Abs(_r) - DELTA / 2), True)),
         "values", "Huber loss", note="torch.nn.HuberLoss with the same delta, the mean over all N*K entries, "
         "is 1/K of it", delta=1.0)
register("log_cosh", sp.log(sp.cosh(_r)), "values", "log-cosh loss")
# The hinge of a margin classifier: targets y in {-1, 1}, the output a score.
register("hinge", sp.Max(0, 1 - Y * YHAT), "values", "hinge loss")
