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

import os
import resource
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
