"""User-named files: regular files only, bounded reads, and the one writer of every output.

Reading: read_regular never blocks on a FIFO or a device and never reads past a bound.
Writing: generated modules and documents (codegen), parameter files, metrics and plots (training)
all go through write_outputs: every output is written to a temporary file beside it and renamed,
so a failure leaves every old file as it was and a reader never sees half a file; permissions
follow the umask; a device or FIFO is never replaced; a killed write leaves only hidden
.NAME.XXXXXXXX.tmp files that the next write into the directory removes.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

from .errors import OutputError, SpecError, one_line


REGULAR = "name a regular file (not a directory, FIFO or device)"


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path, limit: int, error=SpecError, fix: str = "use a smaller file",
                 check_only: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; never blocks on a FIFO or a device.
    With check_only, only check that it is one (and return b"").

    Raises:
        error (a SpecError subclass): missing, not a regular file, larger than limit, unreadable.
    """
    source = one_line(str(path))
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise error(source, "", f"is {_kind(info.st_mode)}, not a regular file", REGULAR)
        if info.st_size > limit:
            raise error(source, "", f"is {info.st_size:,} bytes, more than {limit:,}", fix)
        if check_only:
            return b""
        # O_NONBLOCK: had it been swapped for a FIFO since the stat, open must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise error(source, "", f"is {_kind(mode)}, not a regular file", REGULAR)
            # In chunks: read(limit + 1) would allocate limit bytes up front, however small the file.
            chunks, size = [], 0
            while size <= limit:
                chunk = f.read(min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
    except SpecError:                    # a ValueError too: not to be rewrapped below
        raise
    except FileNotFoundError:
        raise error(source, "", "file not found", "check the path (relative paths start at the working directory)") \
            from None
    except (OSError, ValueError) as e:   # ValueError: a NUL byte in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise error(source, "", f"cannot read: {reason}", "check the file's permissions") from None
    if len(data) > limit:
        raise error(source, "", f"is more than {limit:,} bytes", fix)
    return data


def check_output(path, flag: str = "") -> Path:
    """Refuse an output path that is not (or would replace something that is not) a regular file,
    or whose folder cannot be written, before any work is done: a probe file is created and removed.

    Raises:
        OutputError: naming the flag (or the path) and the fix.
    """
    path = Path(path)
    where = flag or one_line(str(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except (OSError, ValueError) as e:
        raise OutputError(where, "", f"cannot use {one_line(str(path))}: {getattr(e, 'strerror', None) or e}",
                          "name a file in a writable folder") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputError(where, "", f"{one_line(str(path))} is {_kind(info.st_mode)}; only a regular file is "
                          "replaced", "name a new or regular file")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(where, "", f"the folder {one_line(str(folder))} does not exist", "create it first")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(where, "", f"cannot write into {one_line(str(folder))}: {e.strerror or e}",
                          "choose a writable folder") from None
    return path


def check_distinct(outputs: dict) -> None:
    """Refuse two outputs of one command that name the same file ({flag or source: path or None}).

    Raises:
        OutputError: naming both, before anything is written.
    """
    seen = {}
    for label, path in outputs.items():
        if path is None:
            continue
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise OutputError(label, "", f"writes {one_line(str(path))}, which {seen[key]} writes too",
                              "give every output its own file name")
        seen[key] = label


def _temp_pattern(name: str) -> re.Pattern:
    """The temporary files _write_temp makes for `name`: .name.XXXXXXXX.tmp."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def is_temporary(path: Path) -> bool:
    """A temporary file of an interrupted write (hidden, named .NAME.XXXXXXXX.tmp)."""
    return re.fullmatch(r"\..+\.[A-Za-z0-9_]{8}\.tmp", path.name) is not None


@contextlib.contextmanager
def _locked(directory: Path):
    """Hold an exclusive lock on the directory while writing into it (POSIX; elsewhere no lock).

    Every writer takes it, so a temporary file seen while holding it belongs to a process that
    died mid-write and can be removed. The kernel drops the lock when its holder dies.
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)




def _write_temp(path: Path, content) -> str:
    """Write content to a new temporary file beside `path`, flushed to disk; return its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())    # mkstemp makes 0600; an output is an ordinary file (umask read now)
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_outputs(outputs: dict, directory: Path, keep=None) -> list[Path]:
    """Write every output (name -> text, bytes, or a function writing to a binary file), all or none.

    keep(path) -> True refuses to replace an existing file (codegen: one without the generated-file
    header, unless --force).

    All files are written to temporary files first and only then renamed over the old ones, so a
    failure while writing (disk full, no permission, an exception) leaves every old file as it
    was, and a reader never sees half a file. A process killed during the renames leaves each file
    either old or new, never mixed, and may leave hidden .NAME.XXXXXXXX.tmp files, which the next
    write into the directory removes and `nnderive check` ignores.

    Raises:
        OutputError: the directory is a file, an output exists and lacks the generated-file
            header (unless force), or the files cannot be written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(str(directory), "", "is a file, not a directory", "name an output directory with -o")
    targets = [directory / name for name in outputs]
    for path in targets:
        if path.exists() and not path.is_dir() and not path.is_file():   # a device, a FIFO, a socket
            raise OutputError(str(path), "", f"is {_kind(os.stat(path).st_mode)}, not a regular file (only one is replaced)",
                              "name a new or regular file")
        if path.is_dir():
            raise OutputError(str(path), "", "is a directory, so the generated file cannot be written there",
                              "move it away, or write elsewhere with -o")
        if keep is not None and path.exists() and keep(path):
            raise OutputError(str(path), "line 1", "exists and was not generated by nnderive (no header)",
                              "move it away, or pass --force to overwrite it")
    current = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory) as locked:
            if locked:
                _remove_leftovers(directory, outputs)
            written = []
            try:
                for path in targets:
                    current = path
                    written.append(_write_temp(path, outputs[path.name]))
                for tmp, path in zip(written, targets):
                    os.replace(tmp, path)
            except BaseException:
                for tmp in written:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                raise
    except OSError as e:
        where = str(current) if current is not None else (e.filename if isinstance(e.filename, str) else str(directory))
        fix = ("free some space or choose another folder" if getattr(e, "errno", None) == 28   # ENOSPC
               else "check that the directory exists and is writable")
        raise OutputError(where, "", f"cannot write: {e.strerror or e}", fix) from None
    return targets


_LEFTOVER = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*\.(py|tex|md)\.[A-Za-z0-9_]{8}\.tmp")


def _remove_leftovers(directory: Path, outputs: dict[str, str]) -> None:
    """Remove temporary files interrupted writes left behind: of these outputs, and of any generated
    module or document (a killed build's .tex and .md temporaries too, when only .py files follow).
    The caller holds the directory's lock, so no live writer owns them."""
    patterns = [_temp_pattern(name) for name in outputs] + [_LEFTOVER]
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and any(p.fullmatch(entry.name) for p in patterns):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def write_file(path, content, where: str = "") -> Path:
    """Write one file (text, bytes, or a function writing to a binary file) atomically, replacing it
    (never a device or a FIFO). `where` names it in an error (a flag such as --save)."""
    path = Path(path)
    try:
        return write_outputs({path.name: content}, path.parent)[0]
    except OutputError as e:
        if not where:
            raise
        raise OutputError(where, "", f"{one_line(str(path))}: {e.what}", e.fix) from None


def write_atomic(path, write, where: str = "") -> None:
    """write_file for a function writing to a binary file (what training's outputs use)."""
    write_file(path, write, where)
