"""The verifier's reference: a network's forward pass and directional derivatives, from its formulas only.

Nothing here reads the derivation: each layer is z = a W^T + b and a = f(z) with f the registry's
formula; a directional derivative is forward mode (the chain rule applied in the direction of
the tangent) with f' = sp.diff(f) under the kink conventions, the softmax's tangent by the complex
step on its formula, and the loss's by sp.diff of its per-element formula. A weight penalty is
the penalty registry's per-entry formula times the spec's coefficient, summed over the parameter,
and its slope sp.diff of that formula. All in extended
precision (np.longdouble), at the trajectory of the module under test (its cached activations),
so a kink the module sits on exactly is a kink here too.
"""
from functools import lru_cache

import numpy as np
import sympy as sp

from .activations import softmax_instance
from .expansion import penalty_terms
from .naming import X, Y, YHAT
from .penalties import W as ENTRY
from .spec import Network
from .verify_numeric import REAL, Evaluator, bounded, derivative, evaluate_array

STEP = REAL(2) ** -200      # complex-step size: no subtraction, so any tiny h is exact


@lru_cache(maxsize=None)
def _softmax_symbols(k: int):
    zs = [sp.Symbol(f"z_{j}", real=True) for j in range(k)]
    return zs, softmax_instance(zs)


def softmax(z):
    """The registry's softmax formula on the last axis (shifted by the row maximum; it is shift-invariant)."""
    k = z.shape[-1]
    zs, exprs = _softmax_symbols(k)
    shift = np.max(z.real, axis=-1, keepdims=True)
    ev = Evaluator({s: z[..., j] - shift[..., 0] for j, s in enumerate(zs)})
    return np.stack([np.broadcast_to(ev(e), z.shape[:-1]) for e in exprs], axis=-1)


def _key(net: Network):
    return (net.inputs, net.loss, net.loss_formula, tuple(sorted(net.loss_params.items())),
            tuple((la.units, la.activation, tuple(sorted(la.params.items())), la.formula) for la in net.layers))


_FORMULAS = {}


def formula(net: Network, l: int):
    """Layer l's activation formula, parsed once per network (None for softmax)."""
    key = (_key(net), l)
    if key not in _FORMULAS:
        _FORMULAS[key] = None if net.is_vector(l) else net.activation_formula(l)
    return _FORMULAS[key]


def preactivations(net: Network, params: dict, x) -> list:
    """z1 .. zL and y_hat of a float64 forward pass (no bounds): for spotting kink crossings."""
    a, zs = np.asarray(x, dtype=np.float64), [None]
    for l in range(1, net.depth + 1):
        z = a @ np.asarray(params[f"W{l}"], dtype=np.float64).T + np.asarray(params[f"b{l}"], dtype=np.float64)
        zs.append(z)
        a = softmax(z) if net.is_vector(l) else evaluate_array(formula(net, l), {X: z})
        a = np.asarray(a, dtype=np.float64)
    zs.append(a)
    return zs


def targets(net: Network, y, batch: int) -> np.ndarray:
    if net.loss_entry.target == "labels":
        return np.eye(net.sizes[-1], dtype=REAL)[np.asarray(y, dtype=int)]
    return np.asarray(y, dtype=REAL).reshape(batch, -1)


def pre_activation(a_prev, W, b):
    """z = a W^T + b and its error bound (units of the roundoff).

    Extended precision where small; float64 BLAS where large (the bound holds for both sides).
    """
    a64, W64 = np.asarray(a_prev, dtype=np.float64), np.asarray(W, dtype=np.float64)
    if a64.shape[0] * W64.size <= 2_000_000:
        z = np.asarray(a_prev, dtype=REAL) @ np.asarray(W, dtype=REAL).T + np.asarray(b, dtype=REAL)
    else:
        z = np.asarray(a64 @ W64.T, dtype=REAL) + np.asarray(b, dtype=REAL)
    bound = (W64.shape[1] + 1) * (np.abs(a64) @ np.abs(W64).T + np.abs(np.asarray(b, dtype=np.float64)))
    return z, np.asarray(bound, dtype=REAL)


def activation(net: Network, l: int, z, z_err, u: float = 0.0):
    """a = f_l(z) in extended precision and its error bound (units of the roundoff)."""
    if net.is_vector(l):
        p = softmax(np.asarray(z, dtype=REAL))
        k = p.shape[-1]
        return p, p * (2 * np.max(z_err, axis=-1, keepdims=True) + 4 * k)
    return bounded(formula(net, l), {X: z}, {X: z_err}, u)


class Trajectory:
    """The reference forward pass along the module's own cached activations (where it has them)."""

    def __init__(self, net: Network, params: dict, x, y, cache: dict | None = None, snap: float | None = None):
        """snap: for a loss with a kink at y_hat = y (mae), treat y_hat within snap * its error bound
        of y as equal to it, so a target set to the module's own output is a kink here too."""
        cache = cache or {}
        self.net, self.batch = net, len(x)
        self.W = [None] + [np.asarray(params[f"W{l}"], dtype=REAL) for l in range(1, net.depth + 1)]
        self.b = [None] + [np.asarray(params[f"b{l}"], dtype=REAL) for l in range(1, net.depth + 1)]
        self.a = [np.asarray(x, dtype=REAL)]          # what each layer is fed: the module's a{l-1} if cached
        self.z, self.z_err, self.a_ref, self.a_err = [None], [None], [None], [None]
        dtype = np.asarray(params["W1"]).dtype
        u = float(np.finfo(dtype).eps) / 2 if dtype.kind == "f" else 0.0
        for l in range(1, net.depth + 1):
            z, zerr = pre_activation(self.a[l - 1], self.W[l], self.b[l])
            a, aerr = activation(net, l, z, zerr, u)
            self.z.append(z)
            self.z_err.append(zerr)
            self.a_ref.append(a)
            self.a_err.append(aerr)
            mod = cache.get(f"a{l}")
            ok = isinstance(mod, np.ndarray) and mod.shape == a.shape and np.all(np.isfinite(mod))
            self.a.append(np.asarray(mod, dtype=REAL) if ok and l < net.depth else a)
        self.y = targets(net, y, self.batch)
        element = net.loss_entry.element
        yhat = self.a_ref[-1]
        self.loss_terms, self.loss_err = bounded(element, {YHAT: yhat, Y: self.y}, {YHAT: self.a_err[-1]})
        self.loss = self.loss_terms.sum() / self.batch
        self.loss_bound = (self.loss_err.sum() + np.abs(self.loss_terms).sum()) / self.batch
        # the penalty: its value (any order of summation: (entries + 1) u of the sum of magnitudes) and its slope
        self.penalty, self.penalty_slope = REAL(0), {}
        for name, term in penalty_terms(net):
            P = (self.W if name[0] == "W" else self.b)[int(name[1:])]
            value, err = bounded(term, {ENTRY: P}, {})
            self.penalty = self.penalty + value.sum()
            self.loss_bound = self.loss_bound + err.sum() + (P.size + 1) * np.abs(value).sum()
            slope = evaluate_array(derivative(term, ENTRY), {ENTRY: P})
            self.penalty_slope[name] = self.penalty_slope.get(name, 0) + np.broadcast_to(slope, P.shape)
        self.loss = self.loss + self.penalty
        d = derivative(element, YHAT)
        if snap is not None:
            close = np.abs(yhat - self.y) <= snap * (self.a_err[-1] + np.abs(yhat))
            yhat = np.where(close, self.y, yhat)
        env = {YHAT: yhat, Y: self.y}
        self.dloss = evaluate_array(d, env) / self.batch   # dL/dyhat (mean over the batch)
        # what a computed dL/dyhat may be off by: its own size, and yhat's and y's rounding times d2L
        self.dloss_mag = (np.abs(self.dloss) + (np.abs(evaluate_array(derivative(d, YHAT), env) * yhat)
                          + np.abs(evaluate_array(derivative(d, Y), env) * self.y)) / self.batch)
        self.factor, self.factor_mag = {}, {}
        for l in range(1, net.depth + 1):
            if not net.is_vector(l):
                f = formula(net, l)
                fp = evaluate_array(derivative(f, X), {X: self.z[l]})
                # how far an evaluation of f' as written may be off (1 + tanh(u) for u << 0 cancels)
                _, fp_err = bounded(derivative(f, X), {X: self.z[l]}, {X: np.abs(self.z[l])}, refine=False)
                fpp = evaluate_array(derivative(derivative(f, X), X), {X: self.z[l]})
                a = np.abs(self.a_ref[l])
                with np.errstate(divide="ignore", invalid="ignore"):
                    via_a = np.where(fp != 0, np.abs(fpp / np.where(fp != 0, fp, 1)) * a, 0)
                # f' as computed may come from rounded z (f'' dz) or, in the a-form, from rounded a
                # (d f'/da = f''/f'): both enter the rounding scale of the backward pass
                self.factor[l] = fp
                self.factor_mag[l] = np.abs(fp) + np.abs(fpp * self.z[l]) + via_a + fp_err

    def jvp(self, directions: dict, start: int):
        """Directional derivatives of the loss, and their magnitude scales, for tangents at layer `start`.

        directions: {"W": (D, n_l, n_{l-1}) or None, "b": (D, n_l) or None} on layer `start`'s parameters.
        Returns (D,) derivatives and (D,) sums of absolute path products (the rounding scale of any
        chain-rule evaluation of the same derivative).
        """
        l = start
        vW, vb = directions.get("W"), directions.get("b")
        D = (vW if vW is not None else vb).shape[0]
        B, n = self.batch, self.net.sizes[l]
        dz = np.zeros((D, B, n), dtype=REAL)
        mag = np.zeros((D, B, n), dtype=REAL)
        if vW is not None:
            dz += _contract(self.a[l - 1], vW)
            mag += _contract(np.abs(self.a[l - 1]), np.abs(vW))
        if vb is not None:
            dz += np.asarray(vb, dtype=REAL)[:, None, :]
            mag += np.abs(np.asarray(vb, dtype=REAL))[:, None, :]
        value, scale = self._propagate(l, dz, mag)
        for kind, v in (("W", vW), ("b", vb)):       # the penalty's slope along v, where it has one
            slope = self.penalty_slope.get(f"{kind}{l}")
            if v is not None and slope is not None:
                v = np.asarray(v, dtype=REAL).reshape(len(v), -1)
                value = value + v @ slope.ravel()
                scale = scale + np.abs(v) @ np.abs(slope).ravel()
        return value, scale

    def jvp_entries(self, kind: str, index, start: int):
        """jvp along single entries of W{start} (index: (k, j) arrays) or b{start} (index: (k,))."""
        l = start
        ks = np.asarray(index[0])
        D, B, n = len(ks), self.batch, self.net.sizes[l]
        dz = np.zeros((D, B, n), dtype=REAL)
        rows = np.arange(D)
        if kind == "W":
            dz[rows, :, ks] = self.a[l - 1][:, np.asarray(index[1])].T
        else:
            dz[rows, :, ks] = 1
        value, scale = self._propagate(l, dz, np.abs(dz))
        slope = self.penalty_slope.get(f"{kind}{l}")
        if slope is not None:                          # the penalty's slope at each entry
            at = slope[tuple(np.asarray(ix) for ix in index)]
            value, scale = value + at, scale + np.abs(at)
        return value, scale

    def _propagate(self, l, dz, mag):
        self.reach = np.max(np.abs(dz), axis=(1, 2)) if dz.size else np.zeros(len(dz))
        while True:
            da, dmag = self._through(l, dz, mag)
            if l == self.net.depth:
                break
            l += 1
            dz = _contract(da, self.W[l], batched=True)
            mag = _contract(dmag, np.abs(self.W[l]), batched=True)
            if dz.size:
                self.reach = np.maximum(self.reach, np.max(np.abs(dz), axis=(1, 2)))
        return np.einsum("dbk,bk->d", da, self.dloss), np.einsum("dbk,bk->d", dmag, self.dloss_mag)

    def _through(self, l, dz, mag):
        z = self.z[l]
        if self.net.is_vector(l):
            p = softmax(z[None] + 1j * STEP * dz)
            da = p.imag / STEP
            pr = self.a_ref[l]
            # |d softmax| <= p_k (|dz_k| + sum_j p_j |dz_j|), from |p_k (delta_kj - p_j)| <= p_k (delta_kj + p_j)
            dmag = pr * (mag + np.sum(pr * mag, axis=-1, keepdims=True))
            return da, dmag
        return self.factor[l] * dz, self.factor_mag[l] * mag


def _contract(a, v, batched=False):
    """a (B, m) or (D, B, m) against v (D, n, m) or (n, m): the tangent z-part (D, B, n).

    Small contractions run in extended precision; large ones in float64 through BLAS (the
    tolerances bound the reference's rounding as well as the module's).
    """
    if batched:            # a: (D, B, m), v: (n, m)
        if a.size * v.shape[0] <= 4_000_000:
            return np.asarray(a, dtype=REAL) @ np.asarray(v, dtype=REAL).T
        return np.asarray(np.asarray(a, dtype=np.float64) @ np.asarray(v, dtype=np.float64).T, dtype=REAL)
    if a.shape[0] * v.size <= 4_000_000:
        return np.einsum("bj,dkj->dbk", np.asarray(a, dtype=REAL), np.asarray(v, dtype=REAL))
    a64, v64 = np.asarray(a, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return np.asarray(np.matmul(a64[None], v64.transpose(0, 2, 1)), dtype=REAL)
