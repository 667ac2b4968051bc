"""The curvature typeset: the Program's R-forward, R-backward and Gauss-Newton passes as Equations."""
from dataclasses import dataclass

import sympy as sp

from . import naming
from .curvature import gauss_newton_split
from .errors import DerivationError
from .latex_layout import WIDTH, Equation, _group, _pack, _parts, _text, visible_width
from .latex_printer import N, ROP, ROP_GN, _NAME, NamePrinter, symbol, tex_name
from .naming import YSUM
from .nodes import BatchSum, Dot, Like, T, UnitSum, unstable
from .pieces import Pieces
from .statements import RATE, SCALE, array

_MATRIX = (Dot, T, BatchSum, UnitSum)
SECOND_ORDER = "second-order term"


@dataclass
class Value:
    """One value the document shows: `name` (a code-style name; Rg2 is R{g^{(2)}}) is the sum of
    `terms`, each (expression in the shown names, note), in the order of the statements that made it."""

    name: str
    terms: list
    batch: bool          # one row per example: a parameter-shaped term is broadcast over the rows

    @property
    def base(self) -> str:
        return naming.rop_of(self.name) or self.name

    @property
    def layer(self) -> int:
        return int(_NAME.match(self.base).group(2))


class _Reader:
    """Reads a pass statement by statement and names the values its R arrays hold where they are shown.

    An array updated in place holds several values in turn. Where a value must be named before the
    last update, it is named as the backward pass typeset above names it: delta{l} before its `*= f'`
    is the upstream gradient g{l}, so R{delta{l}} before it is R{g{l}}; the temporary g of layer l is
    g{l}. The R of a temporary t{l}_i is written out where it is read, as the temporaries are.
    """

    def __init__(self, depth: int, shown: dict | None = None):
        self.depth = depth
        self.shown = dict(shown or {})     # code name -> what the document shows for its current value
        self.pending: dict[str, list] = {}
        self.shapes: dict[str, tuple] = {}
        self.last_op: dict[str, str] = {}
        self.values: list[Value] = []

    def read(self, statements) -> list[Value]:
        self.stmts = list(statements)
        for i, s in enumerate(self.stmts):
            value = self._resolve(s.expr, i)
            is_r = naming.rop_of(s.name) is not None
            self.shapes[s.name] = s.shape
            if s.op == "=":
                terms = [(value, "")]
            else:
                terms = self.pending.get(s.name) or [(self.shown.get(s.name, array(s.name)), "")]
                if s.op == "*=":
                    if is_r and value.free_symbols - {N} and any(t.has(*_MATRIX) for t, _ in terms):
                        # a matrix product times an elementwise factor: name the product first (R{g})
                        self._show(s.name, i)
                        terms = [(self.shown[s.name], "")]
                    terms = [(sp.Add(*[t for t, _ in terms]) * value, "")]
                elif s.op == "+=":
                    # R{u * e} = R{u} e + u R{e}: the update after `*= e` is u R{e}, with e = f'
                    terms = terms + [(value, SECOND_ORDER if is_r and self.last_op.get(s.name) == "*=" else "")]
                else:
                    raise ValueError(f"unknown statement op {s.op!r}")
            self.pending[s.name] = terms
            self.last_op[s.name] = s.op
            if is_r and self._next_r_write(i) != s.name and not self._gradient_updated_later(s.name, i):
                self._show(s.name, i + 1)
        for name in [n for n in self.pending if naming.rop_of(n) is not None]:
            self._show(name, len(self.stmts))
        return self.values

    def _resolve(self, expr: sp.Expr, i: int) -> sp.Expr:
        """expr in the shown names, read just before statement i runs."""
        reps = {}
        for sym in expr.free_symbols:
            if sym.name in self.pending:
                self._show(sym.name, i)
            if sym.name in self.shown:
                reps[sym] = self.shown[sym.name]
        expr = expr.xreplace(reps).replace(lambda e: isinstance(e, Like), lambda e: e.args[0])
        return expr.xreplace({SCALE: 1 / N, RATE: 1})

    def _gradient_updated_later(self, name: str, i: int) -> bool:
        """R{dW1} with a penalty's update at the end of the pass: shown once, with every term (nothing
        reads a gradient in between)."""
        base = naming.rop_of(name)
        return bool(base) and base[:2] in ("dW", "db") and any(s.name == name for s in self.stmts[i + 1:])

    def _next_r_write(self, i: int) -> str | None:
        return next((s.name for s in self.stmts[i + 1:] if naming.rop_of(s.name) is not None), None)

    def _show(self, name: str, pos: int) -> None:
        """The value of `name` as statement `pos` finds it gets its name (and, for an R array, a row)."""
        terms = self.pending.pop(name)
        inner = naming.rop_of(name)
        base = inner if inner is not None else name
        m = _NAME.match(base)
        if m and m.group(1) == "t":
            self.shown[name] = sp.Add(*[t for t, _ in terms])       # written out where read
            return
        final = not any(s.name == name for s in self.stmts[pos:])
        shown = self._name(base, final, pos)
        full = naming.rop(shown) if inner is not None else shown
        self.shown[name] = array(full)
        if inner is not None:
            shape = self.shapes[name]
            self.values.append(Value(full, terms, batch=len(shape) == 2 and not isinstance(shape[0], int)))

    def _name(self, base: str, final: bool, pos: int) -> str:
        if base == naming.UPSTREAM:
            return f"g{self._layer_ahead(pos)}"
        if base == naming.log_output(self.depth, True):
            return naming.log_output(self.depth, False)
        if final:
            return base
        for l in range(1, self.depth + 1):
            if base == naming.delta(l):
                return f"g{l}"
        raise DerivationError(f"the curvature section has no name for {base} before its last update")

    def _layer_ahead(self, pos: int) -> int:
        """The layer of the next delta the pass writes (the layer a temporary g belongs to)."""
        for s in self.stmts[pos:]:
            base = naming.rop_of(s.name) or s.name
            for l in range(1, self.depth + 1):
                if base == naming.delta(l):
                    return l
        raise DerivationError("the temporary g is read by no delta")


# --- typesetting ------------------------------------------------------------------------------------------

def _is_matrix(v: Value) -> bool:
    """Whether v is shown as matrices (it has a matrix node) or one element at a time."""
    return any(t.xreplace({UnitSum(array(naming.TARGETS)): YSUM}).has(*_MATRIX) for t, _ in v.terms)


def _matrix(p: Pieces, term: sp.Expr, v: Value):
    """A term with matrix nodes as matrices; a parameter-shaped term (a bias) is added to every row."""
    m = p.matrix(term.name) if isinstance(term, sp.Symbol) else None
    if v.batch and m is not None and m.shape[0] != N and m.shape[1] == 1:
        return sp.OneMatrix(N, 1) * m.T
    return p._display(term, v.layer)


def _term_parts(p: Pieces, term: sp.Expr, v: Value, printer: NamePrinter) -> list[str]:
    """A term of v as LaTeX chunks a line may break between: one element at a time (split by
    latex_layout), or as matrices, cut between the terms of a sum (a scalar factor stays in front)."""
    if not _is_matrix(v):
        return _parts(p._elementwise(term, v.layer), printer, WIDTH)
    scalars = [f for f in sp.Mul.make_args(term) if f.free_symbols <= {N}]
    inner = sp.Mul(*[f for f in sp.Mul.make_args(term) if f not in scalars])
    terms = [_matrix(p, t, v) for t in sp.Add.make_args(inner)]
    total = terms[0] if len(terms) == 1 else sp.MatAdd(*terms, evaluate=False)
    whole = sp.MatMul(sp.Mul(*scalars), total, evaluate=False) if scalars else total
    tex = printer.doprint(whole)
    if visible_width(tex) <= WIDTH or len(terms) == 1:
        return [tex]
    parts = [printer.doprint(t) for t in terms]
    parts = [t if i == 0 or t.startswith("-") else "+ " + t for i, t in enumerate(parts)]
    if scalars:
        return _group(printer.doprint(sp.Mul(*scalars)), parts, printer.doprint(total))
    return parts


def _rows(p: Pieces, v: Value, printer: NamePrinter) -> list:
    """v's rows: its terms packed into lines of about WIDTH glyphs; a noted term starts its own line."""
    groups = []
    for k, (term, note) in enumerate(v.terms):
        parts = _term_parts(p, term, v, printer)
        if k and not parts[0].startswith("-"):
            parts[0] = "+ " + parts[0]
        if not groups or note or groups[-1][1]:
            groups.append([parts, note])
        else:
            groups[-1][0] += parts
    rows = []
    for parts, note in groups:
        lines = _pack(parts, WIDTH)
        for j, line in enumerate(lines):
            lhs = "" if rows else printer.doprint(symbol(v.name))
            rows.append((lhs, ("= " if not rows else r"\quad ") + line,
                         _text(note) if note and j == len(lines) - 1 else ""))
    return rows


def _equation(p: Pieces, values, printer: NamePrinter) -> Equation:
    """The values one under the other; a page may break between two layers' values, never inside a layer's."""
    blocks = []
    for v in values:
        if blocks and blocks[-1][0] == v.layer:
            blocks[-1][1].extend(_rows(p, v, printer))
        else:
            blocks.append((v.layer, _rows(p, v, printer)))
    return Equation.stack(Equation(rows) for _, rows in blocks)


def _has_upstream(v: Value, l: int) -> bool:
    """Whether v is R{delta{l}} with a term in g{l} itself: R{g f'} = R{g} f' + g R{f'}, so that term
    is the second-order one, g R{f'} (0 where f' is a constant or a mask)."""
    return v.name == naming.rop(naming.delta(l)) and any(t.has(array(f"g{l}")) for t, _ in v.terms)


def _by_layer(values, layers) -> list:
    return [(l, [v for v in values if v.layer == l]) for l in layers if any(v.layer == l for v in values)]


def _with_aliases(forward, values: list) -> list:
    """R{u} = R{w} after R{w} for a forward statement u = w (an identity layer): R is linear, and the
    R-forward pass makes no array of its own for it."""
    out = list(values)
    for s in forward:
        shown = {v.name for v in out}
        if s.op == "=" and isinstance(s.expr, sp.Symbol) and naming.rop(s.name) not in shown \
                and naming.rop(s.expr.name) in shown:
            k = next(i for i, v in enumerate(out) if v.name == naming.rop(s.expr.name))
            out.insert(k + 1, Value(naming.rop(s.name), [(array(naming.rop(s.expr.name)), "")], out[k].batch))
    return out


def _temporaries(statements) -> Equation | None:
    """R of the temporaries t{l}_i, as the R-forward statements compute them (the rows above write
    them out where they are read); None if there are none."""
    rows = []
    for s in statements:
        inner = naming.rop_of(s.name)
        if inner is not None and _NAME.match(inner) and _NAME.match(inner).group(1) == "t":
            expr = s.expr.replace(lambda e: isinstance(e, Like), lambda e: e.args[0])
            rows.append(Equation.chain(tex_name(s.name), unstable(expr.xreplace({SCALE: 1 / N}))))
    return sum(rows[1:], rows[0]) if rows else None


def curvature_section(p: Pieces) -> dict | None:
    """The curvature section: R-forward (J V), R-backward (H V) per layer, Gauss-Newton (G V), as Equations.

    Every formula is a value of the Program's rforward, rbackward or gnbackward statements; the
    Gauss-Newton pass's arrays print as R_G{...} (its deltas alone vary). None if the Program has no
    curvature passes.
    """
    prog = p.program
    if not prog.rforward:
        return None
    L = p.L
    forward = _Reader(L)
    jv = forward.read(prog.rforward)
    hv = _Reader(L, forward.shown).read(prog.rbackward)
    gv = _Reader(L, forward.shown).read(prog.gnbackward)
    plain = NamePrinter()
    gn = NamePrinter({"names": {v.name: tex_name(v.name, ROP_GN) for v in gv}})
    layers = range(L, 0, -1)
    backward = [dict(index=l, output=l == L, eq=_equation(p, vs, plain)) for l, vs in _by_layer(hv, layers)]
    at_output = [v for v in gv if v.base in (naming.delta(L), f"g{L}")]     # H_out applied at the output
    rest = [v for v in gv if v not in at_output]
    return dict(
        rop=ROP, rop_gn=ROP_GN,
        forward=_equation(p, _with_aliases(prog.forward, jv), plain),
        temporaries=_temporaries(prog.rforward),
        backward=backward,
        second_order=[l for l in range(L - 1, 0, -1) if any(_has_upstream(v, l) for v in hv)],
        split=gauss_newton_split(prog.derivation, prog.forward, prog.backward),
        gn_output=_equation(p, at_output, gn),
        gn_rest=_equation(p, rest, gn),
    )
