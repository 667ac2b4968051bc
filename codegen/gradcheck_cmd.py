"""The `nnderive gradcheck SPEC FILE[:NAME]` command: a hand-written backward pass against the derived truth."""
import tempfile
from pathlib import Path


def add_parser(sub) -> None:
    g = sub.add_parser(
        "gradcheck", help="check a hand-written backward pass and say what is wrong",
        description="Check FILE's gradients against the module nnderive derives from SPEC, in float64 and "
                    "float32, and say for each wrong parameter what is wrong. FILE is a Python file with "
                    "either the generated module API (loss_and_grad, or forward and backward) or a function "
                    "grad(params, x, y) -> dict; FILE:NAME picks a function or object by name.")
    g.add_argument("spec", metavar="SPEC", help="a network spec, a TOML file (see examples/*.toml)")
    g.add_argument("candidate", metavar="FILE[:NAME]", help="the Python file to check, optionally :NAME in it")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the random parameters and batches it is checked on (default: %(default)s)")
    g.set_defaults(run=cmd_gradcheck)


def _split(target: str) -> tuple[str, str | None]:
    """FILE[:NAME]: the last colon splits off NAME when what follows is an identifier."""
    head, sep, tail = target.rpartition(":")
    if sep and head and tail.isidentifier():
        return head, tail
    return target, None


def cmd_gradcheck(args) -> int:
    from derive.errors import SpecError
    from derive.gradcheck import as_grad, gradcheck
    from derive.spec import load_spec
    from derive.verify import load_module, read_module

    from .build import module_outputs, write_outputs
    net = load_spec(args.spec)
    path, name = _split(args.candidate)
    module = read_module(path)
    candidate = module
    if name is not None:
        if not hasattr(module, name):
            raise SpecError(path, name, "no such function or object in the file",
                            "name a function grad(params, x, y) -> dict defined in it")
        candidate = getattr(module, name)
    elif callable(getattr(module, "grad", None)) and not hasattr(module, "loss_and_grad"):
        candidate = module.grad
    shapes = getattr(candidate, "PARAM_SHAPES", None)
    if isinstance(shapes, dict) and {k: tuple(v) for k, v in shapes.items()} != net.param_shapes():
        raise SpecError(path, "PARAM_SHAPES", f"{shapes} does not match {args.spec}'s {net.param_shapes()}",
                        "check it against the spec it implements")
    try:
        as_grad(candidate)
    except TypeError as e:
        raise SpecError(path, name or "", f"is not a gradient: expected {e}",
                        "define grad(params, x, y) -> dict, or the module API of DESIGN.md") from None
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(module_outputs(net), Path(tmp))
        reference = load_module(Path(tmp) / f"{net.name}.py")
        report = gradcheck(net, candidate, reference, seed=args.seed)
    print(report.text())
    return 0 if report.ok else 1
