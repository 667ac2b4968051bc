r"""The derivation typeset: SymPy objects and LaTeX for every piece of a Derivation.

Two audiences share this module. Derivation scripts use `pieces()` (or `activation()`) to get
any symbolic object of a network as a SymPy expression in the generated code's names (`z1`, `a1`,
`delta1`, `W1`, `dW1` ...), substitute numbers into it, and `latex()` to typeset one piece.
The document export (codegen/document.py) uses `typeset()`, which returns every formula of the
document as a LaTeX math string, computed from the same Derivation that feeds the code generator.

>>> from derive import Dense, Network
>>> p = pieces(Network("mlp_4_2_3", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse"))
>>> p.output_delta
a2*(1 - a2)*(a2 - y)
>>> p.delta(1)
g1*Heaviside(z1, 0)
>>> print(latex(p.delta(1)))
g^{(1)} \left[z^{(1)} > 0\right]
>>> print(latex(p.dW(2)))
{\delta^{(2)}}^{\top} a^{(1)}
"""
import re
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE

from . import naming
from .activations import ACTIVATIONS, XV, K
from .backprop import Derivation, _within, derive, hidden_delta, softmax_steps
from .elementwise import at_kinks, derive_elementwise
from .errors import DerivationError, NnderiveError
from .losses import LOSSES
from .naming import A, G, LOGP, X, Y, YHAT, YSUM
from .spec import Network

# --- names -------------------------------------------------------------------------------------------

N = sp.Symbol("n", integer=True, positive=True)     # the batch size, `n` in the generated code
Z = sp.Symbol("z", real=True)                       # the generic argument of an activation, for display

# code name -> LaTeX: a1 -> a^{(1)}, delta2 -> \delta^{(2)}, W1_0_1 -> W^{(1)}_{1,2} (1-based), t1_0 -> t^{(1)}_{0}.
_BASES = {"z": "z", "a": "a", "delta": r"\delta", "g": "g", "W": "W", "b": "b", "dW": r"\mathrm{d}W",
          "db": r"\mathrm{d}b", "t": "t", "x": "x", "y": "y", "logp": r"\log a"}
_NAME = re.compile(r"^(delta|logp|dW|db|z|a|g|W|b|t|x|y)(\d+|\{[^{}]*\})?((?:_\d+)*)$")


def symbol(name: str) -> sp.Symbol:
    r"""The scalar Symbol the derivation uses for (an element of) the array called `name` in the code.

    >>> a2 = symbol("a2")
    >>> print(latex(a2 * (1 - a2)))
    a^{(2)} \left(1 - a^{(2)}\right)
    """
    return naming.array(name)


def tex_name(name: str) -> str | None:
    """LaTeX for a code name (None if it is not one): z1 -> z^{(1)}, W1_0_1 -> W^{(1)}_{1,2}."""
    m = _NAME.match(name)
    if not m:
        return None
    base, layer, idx = m.groups()
    if base == "x" and layer:
        return None
    tex = _BASES[base]
    if layer:
        tex += "^{(%s)}" % layer.strip("{}")
    if idx:
        numbers = [int(i) for i in idx[1:].split("_")]
        # Temporaries keep the code's number; array elements are 1-based, as in the text.
        tex += "_{%s}" % ",".join(str(i if base == "t" else i + 1) for i in numbers)
    if base == "logp":
        tex = r"\log a" + ("^{(%s)}" % layer.strip("{}") if layer else "")
    return tex


class NamePrinter(LatexPrinter):
    r"""sp.latex with nnderive's names and a few textbook spellings.

    Code names print as in the document (a1 -> a^{(1)}, delta1 -> \\delta^{(1)}); Heaviside(z, 0)
    and KroneckerDelta(k, q) print as Iverson brackets [z > 0], [k = q]; transposes as ^{\\top};
    a column of ones as \\mathbf{1}_n; a Hadamard product as \\odot.
    """

    def __init__(self, settings=None):
        settings = dict(settings or {})
        self.extra_names = settings.pop("names", {})
        super().__init__(settings)

    def _print_Symbol(self, expr, style="plain"):
        if expr in self._settings["symbol_names"]:
            return self._settings["symbol_names"][expr]
        if expr.name in self.extra_names:
            return self.extra_names[expr.name]
        named = tex_name(expr.name)
        return named if named is not None else super()._print_Symbol(expr, style)

    def _print_MatrixSymbol(self, expr):
        return self._print_Symbol(expr)

    def _print_Heaviside(self, expr, exp=None):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        rel = {sp.S.Zero: ">", sp.S.One: r"\ge"}.get(h0)
        if rel is None:
            return super()._print_Heaviside(expr, exp)
        tex = r"\left[%s %s 0\right]" % (self._print(expr.args[0]), rel)
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_KroneckerDelta(self, expr, exp=None):
        tex = r"\left[%s = %s\right]" % (self._print(expr.args[0]), self._print(expr.args[1]))
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_Transpose(self, expr):
        return r"{%s}^{\top}" % self._print(expr.arg)

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        if cols == 1:
            return r"\mathbf{1}_{%s}" % self._print(rows)
        if rows == 1:
            return r"\mathbf{1}_{%s}^{\top}" % self._print(cols)
        return r"\mathbf{1}_{%s \times %s}" % (self._print(rows), self._print(cols))

    def _print_MatMul(self, expr):
        args, sign = list(expr.args), ""
        if args and args[0] == -1:
            args, sign = args[1:], "- "
        parts = [self._print(a) for a in args]
        parts = [r"\left(%s\right)" % t if isinstance(a, (sp.HadamardProduct, sp.MatAdd)) else t
                 for a, t in zip(args, parts)]
        return sign + " ".join(parts)

    def _print_MatAdd(self, expr):
        # in the order built (sp.latex would sort the terms)
        terms = [self._print(t) for t in expr.args]
        return " ".join(t if i == 0 or t.startswith("-") else "+ " + t for i, t in enumerate(terms))

    def _print_HadamardProduct(self, expr):
        return r" \odot ".join(self.parenthesize(a, 50) for a in expr.args)

    def _print_Indexed(self, expr):
        base = self._print(expr.base)
        return "{%s}_{%s}" % (base, "".join(self._print(i) for i in expr.indices))

    def _print_sign(self, expr, exp=None):
        tex = r"\operatorname{sgn}\left(%s\right)" % self._print(expr.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


def latex(expr, **settings) -> str:
    r"""LaTeX of a SymPy expression in nnderive's names (see NamePrinter); settings as for sp.latex.

    >>> print(latex(sp.MatrixSymbol("delta1", N, 2).T * sp.MatrixSymbol("x", N, 4)))
    {\delta^{(1)}}^{\top} x
    >>> print(latex(sp.Heaviside(symbol("z1"), 0)))
    \left[z^{(1)} > 0\right]
    """
    return NamePrinter(settings).doprint(expr)


def at_layer(expr: sp.Expr, l: int) -> sp.Expr:
    """A derivation expression in the generic X, A, G, LOGP renamed to layer l's code names."""
    return sp.sympify(expr).xreplace({X: symbol(naming.pre(l)), A: symbol(naming.act(l)), Y: symbol("y"),
                                      G: symbol(f"g{l}"), LOGP: symbol(f"logp{l}")})


def _element(name: str, *idx: int) -> sp.Symbol:
    """The Symbol of one element of an array for one example: a2_0 is a2[i, 0]."""
    return symbol(name + "".join(f"_{i}" for i in idx))


# --- activations ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActivationPiece:
    """An activation and its derivative, as SymPy derived them.

    f, fprime: in `z` (the activation's argument); fprime_a: f' rewritten in the output `a`
    (None when no such form was proven); factor: what backward multiplies by (fprime_a when found,
    else fprime, possibly in the shared temporaries `shared`).
    """

    name: str
    title: str
    z: sp.Symbol
    a: sp.Symbol
    f: sp.Expr
    fprime: sp.Expr
    fprime_a: sp.Expr | None
    factor: sp.Expr
    shared: tuple = ()
    formula_text: str | None = None
    params: dict = field(default_factory=dict)


def activation(name: str, **params) -> ActivationPiece:
    """A registered activation in z and a, with its derivative from sp.diff and the form in a.

    >>> s = activation("sigmoid")
    >>> s.f, s.fprime, s.fprime_a
    (1/(1 + exp(-z)), exp(-z)/(1 + exp(-z))**2, a*(1 - a))
    >>> activation("tanh").fprime_a
    1 - a**2
    """
    if name not in ACTIVATIONS or ACTIVATIONS[name].vector:
        choices = ", ".join(sorted(k for k, v in ACTIVATIONS.items() if not v.vector))
        raise NnderiveError(f"no elementwise activation {name!r}; use one of: {choices}")
    act = ACTIVATIONS[name]
    ew = derive_elementwise(act.bind(**params))
    a = sp.Symbol("a", real=True)
    ren = {X: Z, A: a}
    return ActivationPiece(name, act.title, Z, a, ew.f.xreplace(ren), ew.fprime.xreplace(ren),
                           None if ew.fprime_a is None else ew.fprime_a.xreplace(ren),
                           ew.backward_factor.xreplace(ren), (), None,
                           {s.name: params.get(s.name, v) for s, v in act.params.items()})


def function_tex(net: Network, l: int) -> str:
    """The math-mode name of layer l's activation: \\sigma, \\tanh, \\operatorname{ReLU}, f_l for a custom one."""
    layer = net.layers[l - 1]
    if layer.formula is not None:
        return "f_{%d}" % l
    title = ACTIVATIONS[layer.activation].title
    if title.startswith("\\"):
        return title
    head, _, sub = title.partition("_")
    return r"\operatorname{%s}%s" % (head, "_" + sub if sub else "")


# --- the pieces of one network ------------------------------------------------------------------------

class Pieces:
    """Every symbolic object of a network's derivation, in the generated code's names.

    Elementwise objects (an activation, its derivative, the output delta, a hidden delta) are scalar
    expressions in the Symbols z{l}, a{l}, y, g{l} (= delta{l+1} @ W{l+1}), n: each stands for any
    one element of that array, exactly as the generated module applies the formula.
    Matrix objects (dW{l}, db{l}, g{l}, the forward pass) are MatrixSymbol expressions, batch-first,
    for display and evaluation with `numeric` (never differentiate them: see DESIGN pitfalls).
    """

    def __init__(self, d: Derivation):
        self.derivation = d
        self.network = d.network
        self.L = d.depth

    def __repr__(self):
        return f"Pieces({self.network.name}: {self.network.describe()})"

    # arrays
    def matrix(self, name: str) -> sp.MatrixSymbol:
        """The MatrixSymbol of a code array: x, y, z{l}, a{l}, delta{l}, g{l} (batch, n_l); W{l}, b{l} (column)."""
        sizes = self.network.sizes
        m = _NAME.match(name)
        if not m or m.group(3):
            raise NnderiveError(f"{name!r} is not an array of the generated code")
        base, layer = m.group(1), m.group(2)
        l = int(layer) if layer and layer.isdigit() else None
        if base == "x":
            return sp.MatrixSymbol("x", N, sizes[0])
        if base == "y":
            return sp.MatrixSymbol("y", N, sizes[-1])
        if l is None or not 0 <= l <= self.L or (l == 0 and base != "a"):
            raise NnderiveError(f"{name!r}: this network has layers 1 to {self.L}")
        if base == "a" and l == 0:
            return sp.MatrixSymbol("x", N, sizes[0])
        if base in ("W", "dW"):
            return sp.MatrixSymbol(name, sizes[l], sizes[l - 1])
        if base in ("b", "db"):
            return sp.MatrixSymbol(name, sizes[l], 1)
        return sp.MatrixSymbol(name, N, sizes[l])

    # activations
    def activation(self, l: int) -> ActivationPiece:
        """Layer l's activation and derivative in z{l}, a{l} (and the temporaries t{l}_i the code shares)."""
        layer = self._layer(l)
        if layer.vector:
            raise NnderiveError(f"layer {l} is softmax, a vector activation; see softmax_jacobian()")
        ew, spec = layer.elementwise, self.network.layers[l - 1]
        return ActivationPiece(spec.activation, function_tex(self.network, l), symbol(naming.pre(l)),
                               symbol(naming.act(l)), at_layer(ew.f, l), at_layer(ew.fprime, l),
                               None if ew.fprime_a is None else at_layer(ew.fprime_a, l),
                               at_layer(layer.factor, l),
                               tuple((t, at_layer(e, l)) for t, e in getattr(layer, "shared", ())), spec.formula, dict(spec.params))

    # forward
    def forward(self, l: int) -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
        """(a{l-1} @ W{l}.T, the broadcast bias 1_n b{l}.T): z{l} is their sum."""
        self._layer(l)
        prev = self.matrix(naming.act(l - 1))
        W, b = self.matrix(naming.weight(l)), self.matrix(naming.bias(l))
        return prev * W.T, sp.OneMatrix(N, 1) * b.T

    # the loss
    @property
    def loss_element(self) -> sp.Expr:
        """One term of the per-example loss, in a{L} and y: the loss sums it over the outputs."""
        return self.derivation.loss.element.xreplace({YHAT: symbol(naming.act(self.L)), Y: symbol("y")})

    # deltas
    @property
    def output_delta(self) -> sp.Expr:
        """dl/dz{L} for one example and one output (no 1/n): e.g. a2 - y; for kind "jvp" the g{L} element."""
        return at_layer(self.derivation.output.expr, self.L)

    def upstream(self, l: int) -> sp.Expr:
        """g{l} = dL/da{l}: delta{l+1} @ W{l+1} for l < L; for a softmax output that does not fuse, dl/da."""
        self._layer(l)
        if l < self.L:
            return self.matrix(naming.delta(l + 1)) * self.matrix(naming.weight(l + 1))
        return at_layer(self.derivation.output.dloss_da, l)

    def delta(self, l: int) -> sp.Expr:
        """delta{l} = dL/dz{l} as the code computes it.

        Elementwise layers: a scalar expression (per element) in z{l}, a{l}, y, n and g{l};
        softmax layers (and a softmax output that does not fuse): the matrix expression
        a{l} (.) (g{l} - (g{l} (.) a{l}) 1 1^T), with g{l} from `upstream(l)`.
        """
        layer = self._layer(l)
        out = self.derivation.output
        if layer.vector and not (l == self.L and out.kind != "jvp"):
            a, g = self.matrix(naming.act(l)), self.matrix(f"g{l}")
            k = a.shape[1]
            # a (.) (g - (g (.) a) 1 1^T): the row sums of g (.) a, broadcast; built unevaluated to read as written
            rows = sp.MatMul(sp.S.NegativeOne, sp.HadamardProduct(g, a, evaluate=False), sp.OneMatrix(k, 1),
                             sp.OneMatrix(1, k), evaluate=False)
            jvp = sp.HadamardProduct(a, sp.MatAdd(g, rows, evaluate=False), evaluate=False)
            return sp.MatMul(1 / N, jvp, evaluate=False) if l == self.L else jvp
        if l == self.L:
            return at_layer(out.expr, l) / N
        return at_layer(hidden_delta(layer), l)

    def dW(self, l: int) -> sp.MatrixExpr:
        """dW{l} = dL/dW{l} = delta{l}.T @ a{l-1}, shape (n_l, n_{l-1})."""
        self._layer(l)
        return self.matrix(naming.delta(l)).T * self.matrix(naming.act(l - 1))

    def db(self, l: int) -> sp.MatrixExpr:
        """db{l} = dL/db{l} = delta{l}.T @ 1_n (delta{l} summed over the batch), shape (n_l,)."""
        self._layer(l)
        return self.matrix(naming.delta(l)).T * sp.OneMatrix(N, 1)

    def partials(self) -> dict:
        """Every dl/dW{l}[k, j] and dl/db{l}[k] for one example, written out in the forward values.

        Keys are the weight Symbols of derive.verify.param_symbols (W1_0_1 is W1[0, 1]); values are
        expressions in the element Symbols x_j, z{l}_k, a{l}_k, y_k and the weights. Small networks only.
        """
        return expanded_partials(self.derivation)

    def _layer(self, l: int):
        if not isinstance(l, int) or not 1 <= l <= self.L:
            raise NnderiveError(f"layer {l!r}: {self.network.name} has layers 1 to {self.L}")
        return self.derivation.layers[l - 1]


def pieces(source) -> Pieces:
    """The pieces of a Network (derived here) or of an existing Derivation."""
    if isinstance(source, Network):
        source = derive(source)
    if not isinstance(source, Derivation):
        raise NnderiveError(f"pieces() takes a Network or a Derivation, not {type(source).__name__}")
    return Pieces(source)


def numeric(expr, values: dict):
    """Evaluate a piece at numbers: `values` maps code names (or Symbols) to NumPy arrays or numbers.

    Scalar (elementwise) expressions are evaluated element by element over the broadcast arrays,
    to 30 digits; matrix expressions are evaluated with explicit matrices (the batch size n is
    taken from the arrays). Returns a float or a NumPy array.

    >>> import numpy as np
    >>> a2 = np.array([[0.5, 0.25]])
    >>> numeric(activation("sigmoid").fprime_a, {"a": a2})
    array([[0.25  , 0.1875]])
    """
    values = {(k.name if isinstance(k, sp.Basic) else k): v for k, v in values.items()}
    if isinstance(expr, sp.MatrixExpr):
        return _numeric_matrix(expr, values)
    from .verify import evaluate
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    missing = [s.name for s in syms if s.name not in values]
    if missing:
        raise NnderiveError(f"numeric(): no value for {', '.join(missing)}")
    arrays = np.broadcast_arrays(*[np.asarray(values[s.name], dtype=float) for s in syms]) if syms else []
    shape = arrays[0].shape if arrays else ()
    out = np.empty(shape)
    with mpmath.workdps(30):
        for idx in np.ndindex(*shape):
            point = {s: mpmath.mpf(float(arr[idx])) for s, arr in zip(syms, arrays)}
            out[idx] = float(evaluate(expr, point, {}))
    return out if shape else float(out)


def _numeric_matrix(expr: sp.MatrixExpr, values: dict) -> np.ndarray:
    mats = {m for m in expr.atoms(sp.MatrixSymbol)}
    batch = {np.shape(values[m.name])[0] for m in mats if m.name in values and m.shape[0] == N}
    subs = {N: batch.pop()} if batch else {}
    concrete = expr.subs(subs)
    reps = {}
    for m in concrete.atoms(sp.MatrixSymbol):
        if m.name not in values:
            raise NnderiveError(f"numeric(): no value for {m.name}")
        v = np.asarray(values[m.name], dtype=float)
        reps[m] = sp.ImmutableMatrix(v.reshape(m.shape) if v.ndim == 1 else v)
    for one in concrete.atoms(sp.OneMatrix):
        reps[one] = sp.ImmutableMatrix(sp.ones(*one.shape))
    result = concrete.xreplace(reps).doit()
    return np.array(sp.Matrix(result).evalf(), dtype=float)


# --- derived steps the document shows ---------------------------------------------------------------

# --- layout of long formulas ----------------------------------------------------------------------------

WIDTH = 76   # about the characters of math that fit on one line of the document


def visible_width(tex: str) -> int:
    """A rough count of the glyphs a LaTeX math string shows (commands count one, braces none)."""
    tex = re.sub(r"\\(left|right|Bigl|Bigr|big|Big)\b", "", tex)
    tex = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", lambda m: max(m.group(1), m.group(2), key=len), tex)
    tex = re.sub(r"\\(mathrm|operatorname|text|mathbf)\{([^{}]*)\}", r"\2", tex)
    tex = re.sub(r"\\[a-zA-Z]+", "x", tex)
    tex = re.sub(r"[_^]\{([^{}]*)\}", lambda m: "x" * max(1, (len(m.group(1)) + 1) // 2), tex)
    return len(re.sub(r"[{}\s&]", "", tex))


def _join_terms(printer: NamePrinter, terms) -> list[str]:
    out = []
    for t in terms:
        s = printer._print(t)
        out.append(s if s.startswith("-") else "+ " + s)
    if out and out[0].startswith("+ "):
        out[0] = out[0][2:]
    return out


def _pack(parts: list[str], width: int) -> list[str]:
    lines, cur = [], ""
    for p in parts:
        if cur and visible_width(cur + p) > width:
            lines.append(cur)
            cur = p
        else:
            cur = f"{cur} {p}" if cur else p
    return lines + [cur] if cur else lines


def _parts(expr: sp.Expr, printer: NamePrinter, width: int) -> list[str]:
    """Chunks of expr's LaTeX, cut where a line may break: between the terms of a sum."""
    tex = printer.doprint(expr)
    if visible_width(tex) <= width:
        return [tex]
    if isinstance(expr, sp.Add):
        parts = []
        for i, term in enumerate(printer._as_ordered_terms(expr)):
            sub = _parts(term, printer, width)
            if i and not sub[0].startswith("-"):
                sub[0] = "+ " + sub[0]
            parts += sub
        return parts
    if isinstance(expr, sp.Mul) and not any(f.is_Pow and f.exp.is_negative for f in expr.args):
        sums = [f for f in expr.args if isinstance(f, sp.Add)]
        if sums:
            big = max(sums, key=lambda f: len(printer.doprint(f)))
            rest = sp.Mul(*[f for f in expr.args if f is not big])
            head = "" if rest == 1 else ("-" if rest == -1 else printer.parenthesize(rest, PRECEDENCE["Mul"], strict=True))
            parts = _parts(big, printer, width)
            parts[0] = f"{head} \\Bigl({parts[0]}".strip()
            parts[-1] += r"\Bigr)"
            return parts
    return [tex]


def split_lines(expr: sp.Expr, width: int = WIDTH, printer: NamePrinter | None = None) -> list[str]:
    """LaTeX of expr broken into lines of about `width` glyphs at + and - (for align / aligned).

    Sums break between terms; a product breaks inside its longest sum, written \\Bigl( ... \\Bigr)
    because fixed-size delimiters may stand on different lines.
    """
    printer = printer or NamePrinter()
    return _pack(_parts(expr, printer, width), width)


@dataclass
class Equation:
    """Display math: rows of (left side, relation and right side, note); rendered by the templates
    as align* (LaTeX) or aligned inside $$ (Markdown). Every string is LaTeX math."""

    rows: list

    @staticmethod
    def chain(lhs: str, *rhs, note: str = "", width: int = WIDTH) -> "Equation":
        """lhs = rhs[0] = rhs[1] ...: each right side a SymPy object (split if long) or a LaTeX string."""
        rows = []
        for i, r in enumerate(rhs):
            lines = split_lines(r, width) if isinstance(r, sp.Basic) else [r]
            for j, line in enumerate(lines):
                left = lhs if (i == 0 and j == 0) else ""
                rel = "= " if j == 0 else r"\quad "
                rows.append((left, rel + line, note if (i == len(rhs) - 1 and j == len(lines) - 1) else ""))
        return Equation(rows)

    def __add__(self, other: "Equation") -> "Equation":
        return Equation(self.rows + other.rows)


def _shape(*dims) -> str:
    """A NumPy shape, (n, 2) or (2,), in math."""
    inner = ", ".join(latex(d) for d in dims)
    return r"\left(%s%s\right)" % (inner, "," if len(dims) == 1 else "")


def _partial(num: str, den: str) -> str:
    return r"\frac{\partial %s}{\partial %s}" % (num, den)


def _text(words: str) -> str:
    """A short note inside math (trusted prose: no special characters)."""
    return r"\text{%s}" % words


# --- the whole document, as LaTeX math strings -------------------------------------------------------

def _fn(net: Network, l: int, arg: str, prime: bool = False) -> str:
    return r"%s%s\left(%s\right)" % (function_tex(net, l), "'" if prime else "", arg)


def _params_tex(layer) -> str:
    return ", ".join(r"\%s = %s" % (k, latex(sp.nsimplify(v) if float(v) == int(v) else sp.Float(v, 6)))
                     if k in ("alpha", "beta") else r"\mathrm{%s} = %s" % (k, v)
                     for k, v in sorted(layer.params.items()))


def _ordered(*factors) -> str:
    """A chain-rule product, factor by factor, in the order written (SymPy would reorder a Mul)."""
    return r" \cdot ".join(latex(f) if not isinstance(f, (sp.Add, sp.Piecewise)) else r"\left(%s\right)" % latex(f)
                           for f in factors)


def _layers_info(p: Pieces) -> list[dict]:
    net = p.network
    out = []
    for l, layer in enumerate(net.layers, start=1):
        n_in, n_out = net.sizes[l - 1], net.sizes[l]
        out.append(dict(index=l, units=n_out, n_in=n_in, activation=layer.activation, formula=layer.formula,
                        params=_params_tex(layer), fname=function_tex(net, l), vector=net.is_vector(l),
                        weights=n_in * n_out, biases=n_out, W_shape=_shape(n_out, n_in)))
    return out


def _names_table(p: Pieces) -> list[tuple[str, str, str, str]]:
    """(code names, symbol, shape, meaning) for every kind of array the derivation names."""
    L = p.L
    labels = LOSSES[p.network.loss].target == "labels"

    def listed(names):
        return ", ".join(names) if len(names) <= 3 else f"{names[0]}, ..., {names[-1]}"

    def each(f):
        return listed([f(l) for l in range(1, L + 1)])
    hidden = listed([f"{naming.delta(l + 1)} @ {naming.weight(l + 1)}" for l in range(1, L)])
    rows = [
        ("x", r"x = a^{(0)}", r"\left(n, n_0\right)", "inputs, one example per row"),
        (each(naming.weight), r"W^{(l)}", r"\left(n_l, n_{l-1}\right)", "weights of layer l"),
        (each(naming.bias), r"b^{(l)}", r"\left(n_l,\right)", "biases of layer l"),
        (each(naming.pre), r"z^{(l)}", r"\left(n, n_l\right)", "pre-activations of layer l"),
        (each(naming.act), r"a^{(l)}", r"\left(n, n_l\right)", "activations (outputs) of layer l"),
        ("y", r"y", r"\left(n, n_L\right)", "targets" + (", the one-hot rows of the integer labels" if labels else "")),
    ]
    if hidden:
        rows.append((hidden, r"g^{(l)}", r"\left(n, n_l\right)", "upstream gradient dL/da of hidden layer l"))
    rows += [
        (each(naming.delta), r"\delta^{(l)}", r"\left(n, n_l\right)", "dL/dz of layer l"),
        (each(lambda l: naming.grad(naming.weight(l))), r"\mathrm{d}W^{(l)}", r"\left(n_l, n_{l-1}\right)",
         "dL/dW of layer l"),
        (each(lambda l: naming.grad(naming.bias(l))), r"\mathrm{d}b^{(l)}", r"\left(n_l,\right)", "dL/db of layer l"),
    ]
    return rows


def _forward(p: Pieces) -> Equation:
    net, eqs = p.network, []
    for l in range(1, p.L + 1):
        mat, bias = p.forward(l)
        z, a = symbol(naming.pre(l)), symbol(naming.act(l))
        how = _text("row by row") if net.is_vector(l) else _text("elementwise")
        eqs.append(Equation([(latex(z), "= %s + %s" % (latex(mat), latex(bias)), _shape(N, net.sizes[l])),
                             (latex(a), "= " + _fn(net, l, latex(z)), how)]))
    return Equation([row for eq in eqs for row in eq.rows])


def _forward_index(d: Derivation) -> Equation:
    """Seed 002's per-unit form, from the derivation's indexed steps, in layer l's names."""
    s = d.indexed["symbols"]
    ren = {s["w"]: sp.IndexedBase(symbol("W{l}")), s["a"]: sp.IndexedBase(symbol("a{l-1}")),
           s["b"]: sp.IndexedBase(symbol("b{l}")), s["n"]: sp.Symbol("n_{l-1}")}
    u = d.indexed["u"].xreplace(ren)
    total = next(t for t in u.args if isinstance(t, sp.Sum))
    rest = u - total
    k = s["k"]
    zk = sp.IndexedBase(symbol("z{l}"))[k]
    ak = sp.IndexedBase(symbol("a{l}"))[k]
    return Equation([(latex(zk), "= %s + %s" % (latex(total), latex(rest)), ""),
                     (latex(ak), r"= f_l\left(%s\right)" % latex(zk), "")])


def _index_backprop(d: Derivation) -> list[Equation]:
    """dl/dW, dl/db, dl/da of one example in the per-unit form, each sum done by SymPy."""
    s = d.indexed["symbols"]
    k, q, r = s["k"], s["q"], s["r"]
    m = sp.Symbol("n_l", integer=True, positive=True)
    ren = {s["w"]: sp.IndexedBase(symbol("W{l}")), s["a"]: sp.IndexedBase(symbol("a{l-1}")),
           s["b"]: sp.IndexedBase(symbol("b{l}")), s["n"]: sp.Symbol("n_{l-1}")}
    delta = sp.IndexedBase(symbol("delta{l}"))
    z = sp.IndexedBase(symbol("z{l}"))
    W, a_prev = ren[s["w"]], ren[s["a"]]
    du_dw, du_db, du_da = (d.indexed[key].xreplace(ren) for key in ("du_dw", "du_db", "du_da"))
    ell = r"\ell"
    eqs = [
        Equation([(_partial(latex(z[k]), latex(W[q, r])), "= " + latex(du_dw), ""),
                  (_partial(latex(z[k]), latex(ren[s["b"]][q])), "= " + latex(du_db), ""),
                  (_partial(latex(z[k]), latex(a_prev[r])), "= " + latex(du_da), "")]),
    ]
    for target, step in ((W[q, r], du_dw), (ren[s["b"]][q], du_db)):
        total = sp.Sum(delta[k] * step, (k, 1, m))
        eqs.append(Equation.chain(_partial(ell, latex(target)), latex(total), latex(_within(total.doit()))))
    back = sp.Sum(delta[k] * du_da, (k, 1, m))
    eqs.append(Equation.chain(_partial(ell, latex(a_prev[r])), latex(back)))
    below = sp.IndexedBase(symbol("delta{l-1}"))[r]
    zr = sp.IndexedBase(symbol("z{l-1}"))[r]
    eqs.append(Equation.chain(latex(below), r"%s \cdot f_{l-1}'\left(%s\right)" % (_partial(ell, latex(a_prev[r])),
                                                                                  latex(zr)),
                              r"f_{l-1}'\left(%s\right) %s" % (latex(zr), latex(back))))
    return [eqs[0], Equation([row for eq in eqs[1:] for row in eq.rows])]


def _loss(p: Pieces) -> dict:
    d, net = p.derivation, p.network
    L, K_out = p.L, net.sizes[-1]
    k, i = sp.symbols("k i", integer=True, positive=True)
    a = sp.IndexedBase(symbol(naming.act(L)))
    y = sp.IndexedBase(symbol("y"))
    term = d.loss.element.xreplace({YHAT: a[k], Y: y[k]})
    per = sp.Sum(term, (k, 1, K_out)) if K_out > 1 else term.xreplace({k: 1})
    if K_out > 1 and term.could_extract_minus_sign():
        per = -sp.Sum(-term, (k, 1, K_out))
    ell = r"\ell\left(%s, y\right)" % latex(symbol(naming.act(L)))
    eqs = [Equation.chain(ell, per),
           Equation.chain("L", r"\frac{1}{n} \sum_{i=1}^{n} \ell\left(%s_{i}, y_{i}\right)"
                          % latex(symbol(naming.act(L))))]
    eqs = [eqs[0] + eqs[1]]
    out = d.output
    computed = None
    if out.loss_from == "logits":
        computed = Equation.chain(r"\ell_k", at_layer(out.loss_expr, L).xreplace(
            {symbol(naming.pre(L)): sp.IndexedBase(symbol(naming.pre(L)))[k], symbol("y"): y[k]}))
    return dict(eqs=eqs, computed=computed, loss_from=out.loss_from)


def _activations(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(1, p.L + 1):
        if net.is_vector(l):
            out.append(dict(index=l, vector=True, fname=function_tex(net, l)))
            continue
        piece = p.activation(l)
        gen = {piece.z: Z, piece.a: sp.Symbol("a", real=True)}
        f, fp = piece.f.xreplace(gen), piece.fprime.xreplace(gen)
        eq = Equation.chain(_fn(net, l, "z"), f) + Equation.chain(
            _fn(net, l, "z", prime=True), fp, *([piece.fprime_a.xreplace(gen)] if piece.fprime_a is not None else []),
            note=(r"a = %s" % _fn(net, l, "z")) if piece.fprime_a is not None else "")
        shared = None
        if piece.shared:
            shared = Equation([(latex(t), "= " + latex(e), "") for t, e in piece.shared]
                              + [(_fn(net, l, latex(piece.z), prime=True), "= " + latex(piece.factor), "")])
        out.append(dict(index=l, vector=False, fname=function_tex(net, l), activation=piece.name,
                        formula=piece.formula_text, eq=eq, rewritten=piece.fprime_a is not None,
                        shared=shared, constant=not fp.free_symbols))
    return out


def _softmax_section(p: Pieces) -> dict | None:
    if not any(p.network.is_vector(l) for l in range(1, p.L + 1)):
        return None
    s = softmax_steps()
    ak = s.a[s.k]
    return dict(
        formula=Equation.chain(latex(ak), s.formula.xreplace({s.m: s.j})),
        jacobian=Equation.chain(_partial(latex(ak), latex(sp.IndexedBase("z")[s.j])), s.raw,
                                latex(s.jacobian), note=_text("with ") + r"e^{z_i} = a_i \sum_m e^{z_m}"),
        jvp=Equation.chain(r"\sum_{k=1}^{K} g_k %s" % _partial(latex(ak), latex(sp.IndexedBase("z")[s.j])),
                           s.jvp),
    )


def _instance(expr: sp.Expr, L: int) -> sp.Expr:
    """The softmax instance's z1, y1 ... as elements of layer L's arrays."""
    ren = {}
    for sym in expr.free_symbols:
        m = re.fullmatch(r"([zyp])(\d+)", sym.name)
        if m:
            base = {"z": naming.pre(L), "y": "y", "p": naming.act(L)}[m.group(1)]
            ren[sym] = sp.IndexedBase(symbol(base))[int(m.group(2))]
    return expr.xreplace(ren)


def _output(p: Pieces) -> dict:
    d, net, L = p.derivation, p.network, p.L
    out = d.output
    z, a, y = Z, sp.Symbol("a", real=True), sp.Symbol("y", real=True)
    gen = {X: z, A: a, Y: y}
    steps, raw_note = [], None
    ell = r"\ell"
    if not net.is_vector(L):
        ew = d.layers[-1].elementwise
        factor = ew.backward_factor.xreplace(gen)
        dl = out.dloss_da.xreplace(gen)
        chain = [_partial(ell, "a") + _partial("a", "z"), _ordered(dl, factor)]
        if out.kind == "fused":
            product = sp.factor(sp.simplify(dl * factor))
            if sp.simplify(product - out.expr.xreplace(gen)) != 0:
                raise DerivationError(f"the fused output delta {out.expr} does not match the chain rule {product}")
        chain.append(out.expr.xreplace(gen))
        steps.append(Equation.chain(r"\delta = " + _partial(ell, "z"), *chain,
                                    note=_text("fused, simplified by SymPy") if out.kind == "fused" else ""))
        raw = Equation.chain(_partial(ell, "z"), out.raw.xreplace(gen))
        if out.kind == "fused":
            raw = raw + Equation.chain("", out.expr.xreplace(gen),
                                       note=r"z = %s" % latex(ew.inverse.xreplace(gen)))
        raw_note = raw
    else:
        s = softmax_steps()
        j, k = s.j, s.k
        ak, aj = s.a[k], s.a[j]
        g_of = out.dloss_da.xreplace({A: ak, Y: s.y[k]})
        steps.append(Equation.chain(r"g_k = " + _partial(ell, latex(ak)), g_of))
        steps.append(Equation.chain(r"\delta_j = " + _partial(ell, latex(sp.IndexedBase("z")[j])),
                                    latex(s.jvp_sum), s.jvp))
        if out.kind == "fused":
            with_g = s.jvp.replace(lambda e: isinstance(e, sp.Indexed) and e.base == s.g,
                                   lambda e: out.dloss_da.xreplace({A: s.a[e.indices[0]], Y: s.y[e.indices[0]]}))
            expanded = sp.factor_terms(sp.expand(with_g))
            cond = out.condition
            ysum = sp.Sum(s.y[k], (k, 1, s.K))
            used = expanded.replace(
                lambda e: isinstance(e, sp.Sum) and isinstance(e.function, sp.Indexed) and e.function.base == s.y,
                lambda e: cond.rhs if cond is not None else YSUM)
            final = out.expr.xreplace({A: aj, Y: s.y[j]})
            if sp.simplify(used - final) != 0:
                raise DerivationError(f"the fused softmax delta {out.expr} does not follow from {expanded}")
            if cond is not None:
                note = _text("using ") + latex(sp.Eq(ysum, cond.rhs))
            else:
                final = final.xreplace({YSUM: ysum})
                note = _text("for any targets (their sum is not assumed to be 1)")
            steps.append(Equation.chain("", expanded, final, note=note))
        raw_note = Equation.chain(_partial(ell, latex(sp.IndexedBase(symbol(naming.pre(L)))[1])),
                                  _instance(out.raw, L))
    batch = Equation.chain(latex(symbol(naming.delta(L))), p.delta(L), note=_shape(N, net.sizes[L]))
    if out.kind == "jvp":
        batch = Equation.chain(latex(symbol(f"g{L}")), p.upstream(L), note=_text("elementwise")) + batch
    return dict(kind=out.kind, vector=net.is_vector(L), steps=Equation([row for eq in steps for row in eq.rows]), raw=raw_note, batch=batch,
                condition=None if out.condition is None else latex(out.condition))


def _recurrence(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(p.L - 1, 0, -1):
        g = symbol(f"g{l}")
        delta = symbol(naming.delta(l))
        eq = Equation.chain(latex(g), latex(p.upstream(l)), note=_shape(N, net.sizes[l]))
        if net.is_vector(l):
            eq = eq + Equation.chain(latex(delta), p.delta(l))
        else:
            eq = eq + Equation.chain(latex(delta), r"%s \odot %s" % (latex(g), _fn(net, l, latex(symbol(naming.pre(l))),
                                                                                   prime=True)), p.delta(l))
        out.append(dict(index=l, eq=eq))
    return out


def _gradients(p: Pieces) -> Equation:
    net, rows = p.network, []
    for l in range(1, p.L + 1):
        W, b = symbol(naming.weight(l)), symbol(naming.bias(l))
        dW, db = symbol(naming.grad(naming.weight(l))), symbol(naming.grad(naming.bias(l)))
        rows.append((_partial("L", latex(W)), "= %s = %s" % (latex(dW), latex(p.dW(l))),
                     _shape(net.sizes[l], net.sizes[l - 1])))
        rows.append((_partial("L", latex(b)), "= %s = %s" % (latex(db), latex(p.db(l))), _shape(net.sizes[l])))
    return Equation(rows)


def typeset(d: Derivation, expanded: bool = False) -> dict:
    """Every formula of the document for `d`, as LaTeX math strings (and Equation rows).

    Text fields (name, activation names, formula text) are returned raw: the caller escapes them
    for its output format.
    """
    from .program import program
    prog = program(d) if not isinstance(d, Derivation) else program(d.network)
    d = prog.derivation
    p = Pieces(d)
    net = p.network
    layers = _layers_info(p)
    doc = dict(
        name=net.name, describe=net.describe(), loss=net.loss, loss_title=d.loss.title, target=d.loss.target,
        sizes=net.sizes, depth=p.L, layers=layers,
        weights=sum(x["weights"] for x in layers), biases=sum(x["biases"] for x in layers),
        names=_names_table(p), forward=_forward(p), forward_index=_forward_index(d),
        loss_eqs=_loss(p), activations=_activations(p), softmax=_softmax_section(p),
        index_backprop=_index_backprop(d), output=_output(p), recurrence=_recurrence(p),
        gradients=_gradients(p), expanded=expanded_section(d) if expanded else None,
    )
    doc["params"] = doc["weights"] + doc["biases"]
    return doc


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


def _element_arrays(net: Network) -> tuple[dict, dict, list]:
    """Element Symbols of one example: z[l][k] = z{l}_k, a[l][k] = a{l}_k (a[0] = x_j), y_k."""
    z = {l: [_element(naming.pre(l), k) for k in range(net.sizes[l])] for l in range(1, net.depth + 1)}
    a = {l: [_element(naming.act(l), k) for k in range(net.sizes[l])] for l in range(1, net.depth + 1)}
    a[0] = [_element("x", j) for j in range(net.sizes[0])]
    return z, a, [_element("y", k) for k in range(net.sizes[-1])]


def _unrolled_deltas(d: Derivation, P: dict) -> dict:
    """delta{l}_k of one example as the derivation forms it, every delta above substituted."""
    net, L, out = d.network, d.depth, d.output
    z, a, y = _element_arrays(net)
    at = [{X: zk, A: ak, Y: yk} for zk, ak, yk in zip(z[L], a[L], y)]
    if out.kind == "jvp":
        g = [out.expr.xreplace(s) for s in at]
        dot = sp.Add(*[gk * ak for gk, ak in zip(g, a[L])])
        deltas = {L: [ak * (gk - dot) for gk, ak in zip(g, a[L])]}
    else:
        deltas = {L: [out.expr.xreplace(s) for s in at]}
    for l in range(L - 1, 0, -1):
        W = P[naming.weight(l + 1)]
        g = [sp.Add(*[deltas[l + 1][k] * W[k, j] for k in range(W.shape[0])]) for j in range(net.sizes[l])]
        layer = d.layers[l - 1]
        if layer.vector:
            dot = sp.Add(*[gj * aj for gj, aj in zip(g, a[l])])
            deltas[l] = [aj * (gj - dot) for gj, aj in zip(g, a[l])]
            continue
        factor = layer.factor
        for t, e in reversed(getattr(layer, "shared", ())):
            factor = factor.xreplace({t: e})
        deltas[l] = [factor.xreplace({X: zj, A: aj}) * gj for gj, zj, aj in zip(g, z[l], a[l])]
    return deltas


def expanded_partials(d: Derivation) -> dict:
    """dl/dp for every weight and bias p of one example, in the forward values (small networks only).

    >>> from derive import Dense, Network
    >>> parts = expanded_partials(derive(Network("tiny", 1, [Dense(1, "sigmoid")], loss="bce")))
    >>> parts[symbol("W1_0_0")], parts[symbol("b1_0")]
    (x_0*(a1_0 - y_0), a1_0 - y_0)
    """
    from .verify import param_symbols
    net = d.network
    _check_small(net)
    P = param_symbols(net)
    deltas = _unrolled_deltas(d, P)
    _, a, _ = _element_arrays(net)
    parts = {}
    for l in range(1, net.depth + 1):
        W, b = P[naming.weight(l)], P[naming.bias(l)]
        for k in range(W.shape[0]):
            for j in range(W.shape[1]):
                parts[W[k, j]] = deltas[l][k] * a[l - 1][j]
        for k in range(W.shape[0]):
            parts[b[k]] = deltas[l][k]
    return parts


def check_partials(d: Derivation, parts: dict, points: int = 2, seed: int = 0) -> float:
    """Largest relative difference between `parts` and sp.diff of the fully expanded loss of one example.

    The forward values in `parts` are replaced by their expressions in x, W, b; both sides are then
    evaluated at `points` random rational points to 40 digits.
    """
    from .verify import DIGITS, _activate, evaluate, param_symbols
    net = d.network
    P = param_symbols(net)
    z, a, y = _element_arrays(net)
    full = {}
    acts = list(a[0])
    for l in range(1, net.depth + 1):
        W, b = P[naming.weight(l)], P[naming.bias(l)]
        pre = [sp.Add(*[W[k, j] * acts[j] for j in range(len(acts))]) + b[k] for k in range(W.shape[0])]
        acts = _activate(net, l, pre)
        full.update(zip(z[l], pre))
        full.update(zip(a[l], acts))
    loss = sp.Add(*[d.loss.element.xreplace({YHAT: ak, Y: yk}) for ak, yk in zip(acts, y)])
    rng = np.random.default_rng(seed)
    worst = 0.0
    exact = {s: at_kinks(sp.diff(loss, s)) for s in parts}
    with mpmath.workdps(DIGITS):
        for _ in range(points):
            values = {s: mpmath.mpf(int(rng.integers(-900, 900))) / 1000 for M in P.values() for s in M}
            values.update({s: mpmath.mpf(int(rng.integers(-1000, 1000))) / 1000 for s in a[0]})
            target = d.loss.target
            if target in ("onehot", "labels"):
                hot = int(rng.integers(0, len(y)))
                values.update({s: mpmath.mpf(int(k == hot)) for k, s in enumerate(y)})
            elif net.loss == "bce":
                values.update({s: mpmath.mpf(int(rng.integers(50, 950))) / 1000 for s in y})
            else:
                values.update({s: mpmath.mpf(int(rng.integers(-1000, 1000))) / 1000 for s in y})
            memo = {}
            for s, e in parts.items():
                want = evaluate(exact[s], values, memo)
                got = evaluate(e.xreplace(full), values, memo)
                worst = max(worst, float(abs(want - got) / (1 + abs(want))))
    return worst


def expanded_section(d: Derivation) -> dict:
    """The --expanded part of the document: every delta and every partial of one example, checked."""
    from .verify import DIGITS, param_symbols
    net = d.network
    parts = expanded_partials(d)
    P = param_symbols(net)
    deltas = _unrolled_deltas(d, P)
    z, a, y = _element_arrays(net)
    worst = check_partials(d, parts)
    if worst > 1e-30:
        raise DerivationError(f"{net.name}: the written-out partials disagree with sp.diff of the expanded loss "
                              f"(relative difference {worst:.1e})")
    ell = r"\ell"
    layers = []
    for l in range(net.depth, 0, -1):
        dsym = [_element(naming.delta(l), k) for k in range(net.sizes[l])]
        eqs = [Equation.chain(latex(dsym[k]), deltas[l][k]) for k in range(net.sizes[l])]
        W, b = P[naming.weight(l)], P[naming.bias(l)]
        rows = []
        for k in range(W.shape[0]):
            for j in range(W.shape[1]):
                rows.append(Equation.chain(_partial(ell, latex(W[k, j])), latex(dsym[k] * a[l - 1][j]),
                                           parts[W[k, j]]))
        for k in range(W.shape[0]):
            rows.append(Equation.chain(_partial(ell, latex(b[k])), latex(dsym[k]), parts[b[k]]))
        layers.append(dict(index=l, deltas=Equation([r for e in eqs for r in e.rows]),
                           partials=Equation([r for e in rows for r in e.rows])))
    return dict(layers=layers, count=len(parts), points=2, digits=DIGITS)
