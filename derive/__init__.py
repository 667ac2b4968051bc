"""nnderive's SymPy side: specs, activation and loss registries, derivation, verification.

>>> from derive import Dense, Network, derive
>>> d = derive(Network("mlp_4_2_3", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse"))
>>> d.layers[1].elementwise.fprime_a
a*(1 - a)
"""
import importlib.metadata as _metadata

from .activations import ACTIVATIONS
from .backprop import Derivation, derive
from .errors import DerivationError, NnderiveError, SpecError, VerificationError
from .losses import LOSSES
from .spec import Dense, Network, load_spec

try:
    __version__ = _metadata.version("nnderive")
except _metadata.PackageNotFoundError:      # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["ACTIVATIONS", "LOSSES", "Dense", "Derivation", "DerivationError", "Network", "NnderiveError",
           "SpecError", "VerificationError", "__version__", "derive", "load_spec"]
