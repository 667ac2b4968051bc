"""The scripting API: every symbolic object of a network's derivation, in the generated code's names."""
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from . import naming
from .activations import ACTIVATIONS
from .backprop import Derivation
from .nodes import BatchSum, Dot, Like, T, UnitSum, unstable
from .backprop import matrix_steps
from .program import RATE, SCALE, Program, _matrix_node, array, program
from .elementwise import derive_elementwise
from .errors import NnderiveError
from .naming import A, X, Y, YHAT, YSUM
from .spec import Network
from .latex_printer import N, Z, _NAME, at_layer, symbol


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


# --- how matrix pieces print -------------------------------------------------------------------------
# SymPy's str writes a matrix product a*b, a Hadamard product HadamardProduct(a, b) and a ones vector 1;
# the pieces print the way the generated code and the documents write them: a @ b, a * b, 1_n.

def _operand(printer, e) -> str:
    text = printer._print(e)
    return f"({text})" if isinstance(e, (sp.MatAdd, sp.MatMul, sp.HadamardProduct)) else text


class _Product(sp.MatMul):
    """A matrix product, printed a @ b (a scalar factor with *: 1/n*(...))."""

    def _sympystr(self, printer):
        coeff, factors = self.as_coeff_mmul()
        product = " @ ".join(_operand(printer, f) for f in factors.args)
        if coeff == 1:
            return product
        if coeff == -1:
            return "-" + product
        return f"{printer.parenthesize(coeff, PRECEDENCE['Mul'])}*{product}"


class _Hadamard(sp.HadamardProduct):
    """An elementwise product, printed a * b as NumPy writes it."""

    def _sympystr(self, printer):
        return " * ".join(_operand(printer, f) for f in self.args)


class _Ones(sp.OneMatrix):
    """A vector of ones, printed 1_n (a column; 1_n.T a row), as the documents write it."""

    def _sympystr(self, printer):
        rows, cols = self.shape
        return f"1_{printer._print(rows)}" if cols == 1 else f"1_{printer._print(cols)}.T"


# --- the pieces of one network ------------------------------------------------------------------------

class Pieces:
    """Every symbolic object of a network's derivation, in the generated code's names, read off its Program.

    Elementwise objects (an activation, its derivative, the output delta, a hidden delta) are scalar
    expressions in the Symbols z{l}, a{l}, y, g{l} (the upstream gradient dL/da{l}), n: each stands for any
    one element of that array, exactly as the generated module applies the formula.
    Matrix objects (dW{l}, db{l}, g{l}, the forward pass) are MatrixSymbol expressions, batch-first,
    for display and evaluation with `numeric` (never differentiate them: see DESIGN pitfalls); they
    print as the code writes them: delta1.T @ x, a2 * g2, 1_n a column of n ones.
    delta, upstream, dW and db are the Program's own statements (what the module prints), composed
    and shown in these two forms; nothing here is a second copy of the recurrence.
    """

    def __init__(self, source):
        self.program = program(source)
        self.derivation = self.program.derivation
        self.network = self.derivation.network
        self.L = self.derivation.depth

    def __repr__(self):
        return f"Pieces({self.network.name}: {self.network.describe()})"

    # arrays
    def matrix(self, name: str) -> sp.MatrixSymbol:
        """The MatrixSymbol of a code array: x, y, z{l}, a{l}, delta{l}, g{l} (batch, n_l); W{l}, b{l} (column);
        R{u} (Rz1, RdW1 ...) and the direction's entries (vW1, vb1) shaped like u and the parameter."""
        sizes = self.network.sizes
        like = naming.rop_of(name) or naming.direction_of(name)
        if like is not None:
            return sp.MatrixSymbol(name, *self.matrix(like).shape)
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
            raise NnderiveError(f"layer {l} is softmax, a vector activation; see softmax_steps()")
        ew, spec = layer.elementwise, self.network.layers[l - 1]
        return ActivationPiece(spec.activation, function_tex(self.network, l), symbol(naming.pre(l)),
                               symbol(naming.act(l)), at_layer(ew.f, l), at_layer(ew.fprime, l),
                               None if ew.fprime_a is None else at_layer(ew.fprime_a, l),
                               at_layer(layer.factor, l), (), spec.formula, dict(spec.params))

    # forward
    def forward(self, l: int) -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
        """(a{l-1} @ W{l}.T, the broadcast bias 1_n b{l}.T): z{l} is their sum, as the Program's statements say."""
        self._layer(l)
        product, bias = (s.expr for s in self.program.defining(naming.pre(l))[:2])
        return self._display(product, l), _Product(_Ones(N, 1), self.matrix(bias.name).T, evaluate=False)

    # the loss
    @property
    def loss_element(self) -> sp.Expr:
        """One term of the per-example loss, in a{L} and y: the loss sums it over the outputs."""
        return self.derivation.loss.element.xreplace({YHAT: symbol(naming.act(self.L)), Y: symbol("y")})

    # deltas
    @property
    def output_delta(self) -> sp.Expr:
        """dl/dz{L} for one example and one output (no 1/n): e.g. a2 - y; for kind "jvp" the g{L} element."""
        if self.derivation.output.kind == "jvp":
            return self._elementwise(self.program.defining(naming.UPSTREAM)[0].expr, self.L)
        return self._elementwise(self.composed(naming.delta(self.L)).xreplace({SCALE: 1}), self.L)

    def upstream(self, l: int) -> sp.Expr:
        """g{l} = dL/da{l} as the Program computes it (for a softmax output that does not fuse, dl/da)."""
        self._layer(l)
        if l < self.L:
            return self._display(self._upstream_node(l), l)
        # the output's g is a statement before its delta (the hidden layers' g statements come after)
        first = next(i for i, s in enumerate(self.program.backward) if s.name == naming.delta(l))
        before = [s for s in self.program.backward[:first] if s.name == naming.UPSTREAM]
        if not before:
            raise NnderiveError(f"the output delta of {self.network.name} is {self.derivation.output.kind} "
                                f"(see output_delta): the Program computes no dL/da{l} of its own")
        return self._elementwise(before[-1].expr, l)

    def delta(self, l: int) -> sp.Expr:
        """delta{l} = dL/dz{l} as the code computes it (1/n for the output layer).

        Elementwise layers: a scalar expression (per element) in z{l}, a{l}, y, n and g{l};
        softmax layers (and a softmax output that does not fuse): the matrix expression
        a{l} (.) (g{l} - (g{l} (.) a{l}) 1 1^T), with g{l} from `upstream(l)`.
        """
        self._layer(l)
        value = self.composed(naming.delta(l), l).xreplace({SCALE: 1 / N})
        if value.xreplace({UnitSum(array(naming.TARGETS)): YSUM}).has(UnitSum, Dot, BatchSum):
            return self._display(value, l)
        return self._elementwise(value, l)

    def dW(self, l: int) -> sp.MatrixExpr:
        """dW{l} = dL/dW{l}, shape (n_l, n_{l-1}): the Program's statement (the data term's; a weight penalty's
        gradient, added entry by entry, is penalty_gradient("W{l}"))."""
        self._layer(l)
        return self._display(self.program.defining(naming.grad(naming.weight(l)))[0].expr, l)

    def db(self, l: int) -> sp.MatrixExpr:
        """db{l} = dL/db{l} = delta{l}.T @ 1_n (delta{l} summed over the batch): the column (n_l, 1) of
        the module's db{l}, whose shape is (n_l,) like b{l}'s."""
        self._layer(l)
        return self._display(self.program.defining(naming.grad(naming.bias(l)))[0].expr, l)

    @property
    def penalty(self) -> sp.Expr | None:
        """The weight penalty added to the batch mean of the loss (the Program's penalty statements,
        summed): e.g. Total(W1**2)/200 + Total(Abs(W2))/1000; None without one."""
        if not self.program.penalised:
            return None
        return sp.Add(*[s.expr for s in self.program.penalty])

    def penalty_gradient(self, param: str) -> sp.Expr | None:
        """The penalty's part of dL/d{param}, elementwise in the parameter's Symbol (l2 0.01: W1/100); None
        where the parameter has no penalty. dW(l) and db(l) are the data term's part."""
        name = naming.grad(param)
        updates = [s.expr for s in self.program.backward if s.name == name and s.op == "+=" and s.expr.has(RATE)]
        return sp.Add(*updates).xreplace({RATE: 1}) if updates else None

    def partials(self) -> dict:
        """Every dl/dW{l}[k, j] and dl/db{l}[k] for one example, written out in the forward values.

        Keys are the weight Symbols of derive.verify.param_symbols (W1_0_1 is W1[0, 1]); values are
        expressions in the element Symbols x_j, z{l}_k, a{l}_k, y_k and the weights. Small networks only.
        """
        from .latex_expanded import expanded_partials
        return expanded_partials(self.program)

    # reading the Program
    def composed(self, name: str, l: int | None = None) -> sp.Expr:
        """The value of `name` after all the backward statements that write it, as one expression.

        The upstream gradient (the temporary g, or the product inlined) is shown as g{l}.
        """
        value = None
        for s in self.program.backward:
            if s.name != name:
                continue
            value = s.expr if s.op == "=" else (value * s.expr if s.op == "*=" else value + s.expr)
        if l is not None:
            value = value.xreplace({array(naming.UPSTREAM): symbol(f"g{l}")})
            if l < self.L:
                value = value.xreplace({self._upstream_node(l): symbol(f"g{l}")})
        return value

    def _upstream_node(self, l: int) -> sp.Expr:
        """The upstream gradient of layer l as the Program computes it (lowered from the indexed form
        even where the Program needs none: below a step or sign layer, whose delta is 0)."""
        found = (e for s in self.program.backward for e in sp.preorder_traversal(s.expr)
                 if isinstance(e, Dot) and e.args[0] == array(naming.delta(l + 1)))
        steps = matrix_steps()
        lowered = _matrix_node(steps.upstream, {steps.delta: array(naming.delta(l + 1)),
                                                steps.W: array(naming.weight(l + 1))})
        return next(found, lowered)

    def _elementwise(self, expr: sp.Expr, l: int) -> sp.Expr:
        """A Program expression with no array nodes, one element at a time (sum(y) over the units as ysum),
        the temporaries t{l}_i the code shares written out (their forward statements, substituted)."""
        temps = {s.target: s.expr for s in self.program.forward if s.name.startswith(naming.temp(l, 0)[:-1])}
        for _ in temps:
            expr = expr.xreplace(temps)
        expr = expr.replace(lambda e: isinstance(e, Like), lambda e: e.args[0])    # a number broadcast: the number
        return unstable(expr.xreplace({UnitSum(array(naming.TARGETS)): YSUM, array(naming.UPSTREAM): symbol(f"g{l}")}))

    def _display(self, expr: sp.Expr, l: int) -> sp.Expr:
        """A Program expression as matrices: products, transposes, Hadamard products, sums as ones vectors."""
        def conv(e):
            if isinstance(e, sp.Symbol):
                return self.matrix(e.name) if e != N else e
            if isinstance(e, Dot):
                return _Product(conv(e.args[0]), conv(e.args[1]), evaluate=False)
            if isinstance(e, T):
                return conv(e.args[0]).T
            if isinstance(e, BatchSum):
                return _Product(conv(e.args[0]).T, _Ones(N, 1), evaluate=False)
            if isinstance(e, UnitSum):
                inner = conv(e.args[0])
                k = inner.shape[1]
                return _Product(inner, _Ones(k, 1), _Ones(1, k), evaluate=False)
            if e.is_Mul:
                scalars = [f for f in e.args if f.is_number or f == N or (f.is_Pow and f.base == N)]
                arrays = [conv(f) for f in e.args if f not in scalars]
                product = arrays[0] if len(arrays) == 1 else _Hadamard(*arrays, evaluate=False)
                return _Product(sp.Mul(*scalars), product, evaluate=False) if scalars else product
            if e.is_Add:
                return sp.MatAdd(*[conv(a) for a in e.args], evaluate=False)
            raise NnderiveError(f"cannot show {e} as a matrix expression")
        return conv(expr)

    def _layer(self, l: int):
        if not isinstance(l, int) or not 1 <= l <= self.L:
            raise NnderiveError(f"layer {l!r}: {self.network.name} has layers 1 to {self.L}")
        return self.derivation.layers[l - 1]


def pieces(source) -> Pieces:
    """The pieces of a Network, a Derivation or a Program (derived here if need be)."""
    if isinstance(source, Derivation):
        source = source.network
    if not isinstance(source, (Network, Program)):
        raise NnderiveError(f"pieces() takes a Network, a Derivation or a Program, not {type(source).__name__}")
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
    from .expansion import evaluate
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
