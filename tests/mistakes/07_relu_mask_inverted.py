"""The relu mask on the wrong side: z <= 0."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (2, "sigmoid")], "loss": "mse"}
EXPECT = {"W1": "mask in delta1 is inverted", "b1": "mask in delta1 is inverted"}


def grad(params, x, y):
    n = x.shape[0]
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    a2 = 1 / (1 + np.exp(-(a1 @ params["W2"].T + params["b2"])))
    delta2 = (a2 - y) * a2 * (1 - a2) / n
    delta1 = (delta2 @ params["W2"]) * (z1 <= 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
