"""Every bad input is one clear error: the corpus, run through the real command line.

Each case of ``corpus_config.CASES`` (configs, model files, ``--set``) and
``corpus_commands.CASES`` (arguments, output paths, checkpoints, data files,
results logs) runs ``python -m chipsim.cli ...`` in a subprocess, two at a
time, and must end with

* exit code 2 and no Python traceback;
* at most 3 lines on stderr (config cases: exactly the one error line), the
  last one ``chipsim: error: ...``, at most ~2,000 characters however large
  the input;
* the file or argument named, and the fragments the case expects (the key
  path, what is allowed).

One test runs the whole table (so the subprocesses can overlap) and reports
every failing case at once; ``CHIPSIM_CORPUS=id,id`` runs only those cases.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import corpus_commands
import corpus_config

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "hwconfigs" / "44core_4bit.yaml"
ALL = [*corpus_config.CASES, *corpus_commands.CASES]
PARALLEL = 2
MAX_STDERR_CHARS = 2200


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The shared files cases refer to: the tiny model and a checkpoint of it after two epochs."""
    from chipsim.config import load_config
    from chipsim.data import load_dataset
    from chipsim.engine.training.trainer import Trainer
    base = tmp_path_factory.mktemp("corpus-shared")
    tiny = base / "tiny.yaml"
    tiny.write_text(corpus_commands.TINY_MODEL)
    cfg = load_config(str(PRESET), (f"workload.model={tiny}",) + corpus_commands.TINY)
    wl = cfg.hw.workload
    data = load_dataset(wl.dataset, train_limit=wl.train_limit, test_limit=wl.test_limit, seed=0)
    trainer = Trainer(cfg.hw, cfg.model, data)
    trainer.run(progress=False, checkpoint_dir=str(base))
    # compile (and write numba's on-disk cache for) every kernel a map runs, here without limits: a case that
    # fills the disk on purpose (RLIMIT_FSIZE) must not fail on a fresh checkout because numba, not chipsim,
    # could not write its cache
    import chipsim
    chipsim.map(str(PRESET), (f"workload.model={tiny}",) + corpus_commands.TINY, write=False, progress=False)
    return {"preset": str(PRESET), "tiny": str(tiny), "ckpt": str(base / "checkpoint.npz"),
            "ro": corpus_commands.readonly_dir(base)}


def _limits(fsize):
    def apply():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


def _check(case, root: Path, env: dict) -> tuple:
    """Run one case; returns (case id, seconds, problem or None)."""
    tmp = root / case.id
    tmp.mkdir()
    prepared = case.prepare(tmp, env) if isinstance(case, corpus_commands.CommandCase) else case.prepare(tmp)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "chipsim.cli", *prepared.argv], cwd=tmp, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, preexec_fn=_limits(prepared.fsize),
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    seconds = time.perf_counter() - t0
    err = proc.stderr
    lines = err.splitlines()
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit code {proc.returncode}")
    if "Traceback" in err:
        problems.append("a traceback")
    if not lines or not lines[-1].startswith("chipsim: error: ") and "error:" not in lines[-1]:
        problems.append("no error line last")
    if len(lines) > (1 if prepared.one_line else 3):
        problems.append(f"{len(lines)} lines on stderr")
    if len(err) > MAX_STDERR_CHARS:
        problems.append(f"{len(err):,} characters on stderr")
    if prepared.shown not in err:
        problems.append(f"does not name {prepared.shown!r}")
    missing = [f for f in prepared.expect if f not in err]
    if missing:
        problems.append(f"misses {missing}")
    if prepared.stdout_empty and proc.stdout:
        problems.append("writes to stdout")
    if not problems:
        shutil.rmtree(tmp, ignore_errors=True)
    return case.id, seconds, ("; ".join(problems) + f"\n      stderr: {err[-600:]!r}") if problems else None


def test_corpus_is_large_and_ids_unique():
    assert len(ALL) >= 100, len(ALL)
    assert len({c.id for c in ALL}) == len(ALL)


def test_every_bad_input_is_one_clear_error(env, tmp_path):
    only = {s for s in os.environ.get("CHIPSIM_CORPUS", "").split(",") if s}
    cases = [c for c in ALL if not only or c.id in only]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda c: _check(c, tmp_path, env), cases))
    failed = [f"  {cid} ({s:.1f} s): {why}" for cid, s, why in results if why]
    slowest = sorted(results, key=lambda r: -r[1])[:3]
    print(f"\n{len(cases)} bad inputs in {time.perf_counter() - t0:.0f} s, {PARALLEL} at a time; slowest: "
          + ", ".join(f"{cid} {s:.1f} s" for cid, s, _ in slowest))
    assert not failed, f"{len(failed)} of {len(cases)} cases broke the contract:\n" + "\n".join(failed)


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(env, tmp_path):
    """A pickle whose unpickling would write a file: under either name, refused before it is opened."""
    for name in ("checkpoint.npz", "checkpoint.pkl"):
        run = tmp_path / name / "run"
        run.mkdir(parents=True)
        marker = tmp_path / name / "MARKER"
        (run / name).write_bytes(corpus_commands.code_carrying_pickle(str(marker)))
        # the payload is live: plain pickle.loads would run it
        import pickle
        probe = tmp_path / name / "PROBE"
        pickle.loads(corpus_commands.code_carrying_pickle(str(probe)))
        assert probe.exists()
        argv = ["run", env["preset"], *[a.format(**env) for a in corpus_commands.tiny_args()], "--quiet",
                "--resume", str(run)]
        proc = subprocess.run([sys.executable, "-m", "chipsim.cli", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, proc.stderr
        assert "pickle" in proc.stderr and "Traceback" not in proc.stderr
        assert not marker.exists(), "the checkpoint's code ran"
        # and through the API: the same refusal, nothing run
        from chipsim.checkpoint import load
        from chipsim.errors import CheckpointError
        with pytest.raises(CheckpointError, match="pickle"):
            load(str(run / name))
        assert not marker.exists()


def test_validate_and_help_stay_light():
    """`chipsim --help` and `validate` import neither numpy nor the engine: the corpus runs fast, and so do users."""
    code = ("import sys; from chipsim import cli; rc = cli.main(sys.argv[1:]); "
            "heavy = [m for m in ('numpy', 'torch', 'numba', 'matplotlib', 'chipsim.engine') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    for argv in (["--help"], ["validate", str(PRESET)], ["validate", str(PRESET), "--set", "training.lr=.nan"]):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in proc.stderr, (argv, proc.stderr[-300:])


# ============================================================================ issue 26: beyond the corpus
# Each test below needs more than one command line: a file's content after the command, two commands at
# once, a signal at a chosen moment, or the Python API.
TINY_SET = ("workload.train_limit=64", "workload.test_limit=32", "training.batch_size=16")


def _cli(*argv, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chipsim.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def _sets(tiny: str, *extra: str) -> list:
    out = ["--set", f"workload.model={tiny}"]
    for o in TINY_SET + extra:
        out += ["--set", o]
    return out


def _one_error_line(proc, *fragments):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert lines and lines[-1].startswith("chipsim: error: "), proc.stderr[-1500:]
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])
    return lines[-1]


def test_a_symlinked_points_log_is_refused_and_its_target_untouched(env, tmp_path):
    """The hostile tester's worst case: sweep and compare truncated a file elsewhere through the link."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for cmd in (["sweep", env["preset"], "--bits", "4", "--rules", "bp"], ["compare", env["preset"], "--own-model",
                                                                            "--rules", "bp"]):
        out = tmp_path / cmd[0]
        out.mkdir()
        os.symlink(victim, out / "points.jsonl")
        _one_error_line(_cli(*cmd, "--jobs", "1", "--out", str(out), *_sets(env["tiny"])), "symbolic link")
        assert victim.read_text() == "precious\n"
        # a hard link is the same trap
        os.remove(out / "points.jsonl")
        os.link(victim, out / "points.jsonl")
        _one_error_line(_cli(*cmd, "--jobs", "1", "--out", str(out), *_sets(env["tiny"])), "points.jsonl")
        assert victim.read_text() == "precious\n"


def test_crafted_lines_under_real_keys_are_one_error_line(env, tmp_path):
    """A real sweep's log, then its one line edited: out-of-range, NaN, a missing field, a wrong type."""
    out = tmp_path / "sw"
    argv = ["sweep", env["preset"], "--bits", "4", "--rules", "bp", "--jobs", "1", "--out", str(out),
            *_sets(env["tiny"], "training.epochs=1")]
    first = _cli(*argv)
    assert first.returncode == 0, first.stderr[-1500:]
    line = (out / "points.jsonl").read_text()
    rec = json.loads(line)
    crafted = [({"clean": 5.0}, "an accuracy lies in [0, 1]"), ({}, "no 'clean'"),
               ({"clean": "high"}, "is not a number"), ([0.5], "")]
    for accuracy, fragment in crafted:
        (out / "points.jsonl").write_text(json.dumps({**rec, "accuracy": accuracy}) + "\n")
        _one_error_line(_cli(*argv), "points.jsonl", fragment)
    (out / "points.jsonl").write_text(line.replace('"clean": ', '"clean": NaN, "x": '))
    _one_error_line(_cli(*argv), "NaN")
    (out / "points.jsonl").write_text(line)
    again = _cli(*argv)                 # and the intact line is reused, nothing trained twice
    assert again.returncode == 0 and (out / "points.jsonl").read_text() == line


def _as_in_a_terminal():
    """A command typed at a terminal starts with SIGINT at its default. One started from a background job of
    a non-interactive shell (`cmd &`, nohup, some CI runners) inherits SIGINT *ignored*, and rightly keeps
    ignoring it: under such a runner the Ctrl-C tests' signal was "lost" (a sweep ran to its end, exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _tiny_sweep_argv(env, out, epochs: int, jobs: int) -> list:
    return ["sweep", env["preset"], "--bits", "4,8", "--rules", "bp,df-o", "--jobs", str(jobs), "--out", str(out),
            *_sets(env["tiny"], f"training.epochs={epochs}")]


def _wait_for(predicate, timeout: float, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def test_two_sweeps_on_one_out_the_second_is_refused_and_nothing_is_logged_twice(env, tmp_path):
    out = tmp_path / "sw"
    argv = _tiny_sweep_argv(env, out, epochs=12, jobs=1)
    first = subprocess.Popen([sys.executable, "-m", "chipsim.cli", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        lock = out / ".chipsim.lock"
        assert _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 60, first), \
            "the first sweep never took its lock"
        second = _cli(*argv)
        assert first.poll() is None, "the first sweep ended before the second was refused: make it longer"
        _one_error_line(second, f"another chipsim command (pid {first.pid})", "--out")
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-1500:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    keys = [json.loads(x)["key"] for x in (out / "points.jsonl").read_text().splitlines()]
    assert len(keys) == 4 and len(set(keys)) == 4
    # the lock died with its holder: a rerun into the directory reuses every point
    assert _cli(*argv).returncode == 0
    assert [json.loads(x)["key"] for x in (out / "points.jsonl").read_text().splitlines()] == keys


def test_two_resumes_of_one_run_the_second_is_refused_and_a_killed_holder_leaves_no_lock(env, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(env["ckpt"], run / "checkpoint.npz")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from chipsim import rundir\n"
                               "with rundir.owned(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["run", env["preset"], *_sets(env["tiny"], "training.epochs=3"), "--quiet", "--resume", str(run)]
        _one_error_line(_cli(*argv), f"--resume {run}", f"another chipsim command (pid {holder.pid})")
        holder.kill()                      # SIGKILL: no cleanup runs, the lock file stays
        holder.wait()
        assert (run / ".chipsim.lock").exists()
        resumed = _cli(*argv)
        assert resumed.returncode == 0, resumed.stderr[-1500:]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _descendants(pid: int) -> set:
    """Every process below ``pid`` now (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has not collected it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sigkilled_sweep_leaves_no_worker(env, tmp_path):
    out = tmp_path / "sw"
    proc = subprocess.Popen([sys.executable, "-m", "chipsim.cli", *_tiny_sweep_argv(env, out, 30, 2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        # the workers are up and training once a point reports progress from inside (the bar is off: poll the
        # process tree for two worker processes, then give them time to start their points)
        assert _wait_for(lambda: len(_descendants(proc.pid)) >= 2, 90, proc), "no workers started"
        time.sleep(4)
        workers = _descendants(proc.pid)
        assert proc.poll() is None, "the sweep ended before it was killed: make it longer"
        proc.kill()
        proc.wait()
        assert _wait_for(lambda: not any(_running(p) for p in workers), 20), \
            f"workers outlived their parent: {[p for p in workers if _running(p)]}"
    finally:
        for p in _descendants(proc.pid) | (workers if "workers" in locals() else set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_sigint_at_any_moment_of_a_run_ends_in_the_resume_hint(env, tmp_path):
    """Ctrl-C while data loads, while a numba kernel runs, between epochs, while the chip is costed: always
    the hint and exit code 130, never a traceback (a SystemError from a kernel included)."""
    for n, delay in enumerate((0.0, 0.7, 1.5, 2.5, 4.0, 6.0)):
        out = tmp_path / f"r{n}"
        proc = subprocess.Popen([sys.executable, "-m", "chipsim.cli", "run", env["preset"],
                                 *_sets(env["tiny"], "training.epochs=6"), "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                preexec_fn=_as_in_a_terminal)
        try:
            assert proc.stdout.readline().startswith("chipsim run:")     # past the imports: main() handles it
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 0:            # it finished before the signal: that moment is past the run
            continue
        assert proc.returncode == 130, (delay, stderr[-1500:])
        assert "Traceback" not in stderr and "SystemError" not in stderr, (delay, stderr[-1500:])
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("chipsim: interrupted; ") and ("resume with: chipsim run" in last
                                                              or "start again with" in last), (delay, last)


def test_the_api_takes_what_python_users_pass(env, tmp_path):
    import numpy as np

    import chipsim
    from chipsim.errors import ChipsimError, ConfigError
    preset, tiny = Path(env["preset"]), Path(env["tiny"])
    over = {"workload.model": tiny, "workload.train_limit": np.int64(64), "workload.test_limit": np.int32(32),
            "training.epochs": np.int64(1), "training.batch_size": np.int64(16), "training.lr": np.float32(0.001),
            "training.checkpoint": np.bool_(False)}
    cfg = chipsim.validate(preset, over)
    assert cfg.hw.training.epochs == 1 and cfg.hw.training.lr == pytest.approx(0.001)
    assert cfg.hw.training.checkpoint is False and cfg.model.name == "tiny"
    table = chipsim.sweep(preset, rules="bp", bits=np.int64(4), seeds=np.arange(1), overrides=over,
                          out_dir=tmp_path / "sw", jobs=np.int64(1), progress=np.bool_(False),
                          gain_std=np.float32(0))
    assert table["rules"] == ["bp"] and table["bits"] == [4] and table["seeds"] == [0]
    r = chipsim.run(preset, over, out_dir=tmp_path / "run", progress=False, rule=np.str_("BP"))
    assert r.summary["rule"] == "bp" and 0 <= r.test_accuracy <= 1
    refused = [
        (lambda: chipsim.validate(None), "path: expected a path"),
        (lambda: chipsim.validate(preset, 3), "overrides: expected"),
        (lambda: chipsim.validate(preset, [3]), "overrides: 3 is not"),
        (lambda: chipsim.validate(preset, {"workload.rule": "bp"}, rule="df-o"), "contradicts the override"),
        (lambda: chipsim.validate(preset, {"workload.model": "models/cnn10.yaml"}, model=tiny), "contradicts"),
        (lambda: chipsim.sweep(preset, bits=[4], seeds=None, overrides=over, out_dir=tmp_path / "x"), "seeds"),
        (lambda: chipsim.sweep(preset, bits=[4], seeds={0}, overrides=over, out_dir=tmp_path / "x"), "seeds"),
        (lambda: chipsim.sweep(preset, bits=[4], overrides=over, jobs=2.0, out_dir=tmp_path / "x"), "jobs"),
        (lambda: chipsim.run(preset, over, out_dir=3), "out_dir"),
        (lambda: chipsim.compare(preset, depths=object(), out_dir=tmp_path / "x"), "depths"),
        (lambda: chipsim.reproduce(out_dir=tmp_path / "y", cluster=3), "cluster"),
    ]
    for call, fragment in refused:
        with pytest.raises(ChipsimError, match=re.escape(fragment)):
            call()
    # a rule given both ways, agreeing, is fine
    assert chipsim.validate(preset, {"workload.rule": "bp"}, rule="BP").hw.workload.rule == "bp"
    assert issubclass(ConfigError, ChipsimError)


def test_set_a_section_merges_into_it(env):
    """`--set 'training={epochs: 2}'` changes epochs only: the preset's batch size and lr stay."""
    from chipsim.config import load_config
    base = load_config(env["preset"]).hw.training
    merged = load_config(env["preset"], ("training={epochs: 2}",)).hw.training
    assert merged.epochs == 2 and base.epochs != 2
    assert (merged.batch_size, merged.lr, merged.schedule) == (base.batch_size, base.lr, base.schedule)
    nested = load_config(env["preset"], ("chip={core: {sram_kib: 512}}",)).hw.chip
    assert nested.core.sram_kib == 512 and nested.mesh == load_config(env["preset"]).hw.chip.mesh


def test_the_environment_cannot_cause_a_traceback(env, tmp_path):
    argv = ["map", env["preset"], "--set", f"workload.model={env['tiny']}"]
    for variable, value in (("OMP_NUM_THREADS", "0"), ("NUMBA_NUM_THREADS", "0"), ("OMP_NUM_THREADS", "-3"),
                            ("OPENBLAS_NUM_THREADS", "lots")):
        proc = _cli(*argv, "--out", str(tmp_path / f"{variable}{value}"), env=dict(os.environ, **{variable: value}),
                    cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (variable, value, proc.stderr[-1500:])
        assert f"ignoring {variable}={value!r}" in proc.stderr
    # a closed stdout: the output is lost as asked, the command still succeeds
    closed = subprocess.run(f"{shlex.quote(sys.executable)} -m chipsim.cli validate {shlex.quote(env['preset'])} >&-",
                            shell=True, capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr
    # a full stdout: one line, exit 2
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "chipsim.cli", "validate", env["preset"]], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == ["chipsim: error: cannot write to standard output: No space left "
                                                "on device"]


def test_a_name_with_a_newline_cannot_reach_a_report(env, tmp_path):
    from chipsim.config import load_config
    from chipsim.errors import ConfigError
    model = tmp_path / "m.yaml"
    model.write_text('name: "tiny\\n# Injected"\nblocks:\n  - {type: dense, units: 16}\n')
    with pytest.raises(ConfigError, match="control character"):
        load_config(env["preset"], (f"workload.model={model}",))
    with pytest.raises(ConfigError, match="chip.name.*control character"):
        load_config(env["preset"], ('chip.name="x\\r\\n## y"',))


def test_ctrl_c_at_the_terminal_on_a_parallel_sweep_is_one_line(env, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, workers included: only the parent answers (the
    resume hint, 130); the workers neither print tracebacks nor outlive it."""
    for n, delay in enumerate((1.0, 5.0)):
        proc = subprocess.Popen([sys.executable, "-m", "chipsim.cli", *_tiny_sweep_argv(env, tmp_path / f"s{n}", 30, 2)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_as_in_a_terminal)
        workers = set()
        try:
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                workers |= _descendants(proc.pid)
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, (delay, stderr[-2000:])
        assert "Traceback" not in stderr and "Warning" not in stderr, (delay, stderr[-2000:])
        assert stderr.strip().splitlines()[-1].startswith("chipsim: interrupted")
        assert _wait_for(lambda: not any(_running(p) for p in workers), 20), "a worker outlived the sweep"
