"""Numerically stable forms: the rewrites a formula gets before it is lowered into the Program."""
import sympy as sp

from .nodes import Erfc, Expm1, Log1p, Sigmoid, Softplus


def _is_one_plus_exp(e) -> bool:
    return e.is_Add and len(e.args) == 2 and sp.S.One in e.args and any(isinstance(t, sp.exp) for t in e.args)


def _exp_arg(one_plus_exp) -> sp.Expr:
    return next(t for t in one_plus_exp.args if isinstance(t, sp.exp)).args[0]


def _mul_rewrite(m: sp.Mul) -> sp.Mul:
    """exp(u) / (1 + exp(u))**k = sigmoid(u) / (1 + exp(u))**(k-1), and sinh(u) / cosh(u) = tanh(u):
    no inf/inf for large u."""
    factors = list(m.args)
    for i, f in enumerate(factors):
        if f.is_Pow and f.exp == -1 and isinstance(f.base, sp.cosh):
            u = f.base.args[0]
            for j, e in enumerate(factors):
                if isinstance(e, sp.sinh) and sp.expand(e.args[0] - u) == 0:
                    rest = [x for n, x in enumerate(factors) if n not in (i, j)]
                    return sp.Mul(*rest, sp.tanh(u))
    for i, f in enumerate(factors):
        if f.is_Pow and f.exp.is_Integer and f.exp < 0 and _is_one_plus_exp(f.base):
            u = _exp_arg(f.base)
            for j, e in enumerate(factors):
                if isinstance(e, sp.exp) and sp.expand(e.args[0] - u) == 0:
                    rest = [x for n, x in enumerate(factors) if n not in (i, j)]
                    return sp.Mul(*rest, Sigmoid(u), sp.Pow(f.base, f.exp + 1))
    return m


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite expr into numerically stable primitives before printing."""
    expr = sp.sympify(expr)
    expr = expr.replace(lambda e: e.is_Mul, _mul_rewrite)
    # log(cosh(u)) = u - log(2) + log(1 + exp(-2u)): cosh overflows beyond |u| = 710, this never does
    expr = expr.replace(lambda e: isinstance(e, sp.log) and isinstance(e.args[0], sp.cosh),
                        lambda e: e.args[0].args[0] - sp.log(2) + Softplus(-2 * e.args[0].args[0]))
    expr = expr.replace(lambda e: isinstance(e, sp.log) and _is_one_plus_exp(e.args[0]),
                        lambda e: Softplus(_exp_arg(e.args[0])))
    expr = expr.replace(lambda e: e.is_Pow and e.exp.is_Integer and e.exp < 0 and _is_one_plus_exp(e.base),
                        lambda e: Sigmoid(-_exp_arg(e.base)) ** (-e.exp))
    expr = expr.replace(lambda e: isinstance(e, sp.log) and e.args[0].is_Add and sp.S.One in e.args[0].args,
                        lambda e: Log1p(e.args[0] - 1))
    expr = expr.replace(lambda e: e.is_Add, _complement)
    expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), _clamp_branches)
    return expr


def _complement(add: sp.Add) -> sp.Expr:
    """k*exp(u) - k -> k*expm1(u) (accurate near u = 0); k + k*erf(u) -> k*erfc(-u) and
    k - k*erf(u) -> k*erfc(u) (accurate where erf(u) is near -1 or 1: GELU's tails)."""
    terms = list(add.args)
    constants = [i for i, t in enumerate(terms) if t.is_number]
    if len(constants) != 1:
        return add
    c = terms[constants[0]]
    for i, term in enumerate(terms):
        k, f = term.as_coeff_Mul()
        if isinstance(f, sp.exp) and c == -k:
            new = k * Expm1(f.args[0])
        elif isinstance(f, sp.erf) and c == k:
            new = k * Erfc(-f.args[0])
        elif isinstance(f, sp.erf) and c == -k:
            new = -k * Erfc(f.args[0])
        else:
            continue
        rest = [t for j, t in enumerate(terms) if j not in (i, constants[0])]
        return sp.Add(new, *rest, evaluate=False)
    return add


# Functions that overflow for large arguments: np.where computes every branch everywhere.
_OVERFLOWING = (sp.exp, Expm1, sp.cosh, sp.sinh)


def _bound(cond) -> tuple | None:
    """(symbol, is_upper, c) for a condition like `x > c` or `c >= x`, else None."""
    if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op not in (">", ">=", "<", "<="):
        return None
    if cond.lhs.is_Symbol and cond.rhs.is_number:
        return cond.lhs, cond.rel_op in ("<", "<="), cond.rhs
    if cond.rhs.is_Symbol and cond.lhs.is_number:
        return cond.rhs, cond.rel_op in (">", ">="), cond.lhs
    return None


def _clamp(expr: sp.Expr, bounds: list) -> sp.Expr:
    """expr with each bounded symbol clamped into [lower, upper] (unchanged inside that range)."""
    subs = {}
    for sym in {b[0] for b in bounds}:
        clamped = sym
        lows = [c for s, upper, c in bounds if s == sym and not upper]
        highs = [c for s, upper, c in bounds if s == sym and upper]
        if lows:
            clamped = sp.Max(clamped, *lows)
        if highs:
            clamped = sp.Min(clamped, *highs)
        subs[sym] = clamped
    return expr.xreplace(subs)


def _clamp_branches(pw: sp.Piecewise) -> sp.Piecewise:
    """Let each branch's exp see only arguments from the branch's own region.

    np.where evaluates every branch everywhere: ELU's exp(x) - 1 would overflow (and warn)
    at x = 1e4 although that branch is only taken for x <= 0. exp(min(x, 0)) - 1 is the same
    where it is taken and finite everywhere; np.minimum keeps NaN.
    """
    branches, known = [], []        # known: bounds from the earlier conditions being false
    for value, cond in pw.args:
        own = _bound(cond)
        region = known + ([own] if own else [])
        if region and value.has(*_OVERFLOWING):
            value = value.replace(lambda e: isinstance(e, _OVERFLOWING),
                                  lambda e: e.func(*[_clamp(a, region) for a in e.args]))
        branches.append((value, cond))
        if own:
            known.append((own[0], not own[1], own[2]))
    return sp.Piecewise(*branches, evaluate=False)


def as_value(expr: sp.Expr) -> sp.Expr:
    """expr where it is an activation's value rather than a mask multiplying a gradient.

    A step printed as the comparison (z > 0) is False for NaN: the step of a NaN input would be a
    confident 0. sign(max(z, 0)) is the same step, keeps NaN and stays in z's dtype. (Masks keep
    the comparison: the gradient they multiply is NaN already where z is.)

    >>> as_value(sp.Heaviside(sp.Symbol("z1"), 0))
    sign(Max(0, z1))
    """
    if isinstance(expr, sp.Heaviside) and len(expr.args) == 2 and expr.args[1] == 0:
        return sp.sign(sp.Max(expr.args[0], 0))
    return expr
