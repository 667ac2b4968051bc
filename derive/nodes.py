"""SymPy nodes of the Program: array operations and numerically stable primitives.

Every Symbol in a Program expression stands for an array of the generated code (batch-first);
arithmetic on Symbols is elementwise with NumPy broadcasting. The nodes here are what is not
elementwise (a matrix product, a transpose, sums over the batch or over the units, a log-softmax)
and the stable primitives the printer spells with care (a sigmoid that cannot overflow, expm1 ...).
Each printer has one `_print_<Name>` method per node (SymPy's codegen/numpy_nodes.py pattern).
"""
import sympy as sp


class ArrayOp(sp.Function):
    """A node that acts on whole arrays rather than element by element."""

    is_real = True


class Dot(ArrayOp):
    """The matrix product a @ b."""

    nargs = 2


class T(ArrayOp):
    """The transpose of a matrix."""

    nargs = 1


class BatchSum(ArrayOp):
    """a summed over the batch (axis 0): (batch, k) -> (k,)."""

    nargs = 1


class UnitSum(ArrayOp):
    """a summed over the units of each example (axis 1, kept): (batch, k) -> (batch, 1)."""

    nargs = 1


class LogSoftmax(ArrayOp):
    """log(softmax(z)) over the units of each example, computed without overflow."""

    nargs = 1


class Total(ArrayOp):
    """The sum of every element: an array -> a number."""

    nargs = 1


class Like(ArrayOp):
    """`value` (a number or an array of another dtype) as an array shaped and typed like `ref`."""

    nargs = 2


# --- stable primitives (elementwise, with their derivatives for the curvature passes) ---------------

class Sigmoid(sp.Function):
    """1 / (1 + exp(-u)), printed as a helper that cannot overflow."""

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0]) * (1 - Sigmoid(self.args[0]))


class Softplus(sp.Function):
    """log(1 + exp(u)), printed as np.logaddexp(0, u)."""

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])


class Expm1(sp.Function):
    """exp(u) - 1, printed as np.expm1(u)."""

    def fdiff(self, argindex=1):
        return sp.exp(self.args[0])


class Log1p(sp.Function):
    """log(1 + u), printed as np.log1p(u)."""

    def fdiff(self, argindex=1):
        return 1 / (1 + self.args[0])


class Erfc(sp.Function):
    """1 - erf(u), printed as a helper accurate in both tails (SymPy's erfc(-u) evaluates to 2 - erfc(u))."""

    def fdiff(self, argindex=1):
        return -2 * sp.exp(-self.args[0] ** 2) / sp.sqrt(sp.pi)


STABLE = (Sigmoid, Softplus, Expm1, Log1p, Erfc)


def unstable(expr: sp.Expr) -> sp.Expr:
    """The stable primitives written back in plain SymPy functions (for sp.diff, simplify, display)."""
    return expr.replace(lambda e: isinstance(e, STABLE), lambda e: {
        Sigmoid: lambda u: 1 / (1 + sp.exp(-u)), Softplus: lambda u: sp.log(1 + sp.exp(u)),
        Expm1: lambda u: sp.exp(u) - 1, Log1p: lambda u: sp.log(1 + u), Erfc: lambda u: 1 - sp.erf(u),
    }[type(e)](e.args[0]))


def carries_array(expr: sp.Expr) -> bool:
    """Whether NumPy evaluates expr (as the printer spells it) to an array of the operands' dtype.

    A Symbol is always an array of the working dtype; a number or a comparison is not (a Python
    scalar, a boolean array). A Heaviside printed on its own is np.heaviside, in its argument's
    dtype; a mask multiplying an array is a comparison (see the printer's _print_Mul).
    """
    if isinstance(expr, sp.Symbol):
        return True
    if expr.is_number or isinstance(expr, (sp.core.relational.Relational, sp.logic.boolalg.Boolean)):
        return False
    if isinstance(expr, sp.Piecewise):
        return any(carries_array(v) for v, _ in expr.args)
    if isinstance(expr, Like):
        return True
    return any(carries_array(a) for a in expr.args)


def is_mask(expr: sp.Expr) -> bool:
    """Whether expr is a 0/1 factor printed as a comparison (relu' = (z > 0))."""
    return isinstance(expr, (sp.Heaviside, sp.core.relational.Relational))
