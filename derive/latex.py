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
g1*Heaviside(a1, 0)
>>> print(latex(p.delta(1)))
g^{(1)} \left[a^{(1)} > 0\right]
>>> print(latex(p.dW(2)))
{\delta^{(2)}}^{\top} a^{(1)}
"""
from .backprop import softmax_steps
from .latex_document import typeset
from .latex_expanded import check_partials, expanded_partials, expanded_section
from .latex_layout import WIDTH, Equation, split_lines, visible_width
from .latex_printer import N, NamePrinter, at_layer, latex, symbol, tex_name
from .pieces import ActivationPiece, Pieces, activation, function_tex, numeric, pieces

__all__ = ["WIDTH", "ActivationPiece", "Equation", "N", "NamePrinter", "Pieces", "activation", "at_layer",
           "check_partials", "expanded_partials", "expanded_section", "function_tex", "latex", "numeric",
           "pieces", "softmax_steps", "split_lines", "symbol", "tex_name", "typeset", "visible_width"]
