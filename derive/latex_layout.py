"""Line layout of long formulas and the Equation rows the document templates render."""
import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .latex_printer import NamePrinter, latex


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
    if isinstance(expr, sp.Mul):
        numerator, denominator = sp.fraction(expr)
        if isinstance(denominator, sp.Symbol) and isinstance(numerator, (sp.Add, sp.Mul)):
            # a fraction cannot break across lines: (sum) / n as 1/n (sum), the sum split
            parts = _parts(numerator, printer, width)
            if len(parts) > 1:
                parts[0] = r"\frac{1}{%s} \Bigl(%s" % (printer.doprint(denominator), parts[0])
                parts[-1] += r"\Bigr)"
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
