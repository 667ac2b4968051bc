"""A plain-text account of a derivation, for the terminal."""
import sympy as sp

from .backprop import derive, hidden_delta
from .naming import A, G, LOGP, X, Y
from .spec import Network


def _named(expr: sp.Expr, l: int) -> str:
    names = {X: sp.Symbol(f"z{l}"), A: sp.Symbol(f"a{l}"), Y: sp.Symbol("y"), LOGP: sp.Symbol("logp"),
             G: sp.Symbol(f"(delta{l + 1} @ W{l + 1})")}
    return sp.sstr(expr.xreplace(names))


def summary(net: Network) -> str:
    """The derived equations of every layer, in the notation of the generated code."""
    d = derive(net)
    L = d.depth
    lines = [f"{net.name}: {net.describe()}",
             "  forward     z{l} = a{l-1} @ W{l}.T + b{l},  a0 = x"]
    for layer in d.layers:
        l = layer.index
        if layer.vector:
            lines.append(f"  layer {l}     a{l} = softmax(z{l}) = exp(z{l}) / sum_k exp(z{l}_k)")
            continue
        ew = layer.elementwise
        lines.append(f"  layer {l}     a{l} = {layer.activation}(z{l}) = {_named(ew.f, l)}")
        rewritten = f" = {_named(ew.fprime_a, l)}" if ew.fprime_a is not None else ""
        lines.append(f"              {layer.activation}'(z{l}) = {_named(ew.fprime, l)}{rewritten}")
    out = d.output
    how = {"fused": "fused, simplified by SymPy", "chain": "dL/da * f'(z)",
           "jvp": "softmax Jacobian-vector product with g = dL/da"}[out.kind]
    cond = ", using sum(y) = 1" if out.condition is not None else ""
    if out.kind == "jvp":
        lines.append(f"  output      delta{L} = a{L} * (g - sum(g * a{L})) / n,  g = {_named(out.expr, L)}  ({how})")
    else:
        lines.append(f"  output      delta{L} = dL/dz{L} = ({_named(out.expr, L)}) / n  ({how}{cond})")
    for layer in reversed(d.layers[:-1]):
        l = layer.index
        if layer.vector:
            lines.append(f"  recurrence  delta{l} = a{l} * (g - sum(g * a{l})),  g = delta{l + 1} @ W{l + 1}")
        else:
            lines.append(f"  recurrence  delta{l} = {_named(hidden_delta(layer), l)}")
    lines.append("  gradients   dW{l} = delta{l}.T @ a{l-1},  db{l} = delta{l}.sum(axis=0)")
    lines.append(f"  loss        L = mean over the batch of sum_k {_named(out.loss_expr, L)}"
                 f"  (computed from {out.loss_from.replace('_', '-')})")
    return "\n".join(lines)
