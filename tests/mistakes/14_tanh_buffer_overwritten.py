"""forward computes tanh in place into the z1 buffer it caches; backward then takes tanh' of a1."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(5, "tanh"), (3, "softmax")], "loss": "cce"}
EXPECT = {"W1": "evaluated at a1", "b1": "evaluated at a1"}


def forward(params, x):
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.tanh(z1, out=z1)            # reuses z1's buffer: the cache's z1 now holds a1
    z2 = a1 @ params["W2"].T + params["b2"]
    e = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return p, {"x": x, "z1": z1, "a1": a1, "p": p}


def backward(params, cache, y):
    x, z1, a1, p = cache["x"], cache["z1"], cache["a1"], cache["p"]
    delta2 = (p - y) / x.shape[0]
    delta1 = (delta2 @ params["W2"]) * (1 - np.tanh(z1) ** 2)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
