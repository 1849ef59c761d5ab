"""The process around a command: its standard streams, thread-count variables and how it exits.

Why a module of its own: none of this is chipsim's work, but each piece used
to end a command in a traceback that names no input -- ``OMP_NUM_THREADS=0``
or ``NUMBA_NUM_THREADS=0`` (numba refuses to import), a closed stdout
(``chipsim ... >&-``: Python sets ``sys.stdout`` to None), a full one
(``> /dev/full``). ``cli.main`` calls ``prepare`` before anything else, and
uses ``silence_stdout`` / ``flush_stdout`` when writing to stdout fails.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys

#: thread-count variables the numeric libraries read at import; a value that is not a positive integer
#: makes numba raise at import (``NUMBA_NUM_THREADS=0``) or the BLAS misbehave
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MAX_THREADS = 4096
#: errors of a write to stdout that are the terminal's or the disk's, not chipsim's
STDOUT_ERRORS = (errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT, errno.EFBIG)


def prepare(as_program: bool) -> None:
    """Make the surroundings safe for a command: open streams, sane thread variables and, for the program
    itself, quiet exits (see ``quiet_resource_tracker``)."""
    open_standard_streams()
    sane_thread_environment()
    if as_program:
        quiet_resource_tracker()


def sane_thread_environment() -> None:
    """Drop a thread-count variable that is not an integer in 1..MAX_THREADS, saying so in one line: the
    libraries then use their defaults (every core) instead of failing with a traceback at import."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name)
        if value is None:
            continue
        text = value.strip()
        if not (text.isdigit() and 1 <= int(text) <= MAX_THREADS):
            del os.environ[name]
            shown = value if len(value) <= 20 else value[:20] + "..."
            print(f"chipsim: note: ignoring {name}={shown!r} (not a thread count in 1..{MAX_THREADS}); "
                  "using the default", file=sys.stderr)


def open_standard_streams() -> None:
    """A closed stdout or stderr (``chipsim ... >&-``) becomes /dev/null: output is lost, as the caller
    asked, but nothing fails on it (Python sets a closed stream to None; a worker process would inherit
    the closed descriptor)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            closed = False
        except OSError:
            closed = True
        if closed:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if closed or getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="replace", closefd=False))


def quiet_resource_tracker() -> None:
    """After a Ctrl-C the program ends at once (``exit_now``); multiprocessing's resource tracker, which
    outlives it by a moment, would then warn about the worker pool's semaphores it frees for us. The
    tracker takes its warning filters from ``sys.warnoptions`` when it starts."""
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")


def silence_stdout() -> None:
    """After stdout failed (a closed pipe, a full disk): point it at /dev/null so the interpreter's final
    flush cannot fail again with a traceback of its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        silence_stdout()


@contextlib.contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C until the block ends, then raise it as KeyboardInterrupt.

    Why: importing torch runs Python callbacks from C++ (pybind11); a KeyboardInterrupt raised inside one
    cannot cross the C++ frames and ends the interpreter with ``terminate called ... KeyboardInterrupt``
    (status -6), with no resume hint. Deferred to the block's end, the same Ctrl-C reaches the command's
    handler. Only the main thread can hold signals; elsewhere the block runs as it is."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def finished() -> None:
    """The command's work is done and its files are written: from here a Ctrl-C has nothing left to stop.
    Ignored, so one that lands while the interpreter shuts down (numba's and torch's finalizers) cannot turn
    a finished command's exit status into -2 (killed by SIGINT)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_now(code: int) -> None:
    """End the program with ``code`` now. After a handled Ctrl-C: one that landed inside an extension's own
    Python call during an import leaves CPython marked "ended by an unhandled KeyboardInterrupt", and the
    interpreter would kill itself with SIGINT at exit (status -2, not 130). Every with-block has unwound by
    the time this is called."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)
