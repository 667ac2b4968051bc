"""The errors nnderive raises for bad input, failed derivations and failed checks."""


class NnderiveError(Exception):
    """Base class: a user-facing error whose message is one line."""


class SpecError(NnderiveError, ValueError):
    """A spec (file or Python API) is malformed; names the file, the place and the fix.

    >>> str(SpecError("net.toml", "layers[1].activation", "unknown activation 'tanhh'", "did you mean 'tanh'?"))
    "net.toml: layers[1].activation: unknown activation 'tanhh'; did you mean 'tanh'?"
    """

    def __init__(self, source: str, where: str, what: str, fix: str = ""):
        self.source, self.where, self.what, self.fix = source, where, what, fix
        parts = [p for p in (source, where) if p]
        text = ": ".join(parts + [what]) if parts else what
        super().__init__(f"{text}; {fix}" if fix else text)


class DerivationError(NnderiveError):
    """SymPy could not derive what a network needs (e.g. a formula with no usable derivative)."""


class VerificationError(NnderiveError):
    """A gradient check disagreed."""
