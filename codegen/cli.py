"""The `nnderive` command: build, generate, latex, verify, check, list, train."""
import argparse
import importlib
import sys
import warnings
from pathlib import Path


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (exit status 2, like every user error)."""

    def error(self, message):
        self.exit(2, f"nnderive: error: {message}; see `{self.prog} --help`\n")


def _load(paths):
    """Every spec named, or one SpecError with the problems of all of them (each spec's own, in full)."""
    from derive.errors import SpecError
    from derive.spec import load_spec
    nets, errors = [], []
    for path in paths:
        try:
            nets.append(load_spec(path))
        except SpecError as e:
            errors.append(e)
    if errors:
        raise SpecError.of(errors)
    return nets


def cmd_generate(args) -> int:
    from .build import array_api_outputs, collect_outputs, module_outputs, write_outputs
    nets = _load(args.spec)
    render = array_api_outputs if args.array_api else module_outputs
    outputs = collect_outputs(nets, render)     # refuses two specs that would write one file, before writing
    for path in write_outputs(outputs, Path(args.output), force=args.force):
        print(f"wrote {path}")
    return 0


def cmd_build(args) -> int:
    from derive.report import summary
    from derive.verify import check_module, load_module

    from derive.program import program

    from .build import build_outputs, collect_outputs, shared_outputs, write_outputs
    progs = {}

    def derived_once(net):          # each spec derived once; the summary below reads the same Program
        progs[net.source] = program(net)
        return build_outputs(progs[net.source])

    outputs = {**shared_outputs(), **collect_outputs(_load(args.spec), derived_once)}
    written = write_outputs(outputs, Path(args.output), force=args.force)
    ok = True
    for prog in progs.values():
        net = prog.network
        print(summary(prog))
        print()
        report = check_module(net, load_module(Path(args.output) / f"{net.name}.py"))
        print(report.table())
        print()
        ok &= report.ok
    for path in written:
        print(f"wrote {path}")
    return 0 if ok else 1


def cmd_verify(args) -> int:
    import tempfile

    from derive.verify import check_module, load_module
    from derive.verify_checks import terminal_progress

    from .build import module_outputs, write_outputs
    (net,) = _load([args.spec])
    progress = terminal_progress()

    def checked(module):
        reports = [check_module(net, module, progress=progress)]
        if args.curvature:
            from derive.verify_curvature import check_curvature
            reports.append(check_curvature(net, module, progress=progress))
        return reports

    if args.module:
        module = load_module(args.module)
        shapes = {k: tuple(v) for k, v in module.PARAM_SHAPES.items()}
        if shapes != net.param_shapes():
            from derive.errors import SpecError
            raise SpecError(args.module, "PARAM_SHAPES", f"{shapes} does not match {args.spec}'s {net.param_shapes()}",
                            "verify the module against the spec it was generated from")
        if args.curvature:
            missing = [f for f in ("hvp", "gnvp", "loss_grad_hvp", "hessian") if not callable(getattr(module, f, None))]
            if missing:
                from derive.errors import SpecError
                raise SpecError(args.module, missing[0], "missing from the module (no curvature functions)",
                                "regenerate it with nnderive generate, or verify without --curvature")
        reports = checked(module)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_outputs(module_outputs(net), Path(tmp))
            reports = checked(load_module(Path(tmp) / f"{net.name}.py"))
    if progress is not None:
        progress.done()
    print("\n\n".join(r.table() for r in reports))
    failures = [line for r in reports for line in r.failures()]
    for line in failures:
        print(f"mismatch in {line}", file=sys.stderr)
    return 1 if failures else 0


def cmd_check(args) -> int:
    from derive.errors import SpecError

    from .build import stale_files
    if not Path(args.examples).is_dir():
        raise SpecError("", "", f"there is no {args.examples.rstrip('/')}/ folder here",
                        "run `nnderive check` in the project's top folder, or give --examples DIR")
    stale = stale_files(Path(args.examples), Path(args.generated))
    if stale:
        print(f"{len(stale)} stale file(s) in {args.generated}; run `nnderive build {args.examples}/*.toml`:")
        for s in stale:
            print(f"  {s}")
        return 1
    print(f"{args.generated}/ is up to date with {args.examples}/")
    return 0


# Commands whose modules import SymPy: their parsers are built only when that command runs,
# so `nnderive --help` and the other commands stay fast. name -> (module, parser builder, help).
_LAZY = {
    "latex": ("codegen.document", "add_parser", "the derivation as a LaTeX (or Markdown) document"),
    "train": ("codegen.train_cli", "add_parsers", "train a spec's network on data with mini-batches"),
    "surface": ("codegen.train_cli", "add_parsers", "plot the loss over two chosen weights around the current point"),
    "gradcheck": ("codegen.gradcheck_cmd", "add_parser", "check a hand-written backward pass and say what is wrong"),
}


def cmd_list(args) -> int:
    from .listing import listing
    print(listing(), end="")
    return 0


SPEC_HELP = "a network spec, a TOML file (see examples/*.toml)"
OUTPUT_HELP = "the folder to write into (default: %(default)s)"


class _Version(argparse.Action):
    """argparse's action="version", reading the version only when asked (the metadata import is slow)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__
        print(f"{parser.prog} {__version__}")      # on standard output, as argparse's own version action
        parser.exit()


def parser(command: str | None = None) -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="nnderive", description="Derive, generate and verify neural-network gradients.")
    p.add_argument("--version", action=_Version, help="show the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="derive + generate + LaTeX + verify: the main job",
                       description="Derive each spec once, write its NumPy module, LaTeX and Markdown "
                                   "documents, print the derivation's summary, then verify the module "
                                   "(symbolic vs finite differences vs generated). Exit status 1 if a "
                                   "check fails.")
    b.add_argument("spec", nargs="+", metavar="SPEC", help=SPEC_HELP)
    b.add_argument("-o", "--output", default="generated", metavar="DIR", help=OUTPUT_HELP)
    b.add_argument("--force", action="store_true", help="overwrite files nnderive did not write")
    b.set_defaults(run=cmd_build)

    g = sub.add_parser("generate", help="write the NumPy module of each spec",
                       description="Derive each spec and write its standalone NumPy module <name>.py "
                                   "(forward, backward, loss_and_grad, sgd_step, hvp ...); no verification.")
    g.add_argument("spec", nargs="+", metavar="SPEC", help=SPEC_HELP)
    g.add_argument("-o", "--output", default="generated", metavar="DIR", help=OUTPUT_HELP)
    g.add_argument("--array-api", action="store_true",
                   help="also write <name>_xp.py: the same API for arrays of any array API namespace "
                        "(PyTorch, JAX, CuPy, NumPy ...); it imports array_api_compat")
    g.add_argument("--force", action="store_true", help="overwrite files nnderive did not write")
    g.set_defaults(run=cmd_generate)

    v = sub.add_parser("verify", help="three-way gradient check: symbolic, finite differences, generated",
                       description="Check a module's gradients three ways: the symbolic derivation (proved "
                                   "exactly on a small instance), finite differences and the generated code. "
                                   "Exit status 1 on a mismatch.")
    v.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    v.add_argument("--module", metavar="FILE", help="the module to check (default: a fresh generation)")
    v.add_argument("--curvature", action="store_true",
                   help="also check hvp, gnvp, loss_grad_hvp and hessian: proof on a small instance (sp.diff twice), "
                        "finite differences of the gradient, symmetry, float32")
    v.set_defaults(run=cmd_verify)

    c = sub.add_parser("check", help="generated/ is exactly what examples/ produce",
                       description="Regenerate every spec in the examples folder in memory and compare with "
                                   "the generated folder, byte for byte; list missing, differing and orphaned "
                                   "files (exit status 1). Run it in the project's top folder.")
    c.add_argument("--examples", default="examples", metavar="DIR", help="the specs (default: %(default)s)")
    c.add_argument("--generated", default="generated", metavar="DIR",
                   help="the committed output (default: %(default)s)")
    c.set_defaults(run=cmd_check)

    li = sub.add_parser("list", help="the activations, losses and optimizers there are",
                        description="List the registered activations (formula in x, parameters and defaults), "
                                    "losses (per-output formula in yhat and y) and optimizers "
                                    "(hyperparameters and defaults).")
    li.set_defaults(run=cmd_list)
    if command in _LAZY:
        module, builder, _ = _LAZY[command]
        getattr(importlib.import_module(module), builder)(sub)
    for name, (_, _, help_text) in _LAZY.items():
        if name not in sub.choices:          # listed in --help; built for real when it is the command
            sub.add_parser(name, help=help_text, add_help=False)
    return p


def _command(argv) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv=None) -> int:
    """Run one command. A user error prints one line (a line per problem) and returns 2; a bug keeps
    its traceback (exit 1)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(_command(argv)).parse_args(argv)
    from derive.errors import NnderiveError, SpecWarning
    show = warnings.showwarning

    def one_line_warning(message, category, *rest, **kw):
        if issubclass(category, SpecWarning):
            print(f"nnderive: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *rest, **kw)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return args.run(args)
    except NnderiveError as e:
        for problem in getattr(e, "errors", (e,)):     # a spec's independent problems: a line each
            print(f"nnderive: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnderive: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
