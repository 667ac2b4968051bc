"""The derivation as a LaTeX or Markdown document: Jinja2 lays out what derive.latex typesets."""
import re
from pathlib import Path

from derive.latex import typeset
from derive.program import Program, program
from derive.spec import Network, content_hash, load_spec

from .output import MD_HEADER, TEX_HEADER, write_outputs
from .render import quoted, source_label
from .templating import DOCUMENT


# Drawing: at most this many units of a layer are drawn; the rest are elided (first 3, dots, last 2).
MAX_DRAWN = 6
_HEAD, _TAIL = 3, 2


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
                "<": r"\ensuremath{<}", ">": r"\ensuremath{>}", "|": r"\ensuremath{|}"}


def escape_tex(text) -> str:
    r"""Text (never math) safe for pdflatex: specials escaped, control and non-ASCII characters spelled out.

    >>> print(escape_tex("a_b 100% & #{$}"))
    a\_b 100\% \& \#\{\$\}
    """
    out = []
    for ch in str(text):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in "\n\r\t":
            out.append(" ")
        elif not (" " <= ch <= "~"):
            out.append(f"[U+{ord(ch):04X}]")
        else:
            out.append(ch)
    return "".join(out)


def escape_md(text) -> str:
    r"""Text safe for GitHub Markdown: the characters that start markup backslash-escaped, < > & as entities.

    >>> print(escape_md("a_b *c* $d$ <e>"))
    a\_b \*c\* \$d\$ &lt;e&gt;
    """
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    entities = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
    return "".join(entities.get(ch) or ("\\" + ch if ch in "\\`*_[]#|$~!" else ch) for ch in text)


def code_md(text) -> str:
    """A Markdown code span holding `text` literally (fenced with more backticks than it contains)."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _header_source(source: str, markdown: bool) -> str:
    """The source label for the one-line header, quoted as printable ASCII (no line break, no byte a
    reader could decode differently); in Markdown also nothing that opens or ends an HTML comment."""
    source = quoted(source)
    return re.sub(r"-{2,}", "-", source).replace(">", "?").replace("<", "?") if markdown else source


DOCUMENT.filters.update(tex=escape_tex, md=escape_md, code=code_md)


# --- the drawing -------------------------------------------------------------------------------------

def _shown(units: int) -> list:
    """Which units of a layer are drawn (0-based), with None where the rest are elided."""
    if units <= MAX_DRAWN:
        return list(range(units))
    return list(range(_HEAD)) + [None] + list(range(units - _TAIL, units))


def drawing(net: Network) -> dict:
    """Coordinates (pt) of the network drawing: nodes per layer, connections, bias units, labels."""
    sizes = net.sizes
    dx = min(110.0, 380.0 / max(1, len(sizes) - 1))
    dy, r = 22.0, 7.0
    slots = max(len(_shown(n)) for n in sizes)
    height = slots * dy
    columns, edges, bias_edges = [], [], []
    for l, units in enumerate(sizes):
        x = 20.0 + l * dx
        shown = _shown(units)
        top = height - (slots - len(shown)) * dy / 2 - dy / 2
        nodes = [dict(x=x, y=round(top - i * dy, 1), unit=u) for i, u in enumerate(shown)]
        bias = None
        if l < len(sizes) - 1:
            by = round(height + dy * 0.6, 1)
            bias = dict(x=x, y=by, arcs=[tuple(round(v + (x if i % 2 == 0 else by), 1) for i, v in enumerate(arc))
                                         for arc in _dotted_circle(r)])
        columns.append(dict(layer=l, units=units, nodes=nodes, bias=bias, x=x,
                            activation=None if l == 0 else net.layers[l - 1].activation))
    for left, right in zip(columns, columns[1:]):
        for a in left["nodes"]:
            for b in right["nodes"]:
                if a["unit"] is not None and b["unit"] is not None:
                    edges.append(_segment(a, b, r))
        for b in right["nodes"]:
            if b["unit"] is not None:
                bias_edges.append(_segment(left["bias"], b, r))
    return dict(columns=columns, edges=edges, bias_edges=bias_edges, width=round(40.0 + (len(sizes) - 1) * dx, 1),
                height=round(height + dy * 1.3, 1), r=r, diameter=round(2 * r), label_y=-12.0)


def _segment(a: dict, b: dict, r: float) -> tuple:
    """A straight \\qbezier from circle a to circle b (control point at the middle), trimmed by r."""
    import math
    ux, uy = b["x"] - a["x"], b["y"] - a["y"]
    length = math.hypot(ux, uy)
    ux, uy = ux / length, uy / length
    x1, y1, x2, y2 = a["x"] + r * ux, a["y"] + r * uy, b["x"] - r * ux, b["y"] - r * uy
    return tuple(round(v, 1) for v in (x1, y1, (x1 + x2) / 2, (y1 + y2) / 2, x2, y2))


def _dotted_circle(r: float) -> list:
    """Four quarter arcs (quadratic Beziers relative to the centre, control point at the corner)."""
    return [(r, 0.0, r, r, 0.0, r), (0.0, r, -r, r, -r, 0.0), (-r, 0.0, -r, -r, 0.0, -r), (0.0, -r, r, -r, r, 0.0)]


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return re.sub(r"[^\w .,:()+-]", "_", text)


def mermaid(net: Network) -> list[str]:
    """The network drawing as Mermaid flowchart lines (GitHub renders ```mermaid blocks)."""
    lines = ["flowchart LR"]
    names = []
    for l, units in enumerate(net.sizes):
        title = "input x" if l == 0 else f"layer {l}: {_label(net.layers[l - 1].activation)}"
        lines.append(f'  subgraph L{l}["{title} ({units})"]')
        ids = []
        for u in _shown(units):
            if u is None:
                node = f"L{l}_more"
                lines.append(f'    {node}["... {units - _HEAD - _TAIL} more"]')
            else:
                node = f"L{l}_{u}"
                label = f"x{u + 1}" if l == 0 else f"a{l}_{u + 1}"
                lines.append(f'    {node}(("{label}"))')
                ids.append(node)
        if l < net.depth:
            lines.append(f'    L{l}_bias(("1"))')
        lines.append("  end")
        names.append(ids)
    for l in range(net.depth):
        for a in names[l]:
            for b in names[l + 1]:
                lines.append(f"  {a} --- {b}")
        for b in names[l + 1]:
            lines.append(f"  L{l}_bias -.- {b}")
    return lines


# --- the documents -------------------------------------------------------------------------------------

def context(net: Network | Program, expanded: bool = False, source: str | None = None) -> dict:
    """What both templates lay out: derive.latex.typeset of the Program, the drawing, the headers."""
    prog = program(net)
    net = prog.network
    source = source_label(net) if source is None else source
    doc = typeset(prog, expanded=expanded)
    return dict(doc, source=source, drawing=drawing(net), mermaid=mermaid(net),
                tex_header=f"{TEX_HEADER} from {_header_source(source, False)} (sha256 {content_hash(net)}). "
                           "DO NOT EDIT.",
                md_header=f"{MD_HEADER} from {_header_source(source, True)} (sha256 {content_hash(net)}). "
                          "DO NOT EDIT. -->")


def github_math(math: str) -> str:
    r"""Math as GitHub renders it reliably: every \\ ends a source line (GitHub's math blocks lose a
    \\ that does not), and no \: \, \{ \} (Markdown may un-escape backslash + punctuation: \{ and \}
    become \lbrace, \rbrace)."""
    math = re.sub(r"\\\\(?!\n)[ ]*", "\\\\\\\\\n", math)
    math = re.sub(r"(?<!\\)\\([{}])([A-Za-z]?)",
                  lambda m: {"{": r"\lbrace", "}": r"\rbrace"}[m.group(1)] + (" " + m.group(2) if m.group(2) else ""), math)
    return math.replace("\\:", "\\ ").replace("\\,", "\\ ").replace("\\;", "\\ ")


def _github(md: str) -> str:
    """Apply github_math to every $$ block and every inline $...$ outside code."""
    out, block, fence = [], None, False
    for line in md.split("\n"):
        if line.startswith("```"):
            fence = not fence
        if fence or line.startswith("```"):
            out.append(line)
        elif line == "$$":
            if block is None:
                block = []
            else:
                out += ["$$", github_math("\n".join(block)), "$$"]
                block = None
        elif block is not None:
            block.append(line)
        else:
            parts = re.split(r"(`+[^`]*`+)", line)
            out.append("".join(p if p.startswith("`") else
                               re.sub(r"(?<![\\$])\$([^$]+)\$", lambda m: "$" + github_math(m.group(1)) + "$", p)
                               for p in parts))
    return "\n".join(out)


def _render(ctx: dict, markdown: bool) -> str:
    template = "document.md.j2" if markdown else "document.tex.j2"
    text = DOCUMENT.get_template(template).render(ctx, header=ctx["md_header" if markdown else "tex_header"])
    return _github(text) if markdown else text


def render_document(net: Network, markdown: bool = False, expanded: bool = False, source: str | None = None) -> str:
    r"""The derivation of `net` as a LaTeX document (or GitHub Markdown); deterministic.

    Args:
        net: the network (derive.Network, or derive.load_spec(path)).
        markdown: GitHub Markdown with $...$ and $$...$$ instead of LaTeX.
        expanded: also write out every individual partial derivative (small networks only).
        source: the name the header gives as the source (default: the spec file's name).

    Raises:
        NnderiveError: `expanded` on a network too large to write out.

    >>> from derive import Dense, Network
    >>> tex = render_document(Network("logreg", 3, [Dense(1, "sigmoid")], loss="bce"))
    >>> tex.splitlines()[0].startswith("% Code generated by nnderive from '<python>' (sha256 ")
    True
    >>> r"\delta^{(1)}" in tex and r"\mathrm{d}W^{(1)}" in tex
    True
    """
    return _render(context(net, expanded, source), markdown)


def document_outputs(net: Network | Program) -> dict[str, str]:
    """The documents `nnderive build` writes for a spec: <name>.tex and <name>.md."""
    ctx = context(net)
    name = program(net).network.name
    return {f"{name}.tex": _render(ctx, False), f"{name}.md": _render(ctx, True)}


# --- the `latex` command ---------------------------------------------------------------------------------

def cmd_latex(args) -> int:
    net = load_spec(args.spec)
    markdown = args.markdown or (args.output is not None and args.output.lower().endswith(".md"))
    text = render_document(net, markdown=markdown, expanded=args.expanded)
    if args.output is None:
        print(text, end="")
        return 0
    path = Path(args.output)
    write_outputs({path.name: text}, path.parent, force=args.force)
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """Add `nnderive latex SPEC [-o FILE] [--markdown] [--expanded]` to the CLI's subcommands."""
    p = sub.add_parser("latex", help="the derivation as a LaTeX (or Markdown) document",
                       description="Write the whole derivation of SPEC as a LaTeX document (pdflatex, "
                                   "texlive-latex-base only) or as GitHub Markdown.")
    p.add_argument("spec", metavar="SPEC", help="a network spec, a TOML file (see examples/*.toml)")
    p.add_argument("-o", "--output", metavar="FILE", help="write FILE (default: standard output); "
                                                          "a .md name implies --markdown")
    p.add_argument("--markdown", action="store_true", help="Markdown with $...$ and $$...$$ (renders on GitHub)")
    p.add_argument("--expanded", action="store_true",
                   help="also write out every partial derivative dL/dw (small networks only)")
    p.add_argument("--force", action="store_true", help="overwrite FILE even if nnderive did not write it")
    p.set_defaults(run=cmd_latex)
