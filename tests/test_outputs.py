"""Outputs: run directories are never shared, files appear whole, a failed write mixes nothing.

Covers ``chipsim/rundir.py`` (unique, exclusive run directories), ``chipsim/atomic.py``
(atomic files with the usual permissions, staged sets of files, stale temp
files) and ``report.write_run`` on a full disk. The one-line errors for
unusable ``--out`` paths are in the bad-input corpus.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chipsim import rundir
from chipsim.atomic import atomic_file, staged_dir
from chipsim.errors import OutputError
from chipsim.report import atomic_write

REPO = Path(__file__).resolve().parents[1]
PRESET = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 4, pool: 2}\n  - {type: dense, units: 8}\n"


def test_atomic_file_replaces_whole_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write(str(target), "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_file(str(target)) as tmp, open(tmp, "w") as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert os.listdir(target.parent) == ["summary.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_get_the_usual_mode_under_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write(str(tmp_path / f"f{umask:o}.md"), "x")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask         # 0644 under the common 022, not 0600


def test_a_write_error_is_one_line_naming_the_file(tmp_path, monkeypatch):
    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"summary.json: cannot write: No space left on device"):
        with atomic_file(str(tmp_path / "summary.json")) as tmp:
            full(tmp)
    assert os.listdir(tmp_path) == []


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    out = tmp_path / "run"
    with staged_dir(str(out), last=("summary.json",)) as stage:
        for name in ("a.csv", "summary.json", "b.png"):
            atomic_write(os.path.join(stage, name), f"old {name}")
    assert sorted(os.listdir(out)) == ["a.csv", "b.png", "summary.json"]
    with pytest.raises(OutputError, match=r"run/b.png: cannot write: No space left"):
        with staged_dir(str(out)) as stage:
            atomic_write(os.path.join(stage, "a.csv"), "new a")
            with atomic_file(os.path.join(stage, "b.png")):
                raise OSError(28, "No space left on device")
    # nothing new is mixed in with the old files, and no staging directory is left
    assert sorted(os.listdir(out)) == ["a.csv", "b.png", "summary.json"]
    assert (out / "a.csv").read_text() == "old a.csv"


def _tiny_map_summary(tmp_path):
    import chipsim
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    return chipsim.map(PRESET, {"workload.model": str(model), "training.batch_size": 16}, write=False,
                       progress=False)   # 32: the barriers of mapping.statistics batch overfill SRAM


def test_a_full_disk_while_writing_a_run_leaves_the_previous_files_untouched(tmp_path, monkeypatch):
    """The issue's mixed directory: new CSVs and PNGs beside an old summary.json after a failed write."""
    from chipsim import plots
    from chipsim.report import write_run
    res = _tiny_map_summary(tmp_path)
    out = tmp_path / "run"
    write_run(str(out), dict(res.summary, config_name="old"), res.chip, None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_gantt = plots.gantt

    def gantt_on_a_full_disk(*a, **k):
        real_gantt(*a, **k)                   # the PNG is written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "gantt", gantt_on_a_full_disk)
    with pytest.raises(OutputError, match="gantt.png|No space left"):
        write_run(str(out), dict(res.summary, config_name="new"), res.chip, None)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before, "a failed write changed or added files"
    assert json.loads(after["summary.json"])["config_name"] == "old"


def test_default_run_directories_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir, "stamp", lambda: "20240101-000000")
    dirs = [rundir.new_default("44core_4bit") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(os.path.isdir(d) for d in dirs)
    assert dirs[1] == dirs[0] + "-2" and dirs[2] == dirs[0] + "-3"


def test_out_must_be_new_or_empty_and_a_run_directory_is_never_reused(tmp_path):
    assert rundir.claim(str(tmp_path / "new"), "x") == str(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    assert rundir.claim(str(tmp_path / "empty"), "x") == str(tmp_path / "empty")
    (tmp_path / "new" / "f").write_text("1")
    with pytest.raises(OutputError, match="already holds files"):
        rundir.claim(str(tmp_path / "new"), "x")
    # an experiment directory is reused by the same kind of command (that is how it resumes)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "points.jsonl").write_text("")
    assert rundir.claim(str(tmp_path / "sweep"), "x", reusable_marker="points.jsonl")
    with pytest.raises(OutputError, match="no points.jsonl"):
        rundir.claim(str(tmp_path / "new"), "x", reusable_marker="points.jsonl")


def test_two_runs_started_at_once_get_two_directories(tmp_path):
    """Two `chipsim map` in the same working directory, started together: two run directories, both complete."""
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    time.sleep(1 - time.time() % 1 + 0.02)     # both start early in the same second: their stamps collide
    procs = [subprocess.Popen([sys.executable, "-m", "chipsim.cli", "map", PRESET, "--model", str(model),
                              "--set", "training.batch_size=16"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    runs = sorted((tmp_path / "reports" / "runs").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["command"] == "map"
        assert not [n for n in os.listdir(run) if n.startswith(".")], "a temp or staging file was left"
    # each command said where it wrote, and they wrote to different places
    said = [next(line for line in o.splitlines() if line.startswith("chipsim map:")) for o, _ in outs]
    assert said[0] != said[1] and all("writing reports/runs/44core_4bit-map-" in s for s in said)
