"""Files from others are data: opened only as regular files, never through a symlink, read within a size cap.

Why: a run directory, a sweep's ``points.jsonl`` or a checkpoint may come from
someone else (a colleague's tarball, a shared disk). Opened naively,

* a ``points.jsonl`` that is a symlink to a file elsewhere gets that file
  truncated and appended to -- a write outside the output directory;
* a checkpoint that is a symlink to ``/dev/zero``, or a 30 GB sparse file, is
  read whole until the process runs out of memory;
* a FIFO given as a checkpoint, config or model blocks ``open`` forever.

So every such file is opened here, with ``O_NOFOLLOW`` (the last path
component may not be a symlink; the directory the user named may be one) and
``O_NONBLOCK`` (opening a FIFO returns at once instead of waiting for a
writer), then ``fstat`` on the open descriptor -- not the path, which could be
swapped in between -- must say a regular file of at most ``max_bytes``. A file
being written to must also have a single link: a hard link to a file elsewhere
is the same trap as a symlink.

Every refusal is one line of the caller's error class naming the path.
"""
from __future__ import annotations

import contextlib
import os
import stat

from .errors import ChipsimError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n < (64 << 20) else f"{n >> 20} MiB"


def _open(path: str, flags: int, what: str, error, follow: bool, mode: int = 0o666) -> int:
    flags |= _NONBLOCK | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        return os.open(path, flags, mode)
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise error(f"{path}: the {what} is a symbolic link; chipsim opens only regular files inside the "
                        "directory given (replace the link with the file itself)") from None
        if isinstance(exc, IsADirectoryError):
            raise error(f"{path}: the {what} is a directory, not a file") from None
        raise error(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None


def _check_regular(fd: int, path: str, what: str, error, max_bytes: int | None, single_link: bool) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: the {what} is {_kind(st.st_mode)}; chipsim reads only regular files")
    if single_link and st.st_nlink > 1:
        raise error(f"{path}: the {what} is a hard link shared with {st.st_nlink - 1} other name(s); chipsim "
                    "writes only into files of its own output directory (copy it instead of linking it)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{path}: refused: the {what} is larger than {_size(max_bytes)} ({st.st_size:,} bytes); "
                    f"not a chipsim {what}")
    return st


def read_bytes(path: str, what: str, max_bytes: int, error=ChipsimError, follow: bool = False) -> bytes:
    """The whole content of the regular file ``path`` (at most ``max_bytes``); anything else is one ``error`` line.

    ``follow=True`` lets the path itself be a symlink (to a regular file: a config the user named by a link);
    special files and the size cap are refused either way.
    """
    fd = _open(path, os.O_RDONLY, what, error, follow)
    try:
        _check_regular(fd, path, what, error, max_bytes, single_link=False)
        chunks, total = [], 0
        while True:                               # the size may grow after fstat: read within the cap anyway
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{path}: refused: the {what} grew larger than {_size(max_bytes)} while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def exists_any(path: str) -> bool:
    """True if anything -- a file, a dangling symlink, a FIFO -- is at ``path``."""
    return os.path.lexists(path)


@contextlib.contextmanager
def open_append(path: str, what: str, error=ChipsimError, max_bytes: int | None = None):
    """A text file handle appending to ``path`` (created if absent), refused unless it is a regular file with
    one link, reached without a symlink: so an append can never land in a file outside the directory."""
    fd = _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what, error, follow=False)
    try:
        _check_regular(fd, path, what, error, max_bytes, single_link=True)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        yield fh


def truncate_to(path: str, size: int, what: str, error=ChipsimError) -> None:
    """Cut the regular file ``path`` (no symlink, one link) to ``size`` bytes."""
    fd = _open(path, os.O_WRONLY, what, error, follow=False)
    try:
        _check_regular(fd, path, what, error, None, single_link=True)
        os.ftruncate(fd, size)
    except OSError as exc:
        raise error(f"{path}: cannot cut the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
