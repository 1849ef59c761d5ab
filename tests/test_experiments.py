"""compare, sweep and reproduce on tiny settings: they run, write what they promise, resume, and
their figures come from the traces (BP's memory grows with depth faster than DF-R's)."""
import json
import os
from pathlib import Path

import pytest

from chipsim.errors import ConfigError
from chipsim.experiments.compare import compare
from chipsim.experiments.jobs import RESULTS_NAME, load_done
from chipsim.experiments.sweep import parse_levels, sweep

REPO = Path(__file__).resolve().parents[1]
BIG = str(REPO / "hwconfigs" / "176core_512k.yaml")
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n"


def test_compare_depth_gap_widens_and_files_exist(tmp_path):
    t = compare(BIG, ("bp", "df-r"), (3, 6, 9), overrides=("learning.negatives=1",), width=8,
                out_dir=str(tmp_path), jobs=1, progress=False)
    for f in ("compare.json", "compare.md", "memory_streaming.png", "memory_whole_batch.png",
              "latency_step.png", "latency_backward.png", RESULTS_NAME):
        assert (tmp_path / f).exists(), f
    by = {(r["depth"], r["rule"]): r for r in t["rows"]}
    # BP keeps every block's activations for its backward pass: its whole-batch demand grows with depth
    # faster than DF-R's, so the ratio DF-R / BP falls as depth grows
    ratio = t["ratios"]["whole-batch:total_peak_bytes:df-r"]
    assert ratio[3] > ratio[6] > ratio[9]
    bp_act = [by[(d, "bp")]["activation_bytes_per_sample"] for d in (3, 6, 9)]
    assert bp_act[0] < bp_act[1] < bp_act[2]
    # and BP's backward phase (one sample) lengthens with depth: it walks back through every block
    bw = [by[(d, "bp")]["streaming"]["backward_us"] for d in (3, 6, 9)]
    assert bw[0] < bw[1] < bw[2]
    assert json.loads((tmp_path / "compare.json").read_text())["rules"] == ["bp", "df-r"]


def test_compare_rejects_bad_rules_and_depths(tmp_path):
    with pytest.raises(ConfigError, match="allowed"):
        compare(BIG, ("bp", "dfr"), (3,), out_dir=str(tmp_path), jobs=1, progress=False)
    with pytest.raises(ConfigError, match="depth"):
        compare(BIG, ("bp",), (1,), out_dir=str(tmp_path), jobs=1, progress=False)


def test_sweep_runs_and_resumes(tmp_path):
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    over = (f"workload.model={model}", "workload.train_limit=64", "workload.test_limit=40", "training.epochs=1",
            "training.batch_size=16")
    out = tmp_path / "sw"
    t = sweep(SMALL, ("bp", "df-o"), noise=("impulse", "mismatch"), levels=(0, 5), overrides=over,
              out_dir=str(out), jobs=1, progress=False)
    assert set(t["curves"]) == {"noise:impulse", "noise:mismatch"}
    for rule in ("bp", "df-o"):
        xs = [x for x, *_ in t["curves"]["noise:impulse"][rule]]
        assert xs == [0, 5]
    params = t["noise_parameters"]["impulse"][1]
    assert params["fraction_of_values"] == 0.27 and params["constants"] == "mnist-like"
    for f in ("sweep.json", "sweep.md", "accuracy_vs_impulse.png", "accuracy_vs_mismatch.png"):
        assert (out / f).exists(), f
    done = load_done(str(out / RESULTS_NAME))
    assert len(done) == 4                         # bp, df-o: clean + mismatch L5
    mtime = os.path.getmtime(out / RESULTS_NAME)
    again = sweep(SMALL, ("bp", "df-o"), noise=("impulse", "mismatch"), levels=(0, 5), overrides=over,
                  out_dir=str(out), jobs=1, progress=False)
    assert os.path.getmtime(out / RESULTS_NAME) == mtime   # nothing retrained
    assert json.loads(json.dumps(again["curves"])) == json.loads(json.dumps(t["curves"]))


def test_sweep_rerun_with_another_config_recomputes_and_the_same_config_reuses(tmp_path):
    """The stale-sweep bug: a rerun into the same --out with another train_limit reused the old points."""
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    base = (f"workload.model={model}", "workload.test_limit=40", "training.epochs=1", "training.batch_size=16")
    out = str(tmp_path / "sw")
    first = sweep(SMALL, ("bp",), bits=(4,), overrides=base + ("workload.train_limit=64",), out_dir=out, jobs=1,
                  progress=False)
    other = sweep(SMALL, ("bp",), bits=(4,), overrides=base + ("workload.train_limit=96",), out_dir=out, jobs=1,
                  progress=False)
    assert len(load_done(os.path.join(out, RESULTS_NAME))) == 2         # trained again, not reused
    assert first["points"][0]["key"] != other["points"][0]["key"]
    assert other["points"][0]["train_samples"] == 96 and first["points"][0]["train_samples"] == 64
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["overrides"][-1] == "workload.train_limit=96"
    assert "train_limit 96" in (tmp_path / "sw" / "sweep.md").read_text()
    mtime = os.path.getmtime(os.path.join(out, RESULTS_NAME))
    again = sweep(SMALL, ("bp",), bits=(4,), overrides=base + ("workload.train_limit=64",), out_dir=out, jobs=1,
                  progress=False)
    assert os.path.getmtime(os.path.join(out, RESULTS_NAME)) == mtime   # the same settings: reused
    assert again["points"] == first["points"]


def test_point_keys_follow_every_setting_and_nothing_else(tmp_path):
    from chipsim.config import load_config
    from chipsim.experiments.keys import point_key
    model = tmp_path / "m.yaml"
    model.write_text(TINY)
    cfg = load_config(SMALL, (f"workload.model={model}",))
    key = point_key("bp-s0", cfg, depth=3)
    assert key.startswith("bp-s0-") and key == point_key("bp-s0", load_config(SMALL, (f"workload.model={model}",)),
                                                         depth=3)
    assert key != point_key("bp-s0", cfg, depth=4)
    assert key != point_key("bp-s0", load_config(SMALL, (f"workload.model={model}", "learning.negatives=1")), depth=3)
    model.write_text(TINY.replace("units: 16", "units: 17"))             # same path, other content
    assert key != point_key("bp-s0", load_config(SMALL, (f"workload.model={model}",)), depth=3)
    moved = tmp_path / "moved.yaml"
    moved.write_text(TINY)                                                 # other path, same content
    assert key == point_key("bp-s0", load_config(SMALL, (f"workload.model={moved}",)), depth=3)


def test_interrupted_log_line_is_ignored_and_damage_is_named(tmp_path):
    from chipsim.errors import ChipsimError
    log = tmp_path / RESULTS_NAME
    log.write_text('{"key": "a", "x": 1}\n{"key": "b", "x"')   # a torn last line
    assert list(load_done(str(log))) == ["a"]
    assert log.read_text() == '{"key": "a", "x": 1}\n'          # cut off, so the next append starts clean
    log.write_text('{"key": "a"}\n{"x": 1}\n')
    with pytest.raises(ChipsimError, match=r"points.jsonl: line 2 is damaged \(a result without its \"key\"\)"):
        load_done(str(log))
    log.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(ChipsimError, match=r"line 2 is damaged \(not JSON\)"):
        load_done(str(log))


def test_sweep_argument_errors():
    assert parse_levels("0-5") == [0, 1, 2, 3, 4, 5] and parse_levels("0,3") == [0, 3]
    with pytest.raises(ConfigError):
        parse_levels("2-9")
    with pytest.raises(ConfigError, match="noise kind"):
        sweep(SMALL, noise=("thermal",), progress=False)
    with pytest.raises(ConfigError, match="--noise"):
        sweep(SMALL, progress=False)


@pytest.mark.slow
def test_reproduce_quick_writes_every_section(tmp_path):
    from chipsim.experiments.reproduce import reproduce
    res = reproduce(out_dir=str(tmp_path), quick=True, jobs=2, progress=False)
    text = (tmp_path / "README.md").read_text()
    for heading in ("## 1. Accuracy", "## 2. Memory", "## 2b. Which dataflow", "## 3. Robustness", "## 4. Bit width",
                    "## 5. Number of", "## The rule table", "## 8. The design-space search"):
        assert heading in text

    # a smoke test judges nothing (issue 26): every claim is stated with its numbers, none with a verdict
    assert "**Holds here" not in text and "**Does not hold here" not in text
    for claim in ("- FF < SymBa < DF:", "- greedy < DF-R ≤ DF-O:", "- 4-bit still works"):
        line = next(line for line in text.splitlines() if line.startswith(claim))
        assert "**Not judged at this scale**" in line, line
    assert "Most accurate: not judged at this scale" in text
    assert "Not judged at this scale: a smoke test of the search" in text     # the search, too
    assert text.count("**Not judged at this scale**") >= 5
    assert "| sequential-recompute | immediate | 9 |" in text            # the verdict table's rows
    for f in ("accuracy/accuracy.png", "compare/compare.md", "noise/sweep.md", "bits/accuracy_vs_bits.png",
              "negatives/accuracy_vs_negatives.png", "rules/rules.json", "dataflow/dataflow.md",
              "compare/ratio_whole_batch.png", "compare_recompute/memory_by_category_whole_batch.png",
              "explore/explore.md", "explore/study.db", "explore/pareto.csv"):
        assert (tmp_path / f).exists(), f
    # the opening sentence says how much was computed: all of it now, none of it on a rerun
    # (the search's trials are its study's, in explore/, resumed by Optuna: not counted as points)
    n = sum(len(p.read_text().splitlines()) for p in tmp_path.glob(f"*/{RESULTS_NAME}") if p.parent.name != "explore")
    assert n == res["points"] > 0 and f"computing all {n} points (none was logged" in text
    reproduce(out_dir=str(tmp_path), quick=True, jobs=2, progress=False)
    assert f"reusing all {n} points logged" in (tmp_path / "README.md").read_text()


def test_compare_on_the_configs_own_model_prints_the_ratios(tmp_path, capsys):
    from chipsim import cli
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    out = tmp_path / "own"
    assert cli.main(["compare", SMALL, "--own-model", "--rules", "bp,df-r", "--jobs", "1", "--out", str(out),
                     "--set", f"workload.model={model}", "--set", "training.batch_size=16"]) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "compare.json").read_text())
    assert table["model"] == "tiny" and table["depths"] == [2]
    ratio = table["ratios"]["streaming:total_peak_bytes:df-r"]["2"]
    by = {r["rule"]: r["streaming"]["total_peak_bytes"] for r in table["rows"]}
    assert ratio == pytest.approx(by["df-r"] / by["bp"])
    assert f"df-r / bp, SRAM, sum of core peaks (streaming): {ratio:.2f} at 2 blocks" in printed
    # every ratio to BP is printed, latency and energy included, in words
    from chipsim.experiments.compare import RATIO_NAMES
    for (mode, metric), words in RATIO_NAMES.items():
        vals = table["ratios"][f"{mode}:{metric}:df-r"]
        assert f"df-r / bp, {words}: {vals['2']:.2f} at 2 blocks" in printed, words
    assert "energy per sample" in printed and "step latency" in printed
    assert "on `tiny`" in (out / "compare.md").read_text()
    # the family and the own model are alternatives
    assert cli.main(["compare", SMALL, "--own-model", "--depths", "3"]) == 2


def test_compare_prints_the_memory_of_memory_mode_first():
    from chipsim.experiments.compare import ratio_lines
    ratios = {"streaming:total_peak_bytes:df-r": {5: 1.3}, "whole-batch:total_peak_bytes:df-r": {5: 4.1},
              "measured:total_peak_bytes:df-r": {5: 6.9}, "streaming:latency_us:df-r": {5: 3.1}}
    # memory_mode pytorch names the measured framework peak (chipsim.framework)
    for mode, first in (("streaming", 1.3), ("whole-batch", 4.1), ("pytorch", 6.9)):
        lines = ratio_lines({"ratios": ratios, "settings": {"memory_mode": mode}})
        assert lines[0].endswith(f"{first:.2f} at 5 blocks")
        assert len(lines) == len(ratios)
