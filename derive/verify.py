"""Gradient checks: scalar-expansion proof, loading a module to check, and the module check (verify_checks)."""
from pathlib import Path

from .errors import SpecError
from .spec import Network

MAX_MODULE_BYTES = 20_000_000
REQUIRED = ("PARAM_SHAPES", "init_params", "forward", "backward", "loss", "loss_and_grad")


def read_module(path):
    """Import any Python file by path: only a regular file (never a FIFO, device or directory,
    which would block or fail mid-import), at most MAX_MODULE_BYTES of it.

    Raises:
        SpecError: one line naming the file, the place and the fix.
    """
    import os
    import stat
    import types

    path = Path(path)
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError(where, "", "no such file", "check the path") from None
    except IsADirectoryError:
        raise SpecError(where, "", "is a directory, not a module", "name a generated .py file") from None
    except OSError as e:
        raise SpecError(where, "", f"cannot be read: {e.strerror or e}", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SpecError(where, "", "is a directory, not a module", "name a generated .py file")
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(where, "", "is not a regular file (a FIFO, socket or device)", "name a generated .py file")
        if info.st_size > MAX_MODULE_BYTES:
            raise SpecError(where, "", f"is {info.st_size} bytes, more than {MAX_MODULE_BYTES}",
                            "name a generated .py file")
        with os.fdopen(fd, "rb") as f:
            fd = None
            source = f.read(MAX_MODULE_BYTES + 1)
    except OSError as e:
        raise SpecError(where, "", f"cannot be read: {e.strerror or e}", "check the path and its permissions") from None
    finally:
        if fd is not None:
            os.close(fd)
    name = f"_nnderive_checked_{path.stem}_{abs(hash(str(path.resolve())))}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        line = f"line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise SpecError(where, line, "not valid Python", "regenerate it with nnderive generate") from None
    try:
        exec(code, module.__dict__)     # the module the user named: importing it is the point
    except RecursionError:
        raise SpecError(where, "", "importing it recursed too deeply", "regenerate it with nnderive generate") from None
    except Exception as e:
        raise SpecError(where, "", f"importing it raised {type(e).__name__}: {e}",
                        "fix the module or regenerate it with nnderive generate") from None
    return module


def load_module(path):
    """Import a generated module from a file path (it is not an installed package).

    Only a regular file is read (see read_module), and it must define the module API of DESIGN.md.

    Raises:
        SpecError: one line naming the file, the place and the fix.
    """
    where = str(path)
    module = read_module(path)
    for attr in REQUIRED:
        if not hasattr(module, attr):
            raise SpecError(where, attr, "missing from the module", "regenerate it with nnderive generate")
    for attr in REQUIRED[1:]:
        if not callable(getattr(module, attr)):
            raise SpecError(where, attr, "is not a function", "regenerate it with nnderive generate")
    shapes = module.PARAM_SHAPES
    if not isinstance(shapes, dict) or not all(
            isinstance(k, str) and isinstance(v, (tuple, list)) and all(type(n) is int and n > 0 for n in v)
            for k, v in shapes.items()):
        raise SpecError(where, "PARAM_SHAPES", f"is a {type(shapes).__name__}, not a dict of name -> shape tuple"
                        if not isinstance(shapes, dict) else "is not a dict of name -> tuple of positive ints",
                        "regenerate it with nnderive generate")
    return module


from .expansion import (DIGITS, _activate, _targets, evaluate, expanded_loss, param_symbols,  # noqa: F401
                        sample_batch)


def prove(net: Network, points: int = 2, seed: int = 0) -> list[tuple[str, float]]:
    """The printed Program equals sp.diff of the expanded loss: see derive.proof.prove."""
    from .proof import prove as prove_program
    return prove_program(net, points, seed)


# --- the numeric checks -----------------------------------------------------------------------------

def sample_params(net: Network, rng) -> dict:
    """Random weights; biases lean positive so that rectifier units are alive at the check point."""
    return {name: rng.normal(loc=0.0 if name[0] == "W" else 0.4, scale=0.8, size=shape)
            for name, shape in net.param_shapes().items()}


from .verify_checks import Report, Row, check_module  # noqa: E402  (the module check; uses the helpers above)
