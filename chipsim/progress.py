"""Progress from inside a running experiment point, relayed to whoever shows it.

Why: a sweep's progress bar used to move only when a whole point (a
training) finished, so a sweep of DF-R points sat at "2/4" for minutes. The
training loop now says where it is (``note``: epoch and step) every few
seconds; the executor (``chipsim.experiments.cluster``) installs a
``reporter`` around each point that passes the note on -- straight to the bar
when the point runs in this process, as a Dask event from a worker process.

This module sits below the engine (it imports nothing of chipsim), so the
trainer can call it without knowing about experiments. With no reporter
installed -- a plain ``chipsim run`` -- ``note`` costs one clock read.
"""
from __future__ import annotations

import contextlib
import time

EVERY_S = 2.0            # at most one note per this many seconds (an epoch's end always goes through)

_reporter = None
_last = 0.0


def note(text: str, force: bool = False) -> None:
    """Tell the installed reporter ``text`` (throttled to one per ``EVERY_S`` unless ``force``)."""
    global _last
    if _reporter is None:
        return
    now = time.monotonic()
    if not force and now - _last < EVERY_S:
        return
    _last = now
    try:
        _reporter(text)
    except Exception:        # noqa: BLE001 -- progress must never break a training
        pass


@contextlib.contextmanager
def reporting(reporter):
    """Install ``reporter(text)`` for the block (one point); the previous one is restored afterwards."""
    global _reporter, _last
    before, _reporter, _last = _reporter, reporter, 0.0
    try:
        yield
    finally:
        _reporter = before
