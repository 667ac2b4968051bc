"""The sharpness: the largest eigenvalue of the loss's Hessian, by Lanczos on Hessian-vector products."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

ITERATIONS = 20     # Lanczos steps (= Hessian-vector products) per estimate
EXAMPLES = 1000     # training examples in the fixed evaluation batch: the first min(N, EXAMPLES)
BREAKDOWN = 1e-10   # a residual this small, relative to the largest |H q| seen, ends a Krylov space


class Eigen(NamedTuple):
    """The top eigenvalue estimate, its eigenvector (a dict shaped like params, unit norm over all
    of them) and the residual norm ||H v - value v|| as Lanczos estimates it."""

    value: float
    vector: dict
    residual: float


def top_eigenvalue(hvp: Callable[[dict], dict], params: dict, *, iterations: int = ITERATIONS,
                   start: dict | None = None, seed: int = 0) -> Eigen:
    """The largest (algebraic) eigenvalue of a symmetric H given only v -> H v, by Lanczos.

    Lanczos with full reorthogonalization builds an orthonormal basis Q of the Krylov space of
    `start` (iterations vectors, or len(params) if fewer), T = Q^T H Q, and returns T's largest
    eigenvalue with its Ritz vector. So the value is the top of H's spectrum, not the eigenvalue of
    largest |lambda| (which power iteration finds: a negative one where the Hessian is indefinite
    with a large negative curvature). The value is a Rayleigh quotient, so it never exceeds the true
    largest eigenvalue and approaches it from below as iterations grow; `residual` says how close.
    A Krylov space that ends early (start in an invariant subspace, e.g. an eigenvector) is extended
    with a seeded random vector orthogonal to Q, so every call makes exactly `iterations` products.

    Deterministic: bounded by the count, never by the clock; the same inputs give the same bits.

    Args:
        hvp: v -> H v, both dicts shaped like params (a generated module's
            lambda v: module.hvp(params, x, y, v)).
        params: names and shapes of the parameters (and their dtype, which v is given in).
        iterations: Hessian-vector products to make (at least 1).
        start: the first direction (e.g. the previous call's vector, to warm-start); None, or all
            zeros, starts from a standard normal vector drawn with `seed`.
        seed: seeds the random start and any restart.

    Returns:
        Eigen(value, vector, residual); vector is a dict of float64 arrays shaped like params.

    >>> M = np.diag([1.0, -5.0, 3.0])
    >>> top = top_eigenvalue(lambda v: {"w": M @ v["w"]}, {"w": np.zeros(3)})
    >>> round(top.value, 12)     # 3, not -5 (the eigenvalue of largest magnitude)
    3.0
    """
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a whole number of at least 1, got {iterations!r}")
    names = list(params)
    shapes = [np.shape(params[p]) for p in names]
    sizes = [int(np.prod(s)) for s in shapes]
    dtype = np.asarray(params[names[0]]).dtype if names else np.float64
    n = sum(sizes)
    bounds = np.cumsum([0] + sizes)

    def flat(d: dict) -> np.ndarray:
        return np.concatenate([np.asarray(d[p], dtype=np.float64).ravel() for p in names])

    def unflat(q: np.ndarray, kind=np.float64) -> dict:
        return {p: q[lo:hi].reshape(s).astype(kind) for p, s, lo, hi in zip(names, shapes, bounds, bounds[1:])}

    rng = np.random.default_rng(seed)
    k = min(int(iterations), n)
    Q = np.zeros((k, n))
    alpha, beta = np.zeros(k), np.zeros(k)   # T's diagonal; beta[j] couples q_j and q_{j+1}
    q = flat(start) if start is not None else np.zeros(n)
    if not (np.all(np.isfinite(q)) and np.linalg.norm(q) > 0):
        q = rng.standard_normal(n)
    q = q / np.linalg.norm(q)
    scale = 0.0
    for j in range(k):
        Q[j] = q
        w = flat(hvp(unflat(q, dtype)))
        if not np.all(np.isfinite(w)):
            return Eigen(float("nan"), unflat(q), float("nan"))
        scale = max(scale, float(np.linalg.norm(w)))
        alpha[j] = q @ w
        for _ in range(2):    # twice is enough (Kahan: "twice is enough"), keeping Q orthonormal
            w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
        b = float(np.linalg.norm(w))
        if j == k - 1:
            beta[j] = b       # only the residual: T stops here
            break
        if b > BREAKDOWN * scale:
            beta[j], q = b, w / b
        else:                 # an invariant subspace: carry on in a fresh direction, uncoupled (beta 0)
            w = rng.standard_normal(n)
            for _ in range(2):
                w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
            q = w / np.linalg.norm(w)
    T = np.diag(alpha) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
    values, vectors = np.linalg.eigh(T)
    s = vectors[:, -1]
    v = Q.T @ s
    return Eigen(float(values[-1]), unflat(v / np.linalg.norm(v)), float(abs(beta[k - 1] * s[-1])))


def stability_threshold(optimizer: str, hyperparameters: dict) -> tuple[float, str] | None:
    """The sharpness above which the optimizer's step diverges on a quadratic (Cohen et al. 2021),
    and its formula: 2/lr for gradient descent, (2 + 2 momentum)/lr for heavy-ball momentum
    (dampening 0, not Nesterov); None where there is no such fixed line (adaptive optimizers, other
    momentum forms, weight decay, which adds to the curvature the step sees).

    >>> stability_threshold("sgd", {"lr": 0.05})
    (40.0, '2/lr')
    """
    lr = hyperparameters["lr"]
    if hyperparameters.get("weight_decay", 0):
        return None
    if optimizer == "sgd":
        return 2 / lr, "2/lr"
    if optimizer == "momentum" and hyperparameters.get("dampening", 0) == 0 and not hyperparameters.get("nesterov"):
        return (2 + 2 * hyperparameters["momentum"]) / lr, "(2 + 2 momentum)/lr"
    return None
