"""Curvature: Pearlmutter's R-operator applied to the Program, statement by statement.

R{u} is the directional derivative of the array u along a direction v of the parameters
(B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6 (1994) 147).
Applied to every statement of the forward pass it gives J v (the R-forward pass); applied to the
backward pass, whose outputs are the gradient, it gives H v. Nothing is typed: each R statement is
made from a Program statement by

- the product rule on a matrix product, R{a @ b} = R{a} @ b + a @ R{b}, and linearity on the
  transpose and the sums over the batch, the units or everything;
- sp.diff on elementwise expressions, by each array they read (with the kink convention of
  elementwise.at_kinks: masks and steps have derivative 0 away from their kink);
- the layer's own derived f' for R{a} = f'(z) R{z} (the same f' backward multiplies by, in the
  output a where SymPy proved that form: sigmoid' = a(1 - a)), so that the second-order term R{f'}
  is sp.diff of that form: (1 - 2a) R{a} for sigmoid, -2a R{a} for tanh;
- the softmax's directional derivative from its indexed derivation (backprop.softmax_steps).

The Gauss-Newton product G v = J^T H_out J v is the same R-forward pass, then H_out applied at the
output and the backward pass run on the result with everything else held fixed (no R{W}, no R{f'}).
H_out is the Hessian of the loss in the output's pre-activations z where it does not depend on the
targets (a matching loss: sigmoid + bce, softmax + cce, identity + mse; then G is positive
semi-definite and equals the Hessian of a linear model), and in the output a otherwise (H_a of mse
is the identity, so G carries f'(z)^2).
"""
import sympy as sp

from . import naming
from .elementwise import at_kinks
from .errors import DerivationError
from .nodes import ArrayOp, BatchSum, Dot, Like, LogSoftmax, T, Total, UnitSum, carries_array, is_mask
from .statements import SCALE, Assign, array, softmax_directional, softmax_jvp

_LINEAR = (T, BatchSum, UnitSum, Total)


def _is_boolean(e) -> bool:
    """A comparison or a logical value (a Symbol is a Boolean to SymPy too: it is not one here)."""
    return not isinstance(e, sp.Symbol) and isinstance(e, (sp.core.relational.Relational, sp.logic.boolalg.Boolean))


def _atom(e) -> bool:
    """What the elementwise rule differentiates by: an array, a node, or a piece with its own R rule."""
    return isinstance(e, (sp.Symbol, ArrayOp, sp.Piecewise, sp.Heaviside, sp.sign)) or _is_boolean(e)


def _fold(e) -> sp.Expr:
    """Rz * Piecewise((1, c), (0.1, True)) would be an array times np.where of numbers, float64 for
    float32 arrays; folded, Piecewise((Rz, c), (0.1*Rz, True)), every branch is an array."""
    return sp.piecewise_fold(e) if e.has(sp.Piecewise) and not isinstance(e, sp.Piecewise) else e


def _dot(a, b):
    return sp.S.Zero if a == 0 or b == 0 else Dot(a, b)


class ROperator:
    """R{e} for a Program expression e, given R of the arrays it reads (`r`: name -> Symbol or 0).

    `known` maps the right-hand sides of the forward pass back to their names, so that
    d sigmoid(z)/dz = sigmoid(z)(1 - sigmoid(z)) reads the array the forward pass made.
    """

    def __init__(self, r: dict, known: dict):
        self.r, self.known = r, known

    def __call__(self, e) -> sp.Expr:
        out = self._r(sp.sympify(e))
        for _ in range(4):                  # exp(LogSoftmax(z)) -> exp(logp) -> a: nested names
            named = out.xreplace(self.known)
            if named == out:
                break
            out = named
        return _fold(out)

    def _r(self, e) -> sp.Expr:
        if e.is_number or _is_boolean(e) or is_mask(e) or isinstance(e, sp.sign):
            return sp.S.Zero                # a constant, a mask, a step: 0 away from the kink
        if isinstance(e, sp.Symbol):
            return self.r.get(e.name, sp.S.Zero)
        if isinstance(e, Dot):
            a, b = e.args
            return _dot(self._r(a), b) + _dot(a, self._r(b))
        if isinstance(e, _LINEAR):
            inner = self._r(e.args[0])
            return sp.S.Zero if inner == 0 else type(e)(inner)
        if isinstance(e, Like):
            value, ref = e.args
            inner = self._r(value)
            return inner if inner == 0 or carries_array(inner) else Like(inner, ref)
        if isinstance(e, LogSoftmax):
            u = self._r(e.args[0])
            return sp.S.Zero if u == 0 else softmax_directional(u, sp.exp(e), log=True)
        if isinstance(e, ArrayOp):
            raise DerivationError(f"no R-operator rule for the node {type(e).__name__}: {e}")
        if isinstance(e, sp.Piecewise):
            branches = [(self._r(v), c) for v, c in e.args]
            return sp.S.Zero if all(v == 0 for v, _ in branches) else sp.Piecewise(*branches)
        return self._elementwise(e)

    def _elementwise(self, e) -> sp.Expr:
        """sum over the arrays (and nodes) u that e reads of de/du * R{u}, de/du by sp.diff."""
        atoms, found = {}, []

        def take(t):
            if _atom(t):
                if t not in atoms:
                    atoms[t] = sp.Dummy(real=True)
                    found.append(t)
                return atoms[t]
            if not t.args:
                return t
            return t.func(*[take(a) for a in t.args])

        flat = take(e)
        total = sp.S.Zero
        for t in found:
            rt = self._r(t)
            if rt == 0:
                continue
            d = atoms[t]
            slope = at_kinks(sp.diff(flat, d), d)
            total += slope.xreplace({v: k for k, v in atoms.items()}) * rt
        return total


class _Pass:
    """Emits the R statements of a sequence of Program statements (one pass of generated code).

    An R value that is just another array (R{a} = R{z} for the identity) is an alias, not a copy;
    it is made into an array of its own before anything updates it in place, so an in-place R
    statement never writes into the caller's direction v or into another R array.
    """

    def __init__(self, r: dict, known: dict):
        self.r = dict(r)
        self.R = ROperator(self.r, known)
        self.made: set[str] = set()

    def _set(self, name: str, value, shape, about="") -> list:
        if value == 0:
            self.r[name] = sp.S.Zero
            return []
        if isinstance(value, sp.Symbol):
            self.r[name] = value
            return []
        value = _fold(value)
        rname = naming.rop(name)
        self.r[name] = array(rname)
        self.made.add(rname)
        terms = sp.Add.make_args(value)
        if len(terms) > 1 and all(isinstance(t, Dot) for t in terms):
            # The product rule's sum of matrix products, accumulated: no temporary for each product.
            return [Assign(rname, terms[0], shape, about=about)] + [Assign(rname, t, shape, op="+=") for t in terms[1:]]
        return [Assign(rname, value if carries_array(value) else Like(value, array(name)), shape, about=about)]

    def statement(self, s: Assign, value=None, about="") -> tuple[list, list]:
        """The R statements of s: (to run before s, to run after s). `value` overrides R{s.expr}."""
        rname = naming.rop(s.name)
        dv = self.R(s.expr) if value is None else value
        cur = self.r.get(s.name, sp.S.Zero)
        mine = rname in self.made and cur == array(rname)
        if s.op == "=":
            return [], self._set(s.name, dv, s.shape, about)
        if s.op == "+=":
            if dv == 0:
                return [], []
            if mine:
                return [], [Assign(rname, dv, s.shape, op="+=")]
            # R{u + e} = R{u} + R{e}: a new array (R{u} is 0, or another array's alias)
            return [], self._set(s.name, cur + dv, s.shape, about)
        if s.op == "*=":
            # R{u * e} = R{u} e + u R{e}, with u the value before the update: emitted before s.
            if dv == 0:
                if cur == 0:
                    return [], []
                if mine:
                    return [Assign(rname, s.expr, s.shape, op="*=")], []
                return self._set(s.name, cur * s.expr, s.shape, about), []
            if cur == 0:
                return self._set(s.name, s.target * dv, s.shape, about), []
            if mine:
                return [Assign(rname, s.expr, s.shape, op="*="), Assign(rname, s.target * dv, s.shape, op="+=")], []
            return self._set(s.name, cur * s.expr + s.target * dv, s.shape, about), []
        raise ValueError(f"unknown statement op {s.op!r}")

    def results(self, names, shapes: dict) -> list:
        """Make sure each R{name} is an array: zeros where it is 0 (the curvature has no such term)."""
        out = []
        for name in names:
            value = self.r.get(name, sp.S.Zero)
            if value == 0:
                out.append(Assign(naming.rop(name), Like(0, array(shapes[name])), (), about="no curvature term"))
                self.r[name] = array(naming.rop(name))
            elif value != array(naming.rop(name)):
                raise DerivationError(f"R{{{name}}} is the alias {value}, not an array of its own")
        return out


def _known(forward) -> dict:
    """The forward pass's right-hand sides -> their names (only arrays no later statement updates)."""
    updated = {s.name for s in forward if s.op != "="}
    return {s.expr: s.target for s in forward
            if s.op == "=" and s.name not in updated and not isinstance(s.expr, (sp.Symbol, Like))
            and not s.expr.is_number and not _is_boolean(s.expr)}


def _rforward(prog_forward, params, slopes: dict, known: dict) -> tuple[list, dict]:
    """R{z}, R{a} ... of every forward array: J v. R{a} = f'(z) R{z} with the layer's derived f'."""
    p = _Pass({name: array(naming.direction(name)) for name in params}, known)
    out = []
    for s in prog_forward:
        if s.name in slopes:
            z, slope = slopes[s.name]
            rz = p.r.get(z, sp.S.Zero)
            before, after = p.statement(s, value=sp.S.Zero if rz == 0 else slope * rz)
        else:
            before, after = p.statement(s)
        out += before + after
    return out, p.r


def _output_split(backward, depth: int):
    """The output delta's statements and the rest of the backward pass."""
    first = naming.grad(naming.weight(depth))
    k = next(i for i, s in enumerate(backward) if s.name == first)
    return list(backward[:k]), list(backward[k:])


def _hessian_in_logits_is_free_of_targets(expr, a: str, known: dict) -> bool:
    """d(delta)/dz reads no target except through sum(y): the loss is a matching loss in z."""
    rd = ROperator({a: array(naming.rop(a))}, known)(expr)
    rd = rd.replace(lambda e: isinstance(e, UnitSum), lambda e: sp.S.One)
    return naming.TARGETS not in {s.name for s in rd.free_symbols}


def _splits_at_logits(d, output_statements, known: dict) -> bool:
    return d.output.kind == "fused" and _hessian_in_logits_is_free_of_targets(
        output_statements[0].expr, naming.act(d.depth), known)


def gauss_newton_split(d, forward, backward) -> str:
    """Where G = J^T H_out J splits the network: "z" (the output's pre-activations, for a matching
    loss) or "a" (the output), as the Program's Gauss-Newton pass does it."""
    output, _ = _output_split(backward, d.depth)
    return "z" if _splits_at_logits(d, output, _known(forward)) else "a"


def _gauss_newton(d, output_statements, rest, rf: dict, slopes: dict, known: dict, penalties=()) -> list:
    """J^T H_out J v: H_out applied to R{z} (or R{a}) at the output, then backward with all else fixed;
    plus the penalty's own Hessian times v (its gradient statements along v: l2 on the penalised entries,
    0 for l1), exact and positive semi-definite, so that G stays PSD and H - G is the loss-slope term."""
    L = d.depth
    a, delta = naming.act(L), naming.delta(L)
    shape = output_statements[0].shape
    fused = _splits_at_logits(d, output_statements, known)
    out = []
    if fused:
        p = _Pass(rf, known)
        for s in output_statements:
            before, after = p.statement(s, about="H_out R{z}: the loss's Hessian in z, applied" if s.op == "=" else "")
            out += before + after
        start = p.r[delta]
    else:
        # Split at the output a: H_a (J v), then back through the output's Jacobian J_out^T.
        g = array(naming.UPSTREAM)
        dloss = output_statements[0].expr if output_statements[0].name == naming.UPSTREAM else None
        if dloss is None:
            from .stable import stabilize
            from .statements import _names
            dloss = stabilize(d.output.dloss_da).xreplace(_names(L))
            dloss = dloss if carries_array(dloss) else Like(dloss, array(a))
        vary_a = _Pass({a: rf.get(a, sp.S.Zero)}, known)
        out += vary_a.statement(Assign(naming.UPSTREAM, dloss, shape), about="H_a R{a}: the loss's Hessian in a, applied")[1]
        back = _Pass({naming.UPSTREAM: vary_a.r[naming.UPSTREAM]}, known)
        if d.layers[L - 1].vector:
            through = softmax_jvp(g, array(a))
        else:
            through = g * slopes[a][1]
        steps = [Assign(delta, through, shape), Assign(delta, SCALE, shape, op="*=")]
        for s in steps:
            before, after = back.statement(s)
            out += before + after
        start = back.r[delta]
    p = _Pass({delta: start}, known)
    along_v = ROperator({name: rf[name] for name in rf if naming.direction_of(str(rf[name])) == name}, known)
    for s in rest:
        before, after = p.statement(s, value=along_v(s.expr) if s in penalties else None)
        out += before + after
    return out, p


def lower(d, forward, backward, params, shapes: dict, factors: dict, penalties=()) -> tuple[tuple, tuple, tuple]:
    """The curvature passes of a Program: (R-forward, backward interleaved with R-backward, Gauss-Newton).

    factors: layer -> the f' the backward pass multiplies by (arrays), or None for a softmax.
    shapes: gradient name -> parameter name, for the zero results of terms that vanish.
    penalties: the backward statements that add a weight penalty's gradient.
    """
    slopes = {naming.act(l): (naming.pre(l), f) for l, f in factors.items() if f is not None}
    known = _known(forward)
    rforward, rf = _rforward(forward, params, slopes, known)
    grads = [naming.grad(p) for p in params]

    p = _Pass(rf, known)
    rbackward = []
    for s in backward:
        before, after = p.statement(s)
        rbackward += before + [s] + after
    rbackward += p.results(grads, shapes)

    output, rest = _output_split(backward, d.depth)
    gn, gp = _gauss_newton(d, output, rest, rf, slopes, known, penalties)
    gn += gp.results(grads, shapes)
    return tuple(rforward), tuple(rbackward), tuple(gn)
