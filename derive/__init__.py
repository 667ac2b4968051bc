"""nnderive's SymPy side: specs, activation and loss registries, derivation, verification.

>>> from derive import Dense, Network, derive
>>> d = derive(Network("mlp_4_2_3", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse"))
>>> d.layers[1].elementwise.fprime_a
a*(1 - a)
"""
from .activations import ACTIVATIONS
from .backprop import Derivation, derive
from .errors import DerivationError, NnderiveError, SpecError, VerificationError
from .losses import LOSSES
from .spec import Dense, Network, load_spec

__all__ = ["ACTIVATIONS", "LOSSES", "Dense", "Derivation", "DerivationError", "Network", "NnderiveError",
           "SpecError", "VerificationError", "derive", "load_spec"]
