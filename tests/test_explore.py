"""``chipsim explore``: the search finds the exact front, survives a kill, records violations; hypervolume.

Every search here uses a cheap stand-in for a trial (``explore_helpers``: objective values computed from
the settings), so no training runs; one test maps a real configuration that does not fit.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import chipsim
from chipsim.cli import main
from chipsim.errors import ConfigError
from chipsim.experiments.explore.pareto import hypervolume

import explore_helpers as helpers

REPO = Path(__file__).resolve().parents[1]
PRESET = str(REPO / "hwconfigs" / "44core_4bit.yaml")
SPACE = ("workload.rule: {choices: [bp, df-r]}\n"
         "precision.weight_bits: {choices: [2, 4, 8]}\n"
         "precision.activation_bits: [2, 4]\n")


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text(SPACE)
    return str(p)


def _enumerated_front() -> set:
    """The front by brute force over every setting, independently of chipsim's Pareto code."""
    pts = {}
    for rule, w, a in itertools.product(helpers.RULES, helpers.WEIGHT_BITS, helpers.ACT_BITS):
        v = helpers.cheap_values(rule, w, a)
        if v is not None:
            pts[(rule, w, a)] = (-v["accuracy"], v["train_energy"], v["peak_sram"])
    front = set()
    for k, v in pts.items():
        beaten = any(all(x <= y for x, y in zip(u, v)) and u != v for u in pts.values())
        if not beaten:
            front.add(k)
    return front


def _settings(row) -> tuple:
    p = row["params"]
    return p["workload.rule"], p["precision.weight_bits"], p["precision.activation_bits"]


def test_hypervolume_against_hand_computed_literals():
    # 2-D staircase (1,3), (2,2), (3,1) under reference (4,4): strips 3*1 + 2*1 + 1*1 = 6
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    # a dominated point (3,3) and one outside the reference (5,0) add nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == pytest.approx(6.0)
    # 3-D: boxes [0,2]x[0,2]x[1,2] (4) and [1,2]x[1,2]x[0,2] (2) overlap in [1,2]^3 (1): 4 + 2 - 1 = 5
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5.0)
    assert hypervolume([], (1, 1)) == 0.0


def test_search_finds_the_enumerated_front_and_records_the_violation(space, tmp_path):
    out = tmp_path / "ex"
    table = chipsim.explore(PRESET, space, trials=16, out_dir=str(out), jobs=1, progress=False,
                            baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    assert {_settings(r) for r in table["front"]} == _enumerated_front()
    # BP at W8/A4 is infeasible: a COMPLETE trial with a violated constraint, never on the front
    bad = [r for r in table["rows"] if r["status"] == "infeasible"]
    assert bad and all(_settings(r) == ("bp", 8, 4) for r in bad)
    study = optuna.load_study(study_name="nsga2-seed0", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    frozen = [t for t in done if t.user_attrs["result"]["status"] == "infeasible"]
    assert frozen and all(t.user_attrs["constraint"] == [1.0] for t in frozen)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in frozen)
    assert "mapping: does not fit" in frozen[0].user_attrs["result"]["violation"]
    ok = [t for t in done if t.user_attrs["result"]["status"] == "ok"]
    assert all(t.user_attrs["constraint"] == [0.0] for t in ok)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 16
    # a setting is evaluated again only once all 12 have been: the first 12 finished trials are distinct
    assert len({tuple(sorted(t.params.items())) for t in complete[:12]}) == 12
    md = (out / "explore.md").read_text()
    assert f"{len(bad)} infeasible" in md and "optuna-dashboard sqlite:///" in md
    for name in ("front.png", "hypervolume.png", "pareto.csv", "explore.json"):
        assert (out / name).exists()
    # each Pareto row carries the exact command that reproduces it
    row = (out / "pareto.csv").read_text().splitlines()[1]
    assert "chipsim run hwconfigs/44core_4bit.yaml --set workload.rule=" in row


KILLER = """
import sys
import chipsim, explore_helpers
chipsim.explore(sys.argv[1], sys.argv[2], sampler="random", trials=8, out_dir=sys.argv[3], jobs=1,
                progress=False, baseline=False, reeval_seeds=0, evaluate=explore_helpers.killing_evaluate)
"""


def test_a_search_killed_mid_trial_resumes_with_no_trial_lost_or_repeated(space, tmp_path):
    out = tmp_path / "ex"
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, EXPLORE_CALLS=str(calls), EXPLORE_KILL_AT="4",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    proc = subprocess.run([sys.executable, "-c", KILLER, PRESET, space, str(out)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr              # SIGKILLed inside its 4th evaluation
    before = calls.read_text().split()
    assert len(before) == 4
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="random-seed0", storage=storage)
    running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 1                                  # the trial cut off
    cut = running[0]

    proc = subprocess.run([sys.executable, "-c", KILLER, PRESET, space, str(out)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="random-seed0", storage=storage)
    states = collections.Counter(t.state for t in study.trials)
    assert states[optuna.trial.TrialState.COMPLETE] == 8      # exactly --trials, none lost
    assert states[optuna.trial.TrialState.RUNNING] == 0
    # the cut-off trial is the one FAIL (besides settings the sampler proposed again, refused as repeats)
    fails = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("repeat")]
    assert len(fails) == 1
    failed = fails[0]
    assert failed.number == cut.number
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == cut.number]
    assert len(retry) == 1 and retry[0].params == cut.params and retry[0].state == optuna.trial.TrialState.COMPLETE
    # no evaluation repeated: only the cut-off one ran twice; those finished before the kill came from the log
    counts = collections.Counter(calls.read_text().split())
    assert counts[before[-1]] == 2
    assert all(n == 1 for k, n in counts.items() if k != before[-1])


def test_studies_take_turns_so_a_studys_trials_do_not_depend_on_jobs(space, tmp_path):
    # two studies (TPE and its random baseline) on two workers: each batch takes one trial from each study,
    # so TPE sees every earlier result of its own study before it proposes, exactly as with one worker
    def sequences(jobs):
        table = chipsim.explore(PRESET, space, sampler="tpe", trials=8, out_dir=str(tmp_path / f"j{jobs}"),
                                jobs=jobs, progress=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
        out = collections.defaultdict(list)
        for r in table["rows"]:
            out[r["study"]].append(_settings(r))
        return dict(out)
    one, two = sequences(1), sequences(2)
    assert set(one) == {"tpe-seed0", "random-seed0"}
    assert all(len(v) == 8 for v in one.values())
    assert two == one


def test_settings_that_differ_only_in_keys_their_rule_ignores_are_one_trial():
    from chipsim.config import load_config
    from chipsim.experiments.explore.studies import trial_key
    ctx = {"cfg": load_config(PRESET), "base": []}
    scale = {"train_limit": 500}

    def key(rule, negatives, dataflow):
        return trial_key(ctx, {"workload.rule": rule, "learning.negatives": negatives,
                               "mapping.negatives": dataflow}, scale)
    # BP makes no label variants: the negatives and their dataflow are never read, so one configuration
    assert key("bp", 1, "parallel") == key("bp", 9, "sequential-recompute")
    # DF-O reads both
    assert key("df-o", 1, "parallel") != key("df-o", 9, "parallel")
    assert key("df-o", 9, "parallel") != key("df-o", 9, "sequential-recompute")
    # the scale is part of the identity
    assert trial_key(ctx, {"workload.rule": "bp"}, scale) != trial_key(ctx, {"workload.rule": "bp"}, {})


def test_a_configuration_that_does_not_map_is_a_violation_not_a_crash(tmp_path):
    from chipsim.experiments.explore.objectives import evaluate_point
    model = tmp_path / "tiny.yaml"
    model.write_text("name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n")
    point = {"key": "k", "params": {}, "config": PRESET, "seeds": [0], "objectives": ["peak_sram", "train_energy"],
             "overrides": [f"workload.model={model}", "training.batch_size=8", "chip.core.sram_kib=1"],
             "prune_margin": 0.1, "front": [], "threads": 1}
    res = evaluate_point(point)
    assert res["status"] == "infeasible" and res["violation"].startswith("mapping: ")
    point["overrides"][-1] = "chip.core.sram_kib=256"
    res = evaluate_point(point)
    assert res["status"] == "ok" and 0 < res["values"]["peak_sram"] <= 256


@pytest.mark.parametrize("text, expected", [
    ("precision.weight_bits: {choices: []}\n", "precision.weight_bits.choices: give a non-empty list"),
    ("workload.rule: {choices: [bp, xyz]}\n", "workload.rule: value 'xyz' is refused by the config"),
    ("precision.nonsense: [1, 2]\n", "precision.nonsense: value 1 is refused by the config"),
    ("chip.core.sram_kib: {low: 64, high: 32}\n", "low (64) must be below high (32)"),
    ("chip.core.sram_kib: {low: 64, high: 512, lg: true}\n", "unknown field 'lg'; allowed: choices, high, log"),
    ("training.lr: {low: 0, high: 0.1, log: true}\n", "log scale needs low > 0"),
    ("[1, 2]\n", "a space file is a mapping of config keys"),
])
def test_a_bad_space_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    # (a cheap search if the file were wrongly accepted: no training, one mapping)
    code = main(["explore", PRESET, "--space", str(p), "--out", str(tmp_path / "o"), "--quiet", "--trials", "1",
                 "--no-baseline", "--objectives", "peak_sram", "--jobs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"chipsim: error: {p}: ") and expected in err[0]
    assert not (tmp_path / "o").exists()


def test_a_directory_resumes_only_its_own_search(space, tmp_path):
    out = str(tmp_path / "ex")
    first = chipsim.explore(PRESET, space, sampler="random", trials=3, out_dir=out, jobs=1, progress=False,
                            baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    with pytest.raises(ConfigError, match="holds a search with other objectives"):
        chipsim.explore(PRESET, space, objectives=["accuracy", "latency"], sampler="random", trials=3, out_dir=out,
                        jobs=1, progress=False, baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    # more trials continue the same study: 3 finished ones kept, 2 added
    table = chipsim.explore(PRESET, space, sampler="random", trials=5, out_dir=out, jobs=1, progress=False,
                            baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    assert len(table["rows"]) == 5 and table["rows"][:3] == first["rows"]
    assert json.loads((tmp_path / "ex" / "explore-settings.json").read_text())["trials"] == 5


def test_a_search_resumes_from_a_copy_of_its_config_elsewhere_but_not_from_another_config(space, tmp_path):
    """A clone of the repository elsewhere resumes the committed search: the config and the space are the
    same by what they say, not by where their files are. A config that says something else is refused."""
    import shutil
    out = str(tmp_path / "ex")
    first = chipsim.explore(PRESET, space, sampler="random", trials=3, out_dir=out, jobs=1, progress=False,
                            baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "hwconfigs", clone / "hwconfigs")
    shutil.copytree(REPO / "models", clone / "models")
    shutil.copy(space, tmp_path / "space_copy.yaml")
    again = chipsim.explore(str(clone / "hwconfigs" / "44core_4bit.yaml"), str(tmp_path / "space_copy.yaml"),
                            sampler="random", trials=3, out_dir=out, jobs=1, progress=False, baseline=False,
                            reeval_seeds=0, evaluate=helpers.cheap_evaluate)
    assert [r["params"] for r in again["rows"]] == [r["params"] for r in first["rows"]]
    other = clone / "hwconfigs" / "44core_4bit.yaml"
    other.write_text(other.read_text().replace("batch_size: 32", "batch_size: 16"))
    with pytest.raises(ConfigError, match="holds a search with other config"):
        chipsim.explore(str(other), space, sampler="random", trials=3, out_dir=out, jobs=1, progress=False,
                        baseline=False, reeval_seeds=0, evaluate=helpers.cheap_evaluate)


def test_a_trial_is_hopeless_only_when_even_its_optimistic_accuracy_is_dominated():
    from chipsim.experiments.explore.objectives import _hopeless
    # front point: error 0.1 (accuracy 90%) at 5 µJ/sample. The trial costs 10 µJ/sample.
    point = {"objectives": ["accuracy", "train_energy"], "prune_margin": 0.1, "front": [[0.1, 5.0]]}
    assert _hopeless(0.5, {"train_energy": 10.0}, point)       # 50% + 10 = 60% < 90% and dearer: stop
    assert not _hopeless(0.85, {"train_energy": 10.0}, point)  # 85% + 10 = 95% > 90%: it may reach the front
    assert not _hopeless(0.5, {"train_energy": 4.0}, point)    # cheaper than the front point: keep it


def _row(rule, acc, energy, sram, w=4):
    return {"status": "ok", "params": {"workload.rule": rule, "precision.weight_bits": w},
            "values": {"accuracy": acc, "train_energy": energy, "peak_sram": sram}, "key": f"{rule}{acc}"}


def test_the_bp_sentence_says_what_bp_costs_at_equal_accuracy_or_that_no_local_rule_got_there():
    from chipsim.experiments.explore.report import bp_sentence, efficiency_sentences
    table = {"objectives": ["accuracy", "train_energy", "peak_sram"], "rows": [
        _row("bp", 0.90, 10.0, 200.0), _row("df-r", 0.895, 4.0, 100.0), _row("ff", 0.95, 8.0, 120.0),
        _row("df-o", 0.70, 1.0, 50.0)]}
    s = bp_sentence(table)
    # within 1 point of BP's 90.0%: df-r (89.5%, 4 µJ) and ff (95%, 8 µJ); the cheaper is df-r: 10/4 = 2.50x
    assert "the cheapest local rule is df-r at W4 (89.5%)" in s
    assert "2.50x the train energy (10 vs 4 µJ/sample)" in s and "2.00x the peak sram (200 vs 100 KiB)" in s
    # per µJ: df-o 0.70/1 = 70 points beats BP's 0.90/10 = 9 (7.78x); per KiB: df-o 0.70/50 = 1.4 vs 0.45
    eff = efficiency_sentences(table)
    assert eff[0] == ("Per µJ/sample of training energy, df-o at W4 beats BP: 70 accuracy points against BP's best 9 "
                      "(7.78x).")
    assert eff[1].startswith("Per KiB of peak SRAM per core, df-o at W4 beats BP: 1.4 accuracy points")
    table["rows"] = [_row("bp", 0.90, 10.0, 200.0), _row("df-o", 0.70, 1.0, 50.0)]
    assert bp_sentence(table) == ("No local rule came within 1 point of BP's best accuracy (90.0%, W4); the most "
                                  "accurate local rule, df-o at W4, reached 70.0%, 20.0 points below.")


def test_a_shared_storage_url_holds_the_study_and_a_nan_objective_is_a_violation(space, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    table = chipsim.explore(PRESET, space, objectives=["accuracy", "inference_energy"], sampler="random", trials=3,
                            out_dir=str(tmp_path / "ex"), jobs=1, progress=False, baseline=False, reeval_seeds=0,
                            storage=url, evaluate=helpers.cheap_evaluate)
    assert not (tmp_path / "ex" / "study.db").exists()
    study = optuna.load_study(study_name="random-seed0", storage=url)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
    # the stand-in gives no inference energy: every trial is a violation saying so, none a FAIL asked again
    assert [r["status"] for r in table["rows"]] == ["infeasible"] * 3
    assert table["rows"][0]["violation"] == "objective inference_energy is not a finite number"
