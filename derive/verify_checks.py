"""The module check: every entry point of a generated module against the network's formulas, in every regime.

Tolerances follow the dtype: each is a small multiple of the unit roundoff u = eps/2 of the dtype
checked (float64: 1.1e-16, float32: 6.0e-8) times a first-order running error bound of the
quantity (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., 2002: sec. 3.1 for
formulas, sec. 3.1/eq. 3.4 gamma_n for sums and dot products), so they hold for any correct
floating-point evaluation, in either dtype, however wide the network:

- forward values:       |a - f(z)| <= K_FORWARD * u * bound(f at z)      (bound: verify_numeric.bounded)
- pre-activations:      |z - (a W^T + b)| <= 2 (n + 1) u (|a| |W|^T + |b|)
- the loss:             |L - L_ref| <= K_FORWARD * u * bound(loss)
- gradients:            |g.v - D_v L| <= K_GRAD * u * N * S_v, with S_v the sum of the absolute
                        values of every chain-rule path product of the directional derivative and
                        N = batch + every layer width (the longest sum any evaluation makes)
- finite differences:   |R - D_v L| <= 2 |D(h) - D(h/2)| + 8 u_L / h  (R: Richardson's extrapolation)
- Taylor remainder:     the slope of log |L(p + hv) - L(p) - h g.v| against log h is >= MIN_SLOPE
                        (below NOISE_SLOPE the remainder is rounding noise and gives no verdict)
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from .naming import X, Y, YHAT
from .spec import Network
from .verify_numeric import REAL, evaluate_array, kink_arguments
from .verify_reference import Trajectory, _key, formula, penalty_terms, pre_activation, preactivations

K_FORWARD = 16
K_GRAD = 8
MIN_SLOPE = 1.75
NOISE_SLOPE = 0.5       # below it the remainder is noise (a wrong gradient gives 1, a right one 2)
BATCHES = (1, 2, 3, 5, 65)    # 65: past the 64-element switch of the generated _sigmoid for any width
FULL_BUDGET = 30_000_000      # tangent elements: below it, every entry of a tensor is checked on its own
SAMPLED_ENTRIES = 24          # else: this many single entries, plus
RANDOM_DIRECTIONS = 6         # random (Gaussian) directions over the whole tensor
DTYPES = (np.float64, np.float32)


def _u(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _num(v) -> str:
    """A plain number for a message: no np.float64(...) repr."""
    v = float(v)
    return repr(v) if math.isfinite(v) else str(v)


def _where(name, idx) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]" if len(idx) else name


@dataclass
class Row:
    """One entry point and one parameter (or forward value): how much was checked and the worst disagreement."""

    entry: str
    param: str
    checked: int = 0
    worst: float = 0.0        # largest |difference| / tolerance seen (<= 1 passes)
    ok: bool = True
    detail: str = ""          # at the worst failure: where, the values that disagree, the case
    note: str = ""            # e.g. the Taylor slope

    def record(self, ratio: float, count: int, detail_fn):
        self.checked += count
        bad = ratio > 1 or not math.isfinite(ratio)
        if not math.isfinite(ratio) or ratio > self.worst:
            if bad:
                self.ok = False
                text = detail_fn()
                # keep a message that shows all three values where one exists
                if "finite differences" in text or "finite differences" not in self.detail:
                    self.detail = text
            self.worst = ratio if math.isfinite(ratio) else math.inf
        elif bad and "finite differences" not in self.detail:
            text = detail_fn()
            if "finite differences" in text:
                self.detail = text

    def fail(self, detail: str):
        self.ok, self.worst, self.detail = False, math.inf, detail
        self.checked += 1


@dataclass
class Report:
    network: str
    symbolic_on: str
    rows: list
    cases: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def failures(self) -> list[str]:
        """One line per failing row: entry point, name, and the values that disagree."""
        return [f"{r.entry} {r.param}: {r.detail}" for r in self.rows if not r.ok]

    def table(self) -> str:
        lines = [f"check of {self.network}: {self.symbolic_on}",
                 f"{'entry point':<18} {'name':<13} {'checked':>8} {'gen vs sym':>11}  result"]
        for r in self.rows:
            worst = "-" if r.checked == 0 else ("inf" if not math.isfinite(r.worst) else f"{r.worst:.2g}")
            result = "ok" if r.ok else "FAIL " + r.detail
            if r.note:
                result += f" ({r.note})"
            lines.append(f"{r.entry:<18} {r.param:<13} {r.checked:>8} {worst:>11}  {result}")
        return "\n".join(lines)


class _Rows:
    def __init__(self):
        self.rows = {}

    def __getitem__(self, key) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(*key)
        return self.rows[key]


# --- the points the module is checked at -----------------------------------------------------------

def _zero_kinks(net: Network) -> list[int]:
    """Layers whose activation switches branch at z = 0 (relu, leaky_relu, elu, step, sign, |x| ...)."""
    out = []
    for l in range(1, net.depth + 1):
        if net.is_vector(l):
            continue
        args = kink_arguments(formula(net, l))
        if any(a.xreplace({X: 0}) == 0 for a in args):
            out.append(l)
    return out


_KINKS = {}


def _loss_kinks_at_target(net: Network) -> bool:
    """The loss switches branch where y_hat = y (mae's |y_hat - y|)."""
    args = kink_arguments(net.loss_entry.element)
    return any(a.xreplace({YHAT: Y}) == 0 for a in args)


def _layer_kinks(net: Network) -> dict:
    key = _key(net)
    if key not in _KINKS:
        _KINKS[key] = {l: kink_arguments(formula(net, l)) for l in range(1, net.depth + 1) if not net.is_vector(l)}
        _KINKS[key] = {l: args for l, args in _KINKS[key].items() if args}
    return _KINKS[key]


def sample_point(net: Network, rng, regime: str, batch: int):
    """Inputs, targets and float64 parameters for one regime: "normal", "tails" (|z| up to ~40,
    saturated units, erfc tails) or "kinks" (normal; the exact zeros are placed per dtype)."""
    from .expansion import sample_batch
    x, y = sample_batch(net, rng, batch)
    scale = 1.5 if regime != "tails" else 3.0
    params = {}
    for l, (n_in, n_out) in enumerate(zip(net.sizes, net.sizes[1:]), start=1):
        params[f"W{l}"] = rng.normal(size=(n_out, n_in)) * scale / math.sqrt(n_in)
        params[f"b{l}"] = rng.normal(0.1, 0.5 if regime != "tails" else 1.0, size=n_out)
    if regime == "tails":
        x *= np.geomspace(0.05, 20, batch)[rng.permutation(batch)][:, None] if batch > 1 else 6.0
    # keep the output layer's z within +-25: the loss stays finite in extended precision too
    t = Trajectory(net, params, x, y)
    top = float(np.max(np.abs(t.z[-1]))) if t.z[-1].size else 0.0
    if top > 25:
        params[f"W{net.depth}"] *= 25 / top
        params[f"b{net.depth}"] *= 25 / top
    return x, y, params


def place_kinks(net: Network, module, params: dict, x, layers: list[int]) -> dict:
    """Make some pre-activations exactly 0 in the module's own arithmetic, in the params' dtype.

    For unit k of layer l: W_l[k] is zero but for W_l[k, j] = 1/2 and b_l[k] = -a[r, j] / 2, with a
    the module's own a{l-1} at row r. The product by 1/2 is exact and the other terms are exact
    zeros, so z[r, k] = 0 however the module orders its sums (with FMA too), in float32 and float64.
    """
    params = {k: v.copy() for k, v in params.items()}
    B = len(x)
    for l in layers:
        _, cache = module.forward(params, x)
        a = x if l == 1 else cache.get(f"a{l - 1}")
        if not isinstance(a, np.ndarray) or a.shape != (B, net.sizes[l - 1]):
            continue
        n = net.sizes[l]
        for k in sorted({0, n // 2, n - 1}):
            r, j = k % B, k % net.sizes[l - 1]
            W = params[f"W{l}"]
            W[k, :] = 0
            W[k, j] = 0.5
            params[f"b{l}"][k] = -(a[r, j] * W.dtype.type(0.5))
    return params


# --- the checks ------------------------------------------------------------------------------------

def _call(row: Row, what: str, fn, *args):
    try:
        return fn(*args)
    except Exception as e:     # the module under test is user code: its failure is a finding
        row.fail(f"{what} raised {type(e).__name__}: {e}")
        return None


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _is_float_scalar(v) -> bool:
    return isinstance(v, (float, np.floating)) and not isinstance(v, bool)


class _Case:
    """One point, batch size and dtype: every entry point of the module checked there."""

    def __init__(self, net, module, rows: _Rows, regime, batch, dtype, x, y, params, rng):
        self.net, self.module, self.rows = net, module, rows
        self.regime, self.batch, self.dtype = regime, batch, dtype
        self.u = _u(dtype)
        self.rng = rng
        self.label = f"{regime} point, batch {batch}, {np.dtype(dtype).name}"
        self.x = x.astype(dtype)
        self.y = y if net.loss_entry.target == "labels" else y.astype(dtype)
        self.params = {k: v.astype(dtype) for k, v in params.items()}
        if regime == "kinks":
            try:
                self.params = place_kinks(net, module, self.params, self.x, _zero_kinks(net))
                if _loss_kinks_at_target(net):      # mae: some targets exactly the module's own outputs
                    yhat, _ = module.forward(self.fresh(), self.x)
                    self.y = np.array(self.y, copy=True)
                    for r in range(batch):
                        self.y[r, r % self.y.shape[1]] = yhat[r, r % self.y.shape[1]]
            except Exception:
                pass
        self.N = batch + sum(net.sizes)

    def fresh(self):
        return {k: v.copy() for k, v in self.params.items()}

    def _untouched(self, entry, params=None, x=None, y=None, cache=None, cache_before=None):
        """An entry point must not write into what it is given (params, except sgd_step's; x; y; the cache)."""
        row = self.rows[("inputs unchanged", entry)]
        changed = [f"params[{k!r}]" for k, v in (params or {}).items() if not _same(v, self.params[k])]
        if x is not None and not _same(x, self.x):
            changed.append("x")
        if y is not None and not _same(y, self.y):
            changed.append("y")
        if cache is not None:
            changed += [f"cache[{k!r}]" for k, v in cache_before.items()
                        if isinstance(v, np.ndarray) and not _same(cache.get(k), v)]
        if changed:
            row.fail(f"{entry} wrote into {', '.join(changed)} ({self.label})")
        else:
            row.checked += 1

    def _args(self):
        return self.fresh(), self.x.copy(), np.array(self.y, copy=True)

    def run(self, fd: bool, taylor: bool):
        net, m = self.net, self.module
        row = self.rows[("forward", "y_hat")]
        p, x, _ = self._args()
        out = _call(row, "forward", m.forward, p, x)
        if out is None:
            return
        self._untouched("forward", params=p, x=x)
        try:
            yhat, cache = out
            cache = dict(cache)
        except (TypeError, ValueError):
            row.fail(f"forward returned {type(out).__name__}, not (y_hat, cache)")
            return
        self.traj = t = Trajectory(net, self.params, self.x, self.y, cache,
                                   snap=K_FORWARD * self.u if _loss_kinks_at_target(net) else None)
        self._forward(yhat, cache)
        self._predict()
        self._loss()
        grads = self._gradients("loss_and_grad", self._loss_and_grad)
        if hasattr(m, "backward"):
            self._gradients("backward", self._backward)
        if grads is not None and hasattr(m, "sgd_step"):
            self._sgd(grads)
        if grads is not None and fd:
            self._finite_differences()
        if grads is not None and taylor:
            self._taylor(grads)
        del t

    def _loss_and_grad(self):
        p, x, y = self._args()
        out = self.module.loss_and_grad(p, x, y)
        self._untouched("loss_and_grad", params=p, x=x, y=y)
        return out

    def _backward(self):
        p, x, y = self._args()
        _, cache = self.module.forward(self.fresh(), x)
        cache = dict(cache)
        before = {k: v.copy() for k, v in cache.items() if isinstance(v, np.ndarray)}
        grads = self.module.backward(p, cache, y)
        self._untouched("backward", params=p, y=y, cache=cache, cache_before=before)
        return None, grads

    # forward values, predict, loss -----------------------------------------------------------------

    def _dtype(self, entry, name, arr):
        row = self.rows[("dtype", entry)]
        if not isinstance(arr, np.ndarray):
            row.fail(f"{name} is {type(arr).__name__}, not an array ({self.label})")
        elif arr.dtype.kind == "f" and arr.dtype != np.dtype(self.dtype):
            row.fail(f"{name} is {arr.dtype} for {np.dtype(self.dtype).name} input ({self.label})")
        else:
            row.checked += 1

    def _compare(self, row, name, got, ref, tol):
        got = np.asarray(got)
        if got.shape != ref.shape:
            row.fail(f"{name} has shape {got.shape}, expected {ref.shape} ({self.label})")
            return
        diff = np.abs(got.astype(REAL) - ref)
        diff = np.where(np.isnan(got) & np.isnan(ref), 0, diff)
        ratio = np.where(diff == 0, 0, diff / tol)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
        worst = float(ratio[i]) if ratio.size else 0.0
        row.record(worst, int(ratio.size), lambda: f"{_where(name, i)}: generated {_num(got[i])} vs symbolic "
                                                   f"{_num(ref[i])} ({self.label})")

    def _forward(self, yhat, cache):
        net, t, u = self.net, self.traj, self.u
        tiny = np.finfo(self.dtype).tiny * K_FORWARD
        self._dtype("forward", "y_hat", yhat)
        for key, v in cache.items():
            if isinstance(v, np.ndarray):
                self._dtype("forward", f"cache[{key!r}]", v)
        if "x" in cache:
            self._compare(self.rows[("forward", "x")], "cache['x']", cache["x"], np.asarray(self.x, dtype=REAL), tiny)
        for l in range(1, net.depth + 1):
            z_key, a_key = f"z{l}", f"a{l}"
            if z_key in cache:
                zr, zb = pre_activation(t.a[l - 1], t.W[l], t.b[l])
                self._compare(self.rows[("forward", z_key)], z_key, cache[z_key], zr, 2 * u * zb + tiny)
            if a_key in cache:
                self._compare(self.rows[("forward", a_key)], a_key, cache[a_key], t.a_ref[l],
                              K_FORWARD * u * (t.a_err[l] + np.abs(t.a_ref[l])) + tiny)
        self._compare(self.rows[("forward", "y_hat")], "y_hat", yhat, t.a_ref[-1],
                      K_FORWARD * u * (t.a_err[-1] + np.abs(t.a_ref[-1])) + tiny)

    def _predict(self):
        if not hasattr(self.module, "predict"):
            return
        row = self.rows[("predict", "y_hat")]
        p, x, _ = self._args()
        out = _call(row, "predict", self.module.predict, p, x)
        if out is None:
            return
        self._untouched("predict", params=p, x=x)
        t = self.traj
        self._dtype("predict", "y_hat", out)
        self._compare(row, "predict", out, t.a_ref[-1],
                      K_FORWARD * self.u * (t.a_err[-1] + np.abs(t.a_ref[-1])) + np.finfo(self.dtype).tiny * K_FORWARD)

    def _loss_value(self, row, what, value):
        t = self.traj
        if not _is_float_scalar(value):
            row.fail(f"{what} returned {type(value).__name__}, not a float ({self.label})")
            return
        tol = K_FORWARD * self.u * float(t.loss_bound) + 1e-300
        diff = abs(float(value) - float(t.loss))
        ratio = diff / tol if diff else 0.0
        if math.isnan(float(value)) != math.isnan(float(t.loss)):
            ratio = math.inf
        row.record(ratio, 1, lambda: f"generated {_num(value)} vs symbolic {_num(t.loss)} ({self.label})")

    def _loss(self):
        row = self.rows[("loss", "L")]
        p, x, y = self._args()
        value = _call(row, "loss", self.module.loss, p, x, y)
        if value is not None:
            self._untouched("loss", params=p, x=x, y=y)
            self._loss_value(row, "loss", value)

    # gradients ---------------------------------------------------------------------------------------

    def _gradients(self, entry, fn):
        row0 = self.rows[(entry, "L")] if entry == "loss_and_grad" else None
        out = _call(self.rows[(entry, "grads")], entry, fn)
        if out is None:
            return None
        try:
            value, grads = out
            grads = dict(grads)
        except (TypeError, ValueError):
            self.rows[(entry, "grads")].fail(f"{entry} returned {type(out).__name__}, not (loss, grads)")
            return None
        if row0 is not None:
            self._loss_value(row0, entry, value)
        ok = {}
        for name, shape in self.net.param_shapes().items():
            row = self.rows[(entry, name)]
            g = grads.get(name)
            if not isinstance(g, np.ndarray):
                row.fail(f"d{name} is {type(g).__name__}, not an array ({self.label})")
                continue
            if g.shape != tuple(shape):
                row.fail(f"d{name} has shape {g.shape}, expected {tuple(shape)} ({self.label})")
                continue
            self._dtype(entry, f"d{name}", g)
            ok[name] = g
        for l in range(1, self.net.depth + 1):
            for kind in ("W", "b"):
                name = f"{kind}{l}"
                if name in ok:
                    self._directional(entry, l, kind, ok[name])
        return ok if len(ok) == 2 * self.net.depth else None

    def _directions(self, l, kind):
        """Single entries (all of them where affordable, else a sample) and random directions."""
        shape = self.net.param_shapes()[f"{kind}{l}"]
        size = int(np.prod(shape))
        cost = self.batch * sum(self.net.sizes[k] * self.net.sizes[k - 1] for k in range(l, self.net.depth + 1))
        if size * cost <= FULL_BUDGET:
            return np.arange(size), 0
        picks = np.sort(self.rng.choice(size, min(size, SAMPLED_ENTRIES), replace=False))
        return picks, RANDOM_DIRECTIONS

    def _directional(self, entry, l, kind, g, extra=None, what="generated"):
        key = (l, kind)
        cached = getattr(self, "_ref", {})
        if key not in cached:
            shape = self.net.param_shapes()[f"{kind}{l}"]
            picks, n_random = self._directions(l, kind)
            index = np.unravel_index(picks, shape)
            ref, mag = [], []
            for start in range(0, len(picks), 512):
                r, s = self.traj.jvp_entries(kind, [ix[start:start + 512] for ix in index], l)
                ref.append(r)
                mag.append(s)
            gauss = self.rng.normal(size=(n_random, *shape))
            if n_random:
                r, s = self.traj.jvp({kind: gauss}, l)
                ref.append(r)
                mag.append(s)
            where = [tuple(int(ix[i]) for ix in index) for i in range(len(picks))] + [None] * n_random
            cached[key] = (picks, gauss, where, np.concatenate(ref), np.concatenate(mag))
            self._ref = cached
        picks, gauss, where, ref, mag = cached[key]
        gflat = np.asarray(g).ravel()
        gen = np.asarray(gflat[picks], dtype=REAL)
        if len(gauss):
            gen = np.concatenate([gen, np.asarray((gauss.reshape(len(gauss), -1) * gflat.astype(np.float64)).sum(axis=1),
                                                  dtype=REAL)])
        tol = K_GRAD * self.u * self.N * mag + np.finfo(self.dtype).tiny * K_GRAD
        if extra is not None:
            ex = np.asarray(extra, dtype=np.float64).ravel()
            more = [np.abs(gauss.reshape(len(gauss), -1)) @ ex] if len(gauss) else []
            tol = tol + np.asarray(np.concatenate([ex[picks], *more]), dtype=REAL)
        diff = np.abs(gen - ref)
        ratio = np.where(diff == 0, 0, diff / tol)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        i = int(np.argmax(ratio))
        name = f"{kind}{l}"

        def direction(i):
            if where[i] is None:
                return gauss[i - len(picks)]
            V = np.zeros(self.net.param_shapes()[name])
            V[where[i]] = 1
            return V

        def detail():
            place = _where(name, where[i]) if where[i] is not None else f"{name} along a random direction"
            fd = self._fd_value(direction(i), kind, l)
            fd_text = f" vs finite differences {_num(fd)}" if fd is not None else ""
            return f"{place}: {what} {_num(gen[i])} vs symbolic {_num(ref[i])}{fd_text} ({self.label})"

        self.rows[(entry, name)].record(float(ratio[i]), len(ref), detail)

    def _sgd(self, grads):
        """sgd_step's update, divided by lr, is a gradient: checked against the symbolic one like the others."""
        lr = 0.0625
        p, x, y = self._args()
        row = self.rows[("sgd_step", "L")]
        value = _call(row, "sgd_step", self.module.sgd_step, p, x, y, lr)
        if value is None:
            return
        self._untouched("sgd_step", x=x, y=y)
        self._loss_value(row, "sgd_step", value)
        for l in range(1, self.net.depth + 1):
            for kind in ("W", "b"):
                name = f"{kind}{l}"
                r = self.rows[("sgd_step", name)]
                before = self.params[name]
                if not isinstance(p.get(name), np.ndarray) or p[name].shape != before.shape:
                    r.fail(f"{name} changed shape or type ({self.label})")
                    continue
                self._dtype("sgd_step", name, p[name])
                step = (np.asarray(before, dtype=REAL) - np.asarray(p[name], dtype=REAL)) / REAL(lr)
                # p - lr g rounds to u |p|: as a gradient, that is u |p| / lr more per entry
                extra = 2 * self.u * (np.abs(np.asarray(before, dtype=REAL)) + np.abs(step) * lr) / lr
                self._directional("sgd_step", l, kind, step, extra, what="(params before - after) / lr")

    # finite differences and the Taylor remainder (float64) ---------------------------------------------

    def _shifted(self, V, kind, l, h):
        p = {k: v.astype(np.float64) for k, v in self.params.items()}
        p[f"{kind}{l}"] = p[f"{kind}{l}"] + h * V
        return p

    def _crosses(self, V, kind, l, h) -> bool:
        """Does the path p +- h v cross a branch switch of some activation or of the loss?"""
        kinks = _layer_kinks(self.net)
        loss_kinks = kink_arguments(self.net.loss_entry.element)
        name = f"{kind}{l}"
        for param, term in penalty_terms(self.net):      # an l1 penalty's kink at w = 0, along this parameter
            if param == name and kink_arguments(term):
                P = np.asarray(self.params[name], dtype=np.float64)
                if np.any(np.sign(P - h * V) != np.sign(P)) or np.any(np.sign(P + h * V) != np.sign(P)):
                    return True
        if not any(kinks.values()) and not loss_kinks:
            return False
        signs = []
        for s in (-h, 0.0, h):
            zs = preactivations(self.net, self._shifted(V, kind, l, s), self.x)
            cur = []
            for ll, args in kinks.items():
                for a in args:
                    cur.append(np.sign(evaluate_array(a, {X: zs[ll]})))
            for a in loss_kinks:
                cur.append(np.sign(evaluate_array(a, {YHAT: zs[-1], Y: self.traj.y})))
            signs.append(cur)
        return any(np.any(a != b) for a, b in zip(signs[0], signs[1])) or \
            any(np.any(a != b) for a, b in zip(signs[1], signs[2]))

    def _loss_at(self, p):
        return float(self.module.loss(p, self.x.astype(np.float64), self.y))

    def _step(self, V, kind, l):
        """h such that no pre-activation of any layer moves by more than 1e-3 along h V."""
        self.traj.jvp({kind: np.asarray(V)[None]}, l)
        m = float(self.traj.reach[0])
        return 1e-3 / m if m > 0 and math.isfinite(m) else None

    def _fd_value(self, V, kind, l):
        """Richardson-extrapolated central difference of module.loss along V (float64), or None."""
        if self.dtype != np.float64:
            return None
        h = self._step(V, kind, l)
        if h is None:
            return None
        try:
            for _ in range(8):
                if not self._crosses(V, kind, l, h):
                    break
                h /= 4
            else:
                return None
            d1 = (self._loss_at(self._shifted(V, kind, l, h)) - self._loss_at(self._shifted(V, kind, l, -h))) / (2 * h)
            d2 = (self._loss_at(self._shifted(V, kind, l, h / 2)) - self._loss_at(self._shifted(V, kind, l, -h / 2))) / h
        except Exception:
            return None
        self._fd_spread = abs(d1 - d2)
        self._fd_h = h
        return (4 * d2 - d1) / 3

    def _finite_differences(self):
        t = self.traj
        for l in range(1, self.net.depth + 1):
            for kind in ("W", "b"):
                name = f"{kind}{l}"
                shape = self.net.param_shapes()[name]
                V = self.rng.normal(size=shape)
                row = self.rows[("finite differences", name)]
                fd = self._fd_value(V, kind, l)
                if fd is None:
                    row.note = "some paths crossed a kink: skipped there"
                    continue
                ref, mag = t.jvp({kind: V[None]}, l)
                tol = 2 * self._fd_spread + 8 * K_FORWARD * _u(np.float64) * float(t.loss_bound) / self._fd_h + \
                    K_GRAD * _u(np.float64) * self.N * float(mag[0]) + 1e-300
                diff = abs(fd - float(ref[0]))
                row.record(diff / tol if diff else 0.0, 1,
                           lambda: f"{name} along a random direction: finite differences {_num(fd)} vs symbolic "
                                   f"{_num(ref[0])} ({self.label})")

    def _taylor(self, grads):
        """Fit the slope of the first-order Taylor remainder: 2 for a right gradient, 1 for a wrong one."""
        for l in range(1, self.net.depth + 1):
            for kind in ("W", "b"):
                name = f"{kind}{l}"
                row = self.rows[("taylor", name)]
                V = self.rng.normal(size=self.net.param_shapes()[name])
                h0 = self._step(V, kind, l)
                if h0 is None:
                    continue
                h0 *= 100
                slope = self.taylor_slope(V, kind, l, grads[name], h0)
                if slope is None:
                    row.checked += 1
                    continue
                if slope < NOISE_SLOPE:      # the remainder does not fall at all: rounding noise, no verdict
                    row.checked += 1
                    row.note = row.note or f"inconclusive: slope {slope:.2f}, the remainder is rounding noise"
                    continue
                row.note = f"slope {slope:.2f}" if row.ok else row.note
                ratio = 0.0 if slope >= MIN_SLOPE else 1 + (MIN_SLOPE - slope)
                row.record(ratio, 1, lambda: f"{name}: the remainder falls as h^{slope:.2f}, not h^2: the gradient's "
                                             f"first-order term is wrong ({self.label})")
                if not row.ok:
                    row.note = ""

    def taylor_slope(self, V, kind, l, g, h0):
        base = self._loss_at(self._shifted(V, kind, l, 0.0))
        gv = float(np.vdot(np.asarray(g, dtype=np.float64), V))
        # the rounding noise of L along this line, measured: at a step 4^-14 h0 the Taylor terms
        # (h^2, or h times a gradient error) are far below it; at least a few ulps of L
        eps = h0 * 4.0 ** -14
        floor = max(4 * _u(np.float64) * abs(base),
                    abs(self._loss_at(self._shifted(V, kind, l, eps)) - base - eps * gv))
        # and the gradient's own rounding, which enters as h times the directional tolerance: a
        # gradient within tolerance never fails this test (where the curvature along V is ~0)
        ref, mag = self.traj.jvp({kind: np.asarray(V)[None]}, l)
        slack = K_GRAD * _u(np.float64) * self.N * float(mag[0]) + abs(gv - float(ref[0]))
        pts = []
        h = h0
        for _ in range(12):
            if not self._crosses(V, kind, l, h):
                r = abs(self._loss_at(self._shifted(V, kind, l, h)) - base - h * gv)
                if r > 100 * (floor + slack * h):
                    pts.append((math.log(h), math.log(r)))
                elif pts:
                    break
            h /= 4
        pts = pts[-4:]
        if len(pts) < 3:
            return None
        xs, ys = np.array(pts).T
        return float(np.polyfit(xs, ys, 1)[0])


def size_thresholds(module, limit: int = 4) -> list[int]:
    """Integer constants the module compares sizes with (``z.size <= 64``, ``n > 1``, ``len(x) == 3``).

    Each gives batch sizes on both sides of it, so every size-dependent path is taken. Read from the
    module's source (ast, never executed); at most `limit` constants, each below 4096.
    """
    import ast
    import inspect
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            text = " ".join(ast.unparse(side) for side in sides)
            if "shape[1]" in text or "ndim" in text:          # an input-width check, not a size path
                continue
            if ".size" in text:
                kind = "size"
            elif any(w in text for w in ("shape[0]", "len(")) or \
                    any(isinstance(side, ast.Name) and side.id in ("n", "batch") for side in sides):
                kind = "batch"
            else:
                continue
            for side in sides:
                if isinstance(side, ast.Constant) and type(side.value) is int and 0 < side.value < 4096:
                    found.add((kind, side.value))
    return sorted(found)[:limit]


def _batches(net: Network, module) -> dict:
    """Batch sizes per regime: the fixed ones, plus both sides of every size threshold in the module."""
    extra = set()
    for kind, c in size_thresholds(module):
        if kind == "batch":
            extra |= {c, c + 1}
        else:                                     # an array's size: batch x some layer's width
            extra |= {c // w + 1 for w in sorted(set(net.sizes[1:]))[:3]}
    normal = sorted(set(BATCHES) | {b for b in extra if 1 <= b <= 1024})
    return {"normal": tuple(normal[:8]), "tails": (5, 17), "kinks": (5, 17)}


def check_init_params(net: Network, module, rows: _Rows) -> None:
    """init_params: every parameter, its shape and dtype, finite, and the same for the same seed."""
    if not hasattr(module, "init_params"):
        return
    for dtype in DTYPES:
        row = rows[("init_params", np.dtype(dtype).name)]
        a = _call(row, "init_params", module.init_params, 3, dtype)
        b = _call(row, "init_params", module.init_params, 3, dtype)
        if a is None or b is None:
            continue
        for name, shape in net.param_shapes().items():
            v, w = a.get(name) if isinstance(a, dict) else None, b.get(name) if isinstance(b, dict) else None
            if not isinstance(v, np.ndarray) or v.shape != tuple(shape) or v.dtype != np.dtype(dtype):
                row.fail(f"init_params(seed=3, dtype={np.dtype(dtype).name})[{name!r}] is "
                         f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}, expected {shape}")
            elif not np.all(np.isfinite(v)):
                row.fail(f"init_params(seed=3)[{name!r}] is not finite")
            elif not _same(v, w):
                row.fail(f"init_params(seed=3)[{name!r}] differs between two calls with the same seed")
            else:
                row.checked += 1


# --- the whole check -------------------------------------------------------------------------------

REGIME_BATCHES = {"normal": BATCHES, "tails": (5, 17), "kinks": (5, 17)}


def check_module(net: Network, module, seed: int = 0, fd_samples: int | None = None, progress=None,
                 dtypes=DTYPES, batches: dict | None = None) -> Report:
    """Check every entry point of `module` against `net`'s formulas: forward values and cache, loss,
    predict, loss_and_grad and backward (every entry, by directional derivatives), sgd_step, output
    dtypes; at batch sizes 1, 2, 5 and 65, at normal points, in the tails and with pre-activations
    exactly at a kink; in float64 and float32. Finite differences and the Taylor remainder test
    the float64 gradient a third way. Work is bounded by sizes and counts, never by time.

    Args:
        progress: called as progress(text, done, total) before each case: `done` of the `total`
            cases are checked, `text` names the next one (the CLI shows it on a terminal).
        fd_samples: accepted for compatibility; the entries checked follow from FULL_BUDGET.

    >>> from derive.spec import Dense, Network
    >>> net = Network("tiny", 2, [Dense(2, "tanh"), Dense(1, "identity")], loss="mse")
    """
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    rows = _Rows()
    batches = batches or _batches(net, module)
    check_init_params(net, module, rows)
    cases = []
    for regime, bs in batches.items():
        if regime == "kinks" and not _zero_kinks(net) and not _loss_kinks_at_target(net):
            continue
        for b in bs:
            x, y, params = sample_point(net, rng, regime, b)
            for dtype in dtypes:
                cases.append((regime, b, dtype, x, y, params))
    for i, (regime, b, dtype, x, y, params) in enumerate(cases):
        if progress is not None:
            progress(f"{regime} point, batch {b}, {np.dtype(dtype).name}", i, len(cases))
        case = _Case(net, module, rows, regime, b, dtype, x, y, params, np.random.default_rng([seed, i]))
        first64 = dtype == np.float64 and regime != "kinks" and b in (2, 65)
        case.run(fd=first64, taylor=first64 and regime == "normal" and b == 2)
    order = {"forward": 0, "predict": 1, "loss": 2, "loss_and_grad": 3, "backward": 4, "sgd_step": 5,
             "finite differences": 6, "taylor": 7, "dtype": 8, "inputs unchanged": 9, "init_params": 10}
    names = list(net.param_shapes())

    def key(r):
        idx = names.index(r.param) if r.param in names else -1
        return order.get(r.entry, 9), idx, r.param

    ordered = sorted((r for r in rows.rows.values() if r.checked or not r.ok), key=key)
    sizes = ", ".join(map(str, batches["normal"]))
    what = (f"{len(cases)} cases (batches {sizes}; normal, tails, exact kinks; float64, float32); symbolic = "
            "sp.diff of every formula, chained in extended precision")
    return Report(net.name, what, ordered, len(cases), time.monotonic() - start)

