"""Parse a custom activation formula in x, or a loss formula in y_hat and y, from untrusted text, without eval."""

from __future__ import annotations

import ast
import difflib
import math
import operator
import warnings
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable, NoReturn

import sympy as sp

from derive.errors import SpecError

X = sp.Symbol("x", real=True)
YHAT = sp.Symbol("yhat", real=True)   # derive.naming's prediction and target symbols
Y = sp.Symbol("y", real=True)

MAX_LENGTH = 500  # characters
MAX_NODES = 200  # operands and operations
MAX_DEPTH = 40  # nesting of operations
MAX_TREE_DEPTH = 100  # nesting of the SymPy expression built from it (sigmoid(u) adds 4 levels)
MAX_EXPONENT = 100  # |c| in base**c
MAX_BITS = 10_000  # bound on the exact integers SymPy may form (powers multiply it)
MAX_ROOT = 1000  # denominators of fractional powers, multiplied through nesting
MAX_WORK = 100_000  # bits * root: SymPy extracts roots of numbers by factoring b**(p mod q)
MAX_CONSTANT = 1e15  # |c| for every part without x: SymPy's evalf of exp(10**300) takes 0.3 s
MAX_DECIMAL_EXPONENT = 300  # literals below 1e-300 in size (other than 0) are refused
_CANCELLATION = 1e-9  # a constant sum this much smaller than its terms is taken for zero


def _sigmoid(u: float) -> float:
    # 1/(1+exp(-u)) == exp(u)/(1+exp(u)); take the form that cannot overflow
    return 1 / (1 + math.exp(-u)) if u >= 0 else math.exp(u) / (1 + math.exp(u))


def _softplus(u: float) -> float:
    # log(1+exp(u)) == max(u, 0) + log(1+exp(-|u|))
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


def _abs(u: sp.Expr) -> sp.Expr:
    # Abs(u) evaluates by asking the assumptions system about u: ~50 ms for a large u,
    # seconds for nested ones. Unevaluated, it means and differentiates the same.
    return sp.Abs(u) if u.is_number else sp.Abs(u, evaluate=False)


def _extremum(kind: type[sp.Max] | type[sp.Min]) -> Callable[[sp.Expr, sp.Expr], sp.Expr]:
    """max/min of two parts, left unevaluated unless both are rational numbers.

    Evaluating Max/Min makes SymPy compare every pair of arguments of nested calls
    symbolically, which takes seconds for a chain of ten (and Max(x, x/10) cannot
    be simplified anyway); the result means the same and differentiates the same.
    """

    def build(a: sp.Expr, b: sp.Expr) -> sp.Expr:
        return kind(a, b) if a.is_Rational and b.is_Rational else kind(a, b, evaluate=False)

    return build


def _log_root(expr: sp.Expr) -> int:
    """The denominators exp() may turn into a power: exp(log(2)*5/7) is 2**(5/7)."""
    if not expr.has(sp.log):
        return 1
    return math.lcm(*(r.q for r in expr.atoms(sp.Rational)))


@dataclass(frozen=True)
class _Function:
    arity: int
    build: Callable[..., sp.Expr]  # SymPy side
    value: Callable[..., float]  # float side, to range-check constant parts


FUNCTIONS: dict[str, _Function] = {
    "abs": _Function(1, _abs, abs),
    "asinh": _Function(1, sp.asinh, math.asinh),
    "atan": _Function(1, sp.atan, math.atan),
    "cos": _Function(1, sp.cos, math.cos),
    "cosh": _Function(1, sp.cosh, math.cosh),
    "erf": _Function(1, sp.erf, math.erf),
    "exp": _Function(1, sp.exp, math.exp),
    "log": _Function(1, sp.log, math.log),
    "max": _Function(2, _extremum(sp.Max), max),
    "min": _Function(2, _extremum(sp.Min), min),
    "sigmoid": _Function(1, lambda u: 1 / (1 + sp.exp(-u)), _sigmoid),
    "sign": _Function(1, sp.sign, lambda u: float((u > 0) - (u < 0))),
    "sin": _Function(1, sp.sin, math.sin),
    "sinh": _Function(1, sp.sinh, math.sinh),
    "softplus": _Function(1, lambda u: sp.log(1 + sp.exp(u)), _softplus),
    "sqrt": _Function(1, sp.sqrt, math.sqrt),
    "tan": _Function(1, sp.tan, math.tan),
    "tanh": _Function(1, sp.tanh, math.tanh),
}
CONSTANTS: dict[str, tuple[sp.Expr, float]] = {"pi": (sp.pi, math.pi), "e": (sp.E, math.e)}

# operator -> (on SymPy expressions, on floats); SymPy's operators evaluate as they build
_BINARY = {
    ast.Add: (operator.add, operator.add),
    ast.Sub: (operator.sub, operator.sub),
    ast.Mult: (operator.mul, operator.mul),
    ast.Div: (operator.truediv, operator.truediv),
    ast.Pow: (operator.pow, math.pow),  # math.pow raises where ** would go complex
}
_UNARY = (ast.USub, ast.UAdd)
_REFUSED_OPERATORS = {
    ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
    ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~", ast.Not: "not",
}
_SPELLED = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Slice: "a slice",
    ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.Compare: "a comparison", ast.BoolOp: "'and'/'or'", ast.IfExp: "a conditional expression",
    ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string", ast.NamedExpr: "':='",
    ast.Tuple: "a tuple", ast.List: "a list", ast.Set: "a set", ast.Dict: "a dict",
    ast.Starred: "a starred argument", ast.Await: "'await'", ast.Yield: "'yield'",
    ast.YieldFrom: "'yield from'",
}
_ALLOWED = (
    "a formula may use only x, pi, e, numbers, + - * / ** and the functions "
    + ", ".join(FUNCTIONS)
)
MAX_PARAMS = 8  # named parameters of one loss formula
_VARIABLE_POWER = "for a variable exponent write exp(x*log(2)) instead of 2**x"


def _tree_depth(expr: sp.Expr) -> int:
    """The depth of a SymPy expression tree, counted without recursion."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((arg, depth + 1) for arg in node.args)
    return deepest


@dataclass(frozen=True)
class _Term:
    """A built subformula and what the checks above it need to know."""

    expr: sp.Expr
    has_x: bool
    value: float | None  # its float value when it does not contain x
    bits: int  # bound on the size of the exact numbers inside it
    has_pow: bool
    root: int  # bound on the denominators of the fractional powers SymPy may form in it


@dataclass(frozen=True)
class _Language:
    """What a formula may name: its variables (name in the text -> Symbol) and its parameters
    (name -> exact number), and the words its messages use."""

    variables: dict
    params: dict
    needs: sp.Symbol          # the variable the formula must depend on
    example: str              # a formula of this kind, for messages
    what: str                 # "activation" or "loss"

    @property
    def names(self) -> str:
        return " and ".join(self.variables)

    @property
    def allowed(self) -> str:
        params = "".join(f"{p}, " for p in self.params)
        return (f"a formula may use only {', '.join(self.variables)}, {params}pi, e, numbers, + - * / ** and the "
                "functions " + ", ".join(FUNCTIONS))


ACTIVATION = _Language({"x": X}, {}, X, "x*sigmoid(x)", "activation")


def parse_loss_formula(text: str, source: str = "", where: str = "loss.formula", params: dict | None = None) -> sp.Expr:
    """Turn a loss formula in ``y_hat`` (one output) and ``y`` (its target) into a SymPy expression
    in YHAT and Y, safely: the same parser, whitelist and bounds as parse_formula.

    Args:
        params: name -> number for the named parameters the formula may use (``gamma`` of a focal
            loss); each becomes the exact rational of its shortest decimal form before SymPy sees it.

    Raises:
        SpecError: one line naming the place and the fix.

    >>> parse_loss_formula("-(y*log(y_hat) + (1 - y)*log(1 - y_hat))")
    -y*log(yhat) - (1 - y)*log(1 - yhat)
    >>> parse_loss_formula("-y*(1 - y_hat)**gamma*log(y_hat)", params={"gamma": 2.0})
    -y*(1 - yhat)**2*log(yhat)
    """
    from fractions import Fraction
    exact = {k: Fraction(repr(float(v))) for k, v in (params or {}).items()}
    language = _Language({"y_hat": YHAT, "y": Y}, exact, YHAT, "-y*log(y_hat)", "loss")
    return _Parser(text, source, where, language).parse()


def parse_formula(text: str, source: str = "", where: str = "formula") -> sp.Expr:
    """Turn an activation formula in ``x`` into a SymPy expression in ``X``, safely.

    The text is parsed with :mod:`ast`, never evaluated: only ``x``, ``pi``, ``e``,
    int and float literals (floats become exact rationals: 0.1 is 1/10),
    ``+ - * / **``, unary ``-``/``+`` and positional calls of the functions in
    ``FUNCTIONS`` are accepted. Length, node count, nesting, exponents (constants
    within +-100, no towers, small denominators) and the size of exact numbers are
    bounded, and every part without x must be a real number within +-1e15 that does
    not cancel to zero, so no input can make the parser or SymPy hang. ``abs``,
    ``max`` and ``min`` of parts with x are built unevaluated: SymPy's evaluation of
    them can take seconds, and they mean and differentiate the same either way.

    Args:
        text: the formula, e.g. from an untrusted spec file.
        source: the file it came from, for the error message.
        where: the place in that file, for the error message.

    Returns:
        A SymPy expression whose only free symbol is ``X``.

    Raises:
        SpecError: for anything else, with a one-line message naming the fix.

    >>> parse_formula("x*tanh(log(1 + exp(x)))")
    x*tanh(log(exp(x) + 1))
    """
    return _Parser(text, source, where).parse()


class _Parser:
    """One parse: the raw text, where it came from, and the checks in the order they run."""

    def __init__(self, text: object, source: str, where: str, language: _Language = ACTIVATION):
        self.raw, self.source, self.where = text, source, where
        self.language = language
        self.text = ""
        self.offset = 0  # leading blanks stripped; columns are reported in the raw text

    def fail(self, what: str, fix: str) -> NoReturn:
        raise SpecError(self.source, self.where, what, fix)

    def at(self, node: ast.AST) -> str:
        return f"at column {node.col_offset + 1 + self.offset}"

    def snippet(self, node: ast.AST) -> str:
        piece = self.text[node.col_offset : node.end_col_offset]
        return repr(piece if len(piece) <= 30 else piece[:27] + "...")

    def parse(self) -> sp.Expr:
        tree = self.read()
        self.check_shape(tree.body)
        term = self.build(tree.body)
        whole = self.snippet(tree.body)
        need = self.language.needs
        if not term.has_x or need not in term.expr.free_symbols:
            fix = f"a constant {self.language.what} has zero gradient; use {self.names_of(need)}"
            self.fail(f"{whole} does not depend on {self.names_of(need)}", fix)
        depth = _tree_depth(term.expr)
        if depth > MAX_TREE_DEPTH:
            # SymPy's differentiation and printing recurse on the tree: ~120 levels (sigmoid nested
            # 30 deep) end in a RecursionError; 100 is well inside what derives in seconds.
            self.fail(f"formula nests {depth} deep once written out in SymPy (sigmoid(u) is 1/(1 + exp(-u))), "
                      f"more than {MAX_TREE_DEPTH}", "nest fewer functions")
        if term.expr.has(sp.zoo, sp.nan, sp.oo, sp.S.NegativeInfinity, sp.I):
            self.fail(
                f"{whole} is {term.expr}, not a finite real function of {self.language.names}",
                "remove the division by zero or the root of a negative number",
            )
        return term.expr

    def read(self) -> ast.Expression:
        """Check the raw text, then let Python's parser tokenise it."""
        if not isinstance(self.raw, str):
            kind = type(self.raw).__name__
            self.fail(f"formula must be text, got {kind}", f'quote it, e.g. "{self.language.example}"')
        if len(self.raw) > MAX_LENGTH:
            what = f"formula has {len(self.raw)} characters, more than {MAX_LENGTH}"
            self.fail(what, "shorten it")
        self.text = self.raw.strip()
        self.offset = len(self.raw) - len(self.raw.lstrip())
        if not self.text:
            self.fail("formula is empty",
                      f'write a formula in {self.language.names}, e.g. "{self.language.example}"')
        if "#" in self.text:
            # Python's parser would drop it, and the documents would still quote it.
            column = self.text.index("#") + 1 + self.offset
            self.fail(f"a comment ('#' at column {column}) is not allowed in a formula",
                      "remove it (a TOML comment goes after the closing quote)")
        for column, char in enumerate(self.text, 1 + self.offset):
            # Python's parser NFKC-normalises identifiers (fullwidth 'ｘ' becomes 'x'),
            # so anything but printable ASCII is refused before it gets there.
            if not " " <= char <= "~":
                self.fail(
                    f"character U+{ord(char):04X} at column {column} is not allowed",
                    "write the formula on one line in plain ASCII (look-alike letters are refused)",
                )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ast.parse(self.text, mode="eval")
        except SyntaxError as error:
            message = " ".join(str(error.msg).split())
            column = f" at column {error.offset + self.offset}" if error.offset else ""
            self.fail(f"{message}{column}", f"{self.language.allowed}; check the brackets and operators")
        except (RecursionError, MemoryError, ValueError, OverflowError):
            self.fail("formula is nested too deeply to parse", "simplify it")

    def check_shape(self, root: ast.expr) -> None:
        """Whitelist every node and bound size and depth, iteratively, before SymPy sees any."""
        count = 0
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                self.fail(f"formula has over {MAX_NODES} operands and operations", "shorten it")
            if depth > MAX_DEPTH:
                self.fail(f"formula nests over {MAX_DEPTH} deep {self.at(node)}", "flatten it")
            children = self.check_node(node)
            stack.extend((child, depth + 1) for child in reversed(children))

    def check_node(self, node: ast.AST) -> list[ast.expr]:
        """Refuse anything off the whitelist; return the operands to check next."""
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                self.refuse_operator(node)
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY):
                self.refuse_operator(node)
            return [node.operand]
        if isinstance(node, ast.Constant):
            kind = type(node.value)
            if kind not in (int, float):
                spelled = {
                    bool: "True/False", str: "a string", bytes: "bytes", complex: "a complex number"
                }
                self.fail(
                    f"{spelled.get(kind, repr(node.value))} {self.at(node)} is not allowed",
                    f"{self.language.allowed}; remove {self.snippet(node)}",
                )
            return []
        if isinstance(node, ast.Name):
            self.check_name(node)
            return []
        if isinstance(node, ast.Call):
            self.check_call(node)
            return list(node.args)
        thing = _SPELLED.get(type(node), type(node).__name__)
        self.fail(
            f"{thing} {self.at(node)} is not allowed", f"{self.language.allowed}; remove {self.snippet(node)}"
        )

    def refuse_operator(self, node: ast.BinOp | ast.UnaryOp) -> NoReturn:
        symbol = _REFUSED_OPERATORS.get(type(node.op), type(node.op).__name__)
        hint = "for a power write ** (^ is bitwise xor)" if symbol == "^" else "use + - * / **"
        self.fail(
            f"operator {symbol!r} in {self.snippet(node)} {self.at(node)} is not allowed",
            f"{self.language.allowed}; {hint}",
        )

    def names_of(self, symbol: sp.Symbol) -> str:
        return next(name for name, s in self.language.variables.items() if s == symbol)

    def known(self) -> list[str]:
        """The names a formula may use (not the functions)."""
        return [*self.language.variables, *self.language.params, *CONSTANTS]

    def check_name(self, node: ast.Name) -> None:
        if node.id in self.known():
            return
        first = next(iter(self.language.variables))
        if node.id in FUNCTIONS:
            self.fail(f"{node.id!r} {self.at(node)} is a function", f"call it, e.g. {node.id}({first})")
        known = self.known()
        fix = self.suggest(node.id, known)
        if self.language.what == "loss":
            fix += f"; or give it a value beside the formula (e.g. {node.id} = 1.0) to make it a parameter"
        self.fail(f"unknown name {node.id!r} {self.at(node)}", fix)

    def check_call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            if name is None:
                what = f"call of {self.snippet(node.func)}"
            elif name in self.known():
                self.fail(
                    f"{name!r} {self.at(node)} is called but is not a function",
                    f"for a product write {name}*(...)",
                )
            else:
                what = f"unknown function {name!r}"
            self.fail(f"{what} {self.at(node)}", self.suggest(name or "", list(FUNCTIONS)))
        by_position = f"pass the argument by position, e.g. {name}({next(iter(self.language.variables))})"
        if node.keywords:
            self.fail(f"keyword argument in {self.snippet(node)} {self.at(node)}", by_position)
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            self.fail(f"starred argument in {self.snippet(node)} {self.at(node)}", by_position)
        arity = FUNCTIONS[name].arity
        if len(node.args) != arity:
            arguments = f"{arity} argument{'s' * (arity > 1)}"
            self.fail(
                f"{name} {self.at(node)} takes {arguments}, got {len(node.args)}",
                f"write {name}({', '.join([next(iter(self.language.variables)), '0'][:arity])})",
            )

    def suggest(self, name: str, known: list[str]) -> str:
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        allowed = self.language.allowed
        return f"did you mean {close[0]!r}? {allowed}" if close else allowed

    def build(self, node: ast.expr) -> _Term:
        """Build the SymPy expression bottom-up, checking each node before SymPy evaluates it.

        Recursion is safe: check_shape has bounded the depth.
        """
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in self.language.variables:
                return _Term(self.language.variables[node.id], True, None, 0, False, 1)  # x adds no digits
            if node.id in self.language.params:
                exact = self.language.params[node.id]
                return self.exact_number(node, exact)
            expr, value = CONSTANTS[node.id]
            return _Term(expr, False, value, 1, False, 1)
        if isinstance(node, ast.UnaryOp):
            term = self.build(node.operand)
            if isinstance(node.op, ast.UAdd):
                return term
            value = None if term.value is None else -term.value
            return _Term(-term.expr, term.has_x, value, term.bits, term.has_pow, term.root)
        if isinstance(node, ast.BinOp):
            return self.operation(node)
        return self.call(node)

    def number(self, node: ast.Constant) -> _Term:
        if isinstance(node.value, int):
            exact = Fraction(node.value)
        else:
            # the literal's own digits, so 0.1 is exactly 1/10; nothing string-based reaches SymPy
            digits = self.text[node.col_offset : node.end_col_offset].replace("_", "")
            decimal = Decimal(digits)
            # 1e99999999 is ten characters for a number of 10**8 digits: judge it by its exponent
            # before Fraction spells it out (which would take minutes and gigabytes)
            if decimal and not -MAX_DECIMAL_EXPONENT <= decimal.adjusted() <= math.log10(MAX_CONSTANT):
                what = f"number {self.snippet(node)} {self.at(node)} is beyond +-{MAX_CONSTANT:g}" \
                    if decimal.adjusted() > 0 else f"number {self.snippet(node)} {self.at(node)} is too small"
                self.fail(what, "use a number between 1e-300 and 1e15 in size, or 0")
            exact = Fraction(decimal)
        return self.exact_number(node, exact)

    def exact_number(self, node: ast.expr, exact: Fraction) -> _Term:
        if abs(exact) > MAX_CONSTANT:
            what = f"number {self.snippet(node)} {self.at(node)} is beyond +-{MAX_CONSTANT:g}"
            self.fail(what, "use a smaller number")
        bits = exact.numerator.bit_length() + exact.denominator.bit_length()
        rational = sp.Rational(exact.numerator, exact.denominator)
        return _Term(rational, False, float(exact), bits, False, 1)

    def operation(self, node: ast.BinOp) -> _Term:
        left, right = self.build(node.left), self.build(node.right)
        is_pow = isinstance(node.op, ast.Pow)
        bits = left.bits + right.bits
        root = math.lcm(left.root, right.root)  # Mul joins 2**(1/3)*2**(1/5) into 2**(8/15)
        if is_pow:
            self.check_exponent(node, right)
            # a**n can need n times the digits of a: (2**100)**100 has 10000 bits
            bits = left.bits * max(1, math.ceil(abs(right.value))) + right.bits
            denominator = right.expr.q if right.expr.is_Rational else 1
            root = math.lcm(left.root * denominator, _log_root(right.expr))
        self.check_size(node, bits, root)
        if isinstance(node.op, ast.Div) and right.expr == 0:
            what = f"division by zero in {self.snippet(node)} {self.at(node)}"
            self.fail(what, "divide by something nonzero")
        on_expressions, on_floats = _BINARY[type(node.op)]
        value = None
        if left.value is not None and right.value is not None:
            value = self.constant(node, on_floats, left.value, right.value)
        expr = self.sympy(node, on_expressions, left.expr, right.expr)
        if value is not None and isinstance(node.op, (ast.Add, ast.Sub)) and not expr.is_Rational:
            # A constant SymPy cannot prove zero (sin(1)**2 + cos(1)**2 - 1) makes every later
            # sign or comparison run evalf to its precision limit: refuse it here.
            if abs(value) <= _CANCELLATION * max(abs(left.value), abs(right.value)):
                self.fail(
                    f"constant {self.snippet(node)} {self.at(node)} cancels to (nearly) zero",
                    "simplify it",
                )
        has_pow = is_pow or left.has_pow or right.has_pow
        return self.term(node, expr, left.has_x or right.has_x, value, bits, has_pow, root)

    def check_exponent(self, node: ast.BinOp, exponent: _Term) -> None:
        """An exponent must be a constant of size at most MAX_EXPONENT, with no ** inside."""
        if exponent.has_x:
            what = f"exponent of {self.snippet(node)} {self.at(node)} contains {self.language.names}"
            self.fail(what, _VARIABLE_POWER if self.language.what == "activation" else
                      "for a variable exponent write exp(y*log(2)) instead of 2**y")
        if exponent.has_pow:
            self.fail(
                f"power tower {self.snippet(node)} {self.at(node)} is not allowed",
                "use a single power with a constant exponent",
            )
        if abs(exponent.value) > MAX_EXPONENT:
            self.fail(
                f"exponent {exponent.value:g} of {self.snippet(node)} {self.at(node)}"
                f" is beyond +-{MAX_EXPONENT}",
                "use a smaller exponent",
            )

    def check_size(self, node: ast.expr, bits: int, root: int) -> None:
        """Bound the exact numbers SymPy may form, before it forms them."""
        if bits > MAX_BITS:
            self.fail(
                f"the numbers in {self.snippet(node)} {self.at(node)} grow too large",
                "use smaller numbers and exponents",
            )
        if root > MAX_ROOT or bits * root > MAX_WORK:
            need = (
                f"denominators over {MAX_ROOT}" if root > MAX_ROOT
                else f"roots of degree {root} of {bits}-bit numbers"
            )
            self.fail(
                f"the fractional powers in {self.snippet(node)} {self.at(node)} need {need}",
                "use simple exponents such as 1/2, 1/3, 0.25 or 1.5",
            )

    def call(self, node: ast.Call) -> _Term:
        function = FUNCTIONS[node.func.id]
        args = [self.build(arg) for arg in node.args]
        bits = sum(arg.bits for arg in args) + 1
        root = math.lcm(*(math.lcm(arg.root, _log_root(arg.expr)) for arg in args))
        if node.func.id == "sqrt":
            root *= 2
        self.check_size(node, bits, root)
        value = None
        if all(arg.value is not None for arg in args):
            value = self.constant(node, function.value, *(arg.value for arg in args))
        if node.func.id in ("max", "min"):
            # comparing rationals is exact and instant; comparing pi with 355/113 is not
            for arg, arg_node in zip(args, node.args):
                if arg.value is not None and not arg.expr.is_Rational:
                    self.fail(
                        f"constant {self.snippet(arg_node)} {self.at(arg_node)}"
                        f" in {node.func.id}() is not a plain number",
                        f"write it as a decimal, e.g. {arg.value:.6g}",
                    )
        expr = self.sympy(node, function.build, *(arg.expr for arg in args))
        has_x, has_pow = any(a.has_x for a in args), any(a.has_pow for a in args)
        return self.term(node, expr, has_x, value, bits, has_pow, root)

    def term(
        self, node: ast.expr, expr: sp.Expr, has_x: bool, value: float | None, bits: int,
        has_pow: bool, root: int,
    ) -> _Term:
        """Wrap a built node, refusing one whose x cancelled out (x - x, exp(x)/exp(x)).

        Thus a part has x exactly when SymPy sees x, and every part SymPy sees as a
        number has a float value the checks above can use.
        """
        if has_x and not expr.free_symbols:
            self.fail(f"{self.language.names} cancel{'s' * (len(self.language.variables) == 1)} out of "
                      f"{self.snippet(node)} {self.at(node)}", "remove that part")
        return _Term(expr, has_x, value, bits, has_pow, root)

    def sympy(self, node: ast.expr, build: Callable[..., sp.Expr], *args: sp.Expr) -> sp.Expr:
        """Let SymPy build one node; its own refusals become SpecErrors too."""
        try:
            return build(*args)
        except (ArithmeticError, ValueError, TypeError, NotImplementedError, RecursionError) as err:
            reason = " ".join(str(err).split())[:100]
            what = f"SymPy cannot build {self.snippet(node)} {self.at(node)}: {reason}"
            self.fail(what, "simplify it")

    def constant(self, node: ast.expr, operate: Callable[..., float], *args: float) -> float:
        """Evaluate a part without x in floats; it must be a real number within MAX_CONSTANT.

        This keeps SymPy from ever comparing or evaluating huge or complex constants.
        """
        try:
            value = operate(*(float(arg) for arg in args))
        except (ArithmeticError, ValueError):
            value = math.nan
        if isinstance(value, complex) or not abs(value) <= MAX_CONSTANT:  # also catches nan
            self.fail(
                f"constant {self.snippet(node)} {self.at(node)} is not a real number"
                f" within +-{MAX_CONSTANT:g}",
                "use smaller constants, with no division by zero and no log or sqrt of a negative",
            )
        return float(value)


# --- where a formula is defined ---------------------------------------------------------------------

_HALF_PI = math.pi / 2
_MARGIN = 1e-9          # interval ends this close to a pole or a domain edge count as touching it
MAX_POLY_DEGREE = 12    # a polynomial part of higher degree is not solved: the formula is refused
_BOUNDED = {sp.sin: (-1.0, 1.0), sp.cos: (-1.0, 1.0), sp.sign: (-1.0, 1.0)}
_INCREASING = {sp.exp: math.exp, sp.sinh: math.sinh, sp.asinh: math.asinh, sp.atan: math.atan,
               sp.tanh: math.tanh, sp.erf: math.erf}


class _Undecided(Exception):
    """Interval arithmetic cannot show that `part` meets `need` ("nonzero", "positive",
    "nonnegative", "no pole") for every real x: the exact check decides."""

    def __init__(self, node: sp.Expr, need: str, part: sp.Expr):
        super().__init__(need)
        self.node, self.need, self.part = node, need, part


def _apply(f, u: float) -> float:
    try:
        return f(u)
    except OverflowError:
        return math.inf if u > 0 else -math.inf
    except ValueError:
        return math.nan


def _range(e: sp.Expr, proven: frozenset) -> tuple[float, float]:
    """An interval holding every value of e over all real x; _Undecided where e may be undefined.

    Interval arithmetic over the tree (ends kept _MARGIN away from poles and domain edges): one
    pass proves most activations defined everywhere (mish, softsign, tan(sin(x)) ...). Nodes in
    `proven` were shown defined exactly; their range is taken as unbounded where intervals cannot say.
    """
    if e == X:
        return -math.inf, math.inf
    if e.is_Number or e.is_NumberSymbol:
        v = float(e)
        return v, v
    if e.is_Add:
        lo = hi = 0.0
        for a in e.args:
            a_lo, a_hi = _range(a, proven)
            lo, hi = lo + a_lo, hi + a_hi
            if math.isnan(lo) or math.isnan(hi):     # -inf + inf: unbounded both ways
                lo, hi = -math.inf, math.inf
        return lo, hi
    if e.is_Mul:
        lo, hi = 1.0, 1.0
        for a in e.args:
            a_lo, a_hi = _range(a, proven)
            products = [p for p in (lo * a_lo, lo * a_hi, hi * a_lo, hi * a_hi) if not math.isnan(p)]
            lo, hi = (min(products), max(products)) if len(products) == 4 else (-math.inf, math.inf)
        return lo, hi
    if e.is_Pow:
        base, exponent = e.args
        if not exponent.is_Rational:
            raise _Undecided(e, "nonzero", base)
        lo, hi = _range(base, proven)
        if exponent.is_Integer:
            n = int(exponent)
            if n < 0 and lo <= _MARGIN and hi >= -_MARGIN:
                if e not in proven:
                    raise _Undecided(e, "nonzero", base)
                return -math.inf, math.inf
            return _power_range(lo, hi, n)
        need = "positive" if exponent < 0 else "nonnegative"
        if lo < (_MARGIN if exponent < 0 else 0.0):  # a fractional power of a negative number is not real
            if e not in proven:
                raise _Undecided(e, need, base)
            lo = 0.0
        p = float(exponent)
        ends = [_apply(lambda u: u ** p, max(lo, 0.0)), _apply(lambda u: u ** p, hi)]
        return (min(ends), max(ends)) if exponent > 0 else (0.0, math.inf)
    f = e.func
    args = [_range(a, proven) for a in e.args]
    if f in (sp.Max, sp.Min):
        pick = max if f is sp.Max else min
        return pick(a[0] for a in args), pick(a[1] for a in args)
    if f is sp.Abs:
        (lo, hi), = args
        return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
    if f is sp.log:
        (lo, hi), = args
        if lo < _MARGIN:
            if e not in proven:
                raise _Undecided(e, "positive", e.args[0])
            return -math.inf, _apply(math.log, hi) if hi > 0 else math.inf
        return math.log(lo), _apply(math.log, hi)
    if f is sp.cosh:
        (lo, hi), = args
        ends = [_apply(math.cosh, lo), _apply(math.cosh, hi)]
        return (1.0 if lo <= 0 <= hi else min(ends)), max(ends)
    if f in (sp.tan, sp.cot):
        (lo, hi), = args
        shift = _HALF_PI if f is sp.tan else 0.0     # tan: poles at pi/2 + k pi; cot: at k pi
        if math.isfinite(lo) and math.isfinite(hi):
            k = math.floor((lo + shift) / math.pi)
            if k * math.pi - shift + _MARGIN < lo and hi < (k + 1) * math.pi - shift - _MARGIN:
                ends = [math.tan(lo), math.tan(hi)] if f is sp.tan else [1 / math.tan(hi), 1 / math.tan(lo)]
                return min(ends), max(ends)
        raise _Undecided(e, "no pole", e.args[0])
    if f in _INCREASING:
        (lo, hi), = args
        return _apply(_INCREASING[f], lo), _apply(_INCREASING[f], hi)
    if f in _BOUNDED:
        return _BOUNDED[f]
    raise _Undecided(e, "known", e)


def _power_range(lo: float, hi: float, n: int) -> tuple[float, float]:
    ends = [_apply(lambda u: u ** n, lo), _apply(lambda u: u ** n, hi)]
    if n % 2 == 0 and lo <= 0 <= hi:
        return (0.0 if n > 0 else min(ends)), (max(ends) if n > 0 else math.inf)
    return min(ends), max(ends)


def _degree(e: sp.Expr) -> int | None:
    """The degree in X of a polynomial expression, counted on the tree (no expansion); None if e is not one."""
    if e == X:
        return 1
    if e.is_Number:
        return 0
    if e.is_Add or e.is_Mul:
        degrees = [_degree(a) for a in e.args]
        if None in degrees:
            return None
        return max(degrees) if e.is_Add else sum(degrees)
    if e.is_Pow and e.exp.is_Integer and e.exp >= 0:
        d = _degree(e.base)
        return None if d is None else d * int(e.exp)
    return None


def _decide(need: str, u: sp.Expr) -> str | None:
    """Exactly: why u fails `need` for some real x (text naming a point), "" if it meets it, None if
    this check cannot tell (u not a polynomial of degree <= MAX_POLY_DEGREE)."""
    if need == "nonzero" and isinstance(u, sp.Abs):
        return _decide("nonzero", u.args[0])
    if need == "nonzero" and u.is_Pow and u.exp.is_Integer and u.exp > 0:
        return _decide("nonzero", u.base)
    if need in ("positive", "nonzero") and isinstance(u, sp.Abs):
        return _decide("nonzero", u.args[0])
    if need in ("nonzero", "positive", "nonnegative") and u.is_Mul and need == "nonzero":
        for factor in u.args:
            why = _decide("nonzero", factor)
            if why is None or why:
                return why
        return ""
    degree = _degree(u)
    if degree is None or degree > MAX_POLY_DEGREE:
        return None
    if need == "no pole" or need == "known":
        return None if degree == 0 else f"where tan/cot of {u} reaches a pole"   # a nonconstant polynomial takes every
    poly = sp.Poly(u, X)                                          # value on a half-line at least
    if not poly.domain.is_QQ and not poly.domain.is_ZZ:
        return None
    roots = poly.real_roots()
    if u == X:
        return "at x = 0" if need != "nonnegative" else "for x < 0"
    if need == "nonzero":
        return f"at x = {_short(roots[0])}, where {u} = 0" if roots else ""
    odd = sorted({r for r in roots if roots.count(r) % 2 == 1}, key=lambda r: abs(float(r)))
    if odd:
        return f"beside x = {_short(odd[0])}, where {u} changes sign"
    probe = next(t for t in range(len(roots) + 1) if sp.Rational(t) not in roots)
    if poly(probe) < 0:
        return f"at x = {probe}, where {u} < 0"
    if need == "positive" and roots:
        return f"at x = {_short(roots[0])}, where {u} = 0"
    return ""


def _short(r: sp.Expr) -> str:
    return str(r) if r.is_Rational else f"{float(r):.6g}"


def undefined_where(expr: sp.Expr) -> str | None:
    """Why the formula is not defined (a finite real number) for every real x, or None if it is.

    Decided symbolically, never by sampling: interval arithmetic over the tree, and where it
    leaves a part open (a denominator, a log or root argument, a tan argument that may reach a
    pole) an exact decision: real roots of a polynomial part (degree <= MAX_POLY_DEGREE). A part
    neither can decide is refused: an activation must be provably defined everywhere. Linear in the
    formula's size, plus root isolation of bounded degree.
    """
    proven = frozenset()
    for _ in range(MAX_NODES + 1):
        try:
            _range(expr, proven)
            return None
        except _Undecided as undecided:
            gap = undecided
        why = _decide(gap.need, gap.part)
        if why is None:
            what = {"nonzero": "is never 0", "positive": "is always positive", "nonnegative": "is never negative",
                    "no pole": "keeps tan/cot away from its poles", "known": "is defined everywhere"}[gap.need]
            return f"has a part {gap.node} where it cannot be shown that {gap.part} {what}"
        if why:
            return f"is not a finite real number {why}"
        proven |= {gap.node}
    return "is too complex to check"
