"""Gradient checks: scalar-expansion proof, loading a module to check, and the module check (verify_checks)."""
from pathlib import Path

import mpmath
import numpy as np
import sympy as sp

from .activations import softmax_instance
from .backprop import Derivation, derive
from .elementwise import at_kinks
from .errors import SpecError
from .losses import LOSSES
from .naming import A, LOGP, X, Y, YHAT
from .spec import Network

DIGITS = 40            # working precision of the symbolic evaluation


MAX_MODULE_BYTES = 20_000_000
REQUIRED = ("PARAM_SHAPES", "init_params", "forward", "backward", "loss", "loss_and_grad")


def read_module(path):
    """Import any Python file by path: only a regular file (never a FIFO, device or directory,
    which would block or fail mid-import), at most MAX_MODULE_BYTES of it.

    Raises:
        SpecError: one line naming the file, the place and the fix.
    """
    import os
    import stat
    import types

    path = Path(path)
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError(where, "", "no such file", "check the path") from None
    except IsADirectoryError:
        raise SpecError(where, "", "is a directory, not a module", "name a generated .py file") from None
    except OSError as e:
        raise SpecError(where, "", f"cannot be read: {e.strerror or e}", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SpecError(where, "", "is a directory, not a module", "name a generated .py file")
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(where, "", "is not a regular file (a FIFO, socket or device)", "name a generated .py file")
        if info.st_size > MAX_MODULE_BYTES:
            raise SpecError(where, "", f"is {info.st_size} bytes, more than {MAX_MODULE_BYTES}",
                            "name a generated .py file")
        with os.fdopen(fd, "rb") as f:
            fd = None
            source = f.read(MAX_MODULE_BYTES + 1)
    except OSError as e:
        raise SpecError(where, "", f"cannot be read: {e.strerror or e}", "check the path and its permissions") from None
    finally:
        if fd is not None:
            os.close(fd)
    name = f"_nnderive_checked_{path.stem}_{abs(hash(str(path.resolve())))}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        line = f"line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise SpecError(where, line, "not valid Python", "regenerate it with nnderive generate") from None
    try:
        exec(code, module.__dict__)     # the module the user named: importing it is the point
    except RecursionError:
        raise SpecError(where, "", "importing it recursed too deeply", "regenerate it with nnderive generate") from None
    except Exception as e:
        raise SpecError(where, "", f"importing it raised {type(e).__name__}: {e}",
                        "fix the module or regenerate it with nnderive generate") from None
    return module


def load_module(path):
    """Import a generated module from a file path (it is not an installed package).

    Only a regular file is read (see read_module), and it must define the module API of DESIGN.md.

    Raises:
        SpecError: one line naming the file, the place and the fix.
    """
    where = str(path)
    module = read_module(path)
    for attr in REQUIRED:
        if not hasattr(module, attr):
            raise SpecError(where, attr, "missing from the module", "regenerate it with nnderive generate")
    for attr in REQUIRED[1:]:
        if not callable(getattr(module, attr)):
            raise SpecError(where, attr, "is not a function", "regenerate it with nnderive generate")
    shapes = module.PARAM_SHAPES
    if not isinstance(shapes, dict) or not all(
            isinstance(k, str) and isinstance(v, (tuple, list)) and all(type(n) is int and n > 0 for n in v)
            for k, v in shapes.items()):
        raise SpecError(where, "PARAM_SHAPES", f"is a {type(shapes).__name__}, not a dict of name -> shape tuple"
                        if not isinstance(shapes, dict) else "is not a dict of name -> tuple of positive ints",
                        "regenerate it with nnderive generate")
    return module


_FUNCS = {sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.erf: mpmath.erf,
          sp.sinh: mpmath.sinh, sp.cosh: mpmath.cosh, sp.sin: mpmath.sin, sp.cos: mpmath.cos,
          sp.tan: mpmath.tan, sp.atan: mpmath.atan, sp.asinh: mpmath.asinh, sp.Abs: abs,
          sp.sign: mpmath.sign}
_COMPARE = {">": lambda u, v: u > v, "<": lambda u, v: u < v, ">=": lambda u, v: u >= v,
            "<=": lambda u, v: u <= v, "==": lambda u, v: u == v, "!=": lambda u, v: u != v}


def evaluate(expr: sp.Expr, values: dict, memo: dict | None = None) -> mpmath.mpf:
    """Evaluate a SymPy expression at `values` (Symbol -> mpf) in mpmath, sharing repeated subtrees.

    Much faster than evalf(subs=...) on large expansions, and as exact as the working precision.

    >>> x = sp.Symbol("x")
    >>> evaluate(sp.exp(x) + sp.Max(x, 0), {x: mpmath.mpf(0)})
    mpf('1.0')
    """
    memo = {} if memo is None else memo

    def ev(e):
        if e in memo:
            return memo[e]
        if e in values:
            r = values[e]
        elif e.is_Number or e.is_NumberSymbol:
            r = mpmath.mpf(sp.N(e, mpmath.mp.dps + 5))
        elif e.is_Add:
            r = mpmath.fsum(ev(a) for a in e.args)
        elif e.is_Mul:
            r = mpmath.fprod(ev(a) for a in e.args)
        elif e.is_Pow:
            r = ev(e.base) ** ev(e.exp)
        elif isinstance(e, sp.Heaviside):
            v = ev(e.args[0])
            r = mpmath.mpf(v > 0) if v != 0 else (ev(e.args[1]) if len(e.args) > 1 else mpmath.mpf(0.5))
        elif isinstance(e, sp.Max):
            r = max(ev(a) for a in e.args)
        elif isinstance(e, sp.Min):
            r = min(ev(a) for a in e.args)
        elif isinstance(e, sp.Piecewise):
            r = next(ev(value) for value, cond in e.args if holds(cond))
        elif e.func in _FUNCS:
            r = _FUNCS[e.func](*[ev(a) for a in e.args])
        else:
            raise TypeError(f"cannot evaluate {e.func}")
        memo[e] = r
        return r

    def holds(c) -> bool:
        if c in (sp.true, sp.false):
            return bool(c)
        if isinstance(c, sp.And):
            return all(holds(a) for a in c.args)
        if isinstance(c, sp.Or):
            return any(holds(a) for a in c.args)
        if isinstance(c, sp.Not):
            return not holds(c.args[0])
        if isinstance(c, sp.ITE):
            return holds(c.args[1]) if holds(c.args[0]) else holds(c.args[2])
        return _COMPARE[c.rel_op](ev(c.lhs), ev(c.rhs))

    return ev(expr)


# --- the scalar expansion: one Symbol per weight, the loss written out in full ---------------------

def param_symbols(net: Network) -> dict:
    """sympy Matrices of Symbols w{l}_{k}_{j}, b{l}_{k} shaped like the parameters."""
    out = {}
    for name, shape in net.param_shapes().items():
        if len(shape) == 2:
            out[name] = sp.Matrix(shape[0], shape[1], lambda k, j: sp.Symbol(f"{name}_{k}_{j}", real=True))
        else:
            out[name] = sp.Matrix(shape[0], 1, lambda k, _: sp.Symbol(f"{name}_{k}", real=True))
    return out


def _activate(net: Network, l: int, z: list) -> list:
    if net.is_vector(l):
        return softmax_instance(z)
    f = net.activation_formula(l)
    return [f.xreplace({X: zk}) for zk in z]


def _targets(net: Network, y: np.ndarray) -> np.ndarray:
    if LOSSES[net.loss].target == "labels":
        return np.eye(net.sizes[-1])[np.asarray(y, dtype=int)]
    return np.asarray(y, dtype=float).reshape(len(y), -1)


def expanded_loss(net: Network, P: dict, x: np.ndarray, y: np.ndarray) -> sp.Expr:
    """The batch loss as one scalar expression in the entries of P (x, y exact rationals)."""
    element = LOSSES[net.loss].element
    yy = _targets(net, y)
    total = sp.S.Zero
    for row, target in zip(x, yy):
        a = [sp.Rational(float(v)) for v in row]
        for l in range(1, net.depth + 1):
            W, b = P[f"W{l}"], P[f"b{l}"]
            z = [sum((W[k, j] * a[j] for j in range(len(a))), sp.S.Zero) + b[k] for k in range(W.shape[0])]
            a = _activate(net, l, z)
        total += sum(element.xreplace({YHAT: ak, Y: sp.Rational(float(t))}) for ak, t in zip(a, target))
    return total / len(x)


def symbolic_gradients(net: Network, params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """dL/dp by plain sp.diff of the expanded loss, for every weight, evaluated to DIGITS digits."""
    P = param_symbols(net)
    L = expanded_loss(net, P, x, y)
    with mpmath.workdps(DIGITS):
        values = {s: mpmath.mpf(float(v)) for name in P for s, v in zip(P[name], np.ravel(params[name]))}
        memo = {}
        return {name: np.array([float(evaluate(at_kinks(sp.diff(L, s)), values, memo)) for s in M]
                               ).reshape(params[name].shape) for name, M in P.items()}


# --- the layer-level derivation, evaluated in SymPy, for the proof ---------------------------------

def layer_gradients(d: Derivation, P: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """dW, db from the derived deltas (the recurrence), built in SymPy on the same symbols as P."""
    net = d.network
    yy = _targets(net, y)
    n = len(x)
    grads = {name: sp.zeros(*M.shape) for name, M in P.items()}
    for row, target in zip(x, yy):
        acts = [[sp.Rational(float(v)) for v in row]]
        pres = []
        for l in range(1, net.depth + 1):
            W, b = P[f"W{l}"], P[f"b{l}"]
            z = [sum((W[k, j] * acts[-1][j] for j in range(len(acts[-1]))), sp.S.Zero) + b[k]
                 for k in range(W.shape[0])]
            pres.append(z)
            acts.append(_activate(net, l, z))
        out, aL, zL = d.output, acts[-1], pres[-1]
        t = [sp.Rational(float(v)) for v in target]
        logp = [sp.log(p) for p in aL]
        sub = [{X: zk, A: ak, Y: tk, LOGP: lk} for zk, ak, tk, lk in zip(zL, aL, t, logp)]
        if out.kind == "jvp":
            g = [out.expr.xreplace(s) for s in sub]
            dot = sum(gk * ak for gk, ak in zip(g, aL))
            delta = [ak * (gk - dot) for gk, ak in zip(g, aL)]
        else:
            delta = [out.expr.xreplace(s) for s in sub]
        for l in range(net.depth, 0, -1):
            prev = acts[l - 1]
            for k, dk in enumerate(delta):
                grads[f"b{l}"][k] += dk / n
                for j, pj in enumerate(prev):
                    grads[f"W{l}"][k, j] += dk * pj / n
            if l == 1:
                break
            W = P[f"W{l}"]
            g = [sum((delta[k] * W[k, j] for k in range(len(delta))), sp.S.Zero) for j in range(len(prev))]
            below = d.layers[l - 2]
            if below.vector:
                dot = sum(gj * aj for gj, aj in zip(g, prev))
                delta = [aj * (gj - dot) for gj, aj in zip(g, prev)]
            else:
                factor = below.factor
                delta = [gj * factor.xreplace({X: zj, A: aj}) for gj, zj, aj in zip(g, pres[l - 2], prev)]
    return grads


def prove(net: Network, points: int = 2, seed: int = 0) -> list[tuple[str, float]]:
    """The layer-level derivation equals sp.diff of the expanded loss, weight by weight.

    Both are exact SymPy expressions in the weights; their difference is evaluated at `points`
    random rational points to DIGITS digits. Returns (parameter, largest |difference|) pairs.
    """
    d = derive(net)
    P = param_symbols(net)
    rng = np.random.default_rng(seed)
    x, y = sample_batch(net, rng, 2)
    L = expanded_loss(net, P, x, y)
    layered = layer_gradients(d, P, x, y)
    worst = {name: 0.0 for name in P}
    exact = {name: [at_kinks(sp.diff(L, s)) for s in M] for name, M in P.items()}
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            values = {s: mpmath.mpf(int(rng.integers(-900, 900))) / 1000 for M in P.values() for s in M}
            memo = {}
            for name in P:
                for idx, e in enumerate(exact[name]):
                    diff = evaluate(e, values, memo) - evaluate(layered[name][idx], values, memo)
                    worst[name] = max(worst[name], abs(float(diff)))
    return list(worst.items())


# --- the numeric checks -----------------------------------------------------------------------------

def sample_batch(net: Network, rng, batch: int = 3):
    """Inputs and targets that suit the network's loss."""
    x = rng.normal(size=(batch, net.inputs))
    k = net.sizes[-1]
    target = LOSSES[net.loss].target
    if target == "labels":
        y = rng.integers(0, k, size=batch)
    elif target == "onehot":
        y = np.eye(k)[rng.integers(0, k, size=batch)]
    elif net.loss == "bce":
        y = rng.uniform(0.05, 0.95, size=(batch, k))
    else:
        y = rng.normal(size=(batch, k))
    return x, y


def sample_params(net: Network, rng) -> dict:
    """Random weights; biases lean positive so that rectifier units are alive at the check point."""
    return {name: rng.normal(loc=0.0 if name[0] == "W" else 0.4, scale=0.8, size=shape)
            for name, shape in net.param_shapes().items()}


from .verify_checks import Report, Row, check_module  # noqa: E402  (the module check; uses the helpers above)
