"""Hand-written NumPy training steps: the baselines a generated module is measured against.

Networks: relu hidden layers and one output head, parameters in the generated
module layout (W{l}: (n_l, n_{l-1}), b{l}: (n_l,), z = a_prev @ W.T + b, x batch
first). Heads:

    softmax_cce   softmax output, loss = mean_i -sum_k y_ik ln p_ik;  delta_L = (p - y) / n
    sigmoid_mse   sigmoid output, loss = mean_i 1/2 sum_k (a_ik - y_ik)**2;
                  delta_L = (a - y) * a * (1 - a) / n

Two versions of the same step:

- `loss_and_grad` + `sgd_step`: plain, careful NumPy (what a person writes).
- `FusedSGD`: hand-optimised: buffers preallocated per batch size, every
  operation in place, lr/n folded into the output delta (backprop is linear in
  delta, so every gradient comes out already scaled), W updated right after its
  gradient is made.

`GemmOnly` does only the matmuls of a step with the same shapes: the floor.
Every function keeps the dtype of the parameters (float32 stays float32).
"""
import numpy as np

HEADS = ("softmax_cce", "sigmoid_mse")


def _weight_product(d, prev, out):
    """out = d.T @ prev. At batch 1 this is an outer product, for which a broadcast
    multiply is 2-4x faster than np.matmul (BLAS gemm with k = 1 zeroes out first)."""
    if d.shape[0] == 1:
        return np.multiply(d.T, prev, out=out)
    return np.matmul(d.T, prev, out=out)


def _layers(params):
    return len(params) // 2


def loss_and_grad(params, x, y, head):
    """Return (loss, grads) for the batch mean loss; grads has the keys of params.

    >>> import numpy as np
    >>> p = {"W1": np.ones((2, 3)), "b1": np.zeros(2)}
    >>> loss, g = loss_and_grad(p, np.zeros((1, 3)), np.array([[1.0, 0.0]]), "softmax_cce")
    >>> round(loss, 6), g["b1"].tolist()
    (0.693147, [-0.5, 0.5])
    """
    L = _layers(params)
    n = x.shape[0]
    a = [x]  # a[l] = activation of layer l, a[0] = x
    for l in range(1, L):
        a.append(np.maximum(a[l - 1] @ params[f"W{l}"].T + params[f"b{l}"], 0))
    z = a[L - 1] @ params[f"W{L}"].T + params[f"b{L}"]

    if head == "softmax_cce":
        z = z - z.max(axis=1, keepdims=True)  # log-sum-exp shift: exp cannot overflow
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = -(y * (z - np.log(s))).sum() / n
        delta = (e / s - y) / n  # d loss / d z_L
    elif head == "sigmoid_mse":
        y_hat = 0.5 * (1 + np.tanh(0.5 * z))  # sigmoid(z) without overflow
        r = y_hat - y
        loss = 0.5 * (r * r).sum() / n
        delta = r * y_hat * (1 - y_hat) / n  # sigmoid' = a (1 - a)
    else:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")

    grads = {}
    for l in range(L, 0, -1):
        grads[f"W{l}"] = delta.T @ a[l - 1]
        grads[f"b{l}"] = delta.sum(axis=0)
        if l > 1:
            # relu'(z) = (z > 0) = (a > 0) since a = max(z, 0)
            delta = (delta @ params[f"W{l}"]) * (a[l - 1] > 0)
    return float(loss), grads


def sgd_step(params, x, y, lr, head):
    """One plain SGD step in place; returns the loss before the update."""
    loss, grads = loss_and_grad(params, x, y, head)
    for k, g in grads.items():
        params[k] -= lr * g
    return loss


class FusedSGD:
    """Hand-optimised SGD step: in place, fused, preallocated, lr folded in.

    Holds references to the parameter arrays and updates them in place.

    >>> import numpy as np
    >>> p = {"W1": np.ones((2, 3)), "b1": np.zeros(2)}
    >>> step = FusedSGD(p, "softmax_cce")
    >>> round(step(np.zeros((1, 3)), np.array([[1.0, 0.0]]), lr=1.0), 6), p["b1"].tolist()
    (0.693147, [0.5, -0.5])
    """

    def __init__(self, params, head):
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        self.head = head
        L = _layers(params)
        self.W = [None] + [params[f"W{l}"] for l in range(1, L + 1)]
        self.b = [None] + [params[f"b{l}"] for l in range(1, L + 1)]
        self.dW = [None] + [np.empty_like(w) for w in self.W[1:]]
        self.db = [None] + [np.empty_like(b) for b in self.b[1:]]
        self.batch = None

    def _allocate(self, n):
        dtype = self.W[1].dtype
        L = len(self.W) - 1
        sizes = [w.shape[0] for w in self.W[1:]]
        # a[l] holds z_l, then a_l in place; delta[l] holds dL/dz_l (times lr)
        self.a = [None] + [np.empty((n, m), dtype) for m in sizes]
        self.delta = [None] + [np.empty((n, m), dtype) for m in sizes]
        self.mask = [None] + [np.empty((n, m), bool) for m in sizes]
        self.col = np.empty((n, 1), dtype)
        self.batch = n
        self.L = L

    def __call__(self, x, y, lr):
        """Update the parameters in place; return the loss before the update."""
        n = x.shape[0]
        if n != self.batch:
            self._allocate(n)
        W, b, a, delta, L = self.W, self.b, self.a, self.delta, self.L

        prev = x
        for l in range(1, L):
            np.matmul(prev, W[l].T, out=a[l])
            a[l] += b[l]
            np.maximum(a[l], 0, out=a[l])
            prev = a[l]
        z = a[L]
        np.matmul(prev, W[L].T, out=z)
        z += b[L]

        c = lr / n  # folded: every gradient below is lr * dL/dp
        if self.head == "softmax_cce":
            s = self.col
            np.max(z, axis=1, keepdims=True, out=s)
            z -= s
            yz = np.vdot(y, z)
            np.exp(z, out=z)
            np.sum(z, axis=1, keepdims=True, out=s)
            # loss = sum_i [(sum_k y_ik) ln s_i - sum_k y_ik z_ik] / n
            loss = (np.vdot(y.sum(axis=1), np.log(s)) - yz) / n
            z /= s
            z -= y
            z *= c
            d = z
        else:
            z *= 0.5
            np.tanh(z, out=z)
            z *= 0.5
            z += 0.5  # z now holds sigmoid(z)
            d = delta[L]
            np.subtract(z, y, out=d)
            loss = 0.5 * np.vdot(d, d) / n
            d *= z
            z -= 1
            d *= z  # (a - y) a (a - 1)
            d *= -c

        for l in range(L, 0, -1):
            prev = x if l == 1 else a[l - 1]
            if l > 1:  # propagate with the old W[l] before updating it
                np.matmul(d, W[l], out=delta[l - 1])
                np.greater(prev, 0, out=self.mask[l - 1])
                delta[l - 1] *= self.mask[l - 1]
            _weight_product(d, prev, self.dW[l])
            W[l] -= self.dW[l]
            np.sum(d, axis=0, out=self.db[l])
            b[l] -= self.db[l]
            if l > 1:
                d = delta[l - 1]
        return float(loss)


class GemmOnly:
    """Only the 3L - 1 matmuls of a step (forward, dW, delta), preallocated: the floor.

    Needs no gradient for x, so layer 1 has no delta matmul. At batch 1 the dW
    products are outer products, done the fastest NumPy way. Updates nothing.
    """

    def __init__(self, params):
        L = _layers(params)
        self.W = [None] + [params[f"W{l}"] for l in range(1, L + 1)]
        self.dW = [None] + [np.empty_like(w) for w in self.W[1:]]
        self.batch = None

    def __call__(self, x, y, lr):
        n = x.shape[0]
        W, L = self.W, len(self.W) - 1
        if n != self.batch:
            self.a = [None] + [np.empty((n, w.shape[0]), x.dtype) for w in W[1:]]
            self.d = [None] + [np.empty((n, w.shape[0]), x.dtype) for w in W[1:]]
            self.batch = n
        a, dbuf = self.a, self.d
        prev = x
        for l in range(1, L + 1):
            np.matmul(prev, W[l].T, out=a[l])
            prev = a[l]
        d = a[L]
        for l in range(L, 0, -1):
            _weight_product(d, x if l == 1 else a[l - 1], self.dW[l])
            if l > 1:
                np.matmul(d, W[l], out=dbuf[l - 1])
                d = dbuf[l - 1]
        return None
