"""Run independent experiment points in parallel, streaming each result to disk.

Why a results *log* (JSON lines) rather than one file written at the end: a
sweep of trainings takes many minutes; if it is interrupted, the points that
finished are on disk and a rerun with the same output directory skips them.
Each point has a stable ``key``; a line is appended (and flushed) only when
its point has finished, so a half-written point never counts as done.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading

from .. import rundir
from ..atomic import make_dirs
from ..errors import ChipsimError
from ..safe_files import open_append, read_bytes, truncate_to
from ..threads import limit_threads  # noqa: F401  (its home is chipsim.threads; the executors import it from here)
from .cluster import PointsFailed, check_cluster, open_cluster, run_in_process, run_on_cluster, threads_per_job

__all__ = ["RESULTS_NAME", "load_done", "run_points", "threads_per_job", "limit_threads", "PointsFailed",
           "number"]

RESULTS_NAME = "points.jsonl"
MAX_LOG_BYTES = 256 << 20     # a full reproduce's largest log is under 1 MB
MAX_LINE_CHARS = 4 << 20
MAX_DEPTH = 32                # nesting of a logged result (chipsim writes at most ~6)
HEARTBEAT_S = 5.0             # the progress bar is redrawn at least this often while points run


def _check_value(v, where: str, depth: int = 0, key: str = "") -> None:
    """A value read back from a results log: JSON data of bounded depth, finite numbers, accuracies in [0, 1],
    times and counts >= 0. Raises ValueError naming the field."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise ValueError(f"{where} is {v}, not a finite number")
        low = key.lower()
        if ("accuracy" in low or low == "per_block") and not 0 <= v <= 1:
            raise ValueError(f"{where} is {v}; an accuracy lies in [0, 1]")
        if (low.endswith("seconds") or low.endswith("_samples") or low.endswith("bytes")) and v < 0:
            raise ValueError(f"{where} is {v}; it cannot be negative")
        return
    if isinstance(v, list):
        for n, x in enumerate(v):
            _check_value(x, f"{where}[{n}]", depth + 1, key)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            # an accuracy table's keys are conditions ("clean", "shot:3"): its values inherit "accuracy"
            _check_value(x, f"{where}.{k}", depth + 1, key if "accuracy" in key.lower() else str(k))
        return
    raise ValueError(f"{where} is a {type(v).__name__}")


def _reject_constant(name):
    raise ValueError(f"{name} is not a finite number")


def load_done(path: str) -> dict:
    """key -> result of every complete line in a results log.

    The log is data from whoever wrote the directory: it is read only as a
    regular file (no symlink, FIFO or device; at most ``MAX_LOG_BYTES``), and
    every line must be a JSON object with a string ``key`` whose numbers are
    finite, accuracies in [0, 1], times and sizes >= 0, nested at most
    ``MAX_DEPTH`` deep. The last line may be torn (the process was killed while
    appending it): it is cut off the file, so the next append starts on a fresh
    line, and its point is recomputed. Any other damage is one clear error
    naming the file and the line, since a silently skipped line would hide that
    the log is not what chipsim wrote.
    """
    done = {}
    if not os.path.lexists(path):
        return done
    raw = read_bytes(path, "results log", MAX_LOG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChipsimError(f"{path}: cannot read the results log: not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start})") from None
    lines = text.split("\n")
    torn = len(lines) - 1            # the text after the last newline: "" if the log ends cleanly
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fix = "delete that line (or the file) and rerun to recompute it"
        if len(line) > MAX_LINE_CHARS:
            raise ChipsimError(f"{path}: line {i + 1} is damaged (longer than {MAX_LINE_CHARS:,} characters); {fix}")
        try:
            rec = json.loads(line, parse_constant=_reject_constant)
        except RecursionError:
            raise ChipsimError(f"{path}: line {i + 1} is damaged (nested too deep); {fix}") from None
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError) and i == torn:
                # an interrupted append: that point is not done; cut it off
                truncate_to(path, len(text.encode("utf-8")) - len(line.encode("utf-8")), "results log")
                continue
            what = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ChipsimError(f"{path}: line {i + 1} is damaged ({what}); {fix}") from None
        if not isinstance(rec, dict):
            raise ChipsimError(f"{path}: line {i + 1} is damaged (a JSON {type(rec).__name__}, not a result "
                               f"object); {fix}")
        if not isinstance(rec.get("key"), str) or not 0 < len(rec["key"]) <= 500:
            raise ChipsimError(f"{path}: line {i + 1} is damaged (a result without its \"key\"); {fix}")
        try:
            _check_value(rec, "result")
        except ValueError as exc:
            raise ChipsimError(f"{path}: line {i + 1} ({rec['key'][:80]}) is damaged: {exc}; {fix}") from None
        done[rec["key"]] = rec
        if i == torn:                # complete, but its newline was never written: add it before appending
            with open_append(path, "results log") as fh:
                fh.write("\n")
    return done


def _check_reused(log: str, points: list, done: dict, check) -> None:
    """Run ``check(point, record)`` on every logged record this command reuses: a line of the wrong shape
    (a crafted or foreign ``points.jsonl`` that passed ``load_done``'s checks) is one error line naming the
    log and the point, never a KeyError deep in a table."""
    if check is None:
        return
    for p in points:
        rec = done.get(p["key"])
        if rec is None:
            continue
        try:
            check(p, rec)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else str(exc)[:100]
            raise ChipsimError(f"{log}: the logged result of {p['key'][:80]} is not one this command wrote "
                               f"({what}); delete that line (or the file) and rerun to recompute it") from None


def number(v, lo: float | None = None, hi: float | None = None) -> float:
    """A logged number (int or float, not bool), within [lo, hi]; else TypeError/ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{v!r} is not a number")
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{v!r} is out of range")
    return v


def _short(key: str) -> str:
    """A point key without its settings digest: ``bp-s0-bits4-856e0f86168a`` -> ``bp-s0-bits4``."""
    head, _, tail = key.rpartition("-")
    return head if head and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else key


class _Bar:
    """The tqdm bar, the running points' latest notes on it, and a heartbeat that redraws it every few
    seconds (its elapsed time moves) so that no command sits silent while long points run."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="pt")
        self.enabled = enabled
        self.notes = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None
        if enabled:
            self.thread = threading.Thread(target=self._beat, name="chipsim-progress", daemon=True)
            self.thread.start()

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            with self.lock, contextlib.suppress(Exception):
                self.bar.refresh()

    def show(self, key: str, text: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.notes[key] = text
            self._render()

    def _render(self) -> None:
        shown = "; ".join(f"{_short(k)}: {t}" for k, t in list(self.notes.items())[-2:])
        with contextlib.suppress(Exception):
            self.bar.set_postfix_str(shown[:120], refresh=False)

    def done(self, key: str) -> None:
        with self.lock:
            self.notes.pop(key, None)
            self._render()
            self.bar.update(1)

    def write(self, line: str) -> None:
        with self.lock:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=1)
        with self.lock:
            self.bar.close()


def run_points(fn, points: list, out_dir: str, jobs: int | None = None, progress: bool = True,
               desc: str = "points", cluster=None, check=None) -> dict:
    """Evaluate ``fn(point) -> dict`` for every point not already in the log; returns key -> result.

    ``point`` is a dict with a unique ``key``. ``fn`` must be a module-level
    function (it runs in worker processes). ``jobs`` defaults to all cores;
    ``jobs=1`` (or a single point to compute) runs in this process (simpler
    tracebacks, used by tests); more start a Dask ``LocalCluster`` of that many
    worker processes. ``cluster`` (a Dask scheduler address, ``"local"`` or a
    ``distributed.Client``; see ``chipsim.experiments.cluster``) runs the points
    on that cluster instead; results stream into the same log either way.
    ``out_dir`` is held (``rundir.owned``) while the points run: a second
    command on the same directory is refused. Raises ``PointsFailed`` if a
    point's workers kept dying, once every other point is recorded.

    ``check(point, record)`` vets each record reused from the log (raising
    KeyError, TypeError or ValueError for one this command could not use).
    The returned records carry the point as asked now (``"point"``), not as
    the log stored it: a logged line is trusted for its results only.
    """
    check_cluster(cluster)
    make_dirs(out_dir)
    log = os.path.join(out_dir, RESULTS_NAME)
    jobs = jobs or os.cpu_count() or 1
    failed = []
    with rundir.owned(out_dir), contextlib.ExitStack() as stack:
        done = load_done(log)
        _check_reused(log, points, done, check)
        todo = [p for p in points if p["key"] not in done]
        # connect first, so that an unreachable cluster is reported before any progress bar is drawn
        parallel = todo and (cluster is not None or (jobs > 1 and len(todo) > 1))
        client = stack.enter_context(open_cluster(cluster, min(jobs, len(todo)))) if parallel else None
        bar = _Bar(len(points), len(points) - len(todo), desc, progress)
        stack.callback(bar.close)
        fh = stack.enter_context(open_append(log, "results log"))

        def record(p, res):
            rec = {"key": p["key"], "point": p, **res}
            fh.write(json.dumps(rec, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[p["key"]] = rec
            bar.done(p["key"])

        if client is not None:
            failed = run_on_cluster(client, fn, todo, record, desc, say=bar.write, show=bar.show)
        else:
            for p in todo:
                record(p, run_in_process(fn, p, bar.show))
    if failed:
        raise PointsFailed(f"{desc}: {len(failed)} of {len(points)} points failed because their workers died "
                           f"({', '.join(failed)}); the others are in {log}: rerun with the same output directory "
                           "to retry only the failed ones")
    return {p["key"]: {**done[p["key"]], "point": p} for p in points}
