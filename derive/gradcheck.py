"""Check a hand-written backward pass against the derived truth and say, per parameter, what is wrong.

Accepted forms of the candidate (see `as_grad`):

1. a function ``grad(params, x, y) -> dict`` of gradients (or ``-> (loss, dict)``);
2. a module or object with ``loss_and_grad(params, x, y) -> (loss, dict)`` (the generated API);
3. a module or object with ``forward(params, x) -> (y_hat, cache)`` and ``backward(params, cache, y) -> dict``.

Parameters are named and shaped as in DESIGN.md: ``W{l}`` (n_l, n_{l-1}), ``b{l}`` (n_l,); x is
(batch, n_in); the loss is the batch mean. The reference ("the derived truth") is a module
generated from the same spec (the CLI generates one; pass it in from Python). A wrong parameter
gets one sentence from the first hypothesis that explains every case it was tried on: a wrong
shape or the transpose; zero; a constant factor (1/n missing, 2 from the mse convention, the
sign, 1/K); a 1/n hard-coded for one batch size; wrong only in float32; batch-dependent; the error
entering at layer l (every layer below wrong with it) and how delta_l is wrong there: only where
z_l <= 0, > 0 or = 0 exactly, the derivative missing, applied twice, inverted, evaluated at a
instead of z or in its a-form at z, the softmax Jacobian's off-diagonal terms missing; else an
unknown pattern, with the largest deviation.
"""
from dataclasses import dataclass, field

import numpy as np

from .naming import A, X, Y, YHAT
from .spec import Network
from .verify_checks import _num, _where, _zero_kinks, place_kinks, sample_point
from .verify_numeric import derivative, evaluate_array

TOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 3e-3}   # relative to |g| + rms(g) of the tensor
BATCHES = (1, 2, 3, 5)
SEEDS = 3


def as_grad(candidate):
    """The candidate as a function (params, x, y) -> dict of gradients (the forms in the module docstring)."""
    if hasattr(candidate, "loss_and_grad") and callable(candidate.loss_and_grad):
        return lambda p, x, y: candidate.loss_and_grad(p, x, y)[1]
    if all(callable(getattr(candidate, f, None)) for f in ("forward", "backward")):
        return lambda p, x, y: candidate.backward(p, candidate.forward(p, x)[1], y)
    if callable(getattr(candidate, "grad", None)) and not callable(candidate):
        candidate = candidate.grad
    if callable(candidate):
        def grad(p, x, y):
            out = candidate(p, x, y)
            return out[1] if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) else out
        return grad
    raise TypeError("a gradient function grad(params, x, y), or a module with loss_and_grad, or forward and backward")


@dataclass
class Finding:
    param: str
    ok: bool
    sentence: str = ""


@dataclass
class GradcheckReport:
    network: str
    findings: list
    cases: int
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def sentence(self, param: str) -> str:
        return next(f.sentence for f in self.findings if f.param == param)

    def text(self) -> str:
        lines = [f"gradcheck of {self.network}: {self.cases} cases (batches {', '.join(map(str, BATCHES))}, "
                 f"float64 and float32, pre-activations exactly 0 where an activation has a kink there)"]
        for f in self.findings:
            lines.append(f"  {f.param:<5} {'ok' if f.ok else 'WRONG: ' + f.sentence}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(eq=False)
class _Case:
    batch: int
    dtype: np.dtype
    kinks: bool
    x: np.ndarray
    y: np.ndarray
    params: dict          # in dtype
    true: dict            # float64, at the same point
    got: dict | None
    cache: dict           # the reference's forward cache, float64
    error: str = ""

    @property
    def label(self) -> str:
        return f"batch {self.batch}, {self.dtype.name}" + (", z exactly 0 at some units" if self.kinks else "")


def _cases(net: Network, grad, reference, seed: int, seeds: int, batches) -> list:
    cases = []
    kink_layers = _zero_kinks(net)
    for s in range(2 * seeds):
        for b in batches:
            if s >= seeds and b != 1:      # batch 1 shows delta itself (db = delta): more of those
                continue
            rng = np.random.default_rng([seed, s, b])
            x, y, params = sample_point(net, rng, "normal", b)
            for dtype in (np.dtype(np.float64), np.dtype(np.float32)):
                for kinks in (False, True) if kink_layers and b in (1, 3) else (False,):
                    p = {k: v.astype(dtype) for k, v in params.items()}
                    xx = x.astype(dtype)
                    yy = y if net.loss_entry.target == "labels" else y.astype(dtype)
                    if kinks:
                        p = place_kinks(net, reference, p, xx, kink_layers)
                    p64 = {k: v.astype(np.float64) for k, v in p.items()}
                    y64 = yy if net.loss_entry.target == "labels" else yy.astype(np.float64)
                    _, true = reference.loss_and_grad(p64, xx.astype(np.float64), y64)
                    _, cache = reference.forward(p64, xx.astype(np.float64))
                    case = _Case(b, dtype, kinks, xx, yy, p, {k: np.asarray(v) for k, v in true.items()}, None, cache)
                    try:
                        got = grad({k: v.copy() for k, v in p.items()}, xx.copy(), np.array(yy, copy=True))
                        case.got = dict(got)
                    except Exception as e:          # user code: its failure is the finding
                        case.error = f"raised {type(e).__name__}: {e}"
                    cases.append(case)
    return cases


def _close(got, true, dtype) -> np.ndarray:
    """Elementwise: got agrees with true within the dtype's tolerance, relative to the tensor's scale."""
    scale = np.sqrt(np.mean(true ** 2)) if true.size else 0.0
    return np.abs(got - true) <= TOL[np.dtype(dtype)] * (np.abs(true) + scale) + 1e-30


def _is_right(case, name) -> bool:
    g = case.got.get(name) if case.got else None
    if not isinstance(g, np.ndarray) or g.shape != case.true[name].shape:
        return False
    return bool(np.all(_close(np.asarray(g, dtype=np.float64), case.true[name], case.dtype)))


def gradcheck(net: Network, candidate, reference, seed: int = 0, seeds: int = SEEDS,
              batches=BATCHES) -> GradcheckReport:
    """Check `candidate`'s gradients against `reference` (a module generated from `net`) and diagnose.

    Work is bounded by counts: seeds x batches x 2 dtypes (+ kink points), one candidate call each.

    >>> report = gradcheck(net, my_grad, generated_module)     # doctest: +SKIP
    >>> print(report.text())                                   # doctest: +SKIP
    """
    grad = as_grad(candidate)
    cases = _cases(net, grad, reference, seed, seeds, batches)
    names = list(net.param_shapes())
    raised = [c for c in cases if c.error]
    if raised:
        c = raised[0]
        return GradcheckReport(net.name, [Finding(n, False, f"the candidate {c.error} ({c.label})") for n in names],
                               len(cases))
    wrong = {n: [c for c in cases if not _is_right(c, n)] for n in names}
    findings, notes = [], []
    own = {n: _param_level(net, n, cases, wrong[n]) for n in names if wrong[n]}
    entering = _entering_layer(net, wrong)
    delta_sentence = _delta_analysis(net, entering, cases) if entering else None
    for n in names:
        if not wrong[n]:
            findings.append(Finding(n, True))
            continue
        l = int(n[1:])
        weak = _weak(net, n, cases, wrong[n])
        if own[n] is not None:
            sentence = own[n]
        elif entering and l == entering and delta_sentence:
            sentence = f"d{n} is wrong because {delta_sentence}"
        elif entering and l < entering and delta_sentence:
            sentence = f"d{n} inherits the error entering at layer {entering}: {delta_sentence}, " \
                       f"and every layer below uses delta{entering}"
        elif weak is not None:
            sentence = weak
        elif entering and l < entering:
            sentence = f"d{n} inherits the error entering at layer {entering} (delta{entering} is wrong in an " \
                       f"unknown pattern, and every layer below uses it)"
        else:
            sentence = _unknown(n, wrong[n])
        findings.append(Finding(n, False, sentence))
    for n in names:
        for c in cases:
            g = c.got.get(n) if c.got else None
            if isinstance(g, np.ndarray) and g.dtype.kind == "f" and g.dtype != c.dtype:
                notes.append(f"d{n} is {g.dtype} for {c.dtype.name} input (an upcast)")
                break
    return GradcheckReport(net.name, findings, len(cases), notes)


# --- hypotheses about one parameter ----------------------------------------------------------------

def _shape_sentence(name, shape, got_shape, cases):
    if len(shape) == 2 and got_shape == shape[::-1] and shape[0] != shape[1]:
        if all(np.allclose(np.asarray(c.got[name], dtype=float).T, c.true[name], rtol=TOL[c.dtype] * 10,
                           atol=1e-12) for c in cases):
            return f"d{name} is transposed: it has shape {got_shape}, {name} has {shape} (write delta.T @ a, not a.T @ delta)"
    if len(got_shape) == 1 and len(shape) == 1 and all(
            np.asarray(c.got[name]).shape == (c.batch,) for c in cases):
        return (f"d{name} has one entry per example (shape (batch,), not {shape}): it is summed over the wrong axis "
                f"(sum delta over the batch, axis=0)")
    return f"d{name} has shape {got_shape}, expected {shape}"


def _factor(c, name):
    g, t = np.asarray(c.got[name], dtype=float).ravel(), c.true[name].ravel()
    tt = float(t @ t)
    if tt == 0:
        return None
    f = float(g @ t) / tt
    return f if np.all(_close(g, f * t, c.dtype)) else None


def _near(a, b, rel=1e-3) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _factor_sentence(net, name, cases, factors):
    n = np.array([c.batch for c in cases], dtype=float)
    f = np.array(factors)
    K = net.sizes[-1]
    if all(_near(a, f[0]) for a in f):
        c = float(f[0])
        named = {-1.0: f"d{name} has the wrong sign (y - y_hat where y_hat - y is meant)",
                 2.0: f"d{name} is twice the true gradient: mse here is 1/2 sum (y_hat - y)^2, whose derivative "
                      f"has no factor 2",
                 0.5: f"d{name} is half the true gradient",
                 0.0: f"d{name} is always zero"}
        for v, text in named.items():
            if _near(c, v) or (v == 0.0 and abs(c) < 1e-12):
                return text
        if K > 1 and _near(c, 1 / K):
            return f"d{name} is 1/{K} of the true gradient: divided by the number of outputs (the loss sums over them)"
        return f"d{name} is off by a constant factor {c:.6g}"
    if all(_near(a, b) for a, b in zip(f, n)):
        return f"d{name} is n times the true gradient (n = batch size): the 1/n of the batch mean is missing"
    if all(_near(a, -b) for a, b in zip(f, n)):
        return f"d{name} is -n times the true gradient: the sign is wrong and the 1/n of the batch mean is missing"
    if all(_near(a * b, 1.0) for a, b in zip(f, n)):
        if name.startswith("b"):
            return (f"d{name} is 1/n of the true gradient: db is a mean of the already scaled delta (divided by n twice);"
                    f" sum it over the batch")
        return f"d{name} is 1/n of the true gradient: it is divided by n twice"
    n0 = n / f
    if all(_near(a, n0[0]) for a in n0) and _near(n0[0], round(n0[0])) and round(n0[0]) >= 1:
        n0 = np.round(n0)
        return f"d{name} is right only at batch {int(n0[0])}: 1/n is hard-coded as 1/{int(n0[0])}"
    return None


def _param_level(net, name, cases, wrong):
    shape = tuple(net.param_shapes()[name])
    for c in wrong:
        g = c.got.get(name)
        if g is None:
            return f"d{name} is missing from the result"
        if not isinstance(g, np.ndarray):
            return f"d{name} is {type(g).__name__}, not an array"
        if g.shape != shape:
            return _shape_sentence(name, shape, g.shape, [c for c in cases if np.shape(c.got.get(name)) == g.shape])
    if len(shape) == 2 and shape[0] == shape[1] and all(
            np.allclose(np.asarray(c.got[name], dtype=float).T, c.true[name], rtol=TOL[c.dtype] * 10, atol=1e-12)
            for c in cases):
        return f"d{name} is transposed (write delta.T @ a, not a.T @ delta)"
    if all(not np.any(c.got[name]) for c in cases) and any(np.any(c.true[name]) for c in cases):
        return f"d{name} is always zero"
    usable = [c for c in cases if np.any(c.true[name])]
    factors = [_factor(c, name) for c in usable]
    if usable and all(f is not None for f in factors):
        text = _factor_sentence(net, name, usable, factors)
        if text:
            return text
    return None


def _weak(net, name, cases, wrong):
    """Hypotheses that only say where it is wrong: one dtype, some batch sizes."""
    if all(c.dtype == np.float32 for c in wrong):
        return f"d{name} is wrong only in float32 (right in float64)"
    bad_ids = {id(c) for c in wrong}
    batches = sorted({c.batch for c in cases})
    ok = [b for b in batches if all(id(c) not in bad_ids for c in cases if c.batch == b)]
    bad = [b for b in batches if any(id(c) in bad_ids and not c.kinks for c in cases if c.batch == b)]
    if ok and bad:
        return (f"d{name} is batch-dependent: right at batch {', '.join(map(str, ok))}, wrong at batch "
                f"{', '.join(map(str, bad))}")
    return None


def _unknown(name, wrong):
    worst, where = -1.0, None
    for c in wrong:
        g = np.asarray(c.got[name], dtype=float)
        d = np.abs(g - c.true[name])
        i = np.unravel_index(int(np.argmax(d)), d.shape)
        if d[i] > worst:
            worst, where = float(d[i]), (i, g[i], c.true[name][i], c)
    i, got, true, c = where
    return (f"d{name} is wrong in an unknown pattern; the largest deviation is at {_where(name, i)}: "
            f"{_num(got)} where the truth is {_num(true)} ({c.label})")


# --- the error entering at a layer, and how delta_l is wrong there -----------------------------------

def _entering_layer(net, wrong) -> int | None:
    """The highest layer l with dW_l and db_l wrong and every layer below it wrong too."""
    layers = [l for l in range(1, net.depth + 1) if wrong[f"W{l}"] or wrong[f"b{l}"]]
    if not layers:
        return None
    top = max(layers)
    if not (wrong[f"W{top}"] and wrong[f"b{top}"]):
        return None
    if all(wrong[f"W{l}"] or wrong[f"b{l}"] for l in range(1, top)):
        return top
    return None


def _layer_values(net, c, l):
    """z_l and a_l of the reference at this case (float64)."""
    cache = c.cache
    a_prev = np.asarray(c.x, dtype=np.float64) if l == 1 else cache.get(f"a{l - 1}")
    z = a_prev @ c.params[f"W{l}"].astype(np.float64).T + c.params[f"b{l}"].astype(np.float64)
    if f"z{l}" in cache:
        z = cache[f"z{l}"]
    return z, cache.get(f"a{l}")


def _upstream(net, c, l):
    """dL/da_l at batch 1: from the loss formula at the output, else delta_{l+1} @ W_{l+1} of the truth."""
    if l == net.depth:
        y = np.eye(net.sizes[-1])[np.asarray(c.y, dtype=int)] if net.loss_entry.target == "labels" else \
            np.asarray(c.y, dtype=np.float64)
        _, a = _layer_values(net, c, l)
        return np.asarray(evaluate_array(derivative(net.loss_entry.element, YHAT), {YHAT: a, Y: y}), dtype=float)
    return _delta(net, c, l + 1, c.true)[None] @ c.params[f"W{l + 1}"].astype(np.float64)


def _delta(net, c, l, grads) -> np.ndarray:
    """delta_l at batch 1 from db_l: db_l itself, less the bias penalty's slope where b_l is penalised."""
    from .expansion import penalty_terms
    from .penalties import W as ENTRY
    db = np.asarray(grads[f"b{l}"], dtype=float)
    b = c.params[f"b{l}"].astype(np.float64)
    for name, term in penalty_terms(net):
        if name == f"b{l}":
            db = db - np.asarray(evaluate_array(derivative(term, ENTRY), {ENTRY: b}), dtype=float)
    return db


def _delta_analysis(net, l, cases) -> str | None:
    """How delta_l is wrong, from batch-1 cases (there db_l is delta_l itself)."""
    ones = [c for c in cases if c.batch == 1 and c.dtype == np.float64 and c.got and
            np.shape(c.got.get(f"b{l}")) == (net.sizes[l],)]
    if not ones or any(f"a{l - 1}" not in c.cache and l > 1 for c in ones):
        return None
    name = net.layers[l - 1].activation
    zs, bad = [], []
    for c in ones:
        z, _ = _layer_values(net, c, l)
        got, true = _delta(net, c, l, c.got), _delta(net, c, l, c.true)
        zs.append(z[0])
        bad.append(~_close(got, true, c.dtype))
    zs, bad = np.concatenate(zs), np.concatenate(bad)
    if not bad.any():
        return None
    if not net.is_vector(l):
        if np.all(zs[bad] == 0):
            at0 = float(evaluate_array(derivative(net.activation_formula(l), X), {X: np.zeros(1)})[0])
            return (f"delta{l} is wrong only where z{l} is exactly 0: {name}'(0) is {_num(at0)} by convention "
                    f"(a mask z > 0, not z >= 0)")
        if np.all(zs[bad] <= 0) and np.any(zs[bad] < 0):
            return (f"delta{l} is wrong only where z{l} <= 0 (the {name} derivative there: a mask missing, "
                    f"on the wrong side, or on a instead of z)")
        if np.all(zs[bad] > 0):
            return f"delta{l} is wrong only where z{l} > 0 (the {name} derivative there)"
    for text, h in _hypotheses(net, l):
        if all(_matches(net, l, c, h) for c in ones):
            return text
    return None


def _hypotheses(net, l):
    name = net.layers[l - 1].activation
    if net.is_vector(l):
        yield (f"the softmax Jacobian's off-diagonal terms are missing from delta{l} "
               f"(use p*(g - sum(g*p)), not g*p*(1 - p))", lambda z, a, g: g * a * (1 - a))
        return
    f = net.activation_formula(l)
    fp = derivative(f, X)

    def at(expr, v):
        return np.asarray(evaluate_array(expr, {X: v}), dtype=float)

    yield (f"the {name} derivative is missing from delta{l} (dL/da{l} used as dL/dz{l})", lambda z, a, g: g)
    yield (f"the {name} derivative is applied twice in delta{l} (a fused delta already contains it)",
           lambda z, a, g: g * at(fp, z) ** 2)
    yield (f"the {name} derivative in delta{l} is evaluated at a{l} = {name}(z{l}) instead of z{l} "
           f"({name}'(a), or z overwritten in place by the activation)", lambda z, a, g: g * at(fp, a))
    try:
        from .elementwise import derive_elementwise
        fa = derive_elementwise(f).fprime_a
    except Exception:
        fa = None
    if fa is not None:
        yield (f"the {name} derivative in delta{l} takes z{l} where its form {fa} needs a{l}",
               lambda z, a, g: g * np.asarray(evaluate_array(fa, {A: z}), dtype=float))
    yield (f"the {name} mask in delta{l} is inverted (z <= 0 where z > 0 is meant)",
           lambda z, a, g: g * (1 - at(fp, z)))


def _matches(net, l, c, h) -> bool:
    z, a = _layer_values(net, c, l)
    g = _upstream(net, c, l)
    try:
        with np.errstate(all="ignore"):
            expect = np.asarray(h(z, a, g), dtype=float)[0]
    except Exception:
        return False
    got = _delta(net, c, l, c.got)
    return bool(np.all(_close(got, expect, c.dtype))) and np.all(np.isfinite(expect))
