"""The derivation: output delta, hidden-layer delta recurrence, dW and db, from SymPy."""
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from .activations import ACTIVATIONS, XV, softmax_instance
from .elementwise import (MAX_EXPANDED_TERMS, MAX_SIMPLIFY_OPS, ElementwiseDerivative, derive_elementwise, diff,
                          expansion_size, small_enough)
from .errors import DerivationError
from .losses import Loss
from .naming import A, LOGP, X, Y, YHAT, YSUM
from .stable import stabilize
from .spec import Network

# The softmax instance the vector derivations run on; the result is checked on a second index.
_INSTANCE = 3


@dataclass(frozen=True)
class OutputDelta:
    """dL/dz of the output layer, per element, as derived.

    kind: "fused"  - simplified in the output a (e.g. a - y), cheaper than the chain rule;
          "chain"  - dL/da * f'(z) elementwise;
          "jvp"    - softmax with a loss that does not fuse: delta = a * (g - sum(g * a)), g = dL/da.
    expr: for fused/chain the delta element in A, Y (and X); for jvp the element g in A, Y.
    loss_expr: the per-element loss in (X, Y) from logits, (LOGP, Y) from log-softmax, or (A, Y).
    in_a: a fused delta in A, Y before logs of the output were taken from the logits (X) in `expr`,
    as `logs` says (log(a) -> its form in x); else None.
    """

    kind: str
    expr: sp.Expr
    raw: sp.Expr
    dloss_da: sp.Expr
    condition: sp.Expr | None
    loss_from: str
    loss_expr: sp.Expr
    in_a: sp.Expr | None = None
    logs: tuple = ()


@dataclass(frozen=True)
class LayerDerivation:
    """Layer l: z{l} = a{l-1} @ W{l}.T + b{l}, a{l} = f(z{l}), and how delta{l} is formed."""

    index: int
    n_in: int
    n_out: int
    activation: str
    vector: bool
    elementwise: ElementwiseDerivative | None   # None for softmax
    forward: sp.Expr | None = None              # a = f(x), in X
    factor: sp.Expr | None = None               # the f' backward multiplies by: in A where proven, else in X


@dataclass(frozen=True)
class PenaltyTerm:
    """A weight penalty on one parameter: `element` (the coefficient times the registry's formula, in
    penalties.W) summed over the parameter's entries; `gradient` is sp.diff of it by the entry."""

    param: str           # W1, b2 ...
    kind: str            # l2, l1 (penalties.PENALTIES)
    coefficient: sp.Rational
    element: sp.Expr
    gradient: sp.Expr


@dataclass(frozen=True)
class Derivation:
    """Everything codegen and the LaTeX export need, derived once from a Network."""

    network: Network
    layers: tuple
    output: OutputDelta
    loss: Loss
    indexed: dict = field(default_factory=dict)
    penalty: tuple = ()       # PenaltyTerms, in layer order (W before b, l2 before l1)

    @property
    def depth(self) -> int:
        return len(self.layers)


def derive_layer(net: Network, l: int) -> LayerDerivation:
    n_in, n_out = net.sizes[l - 1], net.sizes[l]
    name = net.layers[l - 1].activation
    if net.is_vector(l):
        return LayerDerivation(l, n_in, n_out, name, True, None)
    ew = derive_elementwise(net.activation_formula(l))
    return LayerDerivation(l, n_in, n_out, name, False, ew, ew.f, ew.backward_factor)


def _stable_log(expr: sp.Expr) -> sp.Expr:
    """Expand logs of the output so that only log(1 + exp(u)) remains where possible (log-sigmoid)."""
    expr = expr.replace(lambda e: isinstance(e, sp.log), lambda e: sp.log(sp.together(e.args[0])))
    return sp.expand_log(expr, force=True)


def _logs_are_softplus(expr: sp.Expr) -> bool:
    """Every log in expr is log(1 + exp(u)): safe to print as logaddexp(0, u)."""
    for e in expr.atoms(sp.log):
        arg = e.args[0]
        if not (arg.is_Add and len(arg.args) == 2 and sp.S.One in arg.args
                and any(isinstance(t, sp.exp) for t in arg.args)):
            return False
    return True


def _simplest(*exprs):
    return min(exprs, key=sp.count_ops)


MAX_CANCEL_OPS = 200     # cancel() only chain-rule products this small (focal on sigmoid: 26)


def _has_pole(expr: sp.Expr) -> bool:
    """Whether the output a appears in a denominator of expr (1/a, 1/(1 - a)): a division by 0 where a
    saturates (a sigmoid rounds to 0 or 1)."""
    return any(e.is_Pow and e.exp.is_negative and e.base.has(A) for e in sp.preorder_traversal(expr))


def _without_poles(chain: sp.Expr) -> sp.Expr | None:
    """dL/da * f' with its poles in a cancelled (-y/a + (1 - y)/(1 - a) times a(1 - a) is a - y), collected
    over the logs of a with each coefficient factored; None where a pole remains or it is too large."""
    if not _has_pole(chain) or sp.count_ops(chain) > MAX_CANCEL_OPS or expansion_size(chain) > MAX_EXPANDED_TERMS:
        return None
    try:
        cancelled = sp.cancel(sp.together(chain))
    except (NotImplementedError, sp.PolynomialError):
        return None
    if _has_pole(cancelled) or sp.count_ops(cancelled) > MAX_CANCEL_OPS:
        return None
    logs = sorted((e for e in cancelled.atoms(sp.log) if e.has(A)), key=sp.default_sort_key)
    parts = sp.collect(sp.expand(cancelled), logs, evaluate=False)
    return sp.Add(*[sp.factor(c) * term for term, c in sorted(parts.items(), key=lambda t: sp.default_sort_key(t[0]))])


def _logs_from_logits(expr: sp.Expr, f: sp.Expr) -> tuple:
    """(log(u(a)), its form in x) for every log of the output in expr that is a log-sigmoid in the
    logits x once a = f(x) (log a = -log(1 + exp(-x)) for a sigmoid): finite where a rounds to 0 or 1."""
    out = []
    for e in sorted(expr.atoms(sp.log), key=sp.default_sort_key):
        if not e.has(A):
            continue
        in_x = _stable_log(e.xreplace({A: f}))
        if _logs_are_softplus(in_x) and not in_x.has(A):
            out.append((e, in_x))
    return tuple(out)


def _from_logits(element: sp.Expr) -> sp.Expr:
    """The per-element loss in x, its logs as log(1 + exp(u)): expanded and collected in y (bce:
    softplus(x) - x y) unless that leaves a bare exp (which overflows) where the unexpanded form has none."""
    stable = _stable_log(element)
    if expansion_size(stable) > MAX_EXPANDED_TERMS:
        return sp.collect(stable, Y)
    expanded = sp.collect(sp.expand(stable), Y)
    if _bare_exp(stabilize(expanded)) and not _bare_exp(stabilize(stable)):
        return sp.collect(stable, Y)
    return expanded


def _bare_exp(expr: sp.Expr) -> bool:
    return any(isinstance(e, sp.exp) for e in sp.preorder_traversal(expr))


@lru_cache(maxsize=None)
def _elementwise_output(f: sp.Expr, loss: Loss) -> OutputDelta:
    ew = derive_elementwise(f)
    element = loss.element.subs(YHAT, f)
    raw = diff(element, X)
    dloss_da = diff(loss.element, YHAT).subs(YHAT, A)
    chain = dloss_da * ew.backward_factor
    kind, expr = "chain", chain
    in_a = raw.xreplace({X: ew.inverse}) if ew.inverse is not None else None
    if in_a is not None and small_enough(in_a):
        # Write dL/dz in a = f(z) and let SymPy simplify: sigmoid + bce gives a - y.
        try:
            fused = sp.factor(sp.simplify(in_a))
            if not fused.has(X) and sp.count_ops(fused) < sp.count_ops(chain):
                kind, expr = "fused", fused
        except NotImplementedError:
            pass
    in_a, logs = None, ()
    if kind == "chain":
        # The chain rule divides by a or 1 - a where the loss takes their log (a focal loss): cancelled
        # by SymPy, and those logs computed from the logits, the delta stays finite where a saturates.
        fused = _without_poles(chain)
        if fused is not None:
            logs = _logs_from_logits(fused, f)
            kind, expr, in_a = "fused", fused.xreplace(dict(logs)), fused
    loss_expr, loss_from = loss.element.subs(YHAT, A), "output"
    # From the logits only where the loss takes the log of the output (log-sigmoid): a loss that
    # does not (mse) is computed from the difference a - y, which does not cancel near the optimum.
    if loss.element.has(sp.log(YHAT)) and element.has(sp.log):
        if _logs_are_softplus(_stable_log(element)):
            loss_expr, loss_from = _from_logits(element), "logits"
    return OutputDelta(kind, expr, raw, dloss_da, None, loss_from, loss_expr, in_a, logs)


@lru_cache(maxsize=None)
def _softmax_output(loss: Loss) -> OutputDelta:
    """Differentiate sum_k loss(softmax(z)_k, y_k) by z_j on a small instance and simplify in the outputs.

    Nothing is assumed of the targets: their sum over the units stays a symbol, ysum (a cce target
    need not be one-hot). Only for integer labels, whose one-hot rows the module builds itself, is
    ysum = 1 by construction.
    """
    z = sp.symbols(f"z1:{_INSTANCE + 1}", real=True)
    y = sp.symbols(f"y1:{_INSTANCE + 1}", real=True)
    p = sp.symbols(f"p1:{_INSTANCE + 1}", positive=True)
    probs = softmax_instance(list(z))
    total = sum(loss.element.subs({YHAT: pk, Y: yk}) for pk, yk in zip(probs, y))
    condition = None
    ysum = YSUM
    if loss.target == "labels":
        condition = sp.Eq(sp.Sum(sp.Indexed("y", sp.Symbol("k")), (sp.Symbol("k"), 1, sp.Symbol("K"))), 1)
        ysum = sp.S.One
    constrain = {y[-1]: ysum - sum(y[:-1])}

    def in_probs(j):
        # z_k = log p_k represents any softmax output (softmax is shift-invariant); sum(p) = 1.
        d = diff(total, z[j]).subs(constrain)
        d = d.subs({zk: sp.log(pk) for zk, pk in zip(z, p)}).subs(p[-1], 1 - sum(p[:-1]))
        if not small_enough(d):
            raise DerivationError("too large to simplify")
        return sp.factor(sp.simplify(d))

    raw = diff(total, z[0])
    dloss_da = diff(loss.element, YHAT).subs(YHAT, A)
    kind, expr = "jvp", dloss_da
    try:
        d0 = in_probs(0)
        if d0.free_symbols <= {p[0], y[0], YSUM}:
            candidate = d0.xreplace({p[0]: A, y[0]: Y})
            # The same form must hold at another index before it is used for every unit.
            if sp.simplify(in_probs(1) - candidate.xreplace({A: p[1], Y: y[1]})) == 0:
                kind, expr = "fused", sp.collect(sp.expand(candidate), YSUM)
    except (DerivationError, NotImplementedError):
        pass
    if loss.element.has(sp.log(YHAT)):
        loss_expr, loss_from = loss.element.subs(sp.log(YHAT), LOGP).subs(YHAT, A), "log_softmax"
    else:
        loss_expr, loss_from = loss.element.subs(YHAT, A), "output"
    return OutputDelta(kind, expr, raw, dloss_da, condition, loss_from, loss_expr)


@lru_cache(maxsize=1)
def indexed_steps() -> dict:
    """The per-unit form u_k = sum_j w_kj a_j + b_k differentiated by SymPy (seed 002's appendices)."""
    k, j, q, r = sp.symbols("k j q r", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, positive=True)
    w, a, b = sp.IndexedBase("w"), sp.IndexedBase("a"), sp.IndexedBase("b")
    u = sp.Sum(w[k, j] * a[j], (j, 1, n)) + b[k]
    inside = (r >= 1) & (r <= n)

    def within(e):
        # Drop the Piecewise that says "index inside 1..n": the indices are in range by construction.
        return e.replace(lambda t: isinstance(t, sp.Piecewise), lambda t: t.args[0][0] if t.args[0][1] in
                         (inside, sp.And(r <= n, r >= 1), sp.And(n >= r, r >= 1)) else t)

    return {
        "u": u,
        "du_dw": within(sp.diff(u, w[q, r]).doit()),   # KroneckerDelta(k, q) * a[r]
        "du_da": within(sp.diff(u, a[r]).doit()),      # w[k, r]
        "du_db": sp.diff(u, b[q]),                     # KroneckerDelta(k, q)
        "symbols": {"k": k, "j": j, "q": q, "r": r, "n": n, "w": w, "a": a, "b": b},
    }


# --- the indexed form lowered to matrices (what the Program's statements are made of) -----------

_BATCH, _UNITS, _INPUTS = sp.symbols("N K J", integer=True, positive=True)
_N_IDX = sp.Symbol("i", integer=True, nonnegative=True)       # the example in the batch


@dataclass(frozen=True)
class MatrixSteps:
    """The per-unit derivatives of u_k = sum_j w_kj a_j + b_k contracted over a batch, as matrices.

    On generic MatrixSymbols delta (N x K), a (N x J), W (K x J), b (K x 1), ones (N x 1):
    dL/dW[q, r] = sum_i sum_k delta[i, k] du_k/dw_qr (-> delta.T*a), dL/db[q] (-> delta.T*ones),
    dL/da[i, r] = sum_k delta[i, k] du_k/da_r (-> delta*W), and the forward product sum_j a w (-> a*W.T).
    """

    delta: sp.MatrixSymbol
    a: sp.MatrixSymbol
    W: sp.MatrixSymbol
    b: sp.MatrixSymbol
    ones: sp.MatrixSymbol
    forward: sp.MatrixExpr       # a*W.T (b is added per row)
    dW: sp.MatrixExpr
    db: sp.MatrixExpr
    upstream: sp.MatrixExpr


def _to_matrix(contraction: sp.Expr, free: list) -> sp.MatrixExpr:
    from sympy.tensor.array.expressions.from_array_to_matrix import convert_array_to_matrix
    from sympy.tensor.array.expressions.from_indexed_to_array import convert_indexed_to_array
    m = convert_array_to_matrix(convert_indexed_to_array(contraction, first_indices=free))
    if isinstance(m, sp.matrices.expressions.matexpr.MatrixElement):   # a column, indexed [q, 0]
        m = m.parent
    if not isinstance(m, sp.MatrixExpr):
        raise DerivationError(f"the contraction {contraction} did not lower to a matrix product: {m}")
    return m


@lru_cache(maxsize=1)
def matrix_steps() -> MatrixSteps:
    """Lower indexed_steps() mechanically: substitute matrix entries, sum over k and the batch, convert.

    >>> m = matrix_steps()
    >>> m.dW, m.db, m.upstream, m.forward
    (delta.T*a, delta.T*ones, delta*W, a*W.T)
    """
    steps = indexed_steps()
    s = steps["symbols"]
    k, q, r, j = s["k"], s["q"], s["r"], s["j"]
    i = _N_IDX
    delta = sp.MatrixSymbol("delta", _BATCH, _UNITS)
    a = sp.MatrixSymbol("a", _BATCH, _INPUTS)
    W = sp.MatrixSymbol("W", _UNITS, _INPUTS)
    b = sp.MatrixSymbol("b", _UNITS, 1)
    ones = sp.MatrixSymbol("ones", _BATCH, 1)

    def lift(e):
        """The per-unit expression on one example i, written in matrix entries (0-based)."""
        e = e.replace(lambda t: isinstance(t, sp.Indexed) and t.base == s["a"], lambda t: a[i, t.indices[0]])
        e = e.replace(lambda t: isinstance(t, sp.Indexed) and t.base == s["w"],
                      lambda t: W[t.indices[0], t.indices[1]])
        return e.replace(lambda t: isinstance(t, sp.Indexed) and t.base == s["b"], lambda t: b[t.indices[0], 0])

    def chain(du):
        """sum_k delta[i, k] du_k: the chain rule through the layer's pre-activations, on example i."""
        per = sp.Sum(delta[i, k] * lift(du), (k, 0, _UNITS - 1)).doit()
        # KroneckerDelta sums come back as Piecewise on "q inside 0..K-1": true by construction.
        return per.replace(lambda t: isinstance(t, sp.Piecewise), lambda t: t.args[0][0])

    def over_batch(per):
        """sum_i per; a term with no other entry on example i contracts with a ones vector (1^T delta)."""
        if not any(isinstance(f, sp.matrices.expressions.matexpr.MatrixElement) and f.parent != delta
                   for f in sp.Mul.make_args(per)):
            per = per * ones[i, 0]
        return sp.Sum(per, (i, 0, _BATCH - 1))

    u = lift(steps["u"]).xreplace({steps["symbols"]["n"]: _INPUTS})
    product = next(t for t in sp.Add.make_args(u) if isinstance(t, sp.Sum))
    product = sp.Sum(product.function, (j, 0, _INPUTS - 1))
    return MatrixSteps(
        delta, a, W, b, ones,
        forward=_to_matrix(product, [i, k]),
        dW=_to_matrix(over_batch(chain(steps["du_dw"])), [q, r]),
        db=_to_matrix(over_batch(chain(steps["du_db"])), [q]),
        upstream=_to_matrix(chain(steps["du_da"]), [i, r]),
    )


def _within(expr: sp.Expr) -> sp.Expr:
    """Take the first branch of a Piecewise on index bounds (K >= j): indices are in range by construction."""
    def on_indices(pw):
        cond = pw.args[0][1]
        return cond != sp.true and all(s.is_integer for s in cond.free_symbols)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise) and on_indices(e), lambda e: e.args[0][0])


@dataclass(frozen=True)
class SoftmaxSteps:
    """softmax a_k = e^{z_k} / sum_j e^{z_j} differentiated by SymPy in the indexed form."""

    k: sp.Symbol
    j: sp.Symbol
    m: sp.Symbol
    K: sp.Symbol
    a: sp.IndexedBase
    g: sp.IndexedBase
    y: sp.IndexedBase
    formula: sp.Expr        # a_k in z
    raw: sp.Expr            # d a_k / d z_j as sp.diff gave it
    jacobian: sp.Expr       # the same in a: a_k ([k = j] - a_j)
    jvp_sum: sp.Expr        # sum_k g_k d a_k / d z_j
    jvp: sp.Expr            # ... = a_j (g_j - sum_m g_m a_m)
    u: sp.IndexedBase       # a direction in z (the curvature passes' R{z})
    forward_jvp: sp.Expr    # sum_k d a_j / d z_k u_k: the directional derivative of a_j along u
    log_jvp: sp.Expr        # d log(a_j) / d a_j times forward_jvp: the same for log-softmax


@lru_cache(maxsize=1)
def softmax_steps() -> SoftmaxSteps:
    """Differentiate the registry's softmax formula by z_j and rewrite the result in the outputs a.

    >>> softmax_steps().jacobian
    (KroneckerDelta(j, k) - a[j])*a[k]
    >>> softmax_steps().jvp
    (g[j] - Sum(a[k]*g[k], (k, 1, K)))*a[j]
    """
    f = ACTIVATIONS["softmax"].formula
    K = next(i for i in f.free_symbols if i.name == "K")
    k = next(i for i in f.free_symbols if isinstance(i, sp.Symbol) and i.name == "k")
    j = sp.Symbol("j", integer=True, positive=True)
    m = sp.Symbol("m", integer=True, positive=True)
    z, a = sp.IndexedBase("z"), sp.IndexedBase("a")
    g, y = sp.IndexedBase("g"), sp.IndexedBase("y")
    dummy = next(s for s in f.atoms(sp.Sum)).variables[0]
    formula = f.xreplace({dummy: m}).replace(lambda e: isinstance(e, sp.Indexed) and e.base == XV,
                                              lambda e: z[e.indices[0]])
    raw = sp.diff(formula, z[j])
    total = sp.Symbol("S", positive=True)
    s = next(iter(formula.atoms(sp.Sum)))
    # e^{z_i} = a_i * S, where S is the softmax denominator.
    in_a = _within(raw.doit()).xreplace({s: total})
    in_a = in_a.replace(lambda e: isinstance(e, sp.exp) and isinstance(e.args[0], sp.Indexed),
                        lambda e: a[e.args[0].indices[0]] * total)
    jacobian = sp.factor(sp.simplify(in_a))
    if jacobian.has(total):
        raise DerivationError(f"softmax Jacobian did not simplify: {jacobian}")
    jvp_sum = sp.Sum(g[k] * jacobian, (k, 1, K))
    jvp = sp.factor_terms(_within(jvp_sum.doit()))
    u = sp.IndexedBase("u")
    # Forward mode: d a_j / d z_k is the Jacobian with the roles of j and k exchanged.
    swapped = jacobian.xreplace({j: k, k: j})
    forward_jvp = sp.factor_terms(_within(sp.Sum(swapped * u[k], (k, 1, K)).doit()))
    log_jvp = sp.expand(sp.diff(sp.log(a[j]), a[j]) * forward_jvp)
    if log_jvp.has(sp.Pow(a[j], -1)):
        raise DerivationError(f"the log-softmax directional derivative did not cancel: {log_jvp}")
    return SoftmaxSteps(k, j, m, K, a, g, y, formula, raw, jacobian, jvp_sum, jvp, u, forward_jvp, log_jvp)


def derive_output(net: Network) -> OutputDelta:
    loss = net.loss_entry
    L = net.depth
    if net.is_vector(L):
        return _softmax_output(loss)
    return _elementwise_output(net.activation_formula(L), loss)


def derive_penalty(net: Network) -> tuple:
    """Every weight penalty of `net` as a PenaltyTerm: its element from the registry, its gradient by sp.diff.

    >>> from derive.spec import Dense, Network
    >>> t, = derive_penalty(Network("p", 2, [Dense(1, l2=0.01)], loss="mse"))
    >>> t.param, t.element, t.gradient
    ('W1', w**2/200, w/100)
    """
    from . import naming
    from .losses import exact
    from .penalties import PENALTIES, W, penalty_kind
    terms = []
    for l in range(1, net.depth + 1):
        given = net.penalties(l)
        for key in sorted(given, key=lambda k: (k.startswith("bias_"), k != "l2" and k != "bias_l2")):
            kind, on_bias = penalty_kind(key)
            coefficient = exact(given[key])
            element = coefficient * PENALTIES[kind]
            param = naming.bias(l) if on_bias else naming.weight(l)
            terms.append(PenaltyTerm(param, kind, coefficient, element, diff(element, W)))
    return tuple(terms)


def derive(net: Network) -> Derivation:
    """Derive the whole backward pass of `net`; the cost does not depend on the layer widths.

    >>> from derive.spec import Dense, Network
    >>> d = derive(Network("logreg", 3, [Dense(1, "sigmoid")], loss="bce"))
    >>> d.output.kind, d.output.expr
    ('fused', a - y)
    """
    layers = tuple(derive_layer(net, l) for l in range(1, net.depth + 1))
    return Derivation(net, layers, derive_output(net), net.loss_entry, indexed_steps(), derive_penalty(net))
