"""The budget ladder of ``chipsim reproduce`` (issue 26), at a tiny scale: the same rules over the same
seeds at several training budgets, and which pairs the budget reverses (only clear orders count)."""
from __future__ import annotations

import json
from pathlib import Path

from chipsim.experiments import ladder
from chipsim.experiments.jobs import RESULTS_NAME, load_done
from chipsim.experiments.reproduce import PLANS
from chipsim.experiments.verdicts import SMOKE, Scale

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n"
FULL = Scale("3 seeds")


def test_ladder_trains_each_rung_and_reuses_the_given_one(tmp_path):
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    limits = [f"workload.model={model}", "workload.train_limit=32", "workload.test_limit=20",
              "training.batch_size=16"]
    reuse_rows = [{"variant": "bp", "accuracy": [0.5, 0.6], "accuracy_mean": 0.55, "accuracy_std": 0.07,
                   "train_seconds": [1.0, 1.0]},
                  {"variant": "df-r", "accuracy": [0.4, 0.4], "accuracy_mean": 0.4, "accuracy_std": 0.0,
                   "train_seconds": [1.0, 1.0]}]
    t = ladder.ladder(SMALL, (0, 1), limits, (1, 2), str(tmp_path / "ladder"), jobs=1, progress=False,
                      names=("bp", "df-r"), reuse={1: {"rows": reuse_rows}})
    assert t["rungs"][1] == reuse_rows                                # the given rung is not retrained
    assert not (tmp_path / "ladder" / "epochs1").exists()
    done = load_done(str(tmp_path / "ladder" / "epochs2" / RESULTS_NAME))
    assert len(done) == 4 and {d["point"]["overrides"][-2] for d in done.values()} >= {"workload.rule=bp"}
    assert all("training.epochs=2" in d["point"]["overrides"] for d in done.values())
    assert [r["variant"] for r in t["rungs"][2]] == ["bp", "df-r"]
    assert (tmp_path / "ladder" / "ladder.png").stat().st_size > 0
    saved = json.loads((tmp_path / "ladder" / "ladder.json").read_text())
    text = "\n".join(ladder.markdown(saved, FULL))                   # reads back with string keys
    assert "| bp | 55.0 ± 7.0 |" in text and "| 1 epochs | 2 epochs |" in text


def _row(name, accs, sd):
    return {"variant": name, "accuracy": accs, "accuracy_mean": sum(accs) / len(accs), "accuracy_std": sd}


def test_a_swap_counts_only_where_both_orders_are_clear():
    t = {"epochs": [3, 30], "seeds": [0, 1, 2],
         "rungs": {3: [_row("ff", [0.9] * 3, 0.01), _row("bp", [0.8] * 3, 0.01), _row("df-o", [0.7] * 3, 0.2)],
                   30: [_row("ff", [0.8] * 3, 0.01), _row("bp", [0.9] * 3, 0.01), _row("df-o", [0.95] * 3, 0.2)]}}
    # ff > bp at 3 epochs and bp > ff at 30, both by 10 points against a 1-point spread: a swap;
    # df-o moves from last to first, but within its 20-point spread: not counted
    assert ladder.swaps(t, FULL) == [("ff", "bp", 3, 30)]
    text = "\n".join(ladder.markdown(t, FULL))
    assert "ff ahead of bp at 3 epochs, behind at 30" in text
    one_seed = {**t, "rungs": {e: [{**r, "accuracy": r["accuracy"][:1]} for r in rows] for e, rows in t["rungs"].items()}}
    assert ladder.swaps(one_seed, FULL) == []                          # one seed: nothing is clear
    assert "Not judged at this scale" in "\n".join(ladder.markdown(t, SMOKE))
    assert "Not run in this invocation" in "\n".join(ladder.markdown(None, FULL))


def test_full_plan_has_the_ladder_and_quick_does_not():
    assert PLANS["full"].ladder_epochs == (3, 10, 30) and PLANS["full"].epochs in PLANS["full"].ladder_epochs
    assert PLANS["quick"].ladder_epochs == ()


def test_a_ladder_without_its_longest_rung_says_so():
    t = {"epochs": [3, 10], "seeds": [0, 1, 2],
         "rungs": {3: [_row("bp", [0.9] * 3, 0.01)], 10: [_row("bp", [0.95] * 3, 0.01)]}}
    text = "\n".join(ladder.markdown(t, FULL, planned=(3, 10), left_out=(30,)))
    # the heading keeps the plan's rungs; the missing one is named, with the command that ran the others
    assert "## 1b. The ranking at 3, 10 and 30 epochs" in text
    assert "**Not run: the 30-epoch rung**" in text and "--ladder-epochs 3,10" in text
    assert "| 3 epochs | 10 epochs |" in text and "30 epochs |" not in text


def test_ladder_epochs_on_the_command_line_are_checked(tmp_path):
    import subprocess
    import sys
    for argv, words in ((["--ladder-epochs", "0"], "--ladder-epochs '0'"),
                        (["--ladder-epochs", "3,x"], "--ladder-epochs '3,x'"),
                        (["--ladder-epochs", "3,10", "--no-ladder"], "contradict")):
        out = subprocess.run([sys.executable, "-m", "chipsim.cli", "reproduce", "--out", str(tmp_path / "r"), *argv],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (argv, out.stderr[-1000:])
        assert words in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
