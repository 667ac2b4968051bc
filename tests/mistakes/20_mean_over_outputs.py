"""The loss averaged over the 3 outputs as well: every gradient 1/3 too small."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (3, "identity")], "loss": "mse"}
EXPECT = {p: "divided by the number of outputs" for p in ("W1", "b1", "W2", "b2")}


def grad(params, x, y):
    n, k = y.shape
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    a2 = a1 @ params["W2"].T + params["b2"]
    delta2 = (a2 - y) / (n * k)
    delta1 = (delta2 @ params["W2"]) * (z1 > 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
