"""Run directories: each command's results go into a directory no other command writes into.

Why: two runs started in the same second used to get the same default name,
and the second silently overwrote the first. Now

* a default directory (``reports/runs/<config>[-<kind>]-<timestamp>``) is
  created with ``mkdir``, which fails if the name exists -- atomically, so of
  two commands racing for a name exactly one wins; the other takes the next
  free suffix (``-2``, ``-3`` ...);
* an explicit ``--out DIR`` must not exist yet, or be an empty directory.
  ``run`` writes into an existing run directory only when resuming it
  (``--resume DIR``); ``sweep`` and ``compare`` reuse a directory that holds
  their ``points.jsonl``, since rerunning into it is how they resume;
* a path that is a file, a directory that cannot be created or written,
  is one ``OutputError`` line naming the argument;
* while a command writes into a directory it holds ``.chipsim.lock`` there
  (``owned``: ``fcntl.flock``, released by the kernel when the process ends,
  however it ends, so a killed command leaves no stale lock), and a second
  command on the same directory -- two sweeps on one ``--out``, two
  ``run --resume`` of one run -- is refused with one line naming the holder's
  pid, before it computes or logs anything.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import secrets
import stat
import time

from .atomic import make_dirs
from .errors import OutputError

RUNS_ROOT = os.path.join("reports", "runs")
LOCK_NAME = ".chipsim.lock"
_held: dict = {}          # real path of a directory -> [lock fd, depth]: this process holds it


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return f"pid {int(text)}"
    return "another process"


def _same_file(fd: int, path: str) -> bool:
    """Is ``path`` still the file open as ``fd`` (not removed, not replaced)?"""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def owned(path: str, arg: str = "--out"):
    """Hold ``path`` for the block: exclusive among chipsim commands, re-entrant within this process.

    The lock is ``fcntl.flock`` on ``path/.chipsim.lock`` (a regular file, opened without following a
    symlink), which holds this process's pid for the message a second writer gets. The holder removes the
    file while it still holds it, and a command that locked a file checks it is still the one at the path
    (else it retries), so removal never lets two commands hold two different files. A killed holder leaves
    the file, but not the lock: the kernel drops a flock with its process.
    """
    real = os.path.realpath(path)
    if real in _held:
        _held[real][1] += 1
        try:
            yield path
        finally:
            _held[real][1] -= 1
        return
    lock = os.path.join(path, LOCK_NAME)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            fd = os.open(lock, flags, 0o666)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise OutputError(f"{arg} {path}: cannot take its lock file {LOCK_NAME}: {why}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{arg} {path}: its {LOCK_NAME} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"{arg} {path}: cannot lock it: {exc.strerror or exc}") from None
                raise OutputError(f"{arg} {path}: another chipsim command ({_holder(fd)}) is writing into this "
                                  "directory now; wait for it to finish, or give another directory") from None
            if _same_file(fd, lock):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)          # the holder we waited on removed that file as it finished: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[real] = [fd, 1]
    try:
        yield path
    finally:
        del _held[real]
        with contextlib.suppress(OSError):
            if _same_file(fd, lock):
                os.remove(lock)   # while still held: a command waiting on it sees the file gone and retries
        os.close(fd)          # releases the lock


def display_path(path: str) -> str:
    """``path`` as a reader should see it in a report or a command line: relative to the working
    directory when it lies below it (``hwconfigs/44core_4bit.yaml``), else as given. The JSON files keep
    the absolute path, which is what resuming needs; the prose should not carry one machine's layout."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def default_name(config_name: str, kind: str = "") -> str:
    """``reports/runs/<config>[-<kind>]-<timestamp>`` (``claim`` makes it unique)."""
    return os.path.join(RUNS_ROOT, f"{config_name}{'-' + kind if kind else ''}-{stamp()}")


def _mkdir_new(path: str, arg: str) -> bool:
    """Create ``path`` (not its parents' absence an error); False if it exists already."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise OutputError(f"{arg} {path}: {parent} is a file, not a directory")
    try:
        make_dirs(parent)
    except OutputError as exc:
        raise OutputError(f"{arg} {path}: {exc}") from None
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise OutputError(f"{arg} {path}: cannot create the directory: {exc.strerror or exc}") from None
    return True


def check_writable(path: str, arg: str = "--out") -> None:
    """Create and remove a probe file: permissions, read-only mounts and ACLs all answer the same way."""
    probe = os.path.join(path, f".probe.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"{arg} {path}: the directory is not writable: {exc.strerror or exc}") from None


def new_default(config_name: str, kind: str = "") -> str:
    """Create and return a fresh default run directory; never one that exists."""
    base = default_name(config_name, kind)
    for n in itertools.count(1):
        path = base if n == 1 else f"{base}-{n}"
        if _mkdir_new(path, "run directory"):
            return path
    raise AssertionError("unreachable")


def claim(out: str | None, config_name: str, kind: str = "", arg: str = "--out",
          reusable_marker: str | None = None, is_ours=None) -> str:
    """The directory a command writes into, created (or checked) now, before any work starts.

    ``out=None`` makes a fresh default directory. An existing ``out`` must be
    an empty directory, or (``reusable_marker``, e.g. ``points.jsonl``) one that
    holds that file: the results log of the same kind of command, which
    resumes from it. ``is_ours(path, entries)`` decides instead of the marker
    for a command whose directory has a shape of its own (``reproduce``).
    """
    if out is None:
        return new_default(config_name, kind)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise OutputError(f"{arg} {out}: is a file, not a directory; give a directory that does not exist yet")
    if os.path.isdir(out):
        entries = [e for e in os.listdir(out) if not e.startswith(".staging.") and e != LOCK_NAME]
        ours = is_ours(out, entries) if is_ours is not None else bool(reusable_marker and reusable_marker in entries)
        if entries and not ours:
            if is_ours is not None:
                what = "it holds files this command did not write"
            elif reusable_marker:
                what = f"it holds files but no {reusable_marker} (not a directory this command wrote)"
            else:
                what = "it already holds files (another run's?)"
            hint = ("; give a new directory" if reusable_marker or is_ours is not None else
                    f"; give a new directory, or --resume {out} to continue that run")
            raise OutputError(f"{arg} {out}: {what}; chipsim never writes into another run's directory{hint}")
        check_writable(out, arg)
        return out
    if not _mkdir_new(out, arg):
        raise OutputError(f"{arg} {out}: another command created it just now; give another directory")
    check_writable(out, arg)
    return out


@contextlib.contextmanager
def claimed(out: str | None, config_name: str, kind: str = "", arg: str = "--out",
            reusable_marker: str | None = None):
    """``claim`` a directory for the block; if the block fails before writing anything, remove it again.

    So a config that fails its mapping check, or a run interrupted in its
    first epoch, leaves no empty directory behind (only one this call created).
    The directory is ``owned`` for the block: a second command on it is refused.
    """
    existed = out is not None and os.path.isdir(out)
    path = claim(out, config_name, kind, arg, reusable_marker)
    try:
        with owned(path, arg):
            yield path
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                if os.listdir(path) == [LOCK_NAME]:
                    os.remove(os.path.join(path, LOCK_NAME))
                os.rmdir(path)          # only succeeds while it is still empty
        raise
