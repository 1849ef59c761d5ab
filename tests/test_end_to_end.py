"""End-to-end: the CLI and API on tiny models and data (seconds, not minutes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chipsim
from chipsim.config import load_config
from chipsim.data import load_dataset
from chipsim.engine.trainer import Trainer
from chipsim.errors import TrainingDiverged

REPO = Path(__file__).resolve().parents[1]
PRESET = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = """\
name: tiny
blocks:
  - {type: conv, channels: 8, pool: 2}
  - {type: conv, channels: 8, pool: 2}
  - {type: dense, units: 16}
"""


@pytest.fixture()
def tiny(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return [f"workload.model={p}", "workload.train_limit=128", "workload.test_limit=64", "training.epochs=1",
            "training.batch_size=32"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "chipsim.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=600)


@pytest.mark.slow
def test_cli_run_writes_a_complete_run_directory(tmp_path, tiny):
    out = tmp_path / "run"
    args = ["run", PRESET, "--quiet", "--out", str(out)]
    for o in tiny:
        args += ["--set", o]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "peak SRAM (worst core)" in proc.stdout and "test accuracy" in proc.stdout
    names = sorted(os.listdir(out))
    for f in ("summary.json", "report.md", "per_core.csv", "per_layer.csv", "sram_heatmap.png",
              "link_traffic.png", "gantt.png", "training.png", "checkpoint.pkl"):
        assert f in names, f
    assert not [n for n in names if n.endswith(".tmp")], "a temp file was left behind"
    s = json.loads((out / "summary.json").read_text())
    assert s["rule"] == "df-r" and s["training"]["epochs"] == 1
    assert 0.0 <= s["training"]["test_accuracy"] <= 1.0
    assert s["chip"]["ledger"]["peak_bytes"] <= s["chip"]["ledger"]["capacity_bytes"]
    assert s["chip"]["timing"]["latency_cycles"] > 0 and s["chip"]["energy"]["total_pj"] > 0
    assert "## Mapping" in (out / "report.md").read_text()


def test_cli_map_and_bad_rule(tmp_path, tiny):
    proc = _cli("map", PRESET, "--rule", "bp", "--out", str(tmp_path / "m"), "--set", tiny[0])
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["training"] is None and s["rule"] == "bp"
    assert any(c["act_backward"] for c in [s["chip"]["ledger"]["totals_by_category"]])
    bad = _cli("map", PRESET, "--rule", "dfr")
    assert bad.returncode == 2 and "allowed" in bad.stderr and "Traceback" not in bad.stderr


def test_model_that_cannot_fit_is_refused_with_a_remedy(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nblocks:\n  - {type: dense, units: 4096}\n  - {type: dense, units: 4096}\n")
    proc = _cli("map", PRESET, "--set", f"workload.model={big}", "--set", "chip.mesh.rows=1",
                "--set", "chip.mesh.cols=4", "--set", "chip.cores=4", "--set", "workload.rule=bp")
    assert proc.returncode == 2, proc.stdout
    msg = proc.stderr.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg
    assert "does not fit" in msg or "cores" in msg


def _train(overrides, epochs=1):
    cfg = load_config(PRESET, tuple(overrides) + (f"training.epochs={epochs}",))
    d = load_dataset("mnist5k", train_limit=cfg.hw.workload.train_limit, test_limit=cfg.hw.workload.test_limit)
    return Trainer(cfg.hw, cfg.model, d)


@pytest.mark.parametrize("rule", ["df-r", "bp"])
def test_same_seed_gives_bit_identical_weights(tiny, rule):
    runs = []
    for _ in range(2):
        t = _train(tiny + [f"workload.rule={rule}"])
        t.run(progress=False)
        runs.append([b.master.value.copy() for b in t.net.layers()] + [t.history[-1].test_accuracy])
    for a, b in zip(runs[0][:-1], runs[1][:-1]):
        assert np.array_equal(a, b)
    assert runs[0][-1] == runs[1][-1]
    t3 = _train(tiny + [f"workload.rule={rule}", "training.seed=1"])
    t3.run(progress=False)
    assert not np.array_equal(t3.net.layers()[0].master.value, runs[0][0])


@pytest.mark.slow
def test_resume_continues_bit_identically(tmp_path, tiny):
    full = _train(tiny, epochs=2)
    full.run(progress=False)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(stats):
        raise Stop

    interrupted = _train(tiny, epochs=2)
    with pytest.raises(Stop):
        interrupted.run(progress=False, checkpoint_dir=str(tmp_path), on_epoch=stop_after_first_epoch)
    resumed = _train(tiny, epochs=2)
    resumed.resume(str(tmp_path / "checkpoint.pkl"))
    assert resumed.epoch == 1
    resumed.run(progress=False)
    for a, b in zip(full.net.layers(), resumed.net.layers()):
        assert np.array_equal(a.master.value, b.master.value)
    assert full.history[-1].test_accuracy == resumed.history[-1].test_accuracy


def test_nan_stops_the_run_naming_layer_and_step(tiny):
    t = _train(tiny)
    t.net.blocks[1].wq = np.full_like(t.net.blocks[1].wq, np.nan)   # a corrupted weight read
    d = t.data
    with pytest.raises(TrainingDiverged, match=r"block \d+ is nan at step 0"):
        t.train_step(d.x_train[:16], d.y_train[:16])


def test_public_api_matches_the_cli():
    for name in ("run", "map", "validate", "compare", "sweep", "reproduce"):
        assert callable(getattr(chipsim, name)), name
