"""sigmoid'(a) = s(a)(1 - s(a)) where a(1 - a) is meant."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (2, "sigmoid")], "loss": "mse"}
EXPECT = {"W2": "evaluated at a2", "b2": "evaluated at a2",
          "W1": "inherits the error entering at layer 2", "b1": "inherits the error entering at layer 2"}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def grad(params, x, y):
    n = x.shape[0]
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    a2 = sigmoid(a1 @ params["W2"].T + params["b2"])
    delta2 = (a2 - y) * sigmoid(a2) * (1 - sigmoid(a2)) / n
    delta1 = (delta2 @ params["W2"]) * (z1 > 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
