"""experiments.measured: the widened condition grid's table and verdicts, from its numbers alone."""
import json

from chipsim.experiments import measured
from chipsim.experiments.measured import family, ratios, verdicts

MIB = 2 ** 20


def _row(d, shape, opt, rule, variant, n, mib, width=32):
    return {"depth": d, "shape": shape, "width": width, "optimizer": opt, "rule": rule, "variant": variant, "n": n,
            "bytes": int(mib * MIB)}


def _table(rows):
    t = {"depths": [11, 25], "label": "measured, torch 9.9, cpu", "batch": 64, "rows": rows}
    t["ratios"] = ratios(t)
    return t


def test_every_condition_below_the_papers_ratio_is_named_with_its_two_figures():
    rows = [_row(11, "early", "adam", "bp", "plain", 0, 100), _row(11, "early", "adam", "bp", "checkpointed", 0, 50),
            _row(11, "early", "adam", "df-r", "conscious", 1, 30),     # 0.30 vs plain (holds), 0.60 vs ckpt
            _row(11, "early", "adam", "df-r", "conscious", 9, 39),     # 0.39 vs plain (holds), 0.78 vs ckpt
            _row(25, "early", "adam", "bp", "plain", 0, 100), _row(25, "early", "adam", "bp", "checkpointed", 0, 80),
            _row(25, "early", "adam", "df-r", "conscious", 1, 60)]     # 0.60: not below 0.60; 0.75
    v = verdicts(_table(rows))
    at11 = next(x for x in v if x.startswith("**DF-R/BP < 0.40 at 11 blocks"))
    assert "holds in 2 of 4 conditions" in at11
    assert "N = 1" in at11 and "0.30x (30.0 / 100.0 MiB)" in at11
    assert "N = 9" in at11 and "0.39x (39.0 / 100.0 MiB)" in at11
    assert "vs BP checkpointed" not in at11                     # 0.60 and 0.78 do not hold
    at25 = next(x for x in v if x.startswith("**DF-R/BP < 0.60 at 25 blocks"))
    assert "holds in none of the 2 conditions measured" in at25
    assert "Lowest: DF-R conscious, N = 1" in at25 and "0.60x (60.0 / 100.0 MiB)" in at25
    assert "less than BP in 2 of them" in at25


def test_the_family_shapes():
    early = family(11, "early", 32)
    assert [b.pool for b in early.blocks[:10]] == [2, 2] + [0] * 8
    assert [b.channels for b in early.blocks[:3]] == [32, 64, 64] and early.blocks[-1].type == "dense"
    assert [b.channels for b in family(11, "uniform", 32).blocks[:10]] == [32] * 10
    assert [b.pool for b in family(11, "late", 8).blocks[:10]] == [0] * 8 + [2, 2]
    assert all(b.pool == 0 for b in family(25, "none", 8).blocks)
    from chipsim.modelspec import cnn_family
    assert family(25, "early", 32).blocks == cnn_family(25, width=32).blocks      # compare's family


def test_a_run_measures_resumes_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setitem(measured.PAPER_RATIO, 3, 0.5)
    kw = dict(depths=(3,), shapes=("early",), negatives=(1,), optimizers=("sgd",), batch=2, progress=False)
    t = measured.run(str(tmp_path), **kw)
    assert len(t["rows"]) == 4 and {r["rule"] for r in t["rows"]} == {"bp", "df-o", "df-r"}
    assert (tmp_path / "measured.md").exists() and (tmp_path / "ratio_measured.png").exists()
    assert any(v.startswith("**DF-R/BP < 0.50 at 3 blocks (measured, torch") for v in t["verdicts"])
    lines = (tmp_path / "points.jsonl").read_text().splitlines()
    again = measured.run(str(tmp_path), **kw)                    # resumes: nothing measured twice
    assert (tmp_path / "points.jsonl").read_text().splitlines() == lines
    assert [r["bytes"] for r in again["rows"]] == [json.loads(x)["bytes"] for x in lines]


def test_reproduce_reruns_the_committed_grids_without_measuring_again(tmp_path):
    """``chipsim reproduce`` runs the measured grids of its full plan (``Plan.measured``) into
    reports/dataflow/: with the committed points in place, its options name exactly the committed grid, so a
    rerun measures nothing and the table is rebuilt from those points."""
    import shutil
    from pathlib import Path

    from chipsim.experiments.reproduce import PLANS
    reports = Path(__file__).resolve().parents[1] / "reports" / "dataflow"
    assert [name for name, _ in PLANS["full"].measured] == ["measured", "measured_naive"]
    for name, options in PLANS["full"].measured:
        committed = json.loads((reports / name / "measured.json").read_text())
        shutil.copy(reports / name / "points.jsonl", tmp_path / f"{name}.jsonl")
        out = tmp_path / name
        out.mkdir()
        shutil.copy(reports / name / "points.jsonl", out / "points.jsonl")
        t = measured.run(str(out), progress=False, **options)
        assert (out / "points.jsonl").read_bytes() == (tmp_path / f"{name}.jsonl").read_bytes()   # none new
        assert len(t["rows"]) == t["grid_points"] == committed["grid_points"]
        assert t["verdicts"] == committed["verdicts"]


def test_a_points_log_that_is_a_symlink_is_refused(tmp_path):
    import pytest

    from chipsim.errors import ChipsimError
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    out = tmp_path / "grid"
    out.mkdir()
    (out / "points.jsonl").symlink_to(elsewhere)
    with pytest.raises(ChipsimError, match="points.jsonl"):
        measured.run(str(out), depths=(3,), shapes=("early",), negatives=(1,), optimizers=("sgd",), batch=2,
                     progress=False)
    assert elsewhere.read_text() == ""
