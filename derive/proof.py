"""The proof: the printed Program, run exactly on small instances, equals sp.diff of the scalar expansion.

`run` executes a Program's statements on NumPy object arrays of mpmath numbers (40 digits), with
the same node semantics the printer gives them; `prove` compares what it computes for every weight
with plain `sp.diff` of the loss expanded into scalars (one Symbol per weight). So the proof is of
the statements the module prints, not of a copy of the recurrence.
"""
import mpmath
import numpy as np
import sympy as sp

from . import naming, nodes
from .program import RATE, SCALE, Program, program

DIGITS = 40

_FUNCS = {sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.erf: mpmath.erf,
          sp.sinh: mpmath.sinh, sp.cosh: mpmath.cosh, sp.sin: mpmath.sin, sp.cos: mpmath.cos,
          sp.tan: mpmath.tan, sp.atan: mpmath.atan, sp.asinh: mpmath.asinh, sp.Abs: abs,
          sp.sign: mpmath.sign, sp.cot: mpmath.cot, sp.acosh: mpmath.acosh, sp.atanh: mpmath.atanh,
          nodes.Sigmoid: lambda u: 1 / (1 + mpmath.exp(-u)), nodes.Softplus: lambda u: mpmath.log(1 + mpmath.exp(u)),
          nodes.Expm1: mpmath.expm1, nodes.Log1p: mpmath.log1p, nodes.Erfc: mpmath.erfc}
_COMPARE = {">": lambda u, v: u > v, "<": lambda u, v: u < v, ">=": lambda u, v: u >= v,
            "<=": lambda u, v: u <= v, "==": lambda u, v: u == v, "!=": lambda u, v: u != v}


def _elementwise(fn, *arrays):
    return np.vectorize(fn, otypes=[object])(*arrays)


def _heaviside(u, h0):
    return mpmath.mpf(1) if u > 0 else (mpmath.mpf(0) if u < 0 else h0)


class _Runner:
    """Evaluates Program expressions on object arrays, with the printer's meaning of every node.

    Numerically (mpmath numbers in the arrays), or symbolically (SymPy expressions in the arrays:
    each elementwise function is then applied as the SymPy function itself).
    """

    def __init__(self, env: dict, symbolic: bool = False):
        self.env, self.symbolic = env, symbolic

    def __call__(self, e):
        if isinstance(e, sp.Symbol):
            return self.env[e.name]
        if e.is_Number or e.is_NumberSymbol:
            return e if self.symbolic else mpmath.mpf(sp.N(e, mpmath.mp.dps + 5))
        if self.symbolic and not isinstance(e, nodes.ArrayOp) and not e.is_Add and not e.is_Mul:
            if isinstance(e, sp.Piecewise):
                pairs = [(self(v), self(c)) for v, c in e.args]
                flat = np.broadcast_arrays(*[arr for pair in pairs for arr in pair])
                return _elementwise(lambda *v: sp.Piecewise(*zip(v[::2], v[1::2])), *flat)
            return _elementwise(lambda *v: e.func(*v), *[self(a) for a in e.args])
        if e in (sp.true, sp.false):
            return bool(e)
        if e.is_Add:
            out = self(e.args[0])
            for a in e.args[1:]:
                out = out + self(a)
            return out
        if e.is_Mul:
            out = self(e.args[0])
            for a in e.args[1:]:
                out = out * self(a)
            return out
        if e.is_Pow:
            return _elementwise(lambda b, p: b ** p, self(e.base), self(e.exp))
        handler = getattr(self, "_" + type(e).__name__, None)
        if handler is not None:
            return handler(*e.args)
        if isinstance(e, sp.core.relational.Relational):
            return _elementwise(_COMPARE[e.rel_op], self(e.lhs), self(e.rhs))
        if e.func in _FUNCS:
            return _elementwise(_FUNCS[e.func], *[self(a) for a in e.args])
        raise TypeError(f"the proof cannot evaluate {e.func}")

    # array nodes
    def _Dot(self, a, b):
        return np.dot(self(a), self(b))

    def _T(self, a):
        return self(a).T

    def _BatchSum(self, a):
        return self(a).sum(axis=0)

    def _UnitSum(self, a):
        return self(a).sum(axis=1, keepdims=True)

    def _Total(self, a):
        return np.sum(self(a))

    def _Like(self, value, ref):
        return np.broadcast_to(np.asarray(self(value), dtype=object), np.shape(self(ref))).copy()

    def _LogSoftmax(self, z):
        z = self(z)
        out = np.empty_like(z)
        if self.symbolic:
            for i, row in enumerate(z):
                out[i] = [v - sp.log(sp.Add(*[sp.exp(u) for u in row])) for v in row]
            return out
        for i, row in enumerate(z):
            top = max(row)
            log_sum = mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in row))
            out[i] = [v - top - log_sum for v in row]
        return out

    # elementwise pieces with structure
    def _Heaviside(self, u, h0=sp.S.Half):
        return _elementwise(_heaviside, self(u), self(h0))

    def _Max(self, *args):
        return _elementwise(max, *[self(a) for a in args])

    def _Min(self, *args):
        return _elementwise(min, *[self(a) for a in args])

    def _Piecewise(self, *branches):
        values = [self(v) for v, _ in branches]
        conds = [self(c) for _, c in branches]
        out = values[-1]
        for v, c in zip(reversed(values[:-1]), reversed(conds[:-1])):
            out = _elementwise(lambda cc, a, b: a if cc else b, c, v, out)
        return out

    def _And(self, *args):
        return _elementwise(lambda *v: all(v), *[self(a) for a in args])

    def _Or(self, *args):
        return _elementwise(lambda *v: any(v), *[self(a) for a in args])


def run(prog: Program, env: dict, passes=("forward", "loss", "backward"), symbolic: bool = False) -> dict:
    """Execute the Program's statements on `env` (name -> object array of mpf, or of SymPy expressions
    when symbolic), in order; returns env."""
    ev = _Runner(env, symbolic)
    for name in passes:
        for s in prog.passes()[name]:
            value = ev(s.expr)
            if s.op == "=":
                env[s.name] = value
            elif s.op == "+=":
                env[s.name] = env[s.name] + value
            elif s.op == "*=":
                env[s.name] = env[s.name] * value
            else:
                raise ValueError(f"unknown statement op {s.op!r}")
    return env


def _exact(values) -> np.ndarray:
    return np.vectorize(lambda v: mpmath.mpf(sp.Rational(float(v)).p) / sp.Rational(float(v)).q,
                        otypes=[object])(np.asarray(values, dtype=float))


class _Steps:
    """A proof's steps, counted for a progress callback progress(text, done, total); silent without one."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, text: str) -> None:
        """The next step, `text`, begins."""
        if self.progress is not None:
            self.progress(text, self.done, self.total)
        self.done += 1


def prove(net, points: int = 2, seed: int = 0, progress=None) -> list[tuple[str, float]]:
    """The printed Program equals sp.diff of the expanded loss, weight by weight, and the loss value too.

    The loss is expanded into scalars (one Symbol per weight) on a batch of 2 and differentiated by
    every weight with plain sp.diff; the Program runs on the same rationals at `points` random
    rational weight vectors to DIGITS digits. cce targets are drawn as rows that do not sum to 1
    (the derivation must not assume that they do). Returns (name, largest |difference|) pairs, with
    "loss" for the loss value. progress: called as progress(text, done, total) before each step.
    """
    from .expansion import _targets, evaluate, expanded_loss, param_symbols, sample_batch
    from .elementwise import at_kinks
    prog = program(net)
    net = prog.network
    P = param_symbols(net)
    rng = np.random.default_rng(seed)
    x, y = sample_batch(net, rng, 2)
    if prog.derivation.loss.target == "onehot":
        y = y * rng.uniform(0.5, 1.5, size=(len(y), 1)) + rng.uniform(0, 0.3, size=y.shape)
    step = _Steps(progress, 1 + sum(len(M) for M in P.values()) + points)
    step("the loss expanded into scalars")
    L = expanded_loss(net, P, x, y)
    exact = {}
    for name, M in P.items():
        exact[name] = []
        for i, s in enumerate(M):
            step(f"sp.diff by {name} entry {i + 1}/{len(M)}")
            exact[name].append(at_kinks(sp.diff(L, s), s))
    worst = {name: 0.0 for name in P} | {"loss": 0.0}
    with mpmath.workdps(DIGITS):
        for point in range(points):
            step(f"the Program against sp.diff at point {point + 1}/{points}")
            values = {s: mpmath.mpf(int(rng.integers(-900, 900))) / 1000 for M in P.values() for s in M}
            env = {"x": _exact(x), "y": _exact(_targets(net, y)), SCALE.name: mpmath.mpf(1) / len(x),
                   RATE.name: mpmath.mpf(1)}
            for name, M in P.items():
                env[name] = np.array([values[s] for s in M], dtype=object).reshape(net.param_shapes()[name])
            run(prog, env)
            memo = {}
            for name in P:
                got = np.ravel(env[f"d{name}"])
                for idx, e in enumerate(exact[name]):
                    worst[name] = max(worst[name], abs(float(evaluate(e, values, memo) - got[idx])))
            got = env[naming.TOTAL] / len(x) + (env[naming.PENALTY] if prog.penalised else 0)
            worst["loss"] = max(worst["loss"], abs(float(evaluate(L, values, memo) - got)))
    return list(worst.items())


# --- curvature: the R-operator passes against sp.diff of the expansion, twice --------------------

def small_instance(net, width: int = 2):
    """The same layers, activations and loss with every width (and the input) cut to `width`: the
    derivation does not depend on the widths, so the proof of the small one is of the statements
    the full-size module prints."""
    import dataclasses

    layers = tuple(layer.resized(min(layer.units, width)) for layer in net.layers)
    return dataclasses.replace(net, inputs=min(net.inputs, width), layers=layers)


def _split_loss(net, split: str, s: list, y: list) -> sp.Expr:
    """The per-example loss as a function of the split variable's symbols s (z: through the output
    activation; a: the outputs themselves)."""
    from .expansion import _activate, output_loss
    return output_loss(net, _activate(net, net.depth, s) if split == "z" else s, y)


def prove_curvature(net, points: int = 1, seed: int = 0, progress=None) -> list[tuple[str, float]]:
    """The printed curvature passes equal plain sp.diff of the scalar expansion, exactly.

    H v: the loss expanded into scalars (one Symbol per weight) on a batch of 2, differentiated by
    every weight, and each derivative differentiated again along a random rational v (by t at t = 0,
    every weight w replaced by w + t v).
    G v: J^T H_out J v with J = d(split variable)/d(weights) and H_out the Hessian of the loss in
    the split variable (curvature.gauss_newton_split), both by sp.diff. The Program's R-forward,
    R-backward and Gauss-Newton statements run on the same rationals to DIGITS digits.
    Returns ("hvp W1", largest |difference|) ... and ("gnvp W1", ...) pairs. progress: called as
    progress(text, done, total) before each step.
    """
    from .curvature import gauss_newton_split
    from .elementwise import at_kinks
    from .expansion import (_targets, evaluate, example_output, expanded_loss, param_symbols, penalty_terms,
                            sample_batch)
    from .penalties import W as ENTRY
    prog = program(net)
    net = prog.network
    P = param_symbols(net)
    flat = [s for M in P.values() for s in M]
    rng = np.random.default_rng(seed)
    x, y = sample_batch(net, rng, 2)
    if prog.derivation.loss.target == "onehot":
        y = y * rng.uniform(0.5, 1.5, size=(len(y), 1)) + rng.uniform(0, 0.3, size=y.shape)
    step = _Steps(progress, 1 + len(flat) + len(x) + points * (len(flat) + 1))
    step("the loss expanded into scalars")
    L = expanded_loss(net, P, x, y)
    grad = []
    for i, s in enumerate(flat):
        step(f"sp.diff by weight {i + 1}/{len(flat)}")
        grad.append(at_kinks(sp.diff(L, s), s))
    split = gauss_newton_split(prog.derivation, prog.forward, prog.backward)
    rational = np.vectorize(lambda v: sp.Rational(float(v)), otypes=[object])
    T = _targets(net, y)
    examples = []
    for n, (row, target) in enumerate(zip(rational(x), rational(T))):
        step(f"H_out and J of example {n + 1}/{len(x)}")
        z, a = example_output(net, P, list(row))
        out = z if split == "z" else a
        s = sp.symbols(f"s0:{len(out)}", real=True)
        ell = _split_loss(net, split, list(s), list(target))
        H = [[at_kinks(sp.diff(ell, si, sj), sj) for sj in s] for si in s]
        J = [[at_kinks(sp.diff(o, w), w) for w in flat] for o in out]
        examples.append((s, out, H, J))
    # The penalty's Hessian is diagonal: its second derivative at each penalised entry (gnvp includes it).
    second = {}
    for name, term in penalty_terms(net):
        d2 = at_kinks(sp.diff(term, ENTRY, 2), ENTRY)
        for w in P[name]:
            second[w] = second.get(w, sp.S.Zero) + d2.xreplace({ENTRY: w})
    worst = {f"{kind} {name}": 0.0 for kind in ("hvp", "gnvp") for name in P}
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            # random rationals k/1000: exact for sp.diff, the same numbers to DIGITS digits for the statements
            ks = {w: int(rng.integers(-900, 900)) for w in flat}
            kv = [int(rng.integers(-900, 900)) for _ in flat]
            values = {w: mpmath.mpf(k) / 1000 for w, k in ks.items()}
            v = [mpmath.mpf(k) / 1000 for k in kv]
            # (H v)_i = d/dt dL/dw_i (w + t v) at t = 0: sp.diff again, along v, at the point
            t = sp.Dummy("t", real=True)
            along = {w: sp.Rational(ks[w], 1000) + t * sp.Rational(k, 1000) for w, k in zip(flat, kv)}
            memo = {}
            hv = []
            for i, g in enumerate(grad):
                step(f"H v: sp.diff of gradient entry {i + 1}/{len(grad)}")
                hv.append(evaluate(at_kinks(sp.diff(g.xreplace(along), t), t), {**values, t: mpmath.mpf(0)}, memo))
            step("G v and the Program's statements")
            gv = [evaluate(second[w], values, memo) * v[i] if w in second else mpmath.mpf(0)
                  for i, w in enumerate(flat)]
            for s, out, H, J in examples:
                at = {**values}
                outs = [evaluate(o, values, memo) for o in out]
                at.update(dict(zip(s, outs)))
                Jv = [mpmath.fsum(evaluate(Jk[i], values, memo) * v[i] for i in range(len(flat))) for Jk in J]
                HJv = [mpmath.fsum(evaluate(H[k][m], at, {}) * Jv[m] for m in range(len(s))) for k in range(len(s))]
                for i in range(len(flat)):
                    gv[i] += mpmath.fsum(evaluate(J[k][i], values, memo) * HJv[k] for k in range(len(s))) / len(x)
            env = {"x": _exact(x), "y": _exact(T), SCALE.name: mpmath.mpf(1) / len(x), RATE.name: mpmath.mpf(1)}
            i = 0
            for name, M in P.items():
                shape = net.param_shapes()[name]
                env[name] = np.array([values[s] for s in M], dtype=object).reshape(shape)
                env[naming.direction(name)] = np.array(v[i:i + len(M)], dtype=object).reshape(shape)
                i += len(M)
            run(prog, env, ("forward", "rforward"))
            env_gn = run(prog, dict(env), ("gnbackward",))
            run(prog, env, ("rbackward",))
            got_h = {name: np.ravel(env[naming.rop(naming.grad(name))]) for name in P}
            got_g = {name: np.ravel(env_gn[naming.rop(naming.grad(name))]) for name in P}
            i = 0
            for name, M in P.items():
                for idx in range(len(M)):
                    worst[f"hvp {name}"] = max(worst[f"hvp {name}"], abs(float(hv[i + idx] - got_h[name][idx])))
                    worst[f"gnvp {name}"] = max(worst[f"gnvp {name}"], abs(float(gv[i + idx] - got_g[name][idx])))
                i += len(M)
    return list(worst.items())
