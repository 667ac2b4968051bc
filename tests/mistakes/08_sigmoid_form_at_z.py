"""sigmoid' = a(1 - a), but written with z: z(1 - z)."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (2, "sigmoid")], "loss": "mse"}
EXPECT = {"W2": "takes z2 where its form", "b2": "takes z2 where its form",
          "W1": "inherits the error entering at layer 2", "b1": "inherits the error entering at layer 2"}


def grad(params, x, y):
    n = x.shape[0]
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ params["W2"].T + params["b2"]
    a2 = 1 / (1 + np.exp(-z2))
    delta2 = (a2 - y) * z2 * (1 - z2) / n
    delta1 = (delta2 @ params["W2"]) * (z1 > 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
