"""The errors nnderive raises for bad input, failed derivations and failed checks."""

MAX_MESSAGE = 400  # characters; a message quotes user input, which can be arbitrarily long


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one printable line: control characters escaped (a key or file name may hold a
    newline), and cut to `limit` characters.

    >>> one_line("bad key 'a\\nb'")
    "bad key 'a\\\\nb'"
    """
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."


class NnderiveError(Exception):
    """Base class: a user-facing error whose message is one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


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


class OutputError(SpecError):
    """A generated file cannot be written where it was asked to go (exists unmanaged, no permission ...)."""


class DerivationError(NnderiveError):
    """SymPy could not derive what a network needs (e.g. a formula with no usable derivative)."""


class VerificationError(NnderiveError):
    """A gradient check disagreed."""


class SpecWarning(UserWarning):
    """A spec that works but is probably not what was meant (mse on a softmax output, a step layer ...)."""
