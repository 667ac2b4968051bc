"""The Program: a Derivation lowered to ordered, named statements that codegen, LaTeX and the proof read.

Each statement is `name op expr` (op "=", "+=" or "*="), where every Symbol in expr names an array
of the generated code (x, z1, a1, delta2, W1 ...; parameters are the Symbols named like PARAM_SHAPES
keys), arithmetic is elementwise with broadcasting, and the matrix operations are the nodes of
derive.nodes. The statements are derived, not typed: the forward product, dW, db and the upstream
gradient are the indexed form lowered by SymPy (backprop.matrix_steps), the softmax Jacobian-vector
product is the indexed derivation of backprop.softmax_steps, and the elementwise pieces are the
derivation's own expressions. A consumer only prints or evaluates them.

>>> from derive import Dense, Network
>>> p = lower(derive(Network("logreg", 3, [Dense(1, "sigmoid")], loss="bce")))
>>> [str(s) for s in p.backward]
['delta1 = a1 - y', 'delta1 *= scale', 'dW1 = Dot(T(delta1), x)', 'db1 = BatchSum(delta1)']
"""
from dataclasses import dataclass

import sympy as sp

from . import naming
from .curvature import lower as lower_curvature
from .backprop import Derivation, LayerDerivation, derive, matrix_steps
from .naming import A, G, X, Y
from .nodes import BatchSum, Dot, Like, LogSoftmax, T, Total, carries_array, is_mask
from .stable import as_value, stabilize
from .statements import RATE, SCALE, Assign, _names, array, softmax_jvp  # noqa: F401  (re-exported)

@dataclass(frozen=True)
class Program:
    """The forward pass, the loss and the backward pass of one network, as statements."""

    derivation: Derivation
    forward: tuple
    loss: tuple          # `total` (the per-example losses summed over the batch), then the weight penalty
    backward: tuple      # scale * dL/dp for every parameter p, as d{p} (a penalty's gradient times rate)
    # The curvature passes (derive.curvature), along a direction v of the parameters (v{p}):
    rforward: tuple = ()     # R{z}, R{a} ... of the forward arrays: J v
    rbackward: tuple = ()    # backward with R-backward interleaved: R{d{p}} = scale * (H v)[p]
    gnbackward: tuple = ()   # J^T H_out J v at the output and back: R{d{p}} = scale * (G v)[p]

    @property
    def network(self):
        return self.derivation.network

    @property
    def output(self) -> str:
        return naming.act(self.derivation.depth)

    @property
    def params(self) -> tuple:
        return tuple(self.network.param_shapes())

    @property
    def grads(self) -> list[tuple[str, str]]:
        return [(p, naming.grad(p)) for p in self.params]

    @property
    def directions(self) -> tuple:
        """The names of the direction v's entries, in parameter order (v["W1"] is vW1)."""
        return tuple(naming.direction(p) for p in self.params)

    def passes(self) -> dict:
        return {"forward": self.forward, "loss": self.loss, "backward": self.backward,
                "rforward": self.rforward, "rbackward": self.rbackward, "gnbackward": self.gnbackward}

    @property
    def data_loss(self) -> tuple:
        """The loss pass up to `total`: the per-example losses summed over the batch."""
        k = next(i for i, s in enumerate(self.loss) if s.name == naming.TOTAL)
        return self.loss[:k + 1]

    @property
    def penalty(self) -> tuple:
        """The loss pass after `total`: the weight penalty (empty without one). L = total / n + penalty."""
        return self.loss[len(self.data_loss):]

    @property
    def penalised(self) -> bool:
        return bool(self.penalty)

    def defining(self, name: str) -> list[Assign]:
        """Every statement of the primal passes that writes `name`, in order (an "=" and the in-place
        updates after it)."""
        return [s for p in (self.forward, self.loss, self.backward) for s in p if s.name == name]


# --- lowering ------------------------------------------------------------------------------------

def _matrix_node(m: sp.MatrixExpr, names: dict) -> sp.Expr:
    """A MatrixExpr of matrix_steps() as Program nodes, its MatrixSymbols renamed to arrays."""
    steps = matrix_steps()
    if isinstance(m, sp.MatrixSymbol):
        return names[m]
    if isinstance(m, sp.Transpose):
        return T(_matrix_node(m.arg, names))
    if isinstance(m, sp.MatMul):
        factors = [f for f in m.args if f != 1]
        if len(factors) == 2 and factors[1] == steps.ones and isinstance(factors[0], sp.Transpose):
            return BatchSum(_matrix_node(factors[0].arg, names))   # 1^T delta: summed over the batch
        out = _matrix_node(factors[0], names)
        for f in factors[1:]:
            out = Dot(out, _matrix_node(f, names))
        return out
    raise TypeError(f"no Program node for {type(m).__name__}: {m}")


def shared_work(l: int, f: sp.Expr, factor: sp.Expr) -> tuple[list, sp.Expr, sp.Expr]:
    """Share the work of f and f' (both in x) with sp.cse: temporaries t{l}_0, t{l}_1 ... ride in the cache.

    Runs on the stable forms (so expm1, logaddexp survive), and keeps number-only subexpressions
    inline: a NumPy float64 scalar temporary would upcast float32 arrays.
    """
    f, factor = stabilize(f), stabilize(factor)
    if factor.has(A) or not factor.has(X):
        return [], f, factor
    symbols = sp.numbered_symbols(naming.temp(l, 0)[:-1], real=True)
    pairs, (f, factor) = sp.cse([f, factor], symbols=symbols, optimizations="basic")
    kept, inline = [], {}
    for sym, expr in pairs:
        expr = expr.xreplace(inline)
        if expr.is_number:
            inline[sym] = expr
        else:
            kept.append((sym, expr))
    return kept, f.xreplace(inline), factor.xreplace(inline)


@dataclass(frozen=True)
class _Layer:
    """One layer's lowered pieces: the statements of its forward pass and the f' backward multiplies by."""

    forward: list
    factor: sp.Expr | None


def _lower_layer(layer: LayerDerivation, is_output: bool, batch) -> _Layer:
    l = layer.index
    steps = matrix_steps()
    z, a, prev = naming.pre(l), naming.act(l), naming.act(l - 1)
    shape = (batch, layer.n_out)
    product = _matrix_node(steps.forward, {steps.a: array(prev), steps.W: array(naming.weight(l))})
    out = [Assign(z, product, shape), Assign(z, array(naming.bias(l)), shape, op="+=")]
    if layer.vector:
        logp = naming.log_output(l, is_output)
        out += [Assign(logp, LogSoftmax(array(z)), shape, about="softmax, through a stable log-softmax"),
                Assign(a, sp.exp(array(logp)), shape)]
        return _Layer(out, None)
    names = _names(l)
    shared, f, factor = shared_work(l, as_value(layer.forward), layer.factor)
    out += [Assign(str(t), e.xreplace(names), shape) for t, e in shared]
    f = f.xreplace(names)
    out.append(Assign(a, f if carries_array(f) else Like(f, array(z)), shape, about=layer.activation))
    return _Layer(out, factor.xreplace(names))


def _scaled(name: str, expr: sp.Expr, shape, about: str) -> list[Assign]:
    """name = expr * scale; in place when expr makes a new array (never scale a cache array in place)."""
    if isinstance(expr, sp.Symbol):
        return [Assign(name, expr * SCALE, shape, about=about)]
    return [Assign(name, expr, shape, about=about), Assign(name, SCALE, shape, op="*=")]


def _keeping_nan(expr: sp.Expr) -> sp.Expr:
    """A loss's step in a product, Heaviside(u(a, y)), as a value that keeps NaN (sign(max(u, 0))): as a mask
    (u > 0) it would be a confident 0 where a is NaN, and the other factors (hinge's -y) need not carry the NaN."""
    def value(h):
        u, h0 = h.args[0], (h.args[1] if len(h.args) > 1 else sp.S.Half)
        if h0 == 0:
            return as_value(h)
        if h0 == 1:
            return 1 - as_value(sp.Heaviside(-u, 0))
        return h

    def fix(m):
        steps = [f for f in m.args if isinstance(f, sp.Heaviside) and f.args[0].has(A, Y)]
        if not steps or not any(f.has(A, X, Y) for f in m.args if f not in steps):
            return m
        return m.xreplace({h: value(h) for h in steps})

    return expr.replace(lambda e: e.is_Mul, fix)


def _output_delta(d: Derivation, batch) -> list[Assign]:
    L, out = d.depth, d.output
    names = _names(L)
    a, delta = array(naming.act(L)), naming.delta(L)
    shape = (batch, d.network.sizes[-1])
    if out.kind == "jvp":
        g = _keeping_nan(stabilize(out.dloss_da)).xreplace(names)
        return ([Assign(naming.UPSTREAM, g if carries_array(g) else Like(g, a), shape,
                        about="dL/da, then the softmax Jacobian-vector product")]
                + _scaled(delta, softmax_jvp(array(naming.UPSTREAM), a), shape, ""))
    how = "fused: derived and simplified by SymPy" if out.kind == "fused" else "dL/da * f'(z)"
    if out.condition is not None:
        how += ", using sum(y) = 1 (one-hot labels)"
    expr = _keeping_nan(stabilize(sp.piecewise_fold(out.expr))).xreplace(names)
    if expr == 0:
        return [Assign(delta, Like(0, a), shape, about=f"dL/d{naming.pre(L)} (not trainable)")]
    if not carries_array(expr):
        expr = Like(expr, a)
    return _scaled(delta, expr, shape, f"dL/d{naming.pre(L)} ({how})")


def _hidden_delta(d: Derivation, l: int, factor, batch) -> list[Assign]:
    """delta{l} from delta{l+1}: the upstream gradient (lowered from the indexed form) through layer l's f'."""
    steps = matrix_steps()
    layer = d.layers[l - 1]
    shape = (batch, layer.n_out)
    upstream = _matrix_node(steps.upstream, {steps.delta: array(naming.delta(l + 1)),
                                             steps.W: array(naming.weight(l + 1))})
    delta, z = naming.delta(l), naming.pre(l)
    about = f"dL/d{z}: delta{l + 1} back through W{l + 1}, times {layer.activation}'"
    if layer.vector:
        return [Assign(naming.UPSTREAM, upstream, shape, about=f"dL/d{naming.act(l)}, then the softmax Jacobian-vector product"),
                Assign(delta, softmax_jvp(array(naming.UPSTREAM), array(naming.act(l))), shape)]
    expr = sp.piecewise_fold(G * factor)
    if expr == 0:
        return [Assign(delta, Like(0, array(z)), shape, about=about + " (not trainable)")]
    if expr == G:
        return [Assign(delta, upstream, shape, about=about)]
    if not isinstance(expr, sp.Piecewise) and (carries_array(factor) or is_mask(factor)):
        # The product is a new array: multiply by f' in place.
        return [Assign(delta, upstream, shape, about=about, shows=factor), Assign(delta, factor, shape, op="*=")]
    if sum(1 for e in sp.preorder_traversal(expr) if e == G) == 1:
        return [Assign(delta, expr.xreplace({G: upstream}), shape, about=about, shows=factor)]
    return [Assign(naming.UPSTREAM, upstream, shape, about=about, shows=factor),
            Assign(delta, expr.xreplace({G: array(naming.UPSTREAM)}), shape)]


def _gradients(d: Derivation, l: int) -> list[Assign]:
    steps = matrix_steps()
    delta, prev = array(naming.delta(l)), array(naming.act(l - 1))
    W, b = naming.weight(l), naming.bias(l)
    sizes = d.network.sizes
    return [Assign(naming.grad(W), _matrix_node(steps.dW, {steps.delta: delta, steps.a: prev}), (sizes[l], sizes[l - 1])),
            Assign(naming.grad(b), _matrix_node(steps.db, {steps.delta: delta}), (sizes[l],))]


def _loss(d: Derivation) -> list[Assign]:
    """total = the per-example loss summed over the batch (the module divides by n), from the derived element."""
    L = d.depth
    expr = stabilize(d.output.loss_expr).xreplace(_names(L))
    coeff, rest = expr.as_coeff_Mul()
    if rest.is_number or not carries_array(rest):
        coeff, rest = sp.S.One, expr
    out = []
    if rest.is_Pow and rest.exp == 2 and not isinstance(rest.base, sp.Symbol) and carries_array(rest.base):
        out.append(Assign(naming.RESIDUAL, rest.base, ("n", d.network.sizes[-1])))
        rest = array(naming.RESIDUAL) ** 2
    if not carries_array(rest):
        rest = Like(rest, array(naming.act(L)))
    return out + [Assign(naming.TOTAL, coeff * Total(rest), ())]


def _penalty(d: Derivation) -> list[Assign]:
    """penalty = the sum over every penalised parameter of its PenaltyTerm's element, entry by entry."""
    from .penalties import W
    out = []
    for term in d.penalty:
        coeff, rest = term.element.as_coeff_Mul()
        out.append(Assign(naming.PENALTY, coeff * Total(rest.xreplace({W: array(term.param)})), (),
                          op="+=" if out else "=", about=f"{term.kind} penalty of {term.param}"))
    return out


def _penalty_gradient(d: Derivation, param: str, shape) -> list[Assign]:
    """d{param} += rate * the penalty's gradient (sp.diff of its element by one entry, entry by entry)."""
    from .penalties import W
    terms = [t for t in d.penalty if t.param == param]
    if not terms:
        return []
    gradient = sp.Add(*[t.gradient for t in terms]).xreplace({W: array(param)})
    kinds = " and ".join(t.kind for t in terms)
    return [Assign(naming.grad(param), RATE * gradient, shape, op="+=",
                   about=f"the {kinds} penalty's gradient, d/d{param} of its sum over the entries")]


def lower(d: Derivation) -> Program:
    """The Program of a Derivation: forward, loss and backward statements, in order."""
    batch = "n"
    forward, factors = [], {}
    for layer in d.layers:
        lowered = _lower_layer(layer, layer.index == d.depth, batch)
        forward += lowered.forward
        factors[layer.index] = lowered.factor
    backward = _output_delta(d, batch)
    for l in range(d.depth, 0, -1):
        if l < d.depth:
            backward += _hidden_delta(d, l, factors[l], batch)
        backward += _gradients(d, l)
    # Last: db{l} is a view of delta{l} at batch 1 (ones @ delta{l} else delta{l}[0]), and an update in
    # place must not reach a delta the pass still reads.
    shapes = d.network.param_shapes()
    penalties = [s for p in shapes for s in _penalty_gradient(d, p, shapes[p])]
    backward += penalties
    params = list(shapes)
    curvature = lower_curvature(d, forward, backward, params, {naming.grad(p): p for p in params}, factors,
                                penalties)
    return Program(d, tuple(forward), tuple(_loss(d) + _penalty(d)), tuple(backward), *curvature)


def program(net) -> Program:
    """derive(net) lowered: the one object every consumer of a network's derivation reads.

    A Program passes through unchanged, so a command derives a spec once and hands the result on.
    """
    if isinstance(net, Program):
        return net
    if isinstance(net, Derivation):
        return lower(net)
    return lower(derive(net))
