"""``chipsim table`` (issue 26): rules x seeds on one model and chip, accuracy beside the chip's costs."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

import chipsim
from chipsim import cli
from chipsim.experiments.jobs import RESULTS_NAME, load_done

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n"


def _over(tmp_path):
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    return {"workload.model": str(model), "workload.train_limit": 32, "workload.test_limit": 20,
            "training.epochs": 1, "training.batch_size": 16}


def test_table_trains_every_rule_over_every_seed_and_resumes(tmp_path):
    out = tmp_path / "t"
    t = chipsim.table(SMALL, ["bp", "df-r"], [0, 1], _over(tmp_path), out_dir=str(out), jobs=1, progress=False)
    assert [r["rule"] for r in t["rows"]] == ["bp", "df-r"]
    done = load_done(str(out / RESULTS_NAME))
    assert len(done) == 4                                       # 2 rules x 2 seeds, one training each
    for r in t["rows"]:
        accs = [d["test_accuracy"] for d in done.values() if d["point"]["rule"] == r["rule"]]
        assert sorted(r["accuracy"]) == sorted(accs) and len(accs) == 2
        assert r["accuracy_mean"] == pytest.approx(statistics.mean(accs))
        assert r["accuracy_std"] == pytest.approx(statistics.stdev(accs))      # the sample sd (n - 1)
        assert r["total_peak_bytes"] > 0 and r["latency_us"] > 0 and r["energy_per_sample_pj"] > 0
    md = (out / "table.md").read_text()
    bp, dfr = t["rows"]
    assert f"| bp | {100 * bp['accuracy_mean']:.1f} ± {100 * bp['accuracy_std']:.1f} |" in md
    assert f"{dfr['total_peak_bytes'] / bp['total_peak_bytes']:.2f} / " in md   # ratio to BP, same model
    for word in ("chip 44core_4bit", "model tiny", "N = 9", "batch 16", "dataflow negatives parallel",
                 "mapping fit", "W4/A4/G8/U16", "train_limit 32", "## Provenance"):
        assert word in md, word
    assert (out / "accuracy.png").stat().st_size > 0 and json.loads((out / "table.json").read_text())["rows"]
    mtime = os.path.getmtime(out / RESULTS_NAME)
    again = chipsim.table(SMALL, ["bp", "df-r"], [0, 1], _over(tmp_path), out_dir=str(out), jobs=1, progress=False)
    assert os.path.getmtime(out / RESULTS_NAME) == mtime and again["rows"] == t["rows"]   # nothing retrained


def test_table_with_one_seed_names_no_winner(tmp_path):
    t = chipsim.table(SMALL, ("bp", "df-r"), 0, _over(tmp_path), out_dir=str(tmp_path / "t1"), jobs=1,
                      progress=False)
    assert t["seeds"] == [0]
    md = (tmp_path / "t1" / "table.md").read_text()
    assert "Most accurate: not judged at this scale (bp and df-r are not told apart, 1 seed" in md
    assert " ± " not in md.split("| rule |")[1].split("- Most")[0]          # no spread shown from one seed


def test_table_command_line(tmp_path, capsys):
    assert cli.main(["table", "--help"]) == 0
    helptext = capsys.readouterr().out
    assert "mean ± sample standard deviation" in helptext and "--seeds" in helptext and "ratio to bp" in helptext
    # the rule and seed come from --rules and --seeds: a --set of either is refused in one line
    assert cli.main(["table", SMALL, "--set", "workload.rule=bp"]) == 2
    assert "give them with --rules and --seeds" in capsys.readouterr().err
    assert cli.main(["table", SMALL, "--rules", "bp,nope"]) == 2
