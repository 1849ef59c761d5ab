"""Sweeps on a Dask cluster: a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1.

What is checked: the cluster's points equal the local pool's bit for bit (down to a digest of every
trained weight), a point's thread cap does not change its numbers, a worker that dies loses only
its point (retried, or reported with its key after Dask's allowed failures), bad ``--cluster``
input is one line with exit code 2, and no Dask process outlives the tests.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed
import pytest

from chipsim import cli
from chipsim.experiments import cluster as cluster_mod
from chipsim.experiments.compare import compare
from chipsim.experiments.jobs import RESULTS_NAME, limit_threads, load_done, run_points
from chipsim.experiments.sweep import _train_point, sweep

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")
BIG = str(REPO / "hwconfigs" / "176core_512k.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n"
TIMING = ("seconds", "engine_seconds", "chip_seconds")     # wall-clock fields: the only ones allowed to differ
ALLOWED_FAILURES = 1                      # the test scheduler's; Dask's default is 3


class DaskProcesses:
    """``dask scheduler`` + workers as subprocesses, each in its own process group so that
    teardown can end it with everything it spawned (the nanny's worker process)."""

    def __init__(self, tmp: Path, workers: int = 2):
        self.procs = []
        self.sched_file = tmp / "scheduler.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), str(REPO / "tests")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=str(ALLOWED_FAILURES))
        dask = [sys.executable, "-m", "dask"]
        # --idle-timeout / --death-timeout: even if this test process is killed outright, the scheduler
        # and then its workers exit on their own
        self._start(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--idle-timeout", "300", "--scheduler-file", str(self.sched_file)], env, tmp / "sched.log")
        deadline = time.monotonic() + 60
        while not self.sched_file.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start: " + (tmp / "sched.log").read_text()[-2000:])
            time.sleep(0.1)
        for i in range(workers):
            self._start(dask + ["worker", "--scheduler-file", str(self.sched_file), "--nthreads", "1",
                                "--no-dashboard", "--death-timeout", "60", "--name", f"w{i}",
                                "--local-directory", str(tmp / f"w{i}")], env, tmp / f"w{i}.log")
        self.address = json.loads(self.sched_file.read_text())["address"]
        self.wait_for_workers(workers)

    def _start(self, cmd, env, log: Path):
        with open(log, "w") as fh:
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def wait_for_workers(self, n: int, timeout: float = 60):
        with distributed.Client(self.address, timeout="20s") as c:
            c.wait_for_workers(n, timeout=timeout)

    def stop(self):
        """SIGTERM every process group, SIGKILL what is left after 10 s; True if none is left."""
        for p in self.procs:
            with _no_such_process():
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with _no_such_process():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(_group_alive(p.pid) for p in self.procs):
                return True
            time.sleep(0.1)
        return False


class _no_such_process:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is ProcessLookupError


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    procs = None
    try:
        procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
        yield procs
    finally:
        if procs is not None:
            assert procs.stop(), "a Dask process survived the teardown"


def _tiny_sweep_args(tmp: Path) -> tuple:
    model = tmp / "tiny.yaml"
    model.write_text(TINY)
    return (f"workload.model={model}", "workload.train_limit=128", "workload.test_limit=100", "training.epochs=1",
            "training.batch_size=32")


def _results(out: Path) -> dict:
    """key -> recorded result, without its wall-clock fields."""
    done = load_done(str(out / RESULTS_NAME))
    return {k: {f: v for f, v in rec.items() if f not in TIMING} for k, rec in done.items()}


def test_sweep_on_the_cluster_equals_the_local_pool(dask_cluster, tmp_path, capsys):
    """Noise and 32-bit points (float BLAS, whose sums depend on its thread count), at two --jobs values:
    jobs=2 is the spawn pool (1 thread per point on 2 cores), jobs=1 runs in this process on every core;
    the cluster's workers (1 Dask thread each) must honour the point's thread cap either way."""
    over = _tiny_sweep_args(tmp_path)
    for jobs, noise, n in ((2, "impulse", 4), (1, "", 2)):
        kw = dict(noise=tuple(filter(None, [noise])), levels=(0, 5), bits=(32,), overrides=over, progress=False)
        sweep(SMALL, ("bp", "df-o"), out_dir=str(tmp_path / f"local{jobs}"), jobs=jobs, **kw)
        argv = ["sweep", SMALL, "--noise", noise, "--levels", "0,5", "--bits", "32", "--rules", "bp,df-o",
                "--jobs", str(jobs), "--out", str(tmp_path / f"cluster{jobs}"), "--cluster", dask_cluster.address]
        for o in over:
            argv += ["--set", o]
        assert cli.main(argv) == 0
        local, remote = _results(tmp_path / f"local{jobs}"), _results(tmp_path / f"cluster{jobs}")
        assert len(local) == n and local == remote
        # the digests are of real, different trainings, not a constant
        assert len({r["weights_sha256"] for r in remote.values()}) == n
    assert "| df-o |" in capsys.readouterr().out
    # resume: a rerun on the cluster finds every point in the log and trains nothing
    log = tmp_path / "cluster1" / RESULTS_NAME
    mtime = os.path.getmtime(log)
    sweep(SMALL, ("bp", "df-o"), out_dir=str(tmp_path / "cluster1"), jobs=1, cluster=dask_cluster.address, **kw)
    assert os.path.getmtime(log) == mtime


def test_integer_points_do_not_depend_on_the_thread_cap(tmp_path):
    """At 4 and 8 bits every GEMM is exact, so the numba and BLAS thread counts cannot change a number
    (at 32 bits OpenBLAS's sums do depend on its thread count: the cluster honours the point's cap)."""
    over = list(_tiny_sweep_args(tmp_path))
    for bits in ("4", "8"):
        base = {"key": "k", "rule": "df-o", "seed": 0, "config": SMALL, "test_noises": ["impulse"], "levels": [5],
                "overrides": over + ["workload.rule=df-o", f"precision.weight_bits={bits}",
                                     f"precision.activation_bits={bits}"]}
        try:
            one, two = (_train_point({**base, "threads": n}) for n in (1, 2))
        finally:
            limit_threads(os.cpu_count() or 1)
        assert one["weights_sha256"] == two["weights_sha256"] and one["accuracy"] == two["accuracy"]


def test_a_dying_worker_loses_only_its_point(dask_cluster, tmp_path, capsys):
    dask_cluster.wait_for_workers(2)
    from cluster_points import die_as_told
    points = [{"key": "fine", "die": "never"},
              {"key": "dies-once", "die": "once", "marker": str(tmp_path / "died")},
              {"key": "always-dies", "die": "always"}]
    with pytest.raises(cluster_mod.PointsFailed, match=r"1 of 3 points failed.*always-dies.*rerun"):
        run_points(die_as_told, points, str(tmp_path), progress=False, desc="test", cluster=dask_cluster.address)
    err = capsys.readouterr().err
    # at least allowed-failures + 1 deaths: more when a death was charged to it while it only waited behind
    # another point (then it is resubmitted, and that death does not count)
    deaths = re.search(r"test: point always-dies failed: (\d+) workers died while running it", err)
    assert deaths and int(deaths[1]) >= ALLOWED_FAILURES + 1
    assert "dies-once" not in err and "fine" not in err
    done = load_done(str(tmp_path / RESULTS_NAME))
    assert set(done) == {"fine", "dies-once"}                 # retried on a fresh worker, then recorded
    assert done["dies-once"]["value"] == len("dies-once") and (tmp_path / "died").exists()
    # and the nannies brought the killed workers back
    dask_cluster.wait_for_workers(2)


def test_compare_on_a_local_cluster_equals_in_process(tmp_path):
    """--cluster local (one worker process: jobs=1) against the same points run in this process: the engine's
    step and the chip's costs, bit for bit. Without the framework measurement (``device=None``): PyTorch's
    allocator peak depends on what the measuring process allocated before (a clean CI run saw the
    checkpointed BP peak differ by 512 bytes between the two processes), so it is not a function of the
    point alone."""
    kw = dict(overrides=("learning.negatives=1",), width=8, progress=False, jobs=1, device=None)
    compare(BIG, ("bp", "df-r"), (3,), out_dir=str(tmp_path / "here"), **kw)
    compare(BIG, ("bp", "df-r"), (3,), out_dir=str(tmp_path / "lc"), cluster="local", **kw)
    here, lc = _results(tmp_path / "here"), _results(tmp_path / "lc")
    assert len(here) == 2 and here == lc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the signal mask from /proc")
def test_local_workers_start_with_sigint_blocked_and_this_process_keeps_it(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: a worker still importing when it lands printed a
    KeyboardInterrupt traceback. Workers start with SIGINT blocked (inherited from the thread that starts
    the cluster); this process's main thread must keep it, or a Ctrl-C would be lost."""
    import threading
    sys.path.insert(0, str(Path(__file__).parent))
    import cluster_points
    points = [{"key": "a"}, {"key": "b"}]
    res = run_points(cluster_points.blocked_signals, points, str(tmp_path / "out"), jobs=2, progress=False,
                     cluster="local")
    assert {res[k]["pid"] for k in ("a", "b")} != {os.getpid()}
    assert all(int(signal.SIGINT) in res[k]["blocked"] for k in ("a", "b"))
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert threading.current_thread() is threading.main_thread()


def test_bad_cluster_input_is_one_line(tmp_path, capsys, monkeypatch):
    base = ["sweep", SMALL, "--bits", "4", "--rules", "bp", "--out", str(tmp_path)]
    assert cli.main(base + ["--cluster", "my laptop"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("chipsim: error: --cluster 'my laptop': expected 'local' or a Dask scheduler address like "
                   "tcp://host:8786")
    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT_S", 1)
    assert cli.main(base + ["--cluster", "tcp://127.0.0.1:9"]) == 2       # nothing listens on port 9
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cluster tcp://127.0.0.1:9: no Dask scheduler answered within 1 s" in err[0]
    monkeypatch.setattr(cluster_mod, "WORKER_WAIT_S", 1)
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as empty:
        assert cli.main(base + ["--cluster", empty.scheduler_address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no worker joined the scheduler within 1 s; start one with `dask worker" in err[0]


def test_progress_notes_travel_from_local_workers_and_from_this_process(tmp_path):
    """The one executor: --jobs 2 is a LocalCluster whose workers relay the training loop's notes (what the
    progress bar shows while long points run); --jobs 1 runs here and shows them the same way."""
    from cluster_points import notes
    seen, recorded = [], {}
    points = [{"key": "a", "notes": 3}, {"key": "b", "notes": 2}]
    with cluster_mod.open_cluster(None, 2) as client:
        assert len(client.nthreads()) == 2 and set(client.nthreads().values()) == {1}
        failed = cluster_mod.run_on_cluster(client, notes, points, lambda p, r: recorded.update({p["key"]: r}),
                                            "t", show=lambda key, text: seen.append((key, text)))
    assert failed == [] and {k: r["value"] for k, r in recorded.items()} == {"a": 3, "b": 2}
    assert recorded["a"]["pid"] != os.getpid()                    # computed in worker processes
    # events travel asynchronously: each worker's notes arrive, in order per point
    assert [t for k, t in seen if k == "a"] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert [t for k, t in seen if k == "b"] == ["epoch 1/2", "epoch 2/2"]
    here = []
    assert cluster_mod.run_in_process(notes, {"key": "c", "notes": 2}, lambda k, t: here.append((k, t)))["pid"] \
        == os.getpid()
    assert here == [("c", "epoch 1/2"), ("c", "epoch 2/2")]
