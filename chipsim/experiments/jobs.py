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
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

from .cluster import PointsFailed, check_cluster, open_cluster, run_on_cluster
from ..threads import limit_threads  # noqa: F401  (its home is chipsim.threads; the executors import it from here)

RESULTS_NAME = "points.jsonl"


def load_done(path: str) -> dict:
    """key -> result of every complete line in a results log.

    The last line may be torn (the process was killed while appending it): it
    is cut off the file, so the next append starts on a fresh line, and its
    point is recomputed. Any other damage -- a line that is
    not JSON, not an object, or has no ``key`` -- is one clear error naming
    the file and the line, since a silently skipped line would hide that the
    log is not what chipsim wrote.
    """
    from ..errors import ChipsimError
    done = {}
    if not os.path.exists(path):
        return done
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ChipsimError(f"{path}: cannot read the results log: {exc}") from None
    lines = text.split("\n")
    torn = len(lines) - 1            # the text after the last newline: "" if the log ends cleanly
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fix = "delete that line (or the file) and rerun to recompute it"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == torn:            # an interrupted append: that point is not done; cut it off
                try:
                    os.truncate(path, len(text.encode("utf-8")) - len(line.encode("utf-8")))
                except OSError as exc:
                    raise ChipsimError(f"{path}: cannot cut its torn last line: {exc}") from None
                continue
            raise ChipsimError(f"{path}: line {i + 1} is damaged (not JSON); {fix}") from None
        if not isinstance(rec, dict):
            raise ChipsimError(f"{path}: line {i + 1} is damaged (a JSON {type(rec).__name__}, not a result "
                               f"object); {fix}")
        if not isinstance(rec.get("key"), str):
            raise ChipsimError(f"{path}: line {i + 1} is damaged (a result without its \"key\"); {fix}")
        done[rec["key"]] = rec
        if i == torn:                # complete, but its newline was never written: add it before appending
            try:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write("\n")
            except OSError as exc:
                raise ChipsimError(f"{path}: cannot end its last line: {exc}") from None
    return done


def run_points(fn, points: list, out_dir: str, jobs: int | None = None, progress: bool = True,
               desc: str = "points", cluster=None) -> dict:
    """Evaluate ``fn(point) -> dict`` for every point not already in the log; returns key -> result.

    ``point`` is a dict with a unique ``key``. ``fn`` must be a module-level
    function (it runs in worker processes). ``jobs`` defaults to all cores;
    ``jobs=1`` runs in this process (simpler tracebacks, used by tests).
    ``cluster`` (a Dask scheduler address, ``"local"`` or a ``distributed.Client``;
    see ``chipsim.experiments.cluster``) runs the points on a Dask cluster
    instead; results stream into the same log either way. Raises
    ``PointsFailed`` if a point's workers kept dying, once every other point
    is recorded.
    """
    from tqdm.auto import tqdm

    check_cluster(cluster)
    os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir, RESULTS_NAME)
    done = load_done(log)
    todo = [p for p in points if p["key"] not in done]
    jobs = jobs or os.cpu_count() or 1
    failed = []
    with contextlib.ExitStack() as stack:
        # connect first, so that an unreachable cluster is reported before any progress bar is drawn
        client = stack.enter_context(open_cluster(cluster, min(jobs, len(todo))))\
            if cluster is not None and todo else None
        bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=desc, disable=not progress, unit="pt")
        stack.callback(bar.close)
        fh = stack.enter_context(open(log, "a", encoding="utf-8"))

        def record(p, res):
            rec = {"key": p["key"], "point": p, **res}
            fh.write(json.dumps(rec, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[p["key"]] = rec
            bar.update(1)

        if client is not None:
            failed = run_on_cluster(client, fn, todo, record, desc, say=lambda line: bar.write(line, file=sys.stderr))
        elif jobs == 1 or len(todo) <= 1:
            for p in todo:
                record(p, fn(p))
        else:
            # spawn, not fork: a forked child of a process whose numba/OpenMP or BLAS threads are
            # running can deadlock or abort; a spawned worker starts clean and caps its own threads
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(fn, p): p for p in todo}
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
    if failed:
        raise PointsFailed(f"{desc}: {len(failed)} of {len(points)} points failed because their workers died "
                           f"({', '.join(failed)}); the others are in {log}: rerun with the same output directory "
                           "to retry only the failed ones")
    return {p["key"]: done[p["key"]] for p in points}


def threads_per_job(jobs: int) -> int:
    """Numba/BLAS threads each worker should use so the jobs do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))
