"""Gradient checks: scalar-expansion proof, finite differences, and the three-way report."""
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import mpmath
import numpy as np
import sympy as sp

from .elementwise import at_kinks
from .errors import SpecError
from .spec import Dense, Network

DIGITS = 40            # working precision of the symbolic evaluation
SMALL_WIDTH = 4        # networks no wider than this are expanded whole
SYMBOLIC_WIDTH = 3     # wider ones are cut to this width for the symbolic check
SYMBOLIC_OUTPUTS = 10  # the output layer is kept whole up to this width
GEN_TOL = 1e-10        # generated vs symbolic, relative (float64)
FD_TOL = 1e-6          # central finite differences vs symbolic, relative


def load_module(path):
    """Import a generated module from a file path (it is not an installed package)."""
    path = Path(path)
    name = f"_nnderive_checked_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise SpecError(str(path), "", "not a Python module", "name a generated .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise SpecError(str(path), "", "no such file", "check the path") from None
    except SyntaxError as e:
        raise SpecError(str(path), f"line {e.lineno}", "not valid Python", "regenerate it with nnderive generate") from None
    for attr in ("PARAM_SHAPES", "init_params", "forward", "backward", "loss", "loss_and_grad"):
        if not hasattr(module, attr):
            raise SpecError(str(path), attr, "missing from the module", "regenerate it with nnderive generate")
    return module


from .expansion import (_activate, _targets, evaluate, expanded_loss, param_symbols,  # noqa: F401
                        sample_batch)


def symbolic_gradients(net: Network, params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """dL/dp by plain sp.diff of the expanded loss, for every weight, evaluated to DIGITS digits."""
    P = param_symbols(net)
    L = expanded_loss(net, P, x, y)
    with mpmath.workdps(DIGITS):
        values = {s: mpmath.mpf(float(v)) for name in P for s, v in zip(P[name], np.ravel(params[name]))}
        memo = {}
        return {name: np.array([float(evaluate(at_kinks(sp.diff(L, s)), values, memo)) for s in M]
                               ).reshape(params[name].shape) for name, M in P.items()}


def prove(net: Network, points: int = 2, seed: int = 0) -> list[tuple[str, float]]:
    """The printed Program equals sp.diff of the expanded loss: see derive.proof.prove."""
    from .proof import prove as prove_program
    return prove_program(net, points, seed)


# --- the numeric checks -----------------------------------------------------------------------------

def sample_params(net: Network, rng) -> dict:
    """Random weights; biases lean positive so that rectifier units are alive at the check point."""
    return {name: rng.normal(loc=0.0 if name[0] == "W" else 0.4, scale=0.8, size=shape)
            for name, shape in net.param_shapes().items()}


def finite_differences(module, params: dict, x, y, entries: dict, eps: float = 1e-6) -> dict:
    """Central differences of module.loss at the chosen entries of each parameter."""
    out = {}
    for name, idxs in entries.items():
        vals = []
        for idx in idxs:
            p = {k: v.copy() for k, v in params.items()}
            p[name][idx] += eps
            up = module.loss(p, x, y)
            p[name][idx] -= 2 * eps
            down = module.loss(p, x, y)
            vals.append((up - down) / (2 * eps))
        out[name] = np.array(vals)
    return out


@dataclass
class Row:
    param: str
    shape: tuple
    checked: int
    gen_err: float | None    # generated vs symbolic, relative
    fd_err: float            # finite differences vs reference (symbolic, else generated), relative
    ok: bool
    worst: str = ""          # where it disagreed most: "W1[0, 1]: generated 0.1 vs symbolic 0.2"


@dataclass
class Report:
    network: str
    symbolic_on: str
    rows: list

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        lines = [f"three-way check of {self.network} (symbolic on {self.symbolic_on})",
                 f"{'param':<7} {'shape':<12} {'checked':>7} {'gen vs sym':>11} {'fd vs sym':>11}  result"]
        for r in self.rows:
            gen = "-" if r.gen_err is None else f"{r.gen_err:.1e}"
            lines.append(f"{r.param:<7} {str(r.shape):<12} {r.checked:>7} {gen:>11} {r.fd_err:>11.1e}  "
                         + ("ok" if r.ok else "FAIL " + r.worst))
        return "\n".join(lines)


def _rel(a, b, scale):
    return float(np.max(np.abs(a - b) / (np.abs(b) + scale))) if np.size(a) else 0.0


def check_module(net: Network, module, seed: int = 0, fd_samples: int = 12) -> Report:
    """Compare the module's backward with the symbolic gradient and with finite differences.

    Networks wider than SMALL_WIDTH are checked on an embedded copy: inputs beyond the cut are 0
    and weights outside the cut block are 0, so the full-size module computes exactly the cut network.
    """
    rng = np.random.default_rng(seed)
    x, y = sample_batch(net, rng, batch=2)
    params = sample_params(net, rng)
    # Elementwise layers are cut to SYMBOLIC_WIDTH; the output layer and softmax layers are kept
    # whole (a cut would change the softmax's normalisation), so they must be narrow enough.
    whole = [l == net.depth or net.is_vector(l) for l in range(1, net.depth + 1)]
    sizes = [min(net.inputs, SYMBOLIC_WIDTH)] + [n if keep else min(n, SYMBOLIC_WIDTH)
                                                  for n, keep in zip(net.sizes[1:], whole)]
    feasible = max(n for n, keep in zip(net.sizes[1:], whole) if keep) <= SYMBOLIC_OUTPUTS
    small = max(net.sizes) <= SMALL_WIDTH
    symbolic_net, sym_params, x_sym = net, params, x
    if not small and feasible:
        layers = [Dense(s, la.activation, la.formula, **la.params) for s, la in zip(sizes[1:], net.layers)]
        symbolic_net = Network(net.name, sizes[0], layers, net.loss, net.source)
        x[:, sizes[0]:] = 0.0
        for l in range(1, net.depth + 1):
            W, b = params[f"W{l}"], params[f"b{l}"]
            keep_out = sizes[l]
            W[keep_out:, :] = 0.0
            W[:, sizes[l - 1]:] = 0.0
            b[keep_out:] = 0.0
        # Units outside the block still output f(0) != 0 for some activations; their outgoing
        # weights are 0, so they change nothing downstream.
        sym_params = {k: (v[:sizes[int(k[1:])], :sizes[int(k[1:]) - 1]] if k[0] == "W" else v[:sizes[int(k[1:])]])
                      for k, v in params.items()}
        x_sym = x[:, :sizes[0]]
        symbolic_on = f"the embedded {'-'.join(map(str, sizes))} copy"
    elif small:
        symbolic_on = "the whole network"
    else:
        symbolic_net = None
        symbolic_on = f"nothing (a softmax or output layer wider than {SYMBOLIC_OUTPUTS}): finite differences only"
    _, gen = module.loss_and_grad({k: v.copy() for k, v in params.items()}, x, y)
    sym = symbolic_gradients(symbolic_net, sym_params, x_sym, y) if symbolic_net is not None else None
    rows = []
    for name, shape in net.param_shapes().items():
        g = np.asarray(gen[name], dtype=float)
        if g.shape != tuple(shape):
            rows.append(Row(name, shape, 0, None, np.inf, False, f"backward gave shape {g.shape}"))
            continue
        # Entries checked against finite differences: all of a small tensor, a sample of a large one.
        flat = np.arange(int(np.prod(shape)))
        if sym is not None:
            block = np.zeros(shape, dtype=bool)
            block[tuple(slice(0, s) for s in sym[name].shape)] = True
            flat = np.flatnonzero(block)
        if flat.size > fd_samples:
            flat = np.sort(rng.choice(flat, fd_samples, replace=False))
        idxs = [np.unravel_index(i, shape) for i in flat]
        fd = finite_differences(module, params, x, y, {name: idxs})[name]
        if sym is not None:
            s = np.zeros(shape)
            s[tuple(slice(0, n) for n in sym[name].shape)] = sym[name]
            region = tuple(slice(0, n) for n in sym[name].shape)
            scale = 1e-3 * max(1.0, float(np.max(np.abs(s))))
            gen_err = _rel(g[region], s[region], scale)
            ref = np.array([s[i] for i in idxs])
            fd_err = _rel(fd, ref, scale)
            ok = gen_err <= GEN_TOL and fd_err <= FD_TOL
            diff = np.abs(g[region] - s[region])
            worst_idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
            worst = f"{name}{list(worst_idx)}: generated {g[region][worst_idx]!r} vs symbolic {s[region][worst_idx]!r}"
            rows.append(Row(name, tuple(shape), int(np.prod(sym[name].shape)), gen_err, fd_err, ok, worst))
        else:
            ref = np.array([g[i] for i in idxs])
            scale = 1e-3 * max(1.0, float(np.max(np.abs(g))))
            fd_err = _rel(ref, fd, scale)
            k = int(np.argmax(np.abs(ref - fd)))
            rows.append(Row(name, tuple(shape), len(idxs), None, fd_err, fd_err <= FD_TOL,
                            f"{name}{list(idxs[k])}: generated {ref[k]!r} vs finite differences {fd[k]!r}"))
    return Report(net.name, symbolic_on, rows)
