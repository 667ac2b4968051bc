"""The `nnderive` command: build, generate, latex, verify, check, list, train."""
import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path


PROGRESS_DELAY = 2.0    # seconds a command runs before its progress shows
PROGRESS_REDRAW = 0.5   # seconds between redraws (the elapsed time of one long step keeps moving)
FALLBACK_SIZE = (80, 24)   # columns and lines of a terminal that reports no size


class Progress:
    """The progress of a command's long steps on stderr, drawn by tqdm once the command has run `delay`
    seconds, and only when stderr is a terminal: anywhere else it writes nothing at all.

    Display only: nothing it does changes what is computed. Called as progress(text, done, total),
    the callback derive's long steps take (check_module, check_curvature, the proofs): `done` of
    `total` steps are done and `text` is the next (total None: a step of unknown length). A thread
    redraws the bar every `redraw` seconds, so a single long step (a derivation) shows its time too.

    >>> with Progress("verify") as progress:        # on a terminal: nnderive verify [00:03] deriving mlp
    ...     progress("deriving mlp")
    """

    # The text last: where the terminal is narrower than the line, tqdm cuts its end.
    WITH_TOTAL = "{prefix} |{{bar:12}}| {{n_fmt}}/{{total_fmt}} [{{elapsed}}] {{desc}}"
    NO_TOTAL = "{prefix} [{{elapsed}}] {{desc}}"

    def __init__(self, command: str, stream=None, delay: float | None = None, redraw: float | None = None):
        stream = sys.stderr if stream is None else stream
        delay = PROGRESS_DELAY if delay is None else delay
        redraw = PROGRESS_REDRAW if redraw is None else redraw
        self.bar, self.shown = None, False
        self.formats = {True: self.WITH_TOTAL.format(prefix=f"nnderive {command}"),
                        False: self.NO_TOTAL.format(prefix=f"nnderive {command}")}
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):      # no isatty, or a closed stream
            terminal = False
        if not terminal:
            return
        import threading

        from tqdm import tqdm
        # The width follows the terminal; one that reports no size (0 x 0, some ptys) is taken as 80 x 24,
        # where tqdm would cut every line to nothing.
        width = dict(dynamic_ncols=True) if min(_size(stream)) > 0 else dict(ncols=FALLBACK_SIZE[0],
                                                                             nrows=FALLBACK_SIZE[1])
        self.bar = tqdm(total=None, file=stream, delay=delay, mininterval=redraw, miniters=0, leave=False,
                        position=0, bar_format=self.formats[False], **width)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker = None
        if redraw > 0:
            self.ticker = threading.Thread(target=self._tick, args=(redraw,), name="nnderive-progress", daemon=True)
            self.ticker.start()

    def __call__(self, text: str, done: int = 0, total: int | None = None) -> None:
        if self.bar is None:
            return
        with self.lock:
            bar = self.bar
            bar.bar_format = self.formats[bool(total)]
            bar.total = total
            bar.set_description_str(text, refresh=False)
            self._draw(done - bar.n)

    def within(self, prefix: str):
        """A progress callback whose texts begin with `prefix` (a phase of the command)."""
        return lambda text, done=0, total=None: self(prefix + text, done, total)

    def _draw(self, steps: int = 0) -> None:
        """Count `steps` more done; tqdm redraws if the delay and the redraw interval have passed."""
        if self.bar.update(steps):
            self.shown = True

    def _tick(self, every: float) -> None:
        while not self.stop.wait(every):
            with self.lock:
                if self.bar is not None:
                    self._draw()

    @contextlib.contextmanager
    def paused(self):
        """Write to stdout inside: the bar is taken off the terminal first and drawn again after."""
        if self.bar is None:
            yield
            return
        with self.lock:
            if self.shown:
                self.bar.clear()
            try:
                yield
            finally:
                sys.stdout.flush()
                if self.shown:
                    self.bar.refresh()

    def close(self) -> None:
        """Stop, and take the bar off the terminal."""
        if self.bar is None:
            return
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _size(stream) -> tuple[int, int]:
    """(columns, lines) of the terminal `stream` writes to ((0, 0) if it says none)."""
    try:
        return tuple(os.get_terminal_size(stream.fileno()))
    except (AttributeError, ValueError, OSError):     # no fileno, a closed stream, not a terminal
        return 0, 0


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
    with Progress("generate") as progress:
        outputs = collect_outputs(nets, render, progress)  # refuses two specs that would write one file, first
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

    nets = _load(args.spec)
    ok = True
    with Progress("build") as progress:
        outputs = {**shared_outputs(), **collect_outputs(nets, derived_once, progress)}
        written = write_outputs(outputs, Path(args.output), force=args.force)
        for i, prog in enumerate(progs.values(), start=1):
            net = prog.network
            text = summary(prog)
            with progress.paused():
                print(text)
                print()
            checking = progress.within(f"verifying {net.name}" + (f" ({i}/{len(progs)})" if len(progs) > 1 else "") + ", ")
            report = check_module(net, load_module(Path(args.output) / f"{net.name}.py"), progress=checking)
            with progress.paused():
                print(report.table())
                print()
            ok &= report.ok
    for path in written:
        print(f"wrote {path}")
    return 0 if ok else 1


def cmd_verify(args) -> int:
    (net,) = _load([args.spec])
    with Progress("verify") as progress:
        reports = _verified(args, net, progress)
    print("\n\n".join(r.table() for r in reports))
    failures = [line for r in reports for line in r.failures()]
    for line in failures:
        print(f"mismatch in {line}", file=sys.stderr)
    return 1 if failures else 0


def _verified(args, net, progress) -> list:
    """verify's reports: the module check, and the curvature check with --curvature."""
    import tempfile

    from derive.verify import check_module, load_module

    from .build import module_outputs, write_outputs

    def checked(module):
        reports = [check_module(net, module, progress=progress.within("module check, "))]
        if args.curvature:
            from derive.verify_curvature import check_curvature
            reports.append(check_curvature(net, module, progress=progress.within("curvature ")))
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
        return checked(module)
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"deriving {net.name}")
        write_outputs(module_outputs(net), Path(tmp))
        return checked(load_module(Path(tmp) / f"{net.name}.py"))


def cmd_check(args) -> int:
    from derive.errors import SpecError

    from .build import stale_files
    if not Path(args.examples).is_dir():
        raise SpecError("", "", f"there is no {args.examples.rstrip('/')}/ folder here",
                        "run `nnderive check` in the project's top folder, or give --examples DIR")
    with Progress("check") as progress:
        stale = stale_files(Path(args.examples), Path(args.generated), progress)
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
