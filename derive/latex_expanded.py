"""Every partial derivative of a small network written out, and checked against sp.diff."""

import mpmath
import numpy as np
import sympy as sp

from . import naming
from .nodes import unstable
from .program import RATE, SCALE, Program, program
from .elementwise import at_kinks
from .errors import DerivationError, NnderiveError
from .spec import Network
from .latex_layout import Equation, _partial
from .latex_printer import _element, latex


# --- every partial derivative, written out (small networks) -----------------------------------------

MAX_EXPANDED_PARAMS = 128   # --expanded writes one line per parameter
MAX_EXPANDED_WIDTH = 8      # and the check expands the whole loss (see DESIGN: scalar expansion blows up)


def _check_small(net: Network) -> None:
    count = sum(int(np.prod(s)) for s in net.param_shapes().values())
    if count > MAX_EXPANDED_PARAMS or max(net.sizes) > MAX_EXPANDED_WIDTH:
        raise NnderiveError(
            f"{net.source}: --expanded writes every partial derivative, and {net.name} has {count} parameters "
            f"and layers up to {max(net.sizes)} wide; use it on networks with at most {MAX_EXPANDED_PARAMS} "
            f"parameters and {MAX_EXPANDED_WIDTH} units per layer")


def _one_example(prog: Program) -> dict:
    """An environment for one example: every array the forward pass makes (and x, y) as element Symbols
    (z1 -> [[z1_0, z1_1]], x -> [[x_0 ...]]), the weights as the Symbols of param_symbols, scale = 1."""
    from .expansion import param_symbols
    net = prog.network
    shapes = {s.name: s.shape for s in prog.forward}
    env = {"x": np.array([[_element("x", j) for j in range(net.inputs)]], dtype=object),
           "y": np.array([[_element("y", k) for k in range(net.sizes[-1])]], dtype=object),
           SCALE.name: sp.S.One, RATE.name: sp.S.One}
    for name, shape in shapes.items():
        env[name] = np.array([[_element(name, k) for k in range(shape[1])]], dtype=object)
    for name, M in param_symbols(net).items():
        env[name] = np.array(list(M), dtype=object).reshape(net.param_shapes()[name])
    return env


def _unrolled(prog: Program) -> tuple[dict, dict]:
    """(deltas, partials) of one example, by running the Program's backward statements on Symbols."""
    from .proof import run
    env = run(prog, _one_example(prog), passes=("backward",), symbolic=True)
    net = prog.network
    deltas = {l: [unstable(v) for v in env[naming.delta(l)][0]] for l in range(1, net.depth + 1)}
    return deltas, env


def expanded_partials(prog) -> dict:
    """dl/dp for every weight and bias p of one example, in the forward values (small networks only).

    The Program's backward statements run on Symbols (derive.proof.run, symbolically): the partials
    are what the printed code computes, written out.

    >>> from derive import Dense, Network
    >>> parts = expanded_partials(Network("tiny", 1, [Dense(1, "sigmoid")], loss="bce"))
    >>> parts[symbol("W1_0_0")], parts[symbol("b1_0")]
    (x_0*(a1_0 - y_0), a1_0 - y_0)
    """
    from .expansion import param_symbols
    prog = program(prog)
    net = prog.network
    _check_small(net)
    P = param_symbols(net)
    _, env = _unrolled(prog)
    parts = {}
    for l in range(1, net.depth + 1):
        W, b = P[naming.weight(l)], P[naming.bias(l)]
        dW, db = env[naming.grad(naming.weight(l))], env[naming.grad(naming.bias(l))]
        for k in range(W.shape[0]):
            for j in range(W.shape[1]):
                parts[W[k, j]] = unstable(dW[k, j])
        for k in range(W.shape[0]):
            parts[b[k]] = unstable(db[k])
    return parts


def check_partials(prog, parts: dict, points: int = 2, seed: int = 0) -> float:
    """Largest relative difference between `parts` and sp.diff of the fully expanded loss of one example.

    The forward values in `parts` are replaced by their expressions in x, W, b (the Program's forward
    statements run on Symbols); both sides are then evaluated at `points` random rational points to
    40 digits.
    """
    from .proof import run
    from .expansion import DIGITS, evaluate, example_loss, expanded_penalty, param_symbols
    prog = program(prog)
    net, d = prog.network, prog.derivation
    P = param_symbols(net)
    names = _one_example(prog)
    forward = run(prog, dict(names), passes=("forward",), symbolic=True)
    full = {}
    for s in prog.forward:
        for sym, value in zip(names[s.name].ravel(), forward[s.name].ravel()):
            full[sym] = unstable(value)
    x, y = list(names["x"][0]), list(names["y"][0])
    loss = example_loss(net, P, x, y) + expanded_penalty(net, P)     # one example: L = l + Omega
    rng = np.random.default_rng(seed)
    worst = 0.0
    exact = {s: at_kinks(sp.diff(loss, s), s) for s in parts}
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            values = {s: mpmath.mpf(int(rng.integers(-900, 900))) / 1000 for M in P.values() for s in M}
            values.update({s: mpmath.mpf(int(rng.integers(-1000, 1000))) / 1000 for s in x})
            target = d.loss.target
            if target == "labels":
                hot = int(rng.integers(0, len(y)))
                values.update({s: mpmath.mpf(int(k == hot)) for k, s in enumerate(y)})
            elif target == "onehot" or net.loss == "bce":   # cce: any nonnegative targets (no sum = 1 assumed)
                values.update({s: mpmath.mpf(int(rng.integers(50, 950))) / 1000 for s in y})
            else:
                values.update({s: mpmath.mpf(int(rng.integers(-1000, 1000))) / 1000 for s in y})
            memo = {}
            for s, e in parts.items():
                want = evaluate(exact[s], values, memo)
                got = evaluate(e.xreplace(full).xreplace(full), values, memo)
                worst = max(worst, float(abs(want - got) / (1 + abs(want))))
    return worst


def _penalty_gradient(prog: Program, param: str):
    """entry -> the penalty's gradient at that entry (the Program's penalty statement of param), 0 if none."""
    from .program import array
    updates = [s.expr for s in prog.backward if s.name == naming.grad(param) and s.op == "+=" and s.expr.has(RATE)]
    total = sp.Add(*updates).xreplace({RATE: 1})
    return lambda entry: total.xreplace({array(param): entry})


def expanded_section(prog) -> dict:
    """The --expanded part of the document: every delta and every partial of one example, checked."""
    from .expansion import DIGITS, param_symbols
    prog = program(prog)
    net = prog.network
    parts = expanded_partials(prog)
    P = param_symbols(net)
    deltas, _ = _unrolled(prog)
    a = {0: [_element("x", j) for j in range(net.inputs)]}
    a.update({l: [_element(naming.act(l), k) for k in range(net.sizes[l])] for l in range(1, net.depth + 1)})
    worst = check_partials(prog, parts)
    if worst > 1e-30:
        raise DerivationError(f"{net.name}: the written-out partials disagree with sp.diff of the expanded loss "
                              f"(relative difference {worst:.1e})")
    ell = r"\left(\ell + \Omega\right)" if prog.penalised else r"\ell"
    layers = []
    for l in range(net.depth, 0, -1):
        dsym = [_element(naming.delta(l), k) for k in range(net.sizes[l])]
        eqs = [Equation.chain(latex(dsym[k]), deltas[l][k]) for k in range(net.sizes[l])]
        W, b = P[naming.weight(l)], P[naming.bias(l)]
        rows = []
        extra = {name: _penalty_gradient(prog, name) for name in (naming.weight(l), naming.bias(l))}
        for k in range(W.shape[0]):
            for j in range(W.shape[1]):
                rows.append(Equation.chain(_partial(ell, latex(W[k, j])),
                                           latex(dsym[k] * a[l - 1][j] + extra[naming.weight(l)](W[k, j])),
                                           parts[W[k, j]]))
        for k in range(W.shape[0]):
            rows.append(Equation.chain(_partial(ell, latex(b[k])), latex(dsym[k] + extra[naming.bias(l)](b[k])),
                                       parts[b[k]]))
        layers.append(dict(index=l, deltas=Equation.stack(eqs), partials=Equation.stack(rows)))
    return dict(layers=layers, count=len(parts), points=2, digits=DIGITS)
