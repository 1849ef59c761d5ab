"""Atomic writes: results, plots and checkpoints are never seen half-written, or half old and half new.

One mechanism for every writer. ``atomic_file`` gives a temporary file beside
its target (same filesystem, so the rename is atomic); the target is replaced
only once the content is complete, and an exception leaves the old file
intact. ``staged_dir`` does the same for a *set* of files (a run's report,
CSVs and PNGs): they are written into a fresh hidden directory and moved into
place only when every one of them is complete. A full disk or a crash while
writing leaves the previous set untouched; the moves themselves write no data.

Temporary names carry the writer's process id (``.NAME.PID.RANDOM.tmp``), so
the next writer of the same target can tell a temp file left by a killed
process (its pid no longer runs) from one another process is writing now,
and removes only the former.

Files are created with mode 0666 minus the umask (0644 under the usual umask
022), like any file a program opens; ``tempfile.mkstemp``'s 0600 would make
results unreadable to the rest of a group that shares them.

Every ``OSError`` while writing becomes one ``OutputError`` line naming the path.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil

from .errors import OutputError

STAGING_PREFIX = ".staging."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # it exists, owned by someone else
        return True
    return True


def _temp_pattern(name: str, suffix: str):
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[0-9a-f]+{re.escape(suffix)}$")


def clean_stale(path: str, suffix: str = ".tmp") -> list:
    """Remove temp files of ``path`` left by writers that no longer run (a SIGKILL mid-write); returns them."""
    d, name = os.path.split(os.path.abspath(path))
    pattern = _temp_pattern(name, suffix)
    removed = []
    try:
        entries = os.listdir(d)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(d, entry))
                removed.append(entry)
    return removed


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


def make_dirs(d: str) -> None:
    """``os.makedirs(d, exist_ok=True)``, with a failure reported as one line naming ``d``."""
    try:
        os.makedirs(d, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{d}: is a file, not a directory") from None
    except OSError as exc:
        raise OutputError(f"{d}: cannot create the directory: {_describe(exc)}") from None


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ".tmp", durable: bool = False):
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    ``durable=True`` also flushes the file to disk before the rename, so a
    power loss cannot leave an empty file under the final name (checkpoints).
    """
    d, name = os.path.split(os.path.abspath(path))
    make_dirs(d)
    clean_stale(path, suffix)
    tmp = os.path.join(d, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the kernel applies the umask
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _clean_stale_stages(out_dir: str) -> None:
    pattern = re.compile(rf"^{re.escape(STAGING_PREFIX)}(\d+)\.[0-9a-f]+$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(out_dir):
            m = pattern.match(entry)
            if m and not _alive(int(m.group(1))):
                shutil.rmtree(os.path.join(out_dir, entry), ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out_dir: str, last: tuple = ()):
    """Yield a fresh hidden directory inside ``out_dir``; when the block succeeds, move its files into ``out_dir``.

    The files written in the block appear in ``out_dir`` together or not at
    all: a failure while writing (full disk, a plot that raises) removes the
    staging directory and leaves whatever ``out_dir`` held before. ``last``
    names files moved after the others (``summary.json``), so a reader that
    sees the summary sees the whole set.
    """
    make_dirs(out_dir)
    _clean_stale_stages(out_dir)
    stage = os.path.join(out_dir, f"{STAGING_PREFIX}{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.mkdir(stage)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write: {_describe(exc)}") from None
    try:
        yield stage
        names = sorted(os.listdir(stage), key=lambda n: (n in last, n))
        for n in names:
            os.replace(os.path.join(stage, n), os.path.join(out_dir, n))
    except OutputError as exc:           # name the file the user will look for, not its staging copy
        raise OutputError(str(exc).replace(stage, out_dir.rstrip(os.sep)) +
                          "; nothing of this run was written (the directory holds what it held before)") from None
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write: {_describe(exc)}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
