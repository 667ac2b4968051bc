"""LOSSES: name -> the per-element SymPy formula in yhat and y; the per-example loss sums it over outputs."""
from dataclasses import dataclass

import sympy as sp

from .naming import Y, YHAT


@dataclass(frozen=True)
class Loss:
    """A loss: `element` summed over the outputs is the per-example loss; the batch loss is its mean.

    target: "values" (y has the output's shape), "onehot" (a distribution, sum(y) = 1),
    or "labels" (integer class labels of shape (batch,), one-hot inside).
    """

    name: str
    element: sp.Expr
    target: str
    title: str
    needs: str = ""          # what the output layer must give: "probability", "distribution" or "" (activations.py)


LOSSES: dict[str, Loss] = {}


def register(name: str, element: sp.Expr, target: str, title: str, needs: str = "") -> None:
    LOSSES[name] = Loss(name, element, target, title, needs)


register("mse", (YHAT - Y) ** 2 / 2, "values", "mean squared error")
register("mae", sp.Abs(YHAT - Y), "values", "mean absolute error")
register("bce", -(Y * sp.log(YHAT) + (1 - Y) * sp.log(1 - YHAT)), "values", "binary cross-entropy", "probability")
register("cce", -Y * sp.log(YHAT), "onehot", "categorical cross-entropy", "distribution")
register("sparse_cce", -Y * sp.log(YHAT), "labels", "sparse categorical cross-entropy", "distribution")
