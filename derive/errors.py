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

    One SpecError may carry several independent problems (`SpecError.of`): `errors` holds each of
    them (one line each, as the CLI prints them), its own fields are the first one's, and its message
    stays one line: the first problem and how many more there are.

    >>> str(SpecError("net.toml", "layers[1].activation", "unknown activation 'tanhh'", "did you mean 'tanh'?"))
    "net.toml: layers[1].activation: unknown activation 'tanhh'; did you mean 'tanh'?"
    """

    def __init__(self, source: str, where: str, what: str, fix: str = ""):
        self.source, self.where, self.what, self.fix = source, where, what, fix
        self.errors = (self,)
        parts = [p for p in (source, where) if p]
        text = ": ".join(parts + [what]) if parts else what
        super().__init__(f"{text}; {fix}" if fix else text)

    @classmethod
    def of(cls, errors) -> "SpecError":
        """One SpecError for the problems of `errors` (SpecErrors, each possibly carrying several).

        >>> e = SpecError.of([SpecError("a.toml", "inputs", "bad"), SpecError("a.toml", "loss", "unknown")])
        >>> e.where, [str(one) for one in e.errors]
        ('inputs', ['a.toml: inputs: bad', 'a.toml: loss: unknown'])
        >>> str(e)
        'a.toml: inputs: bad [and 1 more problem: see .errors]'
        """
        errors = [one for e in errors for one in e.errors]
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.source, first.where, first.what, first.fix)
        combined.errors = tuple(errors)
        return combined

    def __str__(self) -> str:
        more = len(self.errors) - 1
        if not more:
            return super().__str__()
        note = f" [and {more} more problem{'s' if more > 1 else ''}: see .errors]"
        return one_line(self.args[0], MAX_MESSAGE - len(note)) + note


class OutputError(SpecError):
    """A generated file cannot be written where it was asked to go (exists unmanaged, no permission ...)."""


class DerivationError(NnderiveError):
    """SymPy could not derive what a network needs (e.g. a formula with no usable derivative)."""


class VerificationError(NnderiveError):
    """A gradient check disagreed."""


class SpecWarning(UserWarning):
    """A spec that works but is probably not what was meant (mse on a softmax output, a step layer ...)."""
