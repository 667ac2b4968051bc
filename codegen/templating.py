"""The Jinja2 environments: Python templates in Jinja2's own delimiters, documents in LaTeX-safe ones.

Templates lay out only (`for` and `if`); every expression arrives printed by codegen.printer or
derive.latex. StrictUndefined, so a missing value is an error, never an empty string.
"""
from pathlib import Path

import jinja2

_COMMON = dict(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), undefined=jinja2.StrictUndefined,
               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)

PYTHON = jinja2.Environment(**_COMMON)
# LaTeX is full of { } and %: the document templates use \BLOCK{...} and \VAR{...} instead.
DOCUMENT = jinja2.Environment(block_start_string=r"\BLOCK{", block_end_string="}",
                              variable_start_string=r"\VAR{", variable_end_string="}",
                              comment_start_string=r"\#{", comment_end_string="}", **_COMMON)
