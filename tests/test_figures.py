"""Figures and tables (issue 26): one colour and marker per rule in every plot, numeric axes and columns
sorted as numbers, and every figure and table naming chip, model, N, batch, dataflow, mapping, precision
and scale."""
from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import pytest

from chipsim import plots
from chipsim.styles import RULE_STYLES, base_rule, numeric_order, rule_style

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")
TINY = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: dense, units: 16}\n"
SETTINGS_WORDS = ("chip ", "model ", "N = ", "batch ", "dataflow ", "mapping ", "W4/A4/G8/U16")


def test_numeric_order_sorts_numbers_as_numbers_and_words_last():
    assert numeric_order([32, 8, 4, 2]) == [2, 4, 8, 32]
    assert numeric_order(["32", "2", "4", "8"]) == ["2", "4", "8", "32"]    # as text this sorts 2, 32, 4, 8
    assert numeric_order(["avg", 9, 1, 3]) == [1, 3, 9, "avg"]


def test_every_rule_has_its_own_colour_and_marker():
    colors = [s.color for s in RULE_STYLES.values()]
    markers = [s.marker for s in RULE_STYLES.values()]
    assert len(set(colors)) == len(colors) and len(set(markers)) == len(markers)
    from chipsim.config import RULES
    assert set(RULES) <= set(RULE_STYLES)
    # rule-table variants take their rule's style
    assert base_rule("df-r span 3") == "df-r" and base_rule("df greedy") == "df" and base_rule("cwc + head") == "cwc"
    assert rule_style("df-o chunked 2") == RULE_STYLES["df-o"]


def _drawn_colours(monkeypatch, series):
    """label -> colour of the line plots.lines draws for it."""
    seen = {}

    def grab(fig, path):
        for cont in fig.axes[0].containers:                  # one errorbar container per series
            line = cont.lines[0]
            seen[cont.get_label()] = (mcolors.to_hex(line.get_color()), line.get_marker())
        return path
    monkeypatch.setattr(plots, "save", grab)
    plots.lines(series, "x", "y", "unused.png", "t")
    return seen


def test_a_rule_has_the_same_colour_whatever_the_order_of_the_series(monkeypatch):
    a = _drawn_colours(monkeypatch, {"bp": ([1, 2], [1, 2]), "df-o": ([1, 2], [2, 3])})
    b = _drawn_colours(monkeypatch, {"df-o": ([1, 2], [2, 3]), "df-r": ([1, 2], [0, 1]), "bp": ([1, 2], [1, 2])})
    assert a["bp"] == b["bp"] == (RULE_STYLES["bp"].color.lower(), RULE_STYLES["bp"].marker)
    assert a["df-o"] == b["df-o"] == (RULE_STYLES["df-o"].color.lower(), RULE_STYLES["df-o"].marker)


@pytest.fixture
def titles(monkeypatch):
    """Every title plots.lines / plots.stacked_by_depth is asked to draw, by file name."""
    got = {}
    real_lines, real_stacked = plots.lines, plots.stacked_by_depth

    def lines(series, x_label, y_label, path, title, **kw):
        got[Path(path).name] = (title, series, kw)
        return real_lines(series, x_label, y_label, path, title, **kw)

    def stacked(panels, path, title, y_label):
        got[Path(path).name] = (title, panels, {})
        return real_stacked(panels, path, title, y_label)
    monkeypatch.setattr(plots, "lines", lines)
    monkeypatch.setattr(plots, "stacked_by_depth", stacked)
    return got


def test_bit_width_sweep_sorts_as_numbers_and_does_not_call_every_point_w4(tmp_path, titles):
    from chipsim.experiments.sweep import sweep
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    over = (f"workload.model={model}", "workload.train_limit=32", "workload.test_limit=20", "training.epochs=1",
            "training.batch_size=16")
    t = sweep(SMALL, ("bp",), bits=(32, 2, 8, 4), overrides=over, out_dir=str(tmp_path / "sw"), jobs=1,
              progress=False)
    assert [x for x, *_ in t["curves"]["bits"]["bp"]] == [2, 4, 8, 32]
    md = (tmp_path / "sw" / "sweep.md").read_text()
    assert "| rule | 2 | 4 | 8 | 32 |" in md                     # was | 2 | 32 | 4 | 8 | (sorted as text)
    title, series, kw = titles["accuracy_vs_bits.png"]
    assert "W4/A4/G8/U16" not in title and "the point's bit width" in title
    assert series["bp"][0] == [2, 4, 8, 32] and kw.get("log2_x")
    for word in SETTINGS_WORDS[:-1]:                           # the precision is the swept axis here
        assert word in title, word
    assert "chip 44core_4bit" in title and "model tiny" in title and "seeds 0" in title


def test_compare_figures_and_table_name_every_setting(tmp_path, titles):
    from chipsim.experiments.compare import compare
    t = compare(SMALL, ("bp", "df-r"), (3,), out_dir=str(tmp_path / "c"), jobs=1, progress=False)
    md = (tmp_path / "c" / "compare.md").read_text()
    for word in SETTINGS_WORDS:
        assert word in md, word
    assert "one engine step per point" in md and "negatives parallel, batch update" in md
    for name in ("memory_streaming.png", "ratio_whole_batch.png", "memory_by_category_whole_batch.png"):
        title = titles[name][0]
        for word in SETTINGS_WORDS:
            assert word in title, (name, word)
        assert "cnn_family(depth, width=32" in title
    assert t["settings"]["labels"]["negatives"] == "9"


def test_run_figures_and_report_name_every_setting(tmp_path, monkeypatch):
    from chipsim.runner import map as chip_map
    seen = {}
    real = plots.save

    def save(fig, path):
        seen[Path(path).name] = " ".join(ax.get_title() for ax in fig.axes)
        return real(fig, path)
    monkeypatch.setattr(plots, "save", save)
    chip_map(SMALL, ("training.batch_size=8",), out_dir=str(tmp_path / "m"), progress=False)
    for name in ("gantt.png", "sram_heatmap.png", "link_traffic.png"):
        for word in SETTINGS_WORDS:
            assert word in seen[name], (name, word)
        assert "batch 8" in seen[name] and "no training" in seen[name]
    report = (tmp_path / "m" / "report.md").read_text()
    assert "Every figure and table below: chip 44core_4bit (4x11 cores), model cnn_small, N = 9 negatives, " \
           "batch 8, dataflow negatives parallel, batch update, mapping fit, micro-batch 1, statistics running, " \
           "W4/A4/G8/U16" in report


def test_dataflow_table_names_its_settings():
    from chipsim.experiments.dataflow import markdown
    t = {"settings": {"chip": "c (1x2 cores)", "model": "m", "negatives": "per row", "batch": "4",
                      "dataflow": "per row", "mapping": "fit, micro-batch 1", "precision": "W4/A4/G8/U16",
                      "scale": "one engine step"},
         "datasets": [], "depths": [], "rows": [], "verdicts": [], "points": 0, "chip": "c", "batch_size": 4,
         "compute_seconds": 0.0, "seconds": 0.0}
    assert markdown(t)[0] == ("Settings: chip c (1x2 cores), model m, N = per row, batch 4, dataflow per "
                              "row, mapping fit, micro-batch 1, W4/A4/G8/U16; one engine step.")
