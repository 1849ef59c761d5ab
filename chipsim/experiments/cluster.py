"""Run experiment points on a Dask cluster (``--cluster ADDRESS`` or ``--cluster local``).

Why Dask: a sweep's points are independent trainings; once one machine's
process pool is not enough, ``dask scheduler`` and ``dask worker`` spread
them over any number of machines with nothing else to install. This module
is only the backend: ``jobs.run_points`` still owns the results log, resume
and the progress bar, so a point that ran on a worker is recorded exactly as
one that ran in the local pool.

What it promises, and how:

* **The same numbers as locally.** A worker runs the same point function on
  the same point dict, its thread cap (``threads``: cores // jobs of the
  machine that started the sweep) included. That cap is honoured, never
  replaced by the worker's own thread count: integer GEMMs are exact under
  any BLAS, but float32 ones (32-bit points) are not, and OpenBLAS's sums
  change with its thread count (a 32-bit DF-O training ends with different
  weights at 1 and 2 BLAS threads). ``tests/test_cluster.py`` checks it.
* **One point per worker process at a time.** The engine keeps process-wide
  state (numba and BLAS thread pools, the work log of a traced step), so a
  worker started with several threads still runs its points one after
  another; start workers with ``--nthreads 1`` and one per core.
* **A dying worker loses only its point.** Dask's scheduler re-runs a task
  whose worker died on another worker, and fails it with ``KilledWorker``
  once ``distributed.scheduler.allowed-failures`` (default 3) workers have
  died while it was *assigned* to them. That count also charges a point
  that was only waiting on the worker behind the one that crashed it (or
  whose finished result was still there). So each run of a point announces
  its start (a Dask event), and when Dask gives up on a point the client
  counts the deaths that point was actually running in: under the limit,
  it resubmits the point; at the limit, the point is reported in one line
  with its key and recorded nowhere, and ``jobs.run_points`` raises
  ``PointsFailed`` once every other point is done. The client also keeps no
  more points in flight than the cluster has threads, so a worker seldom
  holds more than the point it is running.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid

from ..errors import ChipsimError, ConfigError

LOCAL = "local"
CONNECT_TIMEOUT_S = 10   # a scheduler that does not answer within this is reported, not waited for
WORKER_WAIT_S = 60       # how long a sweep waits for the first worker to join the scheduler
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?([^\s:/\[\]]+|\[[0-9a-fA-F:.]+\]):\d+$")   # host:port, [v6]:port


class PointsFailed(ChipsimError):
    """Some points could not be computed (their workers died); the others are recorded."""


def check_cluster(cluster) -> None:
    """Raise ConfigError unless ``cluster`` is None, ``"local"``, a scheduler address or a ``distributed.Client``."""
    if cluster is None or not isinstance(cluster, str):
        return
    if cluster != LOCAL and not _ADDRESS.match(cluster):
        raise ConfigError(f"--cluster {cluster!r}: expected 'local' or a Dask scheduler address like "
                          "tcp://host:8786")


@contextlib.contextmanager
def open_cluster(cluster, jobs: int | None = None):
    """Yield a ``distributed.Client`` for ``cluster`` (None yields None: the local process pool).

    ``"local"`` starts a ``LocalCluster`` of ``jobs`` worker processes (default:
    all cores) for the duration of the block; an address connects to a running
    scheduler; a ``Client`` is yielded as it is and left open (the caller owns it).
    """
    check_cluster(cluster)
    if cluster is None:
        yield None
        return
    if not isinstance(cluster, str):
        yield cluster
        return
    import dask
    from distributed import Client
    if cluster == LOCAL:
        from distributed import LocalCluster

        from .jobs import threads_per_job
        jobs = jobs or os.cpu_count() or 1
        # one Dask thread per worker: one point at a time; the point itself caps its numba and BLAS
        # threads. A nanny sets these (to 1 by default) before its worker starts: start at the points' cap.
        threads = threads_per_job(jobs)
        blas = {v: threads for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": blas}), \
                LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                             # the scheduler serves HTTP (health, metrics) in any case: on a free port
                             dashboard_address=":0", silence_logs=logging.ERROR) as local, Client(local) as client:
            yield client
        return
    try:
        client = Client(cluster, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster {cluster}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                          f"({type(exc).__name__}); start one with `dask scheduler`") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ConfigError(f"--cluster {cluster}: no worker joined the scheduler within {WORKER_WAIT_S} s; "
                              f"start one with `dask worker {cluster}`") from None
        yield client


_ONE_POINT_AT_A_TIME = threading.Lock()
START_TOPIC = "chipsim-point-start"   # Dask event topic: the task key of each run of a point, as it starts
MAX_SUBMISSIONS = 5                   # per point: ends the resubmissions even if start events were lost


def _run_point(fn, point: dict, task_key: str):
    """Worker side: ``fn(point)``, one point at a time per worker process, its start logged first."""
    from distributed import get_worker
    with _ONE_POINT_AT_A_TIME:
        get_worker().log_event(START_TOPIC, task_key)
        return fn(point)


def _in_flight_limit(client) -> int:
    """Points to keep submitted: one per worker thread the cluster has now (workers may come and go)."""
    return max(1, sum(client.nthreads().values()))


def _runs_started(client, task_key: str) -> int:
    """How many times the task ``task_key`` started on a worker (every such run died, if Dask gave up on it)."""
    return sum(1 for _, msg in client.get_events(START_TOPIC) if msg == task_key)


def run_on_cluster(client, fn, todo: list, record, desc: str, say=print) -> list:
    """Compute ``fn(p)`` for every point of ``todo`` on ``client``'s cluster, calling ``record(p, result)``
    as each completes. Returns the keys of the points that failed because the workers running them died
    (each reported by one ``say`` line); any other exception of a point cancels the rest and is raised.

    Results are fetched as soon as each point finishes and released once recorded: a result left on
    its worker would be lost, and recomputed, if that worker died while running the next point.
    """
    from distributed import KilledWorker, as_completed
    run = uuid.uuid4().hex[:8]
    queue = list(reversed(todo))
    running = {}                      # future -> point
    deaths = {}                       # point key -> deaths of workers while they were running it
    submissions = {}                  # point key -> times submitted
    done = as_completed(with_results=True, raise_errors=False)
    failed = []

    def submit(p):
        n = submissions[p["key"]] = submissions.get(p["key"], 0) + 1
        key = f"chipsim-{desc}-{p['key']}-{run}-{n}"
        fut = client.submit(_run_point, fn, p, key, key=key, pure=False)
        running[fut] = p
        done.add(fut)

    def submit_more():
        limit = _in_flight_limit(client)
        while queue and len(running) < limit:
            submit(queue.pop())

    try:
        submit_more()
        for fut, result in done:
            p = running.pop(fut)
            if fut.status == "finished":
                record(p, result)
            elif fut.status == "error" and isinstance(fut.exception(), KilledWorker):
                exc = fut.exception()
                n = deaths[p["key"]] = deaths.get(p["key"], 0) + _runs_started(client, fut.key)
                if n <= exc.allowed_failures and submissions[p["key"]] < MAX_SUBMISSIONS:
                    submit(p)         # some of those deaths were a neighbour's: run it again
                else:
                    say(f"{desc}: point {p['key']} failed: {n} workers died while running it "
                        f"(last {exc.last_worker.address}); not recorded")
                    failed.append(p["key"])
            elif fut.status == "error":
                fut.result()          # re-raises the point's own exception, with its traceback
            else:                     # cancelled: the scheduler went away, or someone cancelled it
                raise ChipsimError(f"{desc}: the cluster dropped point {p['key']} ({fut.status}); the points "
                                   "finished so far are recorded: rerun with the same output directory to resume")
            fut.release()
            submit_more()
    finally:
        if running:
            client.cancel(list(running))
    return failed
