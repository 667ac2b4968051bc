"""1/n written as 1/2: the batch size the author tried."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (2, "sigmoid")], "loss": "mse"}
EXPECT = {p: "hard-coded as 1/2" for p in ("W1", "b1", "W2", "b2")}


def grad(params, x, y):
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    a2 = 1 / (1 + np.exp(-(a1 @ params["W2"].T + params["b2"])))
    delta2 = (a2 - y) * a2 * (1 - a2) / 2
    delta1 = (delta2 @ params["W2"]) * (z1 > 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
