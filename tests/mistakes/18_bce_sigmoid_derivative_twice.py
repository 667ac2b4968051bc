"""sigmoid + bce: the fused delta a - y, multiplied by a(1 - a) once more."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "tanh"), (1, "sigmoid")], "loss": "bce"}
EXPECT = {"W2": "applied twice", "b2": "applied twice",
          "W1": "inherits the error entering at layer 2", "b1": "inherits the error entering at layer 2"}


def grad(params, x, y):
    n = x.shape[0]
    a1 = np.tanh(x @ params["W1"].T + params["b1"])
    a2 = 1 / (1 + np.exp(-(a1 @ params["W2"].T + params["b2"])))
    delta2 = (a2 - y) * a2 * (1 - a2) / n
    delta1 = (delta2 @ params["W2"]) * (1 - a1 ** 2)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
