"""The derivation: output delta, hidden-layer delta recurrence, dW and db, from SymPy."""
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from .activations import softmax_instance
from .elementwise import ElementwiseDerivative, derive_elementwise, diff, time_limit
from .losses import LOSSES, Loss
from .naming import A, G, LOGP, X, Y, YHAT
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
    """

    kind: str
    expr: sp.Expr
    raw: sp.Expr
    dloss_da: sp.Expr
    condition: sp.Expr | None
    loss_from: str
    loss_expr: sp.Expr


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
class Derivation:
    """Everything codegen and the LaTeX export need, derived once from a Network."""

    network: Network
    layers: tuple
    output: OutputDelta
    loss: Loss
    indexed: dict = field(default_factory=dict)

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


@lru_cache(maxsize=None)
def _elementwise_output(f: sp.Expr, loss: Loss) -> OutputDelta:
    ew = derive_elementwise(f)
    element = loss.element.subs(YHAT, f)
    raw = diff(element, X)
    dloss_da = diff(loss.element, YHAT).subs(YHAT, A)
    chain = dloss_da * ew.backward_factor
    kind, expr = "chain", chain
    if ew.inverse is not None:
        # Write dL/dz in a = f(z) and let SymPy simplify: sigmoid + bce gives a - y.
        try:
            with time_limit(5):
                fused = sp.factor(sp.simplify(raw.xreplace({X: ew.inverse})))
            if not fused.has(X) and sp.count_ops(fused) < sp.count_ops(chain):
                kind, expr = "fused", fused
        except (TimeoutError, NotImplementedError):
            pass
    loss_expr, loss_from = loss.element.subs(YHAT, A), "output"
    if element.has(sp.log):
        stable = _stable_log(element)
        if _logs_are_softplus(stable):
            loss_expr, loss_from = sp.collect(sp.expand(stable), Y), "logits"
    return OutputDelta(kind, expr, raw, dloss_da, None, loss_from, loss_expr)


@lru_cache(maxsize=None)
def _softmax_output(loss: Loss) -> OutputDelta:
    """Differentiate sum_k loss(softmax(z)_k, y_k) by z_j on a small instance and simplify under sum(y) = 1."""
    z = sp.symbols(f"z1:{_INSTANCE + 1}", real=True)
    y = sp.symbols(f"y1:{_INSTANCE + 1}", real=True)
    p = sp.symbols(f"p1:{_INSTANCE + 1}", positive=True)
    probs = softmax_instance(list(z))
    total = sum(loss.element.subs({YHAT: pk, Y: yk}) for pk, yk in zip(probs, y))
    condition = None
    constrain = {}
    if loss.target in ("onehot", "labels"):
        condition = sp.Eq(sp.Sum(sp.Indexed("y", sp.Symbol("k")), (sp.Symbol("k"), 1, sp.Symbol("K"))), 1)
        constrain = {y[-1]: 1 - sum(y[:-1])}

    def in_probs(j):
        # z_k = log p_k represents any softmax output (softmax is shift-invariant); sum(p) = 1.
        d = diff(total, z[j]).subs(constrain)
        d = d.subs({zk: sp.log(pk) for zk, pk in zip(z, p)}).subs(p[-1], 1 - sum(p[:-1]))
        with time_limit(10):
            return sp.factor(sp.simplify(d))

    raw = diff(total, z[0])
    dloss_da = diff(loss.element, YHAT).subs(YHAT, A)
    kind, expr = "jvp", dloss_da
    try:
        d0 = in_probs(0)
        if d0.free_symbols <= {p[0], y[0]}:
            candidate = d0.xreplace({p[0]: A, y[0]: Y})
            # The same form must hold at another index before it is used for every unit.
            if sp.simplify(in_probs(1) - candidate.xreplace({A: p[1], Y: y[1]})) == 0:
                kind, expr = "fused", candidate
    except (TimeoutError, NotImplementedError):
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


def derive_output(net: Network) -> OutputDelta:
    loss = LOSSES[net.loss]
    L = net.depth
    if net.is_vector(L):
        return _softmax_output(loss)
    return _elementwise_output(net.activation_formula(L), loss)


def derive(net: Network) -> Derivation:
    """Derive the whole backward pass of `net`; the cost does not depend on the layer widths.

    >>> from derive.spec import Dense, Network
    >>> d = derive(Network("logreg", 3, [Dense(1, "sigmoid")], loss="bce"))
    >>> d.output.kind, d.output.expr
    ('fused', a - y)
    """
    layers = tuple(derive_layer(net, l) for l in range(1, net.depth + 1))
    return Derivation(net, layers, derive_output(net), LOSSES[net.loss], indexed_steps())


def hidden_delta(layer: LayerDerivation) -> sp.Expr:
    """delta{l} = g * f'(z{l}) per element, g = (delta{l+1} @ W{l+1}); piecewise factors folded in."""
    return sp.piecewise_fold(G * layer.factor)
