"""Line layout of long formulas and the Equation rows the document templates render."""
import re
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .latex_printer import NamePrinter, latex


# --- layout of long formulas ----------------------------------------------------------------------------

WIDTH = 66   # the glyphs of math (visible_width) a right-hand side may take on one line of the document
LINE = 80    # ... and a whole row (left side, right side and note)
PAGE = 40    # the lines of text an equation block kept on one page may take (a page holds about 48)

# A parenthesised group inside the chunks of a long formula is marked, and sized once the chunks are
# packed into lines (see _sized): _OPEN + the group's whole LaTeX + _BODY opens it, _CLOSE closes it.
_OPEN, _BODY, _CLOSE = "\x02", "\x03", "\x04"
_MARKS = re.compile("%s[^%s]*%s|%s" % (_OPEN, _BODY, _BODY, _CLOSE))


def visible_width(tex: str) -> int:
    """About how wide a LaTeX math string is, in glyphs of about 6 pt (a letter; + and = with their spaces
    count 2, a subscript 0.7 of its content, a fraction its wider part)."""
    return round(_width(_MARKS.sub("", tex)))


_NAMED = {"log", "tanh", "exp", "max", "min", "sin", "cos", "sinh", "cosh", "erf", "sgn"}     # upright, letter by letter
_WIDE = {"quad": 2.0, "qquad": 4.0, "sum": 1.6, "prod": 1.6, "cdot": 1.8, "odot": 2.2, "times": 2.2, "ge": 2.2,
         "le": 2.2, "to": 2.2, "in": 2.0, "ldots": 2.2, "cdots": 2.2, "top": 1.2, "{": 0.9, "}": 0.9, "|": 0.9}
_NO_WIDTH = {"left", "right", "Bigl", "Bigr", "big", "Big", "bigl", "bigr", "textstyle", "displaystyle", "limits",
             ",", ";", ":", "!", " "}
_WORDS = {"operatorname", "mathrm", "text", "mathtt"}


def _argument(tex: str, i: int) -> tuple[str, int]:
    """The argument of a command at tex[i:] (a {group}, a command or one character) and where it ends."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if i < len(tex) and tex[i] == "{":
        depth = 0
        for j in range(i, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[j], 0)
            if depth == 0:
                return tex[i + 1:j], j + 1
        return tex[i + 1:], len(tex)
    if i < len(tex) and tex[i] == "\\":
        m = re.match(r"\\([a-zA-Z]+|.)", tex[i:])
        return m.group(0), i + m.end()
    return tex[i:i + 1], i + 1


def _width(tex: str) -> float:
    w, i = 0.0, 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = re.match(r"\\([a-zA-Z]+|.)", tex[i:])
            name, i = m.group(1), i + m.end()
            if name == "frac":
                top, i = _argument(tex, i)
                bottom, i = _argument(tex, i)
                w += max(_width(top), _width(bottom)) + 0.4
            elif name in ("vphantom", "phantom"):
                _, i = _argument(tex, i)
            elif name in _WORDS:
                words, i = _argument(tex, i)
                w += 0.9 * len(words) + (0.3 if name == "operatorname" else 0)
            elif name in ("mathbf", "mathbb", "sqrt"):
                inner, i = _argument(tex, i)
                w += _width(inner) + (1.5 if name == "sqrt" else 0)
            elif name == "mathcal":
                _, i = _argument(tex, i)
                w += 1.3
            elif name in _NAMED:
                w += 0.85 * len(name) + 0.3
            elif name in ("left", "right"):
                i += tex[i:i + 1] == "."           # \left. shows nothing
            elif name not in _NO_WIDTH:
                w += _WIDE.get(name, 1.1)
        elif c in "^_":
            script, i = _argument(tex, i + 1)
            w += 0.7 * _width(script)
        else:
            w += 0 if c in "{}& " else 2.2 if c in "+-=<>" else 0.75 if c in "()[]|," else 1.0
            i += 1
    return w


# --- delimiters sized to what they enclose ---------------------------------------------------------------

# What makes a formula taller than a line of text: a delimiter around it must grow (\left ... \right).
# (a \left. or \right. comes with a phantom: what it stands for is tall)
_TALL = re.compile(r"\\(frac|dfrac|sum|prod|int|sqrt|binom|begin|vphantom|substack|overset|underset)(?![a-zA-Z])"
                   r"|\\(left|right)\.")
_DELIMITER = re.compile(r"\\(left|right)(\\[a-zA-Z]+|\\[{}|]|[()\[\]|.])")


def fit_delimiters(tex: str) -> str:
    r"""tex with every \left ... \right pair around a flat formula (no fraction, sum, root ...) written as
    plain delimiters: \left(z^{(1)}\right) grows to the superscript, (z^{(1)}) is the size of the text.

    >>> print(fit_delimiters(r"\operatorname{ReLU}\left(z^{(1)}\right) \left(1 + \frac{1}{\left(a\right)}\right)"))
    \operatorname{ReLU}(z^{(1)}) \left(1 + \frac{1}{(a)}\right)
    """
    found = list(_DELIMITER.finditer(tex))
    pairs, stack = [], []
    for m in found:
        if m.group(1) == "left":
            stack.append(m)
        elif stack:
            pairs.append((stack.pop(), m))
    # a pair is flat when nothing tall stands between its delimiters (a pair inside that is not flat
    # holds something tall, so the pairs around it are not flat either)
    flat = [(left, right) for left, right in pairs
            if "." not in (left.group(2), right.group(2)) and not _TALL.search(tex[left.end():right.start()])]
    cuts = sorted([m for pair in flat for m in pair], key=lambda m: m.start())
    out, at = [], 0
    for m in cuts:
        out += [tex[at:m.start()], m.group(2)]
        at = m.end()
    return "".join(out) + tex[at:]


def _group(head: str, parts: list[str], whole: str) -> list[str]:
    """head (parts) as chunks: the parentheses are marked and sized when the lines are known (_sized)."""
    parts = list(parts)
    parts[0] = f"{head} {_OPEN}{whole}{_BODY}{parts[0]}".lstrip()
    parts[-1] += _CLOSE
    return parts


def _is_flat(tex: str) -> bool:
    return not _TALL.search(fit_delimiters(tex))


def _sized(lines: list[str]) -> list[str]:
    r"""The marked groups of packed lines as parentheses: plain ones around a flat formula; \left( \right)
    around a group on one line. A group across lines opens with \left( ... \right. and closes with
    \left. ... \right) (each line's pair must balance); each of its two parentheses holds a phantom of
    the group's part on the other line, so both have the height of the taller of the two."""
    groups, stack = [], []            # [the group's LaTeX, the line it opens on, the line it closes on]
    for i, line in enumerate(lines):
        for m in _MARKS.finditer(line):
            if m.group(0) == _CLOSE:
                groups[stack.pop()][2] = i
            else:
                stack.append(len(groups))
                groups.append([m.group(0)[1:-1], i, None])
    # each line as tokens: text, or (delimiter, group) for a delimiter of a group across lines
    tokens, count = [], 0
    for i, line in enumerate(lines):
        opened, closed, body, at = [], [], [], 0
        for m in _MARKS.finditer(line):
            body.append(line[at:m.start()])
            at = m.end()
            if m.group(0) == _CLOSE:
                g = stack.pop()
                whole, first, _ = groups[g]
                if _is_flat(whole):
                    body.append(")")
                elif first == i:
                    body.append(r"\right)")
                else:
                    body.append(("R", g))
                    closed.insert(0, ("L.", g))           # outermost first
            else:
                g = count
                count += 1
                stack.append(g)
                whole, _, last = groups[g]
                if _is_flat(whole):
                    body.append("(")
                elif last == i:
                    body.append(r"\left(")
                else:
                    body.append(("L", g))
                    opened.append(("R.", g))
        body.append(line[at:])
        tokens.append(closed + body + opened[::-1])            # innermost \right. first

    def text(items, phantoms=None) -> str:
        spelled = {"L": r"\left(", "R.": r" \right.", "L.": r"\left. {}", "R": r"\right)"}
        return "".join(t if isinstance(t, str) else (phantoms or {}).get(t, spelled[t[0]]) for t in items)

    def part(items, start, end):
        """The tokens between two delimiters of a group on one line."""
        i = next(k for k, t in enumerate(items) if t == start)
        return items[i + 1:next(k for k, t in enumerate(items) if t == end)]
    phantoms = {}
    for g, (_, first, last) in enumerate(groups):
        if first != last and ("L", g) in tokens[first]:
            opening = text(part(tokens[first], ("L", g), ("R.", g)))
            closing = text(part(tokens[last], ("L.", g), ("R", g)))
            phantoms[("L", g)] = r"\left(\vphantom{%s}" % closing
            phantoms[("L.", g)] = r"\left.\vphantom{%s} {}" % opening
    return [fit_delimiters(text(items, phantoms)) for items in tokens]


def _pack(parts: list[str], width: int) -> list[str]:
    lines, cur = [], ""
    for p in parts:
        if cur and visible_width(cur + p) > width:
            lines.append(cur)
            cur = p
        else:
            cur = f"{cur} {p}" if cur else p
    return _sized(lines + [cur] if cur else lines)


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
        head = r"\frac{1}{%s}" % printer.doprint(denominator)
        if denominator != 1 and isinstance(numerator, (sp.Add, sp.Mul)) and visible_width(head) < width // 3:
            # a fraction cannot break across lines: (sum) / d as 1/d (sum), the sum split
            parts = _parts(numerator, printer, width - visible_width(head) - 2)
            if len(parts) > 1 and isinstance(numerator, sp.Add):
                return _group(head, parts, printer.doprint(numerator))
            if len(parts) > 1:                  # a product: 1/d in front of its factors, the sign first
                sign, first = ("- ", parts[0][1:].lstrip()) if parts[0].startswith("-") else ("", parts[0])
                return [f"{sign}{head} {first}"] + parts[1:]
    if isinstance(expr, sp.Mul) and not any(f.is_Pow and f.exp.is_negative for f in expr.args):
        sums = [f for f in expr.args if isinstance(f, sp.Add)]
        if sums:
            big = max(sums, key=lambda f: len(printer.doprint(f)))
            rest = sp.Mul(*[f for f in expr.args if f is not big])
            head = "" if rest == 1 else ("-" if rest == -1 else printer.parenthesize(rest, PRECEDENCE["Mul"], strict=True))
            if visible_width(head) > width // 2:
                # the other factors take a line of their own (split if need be); the product goes on with a dot
                first = _parts(rest, printer, width) if not isinstance(rest, sp.Add) else [head]
                return first + _group(r"\cdot", _parts(big, printer, width - 4), printer.doprint(big))
            return _group(head, _parts(big, printer, width - visible_width(head) - 2), printer.doprint(big))
    return [tex]


def split_lines(expr: sp.Expr, width: int = WIDTH, printer: NamePrinter | None = None) -> list[str]:
    """LaTeX of expr broken into lines of about `width` glyphs at + and - (for align / aligned).

    Sums break between terms; a product breaks inside its longest sum, whose parentheses are plain
    around a flat sum and otherwise as tall as the taller of the lines they stand on (see _sized).
    """
    printer = printer or NamePrinter()
    return _pack(_parts(expr, printer, width), width)


@dataclass
class Equation:
    """Display math: rows of (left side, relation and right side, note); rendered by the templates
    as align* (LaTeX) or aligned inside $$ (Markdown). Every string is LaTeX math, its delimiters
    fitted to what they enclose (fit_delimiters).

    A block stays on one page: `breaks` holds the rows after which a page may break (between the
    equations of a stack, never inside one)."""

    rows: list
    breaks: frozenset = field(default_factory=frozenset)

    def __post_init__(self):
        self.rows = [tuple(fit_delimiters(t) for t in row) for row in self.rows]

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

    @staticmethod
    def stack(equations) -> "Equation":
        """The equations one under the other in one block; a page may break between two of them."""
        rows, breaks = [], set()
        for eq in equations:
            if rows and eq.rows:
                breaks.add(len(rows) - 1)
            breaks |= {len(rows) + i for i in eq.breaks}
            rows += eq.rows
        return Equation(rows, frozenset(breaks))

    def __add__(self, other: "Equation") -> "Equation":
        """Both as one equation (kept on one page)."""
        return Equation(self.rows + other.rows)

    def lines(self) -> list[tuple[str, str, str, str, str]]:
        r"""The rows as the LaTeX template writes them: (lhs, rhs, note, tag, end).

        A note stands in a column right of every row; where the block's widest row leaves it no room
        (LINE), the block's notes are tags instead (\tag*: amsmath moves a tag that does not fit under
        its row). `end` is \\ between rows, \\* where no page may break, nothing after the last.
        """
        width = (max((visible_width(lhs) for lhs, _, _ in self.rows), default=0)
                 + max((visible_width(rhs) for _, rhs, _ in self.rows), default=0)
                 + max((visible_width(note) for _, _, note in self.rows), default=0) + 4)
        tagged = width > LINE
        # a block taller than a page cannot stay on one: then a page may break after any row
        breaks = self.breaks if sum(map(_height, self.rows)) <= PAGE else range(len(self.rows))
        last = len(self.rows) - 1
        return [(lhs, rhs, "" if tagged else note, note if tagged else "",
                 "" if i == last else (r" \\" if i in breaks else r" \\*"))
                for i, (lhs, rhs, note) in enumerate(self.rows)]


def _height(row) -> float:
    """About how many lines of text a row of display math takes: one, and more per level of fractions."""
    return 1.2 + 1.4 * max(_depth(t) for t in row)


def _depth(tex: str) -> int:
    """How deeply fractions nest in tex (a phantom counts: it is as tall as what it holds)."""
    deepest, i = 0, 0
    while (i := tex.find("\\frac", i)) >= 0:
        top, j = _argument(tex, i + len("\\frac"))
        bottom, j = _argument(tex, j)
        deepest = max(deepest, 1 + max(_depth(top), _depth(bottom)))
        i = j
    return deepest


def space(*dims) -> str:
    r"""The set a value lives in: \mathbb{R}^{n \times 2} for an (n, 2) array, \mathbb{R}^{2} for a (2,) vector
    (a dimension a SymPy object, or a string of LaTeX: "n_l")."""
    return r"\mathbb{R}^{%s}" % r" \times ".join(d if isinstance(d, str) else latex(d) for d in dims)


def _partial(num: str, den: str) -> str:
    return r"\frac{\partial %s}{\partial %s}" % (num, den)


def _text(words: str) -> str:
    """A short note inside math (trusted prose: no special characters)."""
    return r"\text{%s}" % words
