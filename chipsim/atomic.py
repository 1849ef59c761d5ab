"""Atomic file writes: results, plots and checkpoints are never seen half-written.

One mechanism for every writer: the content goes to a temporary file in the
target's directory (same filesystem, so the rename is atomic), which replaces
the target only once it is complete. An exception leaves the old file intact.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
