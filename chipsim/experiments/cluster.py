"""The one executor of experiment points: a Dask cluster, local (``--jobs N``) or remote (``--cluster ADDRESS``).

Why one path: the local process pool and the Dask backend used to be two
executors with two sets of failure modes. Now ``--jobs N`` (N > 1) starts a
Dask ``LocalCluster`` of N worker processes with one thread each, and
``--cluster ADDRESS`` connects to a running scheduler; both run the same
submission loop (``run_on_cluster``). ``--jobs 1`` (or a single point) runs
in this process, with no executor at all: simpler tracebacks, used by tests.
This module is only the executor: ``jobs.run_points`` owns the results log,
resume and the progress bar, and this module imports nothing of it.

What it promises, and how:

* **The same numbers everywhere.** A worker runs the same point function on
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
* **Local workers die with their parent.** Besides Dask's own pipe (a worker
  exits when the process that spawned it closes it), a local worker asks the
  kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)`` on
  Linux): that works even while a numba kernel holds the GIL, and a
  ``kill -9`` of ``chipsim sweep --jobs 2`` leaves no worker behind.
* **Progress from inside a point.** The training loop's notes
  (``chipsim.progress``: epoch and step) travel from the worker as Dask
  events and are shown on the progress bar, so no command sits silent while
  long points run.
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
import ctypes
import logging
import os
import re
import signal
import sys
import threading
import uuid

from .. import progress
from ..errors import ChipsimError, ConfigError

LOCAL = "local"
CONNECT_TIMEOUT_S = 10   # a scheduler that does not answer within this is reported, not waited for
WORKER_WAIT_S = 60       # how long a sweep waits for the first worker to join the scheduler
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?([^\s:/\[\]]+|\[[0-9a-fA-F:.]+\]):\d+$")   # host:port, [v6]:port


class PointsFailed(ChipsimError):
    """Some points could not be computed (their workers died); the others are recorded."""


def threads_per_job(jobs: int) -> int:
    """Numba/BLAS threads each worker should use so the jobs do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def check_cluster(cluster) -> None:
    """Raise ConfigError unless ``cluster`` is None, ``"local"``, a scheduler address or a ``distributed.Client``."""
    if cluster is None:
        return
    if not isinstance(cluster, str):
        if not any(c.__name__ == "Client" and c.__module__.startswith("distributed") for c in type(cluster).__mro__):
            raise ConfigError(f"cluster {type(cluster).__name__}: expected 'local', a Dask scheduler address "
                              "like tcp://host:8786 or a distributed.Client")
        return
    if cluster != LOCAL and not _ADDRESS.match(cluster):
        raise ConfigError(f"--cluster {cluster!r}: expected 'local' or a Dask scheduler address like "
                          "tcp://host:8786")


@contextlib.contextmanager
def open_cluster(cluster, jobs: int | None = None):
    """Yield a ``distributed.Client`` for ``cluster``.

    ``None`` or ``"local"`` starts a ``LocalCluster`` of ``jobs`` worker
    processes (default: all cores), one thread each, for the duration of the
    block; an address connects to a running scheduler; a ``Client`` is yielded
    as it is and left open (the caller owns it).
    """
    check_cluster(cluster)
    if cluster is not None and not isinstance(cluster, str):
        yield cluster
        return
    import dask
    from distributed import Client
    if cluster is None or cluster == LOCAL:
        from distributed import LocalCluster
        jobs = jobs or os.cpu_count() or 1
        # one Dask thread per worker: one point at a time; the point itself caps its numba and BLAS
        # threads. A nanny sets these (to 1 by default) before its worker starts: start at the points' cap.
        threads = threads_per_job(jobs)
        blas = {v: threads for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": blas,
                              # a point is minutes of numba code: no GIL warnings, no work stealing mid-point
                              "distributed.admin.tick.limit": "1h", "distributed.scheduler.work-stealing": False}):
            with children_start_deaf_to_ctrl_c():
                local = LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True,
                    # the scheduler serves HTTP (health, metrics) in any case: on a free port. Worker logs
                    # stay quiet: a point's own error reaches this process as its exception; what a worker
                    # logs as its parent goes away (a Ctrl-C, a kill) is noise on the terminal
                    dashboard_address=":0", silence_logs=logging.CRITICAL)
            with local, Client(local) as client:
                client.chipsim_parent = os.getpid()          # its workers are this process's children
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


@contextlib.contextmanager
def children_start_deaf_to_ctrl_c():
    """Within the block this thread blocks SIGINT, and so does every thread it starts (the LocalCluster's
    event loop, which keeps the mask after the block) and every process those start: a signal mask is
    inherited by new threads and survives fork and exec.

    Why: a terminal's Ctrl-C goes to the whole process group. A worker process still importing when it
    lands printed a ``KeyboardInterrupt`` traceback over chipsim's one-line resume hint. The nannies and
    workers start with SIGINT blocked (and ignore it once chipsim is imported,
    ``chipsim._ignore_ctrl_c_in_a_spawned_worker``); only this process answers Ctrl-C. It is not lost: this
    thread's mask is restored on leaving the block, and a Ctrl-C pressed meanwhile is delivered then.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker, when it first starts, blocks SIGINT around its own spawn and then
    # *unblocks* it in the calling thread, whatever the mask was: start it now, so that no later start of it
    # (a Queue made on the cluster's thread) undoes the block
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_ONE_POINT_AT_A_TIME = threading.Lock()
START_TOPIC = "chipsim-point-start"   # Dask event topic: the task key of each run of a point, as it starts
PROGRESS_TOPIC = "chipsim-point-progress"   # {"key": point key, "text": the training's note}
MAX_SUBMISSIONS = 5                   # per point: ends the resubmissions even if start events were lost
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this process die with ``parent`` (the chipsim process that started the local cluster).

    ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill this process the moment its parent exits, even
    a ``kill -9`` of it, and even while a numba kernel holds the GIL (Dask's own watcher thread needs the
    GIL). If the parent is already gone (it died before this call), exit now. Not on Linux: Dask's watcher.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _run_point(fn, point: dict, task_key: str, parent: int | None = None):
    """Worker side: ``fn(point)``, one point at a time per worker process, its start logged first, the
    training's progress notes sent as events."""
    from distributed import get_worker
    if parent is not None:
        die_with_parent(parent)
    worker = get_worker()
    key = point.get("key", "")
    with _ONE_POINT_AT_A_TIME:
        worker.log_event(START_TOPIC, task_key)
        with progress.reporting(lambda text: worker.log_event(PROGRESS_TOPIC, {"key": key, "text": text})):
            return fn(point)


def run_in_process(fn, point: dict, show=None):
    """``fn(point)`` here, its progress notes passed to ``show(key, text)``: the ``--jobs 1`` path."""
    key = point.get("key", "")
    with progress.reporting((lambda text: show(key, text)) if show else None):
        return fn(point)


def _in_flight_limit(client) -> int:
    """Points to keep submitted: one per worker thread the cluster has now (workers may come and go)."""
    return max(1, sum(client.nthreads().values()))


def _runs_started(client, task_key: str) -> int:
    """How many times the task ``task_key`` started on a worker (every such run died, if Dask gave up on it)."""
    return sum(1 for _, msg in client.get_events(START_TOPIC) if msg == task_key)


def run_on_cluster(client, fn, todo: list, record, desc: str, say=print, show=None) -> list:
    """Compute ``fn(p)`` for every point of ``todo`` on ``client``'s cluster, calling ``record(p, result)``
    as each completes. Returns the keys of the points that failed because the workers running them died
    (each reported by one ``say`` line); any other exception of a point cancels the rest and is raised.
    ``show(key, text)`` receives the running points' progress notes.

    Results are fetched as soon as each point finishes and released once recorded: a result left on
    its worker would be lost, and recomputed, if that worker died while running the next point.
    """
    from distributed import KilledWorker, as_completed
    run = uuid.uuid4().hex[:8]
    parent = getattr(client, "chipsim_parent", None)
    queue = list(reversed(todo))
    running = {}                      # future -> point
    deaths = {}                       # point key -> deaths of workers while they were running it
    submissions = {}                  # point key -> times submitted
    done = as_completed(with_results=True, raise_errors=False)
    failed = []

    def submit(p):
        n = submissions[p["key"]] = submissions.get(p["key"], 0) + 1
        key = f"chipsim-{desc}-{p['key']}-{run}-{n}"
        fut = client.submit(_run_point, fn, p, key, parent, key=key, pure=False)
        running[fut] = p
        done.add(fut)

    def submit_more():
        limit = _in_flight_limit(client)
        while queue and len(running) < limit:
            submit(queue.pop())

    def relay(event):
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if show is not None and isinstance(msg, dict):
            show(str(msg.get("key", "")), str(msg.get("text", "")))

    subscribed = False
    if show is not None:
        with contextlib.suppress(Exception):          # an old scheduler without topics: no relayed notes
            client.subscribe_topic(PROGRESS_TOPIC, relay)
            subscribed = True
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
            with contextlib.suppress(Exception):
                client.cancel(list(running))
        if subscribed:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
    return failed
