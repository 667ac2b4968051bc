"""Three layers; delta2 forgets the tanh derivative: layers 1 and 2 wrong, layer 3 right."""
import numpy as np

SPEC = {"inputs": 3, "layers": [(4, "relu"), (4, "tanh"), (2, "identity")], "loss": "mse"}
EXPECT = {"W2": "tanh derivative is missing from delta2", "b2": "tanh derivative is missing from delta2",
          "W1": "inherits the error entering at layer 2", "b1": "inherits the error entering at layer 2"}


def grad(params, x, y):
    n = x.shape[0]
    z1 = x @ params["W1"].T + params["b1"]
    a1 = np.maximum(z1, 0)
    a2 = np.tanh(a1 @ params["W2"].T + params["b2"])
    a3 = a2 @ params["W3"].T + params["b3"]
    delta3 = (a3 - y) / n
    delta2 = delta3 @ params["W3"]
    delta1 = (delta2 @ params["W2"]) * (z1 > 0)
    return {"W1": delta1.T @ x, "b1": delta1.sum(axis=0), "W2": delta2.T @ a1, "b2": delta2.sum(axis=0),
            "W3": delta3.T @ a2, "b3": delta3.sum(axis=0)}
