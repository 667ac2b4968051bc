"""What a build writes for a spec, rendered in memory first, then written atomically."""
from pathlib import Path

from derive.errors import SpecError
from derive.files import is_temporary
from derive.program import Program, program
from derive.spec import Network, load_spec

from .document import document_outputs
from .optimizers import render_optimizers
from .output import is_generated, write_outputs  # noqa: F401  (build's writer is output.write_outputs)
from .render import render_module, source_label


def module_outputs(net: Network | Program) -> dict[str, str]:
    """File name -> text of the generated NumPy module."""
    prog = program(net)
    return {f"{prog.network.name}.py": render_module(prog, source_label(prog.network))}


def build_outputs(net: Network | Program) -> dict[str, str]:
    """Every file `nnderive build` writes for one spec, from one derivation."""
    prog = program(net)
    return {**module_outputs(prog), **document_outputs(prog)}


def shared_outputs() -> dict[str, str]:
    """Files that belong to generated/ as a whole, not to one spec."""
    return {"optimizers.py": render_optimizers()}


def example_specs(examples: Path) -> list[Path]:
    return sorted(Path(examples).glob("*.toml"))


def project_outputs(examples: Path) -> dict[str, str]:
    """Everything generated/ should hold for the specs in `examples`."""
    outputs = shared_outputs()
    names = {}
    for path in example_specs(examples):
        net = load_spec(path)
        if net.name in names:
            raise SpecError(str(path), "name", f"'{net.name}' is also the name of {names[net.name]}",
                            "give every example its own name")
        names[net.name] = path
        outputs.update(build_outputs(net))
    return outputs


def stale_files(examples: Path, generated: Path) -> list[str]:
    """Files in `generated` that differ from, are missing from, or are not produced by `examples`."""
    expected = project_outputs(examples)
    generated = Path(generated)
    stale = []
    for name, text in sorted(expected.items()):
        path = generated / name
        if not path.exists():
            stale.append(f"{path} (missing)")
        elif path.read_text(encoding="utf-8", errors="replace") != text:
            stale.append(f"{path} (differs)")
    if generated.is_dir():
        for path in sorted(generated.iterdir()):
            if path.is_file() and path.name not in expected and not is_temporary(path) and is_generated(path):
                stale.append(f"{path} (no spec in {examples} produces it)")
    return stale
