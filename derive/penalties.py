"""PENALTIES: name -> the per-entry SymPy formula of a weight penalty in w; a penalty sums it over a parameter's entries.

The l2 penalty is lambda/2 * sum(w**2), so that its gradient is lambda * w: an L2 coefficient is
torch.optim.SGD's weight_decay. The l1 penalty is lambda * sum(|w|); its derivative at w = 0 follows
the kink convention of every derivative here (elementwise.at_kinks: the left one, -lambda).
"""
import sympy as sp

W = sp.Symbol("w", real=True)    # one entry of a penalised parameter

PENALTIES: dict[str, sp.Expr] = {
    "l2": W ** 2 / 2,
    "l1": sp.Abs(W),
}
TITLES = {"l2": "L2 (weight decay)", "l1": "L1"}


def penalty_kind(key: str) -> tuple[str, bool]:
    """(registry name, on the biases) of a spec key: l2 -> ("l2", False), bias_l1 -> ("l1", True)."""
    return key.removeprefix("bias_"), key.startswith("bias_")
