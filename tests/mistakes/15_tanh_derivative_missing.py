"""delta1 without the tanh derivative."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(5, "tanh"), (3, "softmax")], "loss": "cce"}
EXPECT = {"W1": "tanh derivative is missing", "b1": "tanh derivative is missing"}


def grad(params, x, y):
    a1 = np.tanh(x @ params["W1"].T + params["b1"])
    z2 = a1 @ params["W2"].T + params["b2"]
    e = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    delta2 = (p - y) / x.shape[0]
    delta1 = delta2 @ params["W2"]
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
