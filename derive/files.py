"""Reading and writing user-named files safely: regular files only, bounded reads, atomic writes."""
from __future__ import annotations

import os
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


def write_atomic(path, write, where: str = "") -> None:
    """Call write(binary file) on a temporary file beside path, then rename it over path.

    No half-written file is ever visible; the file gets the umask's permissions (like open());
    a target that is not a regular file (a device, a FIFO) is never replaced.

    Raises:
        OutputError: the target is not a regular file, or writing failed (disk full ...).
    """
    path = Path(path)
    where = where or one_line(str(path))
    tmp = None
    try:
        if path.exists() and not path.is_file():
            raise OutputError(where, "", f"{one_line(str(path))} is not a regular file", "name a new or regular file")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())   # mkstemp makes 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(where, "", f"cannot write {one_line(str(path))}: {e.strerror or e}",
                          "free some space or choose another folder") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
