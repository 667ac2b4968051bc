"""The curvature check: a generated module's hvp, gnvp, loss_grad_hvp and hessian, three ways.

- symbolic: the Program's R-forward, R-backward and Gauss-Newton statements, run exactly (40
  digits) on the network's small instance (widths cut to 2), against plain sp.diff of the scalar
  expansion differentiated twice, and J^T H_out J by sp.diff (proof.prove_curvature);
- finite differences: at full size, in float64, hvp(v) against Richardson-extrapolated central
  differences of the module's own gradient along v, and u.G v against (J u)^T H_out (J v), with J u
  and J v central differences of an independent float64 forward pass and H_out sp.diff of the loss
  in the split variable, twice (plus u^T H_penalty v, the weight penalty's per-entry formula
  differentiated twice, where the spec has one);
- the module against itself: the Hessian is symmetric and its columns are hvp, u.H v = v.H u,
  G is positive semi-definite (every loss here is convex in the split variable), loss_grad_hvp is
  loss_and_grad and hvp, float32 stays float32, no argument is written into.

Tolerances: each finite difference is trusted to twice its own error estimate |D(h) - D(h/2)| plus
its rounding, 64 u max|f| / h; a step whose path crosses a sign change of any pre-activation or of
an l1-penalised weight (a possible kink) is halved, up to 12 times, or that direction is skipped and counted as skipped.
"""
import math
import time

import numpy as np
import sympy as sp

from .spec import Network
from .verify_checks import Report, _num, _Rows, sample_point
from .verify_numeric import evaluate_array
from .verify_reference import preactivations, targets

BATCHES = (1, 3)
DIRECTIONS = 2           # random directions per batch
MAX_HESSIAN_CHECK = 600  # hessian() is checked up to this many parameters (P hvp calls)
H0 = 2.0 ** -8           # the first finite-difference step (v scaled to max |v| = 1)
HALVINGS = 12
K_ROUND = 64


def _u64() -> float:
    return float(np.finfo(np.float64).eps) / 2


def _flat(d: dict, names) -> np.ndarray:
    return np.concatenate([np.asarray(d[p], dtype=np.float64).ravel() for p in names])


def _shifted(params: dict, v: dict, t: float) -> dict:
    return {p: params[p] + t * v[p] for p in params}


def _signs(net: Network, params: dict, x, kinked=()) -> list:
    """The signs of every hidden pre-activation and of every entry of the parameters in `kinked`
    (a weight penalty's kink, |w| at 0): a step that changes one may cross a kink."""
    return [np.signbit(z) for z in preactivations(net, params, x)[1:-1]] + [np.signbit(params[p]) for p in kinked]


def _penalty_kinks(d) -> list[str]:
    """The parameters whose penalty's gradient has a kink (l1: sign(w)), in penalty order."""
    rough = (sp.Heaviside, sp.sign, sp.Abs, sp.Piecewise)
    return list(dict.fromkeys(t.param for t in d.penalty if t.gradient.has(*rough)))


def _fd(f, crossing, h0: float = H0):
    """Richardson-extrapolated central difference of f(t) at t = 0 and its error bound, or None
    when every step down to h0 / 2**HALVINGS crosses a sign change."""
    h = h0
    for _ in range(HALVINGS + 1):
        if not crossing(h):
            fp, fm, fp2, fm2 = f(h), f(-h), f(h / 2), f(-h / 2)
            d1, d2 = (fp - fm) / (2 * h), (fp2 - fm2) / h
            rich = (4 * d2 - d1) / 3
            scale = max(np.max(np.abs(fp)), np.max(np.abs(fm)), 1e-300)
            bound = 2 * np.abs(d1 - d2) + K_ROUND * _u64() * scale / h
            return rich, bound
        h /= 2
    return None


class _Split:
    """H_out: the Hessian of one example's loss in the split variable (z or a), by sp.diff twice."""

    def __init__(self, net: Network, split: str):
        from .proof import _split_loss
        k = net.sizes[-1]
        self.s = sp.symbols(f"s0:{k}", real=True)
        self.y = sp.symbols(f"t0:{k}", real=True)
        ell = _split_loss(net, split, list(self.s), list(self.y))
        self.H = [[sp.diff(ell, si, sj) for sj in self.s] for si in self.s]
        self.net, self.split = net, split

    def value(self, params: dict, x) -> np.ndarray:
        zs = preactivations(self.net, params, x)
        return zs[-2] if self.split == "z" else zs[-1]

    def hessians(self, at: np.ndarray, y: np.ndarray) -> np.ndarray:
        """H_out of every example, (batch, k, k), evaluated in extended precision."""
        env = {**{s: at[:, i] for i, s in enumerate(self.s)}, **{t: y[:, i] for i, t in enumerate(self.y)}}
        out = np.zeros((at.shape[0], len(self.s), len(self.s)))
        for i, row in enumerate(self.H):
            for j, e in enumerate(row):
                if e != 0:
                    out[:, i, j] = np.asarray(evaluate_array(e, env), dtype=np.float64)
        return out


def _random(shapes: dict, rng) -> dict:
    v = {p: rng.normal(size=s) for p, s in shapes.items()}
    top = max(float(np.max(np.abs(a))) for a in v.values())
    return {p: a / top for p, a in v.items()}


def _dot(a: dict, b: dict) -> float:
    return float(sum(np.vdot(np.asarray(a[p], np.float64), np.asarray(b[p], np.float64)) for p in a))


def check_curvature(net: Network, module, seed: int = 0, prove: bool = True, progress=None) -> Report:
    """Check the module's curvature entry points against `net` (see the module docstring).

    prove: also run the exact proof of the Program's curvature statements on the small instance.
    progress: called as progress(text, done, total) before each step (see check_module).
    """
    from .curvature import gauss_newton_split
    from .program import program
    from .proof import prove_curvature, small_instance
    start = time.monotonic()
    rows = _Rows()
    names = list(net.param_shapes())
    rng = np.random.default_rng(seed)
    if prove:
        small = small_instance(net)
        step = None if progress is None else \
            lambda text, done, total: progress(f"proof: {text}", done, total)
        for key, worst in prove_curvature(small, progress=step):
            kind, p = key.split()
            rows[(f"symbolic {kind}", p)].record(
                worst / 1e-30, 1, lambda kind=kind, p=p, worst=worst:
                f"the Program's {kind} of {p} differs from sp.diff of the expansion by {worst:.3g} "
                f"(40 digits, {small.describe()})")
    prog = program(net)
    split = _Split(net, gauss_newton_split(prog.derivation, prog.forward, prog.backward))
    kinked = _penalty_kinks(prog.derivation)
    for i, b in enumerate(BATCHES):
        x, y, params = sample_point(net, rng, "normal", b)
        if progress is not None:
            progress(f"finite differences at batch {b}", i, len(BATCHES))
        signs = _signs(net, params, x, kinked)

        def crossing(h, v):
            return any(np.any(s != t) for sign in (1, -1)
                       for s, t in zip(signs, _signs(net, _shifted(params, v, sign * h), x, kinked)))

        for _ in range(DIRECTIONS):
            v, u = _random(net.param_shapes(), rng), _random(net.param_shapes(), rng)
            _check_hvp(module, rows, names, params, x, y, v, lambda h, v=v: crossing(h, v))
            _check_gnvp(net, module, rows, split, params, x, y, u, v,
                        lambda h, u=u, v=v: crossing(h, u) or crossing(h, v))
        _check_api(net, module, rows, names, params, x, y, rng)
    return Report(net.name, f"curvature: {len(BATCHES) * DIRECTIONS} directions per entry at batches "
                  f"{', '.join(map(str, BATCHES))}; symbolic = sp.diff twice on the small instance",
                  list(rows.rows.values()), len(BATCHES), time.monotonic() - start)


def _check_hvp(module, rows, names, params, x, y, v, crossing):
    hv = module.hvp(params, x, y, v)
    fd = _fd(lambda t: _flat(module.loss_and_grad(_shifted(params, v, t), x, y)[1], names), crossing)
    for p in names:
        row = rows[("hvp", p)]
        if fd is None:
            row.note = "a direction skipped: every step crossed a kink"
            continue
        rich, bound = fd
        i = names.index(p)
        lo = sum(int(np.prod(np.shape(params[q]))) for q in names[:i])
        got = np.asarray(hv[p], dtype=np.float64).ravel()
        ref, tol = rich[lo:lo + got.size], bound[lo:lo + got.size] + 1e-300
        ratio = float(np.max(np.abs(got - ref) / tol))
        k = int(np.argmax(np.abs(got - ref) / tol))
        row.record(ratio, got.size, lambda: f"hvp[{p}] flat entry {k} is {_num(got[k])}, finite differences of "
                   f"the gradient along v give {_num(ref[k])} (+- {_num(tol[k])}), batch {len(x)}")


def _check_gnvp(net, module, rows, split, params, x, y, u, v, crossing):
    gv = module.gnvp(params, x, y, v)
    gu = module.gnvp(params, x, y, u)
    at = split.value(params, x)
    t = targets(net, y, len(x)).astype(np.float64)
    ju = _fd(lambda s: split.value(_shifted(params, u, s), x), crossing)
    jv = _fd(lambda s: split.value(_shifted(params, v, s), x), crossing)
    row = rows[("gnvp", "u.Gv")]
    if ju is None or jv is None:
        row.note = "a direction skipped: every step crossed a kink"
    else:
        H = split.hessians(at, t)
        n = len(x)
        ref = float(np.einsum("ni,nij,nj->", ju[0], H, jv[0])) / n + _penalty_curvature(net, params, u, v)
        # first order in each factor's error
        err = float(np.einsum("ni,nij,nj->", np.abs(ju[0]), np.abs(H), jv[1])
                    + np.einsum("ni,nij,nj->", ju[1], np.abs(H), np.abs(jv[0]))) / n
        got = _dot(u, gv)
        tol = err + K_ROUND * _u64() * (abs(ref) + abs(got)) * (1 + sum(np.size(a) for a in params.values()))
        row.record(abs(got - ref) / (tol + 1e-300), 1, lambda: f"u.gnvp(v) is {_num(got)}, (J u)^T H_out (J v) with J "
                   f"by finite differences is {_num(ref)} (+- {_num(tol)}), split at {split.split}, batch {len(x)}")
    sym = rows[("gnvp", "symmetric")]
    a, b = _dot(u, gv), _dot(v, gu)
    tol = K_ROUND * _u64() * (abs(a) + abs(b) + 1e-300) * (1 + len(x) + max(net.sizes))
    sym.record(abs(a - b) / tol, 1, lambda: f"u.G v = {_num(a)} but v.G u = {_num(b)}, batch {len(x)}")
    psd = rows[("gnvp", "v.Gv >= 0")]
    q = _dot(v, gv)
    scale = math.sqrt(_dot(v, v) * _dot(gv, gv)) + 1e-300
    psd.record(max(0.0, -q) / (K_ROUND * _u64() * scale * (1 + max(net.sizes))), 1,
               lambda: f"v.G v = {_num(q)} < 0 for a loss convex in the split variable, batch {len(x)}")


def _penalty_curvature(net: Network, params: dict, u: dict, v: dict) -> float:
    """u^T H_penalty v: the weight penalty's second derivative (sp.diff twice of its per-entry formula,
    from the spec: l2 gives its coefficient, l1 0 away from w = 0) at each penalised entry."""
    from .expansion import penalty_terms
    from .penalties import W as ENTRY
    from .verify_numeric import derivative
    total = 0.0
    for name, term in penalty_terms(net):
        d2 = evaluate_array(derivative(derivative(term, ENTRY), ENTRY), {ENTRY: np.asarray(params[name], np.float64)})
        total += float(np.sum(np.asarray(u[name], np.float64) * np.asarray(d2, np.float64) * np.asarray(v[name], np.float64)))
    return total


def _check_api(net, module, rows, names, params, x, y, rng):
    P = sum(int(np.prod(s)) for s in net.param_shapes().values())
    v, u = _random(net.param_shapes(), rng), _random(net.param_shapes(), rng)
    hv, hu = module.hvp(params, x, y, v), module.hvp(params, x, y, u)
    a, b = _dot(u, hv), _dot(v, hu)
    row = rows[("hvp", "symmetric")]
    tol = K_ROUND * _u64() * (math.sqrt(_dot(u, u) * _dot(hv, hv)) + math.sqrt(_dot(v, v) * _dot(hu, hu)) + 1e-300) \
        * (1 + len(x) + max(net.sizes))
    row.record(abs(a - b) / tol, 1, lambda: f"u.H v = {_num(a)} but v.H u = {_num(b)}, batch {len(x)}")
    both = module.loss_grad_hvp(params, x, y, v)
    lg = module.loss_and_grad(params, x, y)
    row = rows[("loss_grad_hvp", "")]
    same = (abs(both[0] - lg[0]) <= 4 * _u64() * abs(lg[0])
            and all(np.allclose(both[1][p], lg[1][p], rtol=1e-12, atol=0) for p in names)
            and all(np.allclose(both[2][p], hv[p], rtol=1e-12, atol=0) for p in names))
    if same:
        row.checked += 1
    else:
        row.fail(f"loss_grad_hvp is not (loss_and_grad, hvp) at batch {len(x)}")
    if P <= MAX_HESSIAN_CHECK and P <= getattr(module, "MAX_HESSIAN_PARAMS", 0):
        H = np.asarray(module.hessian(params, x, y), dtype=np.float64)
        row = rows[("hessian", "")]
        if H.shape != (P, P):
            row.fail(f"hessian has shape {H.shape}, expected {(P, P)}")
        else:
            scale = float(np.max(np.abs(H))) + 1e-300
            asym = float(np.max(np.abs(H - H.T)))
            row.record(asym / (K_ROUND * _u64() * scale * (1 + len(x) + max(net.sizes))), P * P,
                       lambda: f"hessian is not symmetric: max |H - H^T| = {_num(asym)}, batch {len(x)}")
            col = H @ _flat(v, names)
            ref = _flat(hv, names)
            err = float(np.max(np.abs(col - ref)))
            row.record(err / (K_ROUND * _u64() * scale * P * (1 + len(x))), P,
                       lambda: f"hessian @ v differs from hvp(v) by {_num(err)}, batch {len(x)}")
    _check_float32(net, module, rows, names, params, x, y, v)


def _check_float32(net, module, rows, names, params, x, y, v):
    f32 = {p: a.astype(np.float32) for p, a in params.items()}
    v32 = {p: a.astype(np.float32) for p, a in v.items()}
    x32 = x.astype(np.float32)
    y32 = y if net.loss_entry.target == "labels" else y.astype(np.float32)
    before = [{p: a.copy() for p, a in d.items()} for d in (f32, v32)] + [x32.copy(), np.copy(y32)]
    results = {"hvp": module.hvp(f32, x32, y32, v32), "gnvp": module.gnvp(f32, x32, y32, v32)}
    _, g, h = module.loss_grad_hvp(f32, x32, y32, v32)
    results["loss_grad_hvp grad"], results["loss_grad_hvp hvp"] = g, h
    row = rows[("dtype", "float32")]
    for what, d in results.items():
        bad = [p for p in names if getattr(d.get(p), "dtype", None) != np.float32]
        if bad:
            row.fail(f"{what}[{bad[0]}] is {getattr(d.get(bad[0]), 'dtype', type(d.get(bad[0])).__name__)} "
                     "for float32 params, x and v")
        else:
            row.checked += 1
    unchanged = rows[("inputs unchanged", "curvature")]
    after = [f32, v32, x32, y32]
    changed = [i for i, (a, b) in enumerate(zip(before, after))
               if not (all(np.array_equal(a[p], b[p]) for p in a) if isinstance(a, dict) else np.array_equal(a, b))]
    if changed:
        unchanged.fail(f"{['params', 'v', 'x', 'y'][changed[0]]} was written into by a curvature entry point")
    else:
        unchanged.checked += 1
