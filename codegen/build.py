"""What a build writes for a spec, rendered in memory first, then written atomically."""
import os
import stat
from pathlib import Path

from derive.errors import OutputError, SpecError
from derive.files import is_temporary
from derive.program import Program, program
from derive.spec import Network, load_spec

from .document import document_outputs
from .optimizers import render_optimizers
from .output import _regular_problem, is_generated, write_outputs  # noqa: F401  (build's writer)
from .render import module_file, render_module, source_label


def module_outputs(net: Network | Program) -> dict[str, str]:
    """File name -> text of the generated NumPy module."""
    prog = program(net)
    return {f"{prog.network.name}.py": render_module(prog, source_label(prog.network))}


def array_api_outputs(net: Network | Program) -> dict[str, str]:
    """The NumPy module and, beside it, the module for any array API namespace (`<name>_xp.py`),
    from one derivation."""
    prog = program(net)
    return {**module_outputs(prog),
            module_file(prog.network.name, "array_api"): render_module(prog, source_label(prog.network), "array_api")}


def build_outputs(net: Network | Program) -> dict[str, str]:
    """Every file `nnderive build` writes for one spec, from one derivation."""
    prog = program(net)
    return {**module_outputs(prog), **document_outputs(prog)}


def shared_outputs() -> dict[str, str]:
    """Files that belong to generated/ as a whole, not to one spec."""
    return {"optimizers.py": render_optimizers()}


def example_specs(examples: Path) -> list[Path]:
    return sorted(Path(examples).glob("*.toml"))


def project_outputs(examples: Path, progress=None) -> dict[str, str]:
    """Everything generated/ should hold for the specs in `examples`.

    progress: called as progress(text, done, total) before each spec is derived.
    """
    outputs = shared_outputs()
    names = {}
    paths = example_specs(examples)
    for i, path in enumerate(paths):
        if progress is not None:
            progress(f"deriving {path.name}", i, len(paths))
        net = load_spec(path)
        if net.name in names:
            raise SpecError(str(path), "name", f"'{net.name}' is also the name of {names[net.name]}",
                            "give every example its own name")
        names[net.name] = path
        outputs.update(build_outputs(net))
    return outputs


def collect_outputs(nets, render, progress=None) -> dict[str, str]:
    """{file name: text} of render(net) for every net, refusing two specs that would write one file.

    progress: called as progress(text, done, total) before each net is rendered (derived).

    Raises:
        OutputError: before anything is rendered or written, naming both specs.
    """
    nets = list({net.source: net for net in reversed(list(nets))}.values())[::-1]   # a file named twice: once
    owners = {}
    for net in nets:
        for name in _names_of(net, render):
            if name in owners:
                raise OutputError(net.source, "name", f"'{net.name}' would write {name}, as "
                                  f"{owners[name].source} does too", "give every spec its own name")
            owners[name] = net
    outputs = {}
    for i, net in enumerate(nets):
        if progress is not None:
            progress(f"deriving {net.name}", i, len(nets))
        outputs.update(render(net))
    return outputs


def _names_of(net: Network, render) -> list[str]:
    if render is module_outputs:
        return [f"{net.name}.py"]
    if render is array_api_outputs:
        return [f"{net.name}.py", module_file(net.name, "array_api")]
    return [f"{net.name}.py", f"{net.name}.tex", f"{net.name}.md"]


def stale_files(examples: Path, generated: Path, progress=None) -> list[str]:
    """Files in `generated` that differ from, are missing from, or are not produced by `examples`
    (progress: see project_outputs)."""
    expected = project_outputs(examples, progress)
    generated = Path(generated)
    stale = []
    for name, text in sorted(expected.items()):
        path = generated / name
        if not path.exists():
            stale.append(f"{path} (missing)")
        elif _regular_problem(path):      # never read a FIFO or a device: it could block forever
            stale.append(f"{path} ({_regular_problem(path)})")
        elif _differs(path, text.encode("utf-8")):
            stale.append(f"{path} (differs)")
    if generated.is_dir():
        for path in sorted(generated.iterdir()):
            if path.is_file() and path.name not in expected and not is_temporary(path) and is_generated(path):
                stale.append(f"{path} (no spec in {examples} produces it)")
    return stale


def _differs(path: Path, expected: bytes) -> bool:
    """Whether a regular file's bytes differ from expected (its size is compared first: no big reads)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb") as f:
            info = os.fstat(f.fileno())
            # Git may check files out with CRLF line ends: compared as text with universal newlines.
            if not stat.S_ISREG(info.st_mode) or not len(expected) <= info.st_size <= len(expected) + expected.count(b"\n"):
                return True
            data = f.read(info.st_size + 1)
            return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") != expected
    except OSError:
        return True
