"""OPTIMIZERS: name -> update rules as SymPy expressions, with torch.optim's semantics and defaults."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

# Scalar symbols, named as the generated code names its variables: p is one parameter
# element, g its gradient, t the step count (1 on the first step).
p, g, t = sp.symbols("p g t")
lr, weight_decay = sp.symbols("lr weight_decay")
momentum, dampening, nesterov = sp.symbols("momentum dampening nesterov")
alpha, eps, centered = sp.symbols("alpha eps centered")
beta1, beta2 = sp.symbols("beta1 beta2")
buf, m, v, g_avg = sp.symbols("buf m v g_avg")  # per-parameter state buffers
avg, m_hat, v_hat = sp.symbols("avg m_hat v_hat")  # temporaries

LATEX_NAMES = {
    lr: r"\eta",
    weight_decay: r"\lambda",
    momentum: r"\mu",
    dampening: r"\tau",
    nesterov: r"\mathrm{nesterov}",
    centered: r"\mathrm{centered}",
    eps: r"\epsilon",
    buf: "b",
    g_avg: r"\bar{g}",
    avg: r"\tilde{v}",
    m_hat: r"\hat{m}",
    v_hat: r"\hat{v}",
}

Rule = tuple[sp.Symbol, sp.Expr]


@dataclass(frozen=True)
class Optimizer:
    """One optimizer: hyperparameters with defaults, per-parameter state, update rules.

    `rules` run in order, once per parameter per step; each is (target, expression)
    and reads the values current at that point. Target `p` is the parameter update,
    a target in `state` is a buffer (zeros before the first step) overwritten in
    place, any other target (`g` included) is a local. An expression may be a
    `Piecewise` over hyperparameters or `t`: its branches become if/elif/else.

    >>> OPTIMIZERS["adam"].defaults
    {'lr': 0.001, 'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-08, 'weight_decay': 0.0}
    """

    name: str
    summary: str
    hyperparameters: tuple[tuple[sp.Symbol, float | bool], ...]
    state: tuple[sp.Symbol, ...]
    rules: tuple[Rule, ...]

    @property
    def defaults(self) -> dict[str, float | bool]:
        """Hyperparameter name -> default, in signature order."""
        return {s.name: d for s, d in self.hyperparameters}

    def latex(self) -> str:
        """The update rules as one LaTeX `aligned` block (an arrow is an assignment)."""
        lines = [_latex_rule(target, expr) for target, expr in self.rules]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def _tex(expr) -> str:
    return sp.latex(expr, symbol_names=LATEX_NAMES)


def _latex_value(target: sp.Symbol, expr: sp.Expr) -> str:
    if target != p:
        return _tex(expr)
    step = p - expr  # the parameter update reads better as p - step
    text = _tex(step)
    return f"p - \\left({text}\\right)" if isinstance(step, sp.Add) else f"p - {text}"


def _latex_rule(target: sp.Symbol, expr: sp.Expr) -> str:
    pieces = expr.args if isinstance(expr, sp.Piecewise) else ((expr, sp.true),)
    # An "otherwise keep the value" branch says nothing on paper: drop it.
    pieces = [(e, c) for e, c in pieces if not (c == sp.true and e == target)]
    head = f"{_tex(target)} &\\leftarrow "
    if len(pieces) == 1:
        e, c = pieces[0]
        where = "" if c == sp.true else f" && \\text{{if }} {_tex(c)}"
        return head + _latex_value(target, e) + where
    cases = [f"{_latex_value(target, e)} & "
             + ("\\text{otherwise}" if c == sp.true else f"\\text{{if }} {_tex(c)}") for e, c in pieces]
    return head + "\\begin{cases} " + " \\\\ ".join(cases) + " \\end{cases}"


# torch applies L2 weight decay to the gradient (g <- g + wd*p) only when wd != 0.
DECAY: Rule = (g, sp.Piecewise((g + weight_decay * p, sp.Ne(weight_decay, 0)), (g, True)))

OPTIMIZERS: dict[str, Optimizer] = {}


def register(opt: Optimizer) -> None:
    """Add an optimizer to OPTIMIZERS; the generated module gets `<name>_step`."""
    OPTIMIZERS[opt.name] = opt


register(Optimizer(
    name="sgd",
    summary="Plain gradient descent, as torch.optim.SGD with momentum=0.",
    hyperparameters=((lr, 0.001), (weight_decay, 0.0)),
    state=(),
    rules=(DECAY, (p, p - lr * g)),
))

register(Optimizer(
    name="momentum",
    summary="Gradient descent with momentum, as torch.optim.SGD with momentum > 0.",
    hyperparameters=((lr, 0.001), (momentum, 0.9), (dampening, 0.0), (weight_decay, 0.0), (nesterov, False)),
    state=(buf,),
    rules=(
        DECAY,
        # torch starts the buffer at g on the first step, not at (1 - dampening)*g.
        (buf, sp.Piecewise((g, sp.Eq(t, 1)), (momentum * buf + (1 - dampening) * g, True))),
        (p, sp.Piecewise((p - lr * (g + momentum * buf), nesterov), (p - lr * buf, True))),
    ),
))

register(Optimizer(
    name="rmsprop",
    summary="RMSprop (Hinton's lecture 6e; centered: Graves 2013), as torch.optim.RMSprop.",
    hyperparameters=((lr, 0.01), (alpha, 0.99), (eps, 1e-8), (weight_decay, 0.0), (momentum, 0.0),
                     (centered, False)),
    state=(v, g_avg, buf),
    rules=(
        DECAY,
        (v, alpha * v + (1 - alpha) * g**2),
        (g_avg, sp.Piecewise((alpha * g_avg + (1 - alpha) * g, centered), (g_avg, True))),
        # centered: divide by the running standard deviation instead of the running RMS.
        (avg, sp.Piecewise((sp.sqrt(v - g_avg**2) + eps, centered), (sp.sqrt(v) + eps, True))),
        # With momentum = 0 the buffer is exactly g/avg, torch's update without a buffer.
        (buf, momentum * buf + g / avg),
        (p, p - lr * buf),
    ),
))

# Adam as Kingma & Ba 2015 (Algorithm 1) and torch.optim.Adam. Seed 003 gets it wrong:
# it decays the second moment with beta1 instead of beta2 and leaves out the bias
# correction m_hat = m/(1 - beta1**t), v_hat = v/(1 - beta2**t).
register(Optimizer(
    name="adam",
    summary="Adam (Kingma & Ba 2015) with bias correction, as torch.optim.Adam.",
    hyperparameters=((lr, 0.001), (beta1, 0.9), (beta2, 0.999), (eps, 1e-8), (weight_decay, 0.0)),
    state=(m, v),
    rules=(
        DECAY,
        (m, beta1 * m + (1 - beta1) * g),
        (v, beta2 * v + (1 - beta2) * g**2),
        (m_hat, m / (1 - beta1**t)),
        (v_hat, v / (1 - beta2**t)),
        (p, p - lr * m_hat / (sp.sqrt(v_hat) + eps)),
    ),
))
