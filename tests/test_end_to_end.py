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
from chipsim.engine.training.trainer import Trainer
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
            "training.batch_size=16"]   # 32: the barriers of mapping.statistics batch overfill SRAM


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "chipsim.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=600)


@pytest.mark.slow
def test_cli_run_writes_a_complete_run_directory(tmp_path, tiny):
    out = tmp_path / "run"
    args = ["run", PRESET, "--out", str(out)]
    for o in tiny:
        args += ["--set", o]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "peak SRAM (worst core)" in proc.stdout and "test accuracy" in proc.stdout
    # it said, first, what it would do and where it would write
    first = proc.stdout.splitlines()[0]
    assert first.startswith("chipsim run: training df-r on tiny (3 blocks), mnist5k (train_limit 128")
    assert f"writing {out}{os.sep}" in first
    assert proc.stdout.splitlines()[1].startswith("exact GEMMs on ")     # the unit the weighted sums use
    names = sorted(os.listdir(out))
    for f in ("summary.json", "report.md", "per_core.csv", "per_layer.csv", "sram_heatmap.png",
              "link_traffic.png", "gantt.png", "training.png", "checkpoint.npz"):
        assert f in names, f
    assert not [n for n in names if n.startswith(".")], "a temp or staging file was left behind"
    s = json.loads((out / "summary.json").read_text())
    t = s["training"]
    assert s["rule"] == "df-r" and t["epochs"] == 1 and t["test_samples"] == 64
    # the reported accuracy is what the trained network scores: evaluate the checkpointed weights again
    trainer = _train(tiny)
    trainer.resume(str(out / "checkpoint.npz"))
    again = trainer.evaluate(trainer.data.x_test, trainer.data.y_test)
    assert t["test_accuracy"] == again["accuracy"] == t["history"][-1]["test_accuracy"]
    assert t["per_block_accuracy"] == again["per_block"]
    assert s["chip"]["ledger"]["peak_bytes"] <= s["chip"]["ledger"]["capacity_bytes"]
    assert s["chip"]["timing"]["latency_cycles"] > 0 and s["chip"]["energy"]["total_pj"] > 0
    report = (out / "report.md").read_text()
    assert report.startswith("# chipsim run: 44core_4bit (df-r)") and "## Mapping" in report
    # the label slips of the first report: energy rows in words (the table is in µJ), no "sample None"
    energy = report[report.index("## Energy per sample"):]
    assert "| MACs |" in energy and "| total |" in energy and "_pj" not in energy
    assert "sample None" not in report and "once per step" in report
    assert "train_limit 128" in report and "workload.train_limit=128" in report


def test_cli_map_and_bad_rule(tmp_path, tiny):
    proc = _cli("map", PRESET, "--rule", "BP", "--out", str(tmp_path / "m"), "--set", tiny[0])
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["training"] is None and s["rule"] == "bp"             # --rule takes any case
    assert (tmp_path / "m" / "report.md").read_text().startswith("# chipsim map: 44core_4bit (bp)")
    assert any(c["act_backward"] for c in [s["chip"]["ledger"]["totals_by_category"]])
    bad = _cli("map", PRESET, "--rule", "dfr")
    assert bad.returncode == 2 and "allowed" in bad.stderr and "Traceback" not in bad.stderr


def test_model_that_cannot_fit_is_refused_with_a_remedy(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nblocks:\n  - {type: dense, units: 4096}\n  - {type: dense, units: 4096}\n")
    proc = _cli("map", PRESET, "--set", f"workload.model={big}", "--set", "chip.mesh.rows=1",
                "--set", "chip.mesh.cols=4", "--set", "chip.cores=4", "--set", "workload.rule=bp")
    assert proc.returncode == 2, proc.stdout
    *notes, msg = proc.stderr.strip().splitlines()
    # the preset sets precision.goodness_bits, which bp ignores: that note comes first, at load time
    assert [n.split(": ")[3].split(" is ")[0] for n in notes] == ["precision.goodness_bits"]
    assert "Traceback" not in proc.stderr
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
    resumed.resume(str(tmp_path / "checkpoint.npz"))
    assert resumed.epoch == 1
    resumed.run(progress=False)
    for a, b in zip(full.net.layers(), resumed.net.layers()):
        assert np.array_equal(a.master.value, b.master.value)
        assert np.array_equal(a.running_var, b.running_var) and a.out_scale.running == b.out_scale.running
    assert np.array_equal(full.net.embedding.value, resumed.net.embedding.value)
    assert [h.test_accuracy for h in full.history] == [h.test_accuracy for h in resumed.history]
    assert resumed.trace == full.trace                       # the first step's trace survives the checkpoint
    assert full.rng_round.random() == resumed.rng_round.random()


def test_nan_stops_the_run_naming_layer_and_step(tiny):
    t = _train(tiny)
    t.net.blocks[1].wq = np.full_like(t.net.blocks[1].wq, np.nan)   # a corrupted weight read
    d = t.data
    with pytest.raises(TrainingDiverged, match=r"block \d+ is nan at step 0"):
        t.train_step(d.x_train[:16], d.y_train[:16])


def test_ctrl_c_prints_the_resume_command_and_it_continues_bit_identically(tmp_path, tiny, monkeypatch, capsys):
    """Interrupted after epoch 1, `chipsim run` prints the exact --resume command; running it finishes the run
    with the weights of an uninterrupted one."""
    import shlex
    from chipsim import cli
    from chipsim.engine.training import trainer as trainer_module
    real_run = trainer_module.Trainer.run

    def ctrl_c_after_first_epoch(self, *a, **k):
        def stop(stats):
            raise KeyboardInterrupt
        return real_run(self, *a, **dict(k, on_epoch=stop))

    out = tmp_path / "run"
    sets = [x for o in tiny + ["training.epochs=2"] for x in ("--set", o)]
    monkeypatch.setattr(trainer_module.Trainer, "run", ctrl_c_after_first_epoch)
    assert cli.main(["run", PRESET, "--quiet", "--out", str(out), *sets]) == 130
    err = capsys.readouterr().err
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("chipsim: interrupted; resume with: chipsim run ")
    command = shlex.split(hint.split("resume with: ", 1)[1])
    assert command[-2:] == ["--resume", str(out)]
    monkeypatch.setattr(trainer_module.Trainer, "run", real_run)
    assert cli.main(command[1:] + ["--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["training"]["epochs"] == 2 and s["training"]["resumed_after_epoch"] == 1
    assert s["training"]["train_seconds"] == pytest.approx(sum(h["seconds"] for h in s["training"]["history"]))
    full = _train(tiny, epochs=2)
    full.run(progress=False)
    assert s["training"]["test_accuracy"] == full.history[-1].test_accuracy
    resumed = _train(tiny, epochs=2)
    resumed.resume(str(out / "checkpoint.npz"))
    for a, b in zip(full.net.layers(), resumed.net.layers()):
        assert np.array_equal(a.master.value, b.master.value)
    assert "Resumed from a checkpoint after epoch 1" in (out / "report.md").read_text()


def test_ctrl_c_before_the_first_checkpoint_says_how_to_start_again(tmp_path, tiny, monkeypatch, capsys):
    from chipsim import cli
    from chipsim.engine.training import trainer as trainer_module

    def ctrl_c(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "run", ctrl_c)
    out = tmp_path / "run"
    assert cli.main(["run", PRESET, "--quiet", "--out", str(out), *[x for o in tiny for x in ("--set", o)]]) == 130
    err = capsys.readouterr().err
    assert "no checkpoint to resume; start again with: chipsim run" in err and f"--out {out}" in err
    assert not out.exists(), "the empty run directory is removed"


def test_an_unmappable_config_fails_before_training(tmp_path, tiny, monkeypatch):
    """A 1x1 mesh cannot hold a 3-block model: refused after one engine step, not after every epoch."""
    from chipsim.engine.training import trainer as trainer_module
    from chipsim.errors import MappingError

    def never(self, *a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer_module.Trainer, "run", never)
    with pytest.raises(MappingError, match="gets no core"):
        chipsim.run(PRESET, tiny + ["chip.mesh.rows=1", "chip.mesh.cols=1", "chip.cores=1"],
                    out_dir=str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()


def test_api_takes_a_mapping_of_overrides_and_the_cli_shorthands(tmp_path):
    loaded = chipsim.validate(PRESET, {"training.epochs": 2, "training.lr": 1e-5, "workload.test_limit": None,
                                       "workload.download": True, "chip.name": "123"}, rule="DF-O",
                              model=str(REPO / "models" / "dense3.yaml"))
    hw = loaded.hw
    assert (hw.training.epochs, hw.training.lr, hw.workload.test_limit, hw.workload.download) == (2, 1e-5, None, True)
    assert hw.workload.rule == "df-o" and loaded.model.name == "dense3" and hw.chip.name == "123"
    assert loaded.overrides[-2:] == ("workload.rule=df-o", f"workload.model={REPO / 'models' / 'dense3.yaml'}")
    # the same as --set strings, and the CLI's `1e-5` is a number too
    assert chipsim.validate(PRESET, ["training.lr=1e-5"]).hw.training.lr == 1e-5
    with pytest.raises(chipsim.errors.ConfigError, match="nan is not allowed"):
        chipsim.validate(PRESET, {"training.lr": float("nan")})
    res = chipsim.map(PRESET, {"workload.model": str(REPO / "models" / "dense3.yaml"), "training.batch_size": 16},
                      rule="df-r", write=False, progress=False)
    assert res.summary["rule"] == "df-r" and res.summary["model"] == "dense3"


def test_public_api_matches_the_cli():
    for name in ("run", "map", "validate", "compare", "sweep", "table", "reproduce"):
        assert callable(getattr(chipsim, name)), name


@pytest.mark.parametrize("mode, pool", [("streaming", None), ("whole-batch", "whole_batch"), ("pytorch", "framework")])
def test_memory_mode_picks_the_headline_memory_figure(tiny, mode, pool):
    """``mapping.memory_mode`` is the memory figure the headline shows first; ``pytorch`` is the measured
    framework peak (one PyTorch step, ``chipsim.framework``), run only under that mode."""
    from chipsim.report import headline
    s = chipsim.map(PRESET, tuple(tiny) + (f"mapping.memory_mode={mode}",), write=False, progress=False).summary
    rows = headline(s)
    label, value = next(r for r in rows if r[0].startswith("memory ("))
    assert label == f"memory ({mode}, mapping.memory_mode)"
    want = (s["chip"]["ledger"]["total_peak_bytes"] if pool is None else s["framework"]["total_peak_bytes"]
            if pool == "framework" else s["chip"]["pool"][pool]["peak_bytes"])
    assert (s["framework"] is None) == (mode != "pytorch")
    assert value.startswith(f"{want / 1024:.1f} KiB")
    assert rows.index((label, value)) <= 1          # right after the accuracy, when there is one
