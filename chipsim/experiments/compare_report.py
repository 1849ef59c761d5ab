"""The comparison's ratios to BP and how a finished table is shown (markdown, console lines, plots): its own
module because it reads only the table, while ``compare`` runs the points that fill it."""
from __future__ import annotations

import os

from .. import labels, provenance, rundir

BASELINE = "bp"

#: every ratio to BP that compare computes: (memory mode, metric) -> words for tables, plots and the console
RATIO_NAMES = {
    ("streaming", "total_peak_bytes"): "SRAM, sum of core peaks (streaming)",
    ("streaming", "peak_core_bytes"): "SRAM of the fullest core (streaming)",
    ("whole-batch", "total_peak_bytes"): "whole-batch memory demand (one pool, each tensor once)",
    ("measured", "total_peak_bytes"): "framework peak, measured in PyTorch (one step's allocator bytes)",
    ("measured-ckpt", "total_peak_bytes"): "framework peak, measured, against BP with activation checkpointing",
    ("streaming", "latency_us"): "step latency",
    ("streaming", "sample_latency_us"): "one sample's latency",
    ("streaming", "backward_us"): "one sample's backward phase",
    ("streaming", "noc_bytes"): "NoC traffic per step",
    ("streaming", "energy_per_sample_pj"): "energy per sample",
}
MODES = ("streaming", "whole-batch", "measured", "measured-ckpt")
#: ``mapping.memory_mode`` value -> the mode of the table whose ratio the console prints first
FIRST_MODE = {"pytorch": "measured"}
PAPER_RATIO = {11: 0.40, 25: 0.60}    # DF's memory / BP's, Wu et al. 2024 Fig. 4A ("< ~40%", "~60%")

RATIO_METRICS = ("total_peak_bytes", "latency_us", "sample_latency_us", "backward_us", "energy_per_sample_pj")
STRATEGIES = ("fit", "balanced", "search")           # mapping.strategy: each point is costed under each
STRATEGY_METRICS = ("latency_us", "energy_per_sample_pj")


def ratios(rows, rules, depths) -> dict:
    """Rule/BP ratios per depth: ``mode:metric:rule`` -> {depth: ratio}, for every (mode, metric) of
    ``RATIO_NAMES`` and every mode that has a metric of ``RATIO_METRICS``."""
    by = {(r["depth"], r["rule"]): r for r in rows}
    pairs = list(RATIO_NAMES) + [(m, x) for m in MODES for x in RATIO_METRICS if (m, x) not in RATIO_NAMES]
    out = {}
    for mode, metric in pairs:
        for rule in rules:
            if rule == BASELINE:
                continue
            vals = {}
            for d in depths:
                a, b = by.get((d, rule), {}).get(mode, {}), by.get((d, BASELINE), {}).get(mode, {})
                if a.get("fits") and b.get("fits") and b.get(metric):
                    vals[d] = a[metric] / b[metric]
            if vals:
                out[f"{mode}:{metric}:{rule}"] = vals
    return out


def strategy_ratios(rows, rules, depths) -> dict:
    """Rule/BP ratios per depth with both rules mapped by the same strategy: ``strategy:metric:rule`` ->
    {depth: ratio}, for each of ``STRATEGIES`` and ``STRATEGY_METRICS`` (from each point's ``strategies``;
    a point logged before they were recorded, or one that does not fit, has none)."""
    by = {(r["depth"], r["rule"]): r for r in rows}
    out = {}
    for s in STRATEGIES:
        for metric in STRATEGY_METRICS:
            for rule in rules:
                if rule == BASELINE:
                    continue
                vals = {}
                for d in depths:
                    a = by.get((d, rule), {}).get("strategies", {}).get(s, {})
                    b = by.get((d, BASELINE), {}).get("strategies", {}).get(s, {})
                    if a.get("fits") and b.get("fits") and b.get(metric):
                        vals[d] = a[metric] / b[metric]
                if vals:
                    out[f"{s}:{metric}:{rule}"] = vals
    return out


def strategy_cell(sr: dict, metric: str, rule: str, depth) -> str:
    """``1.37 / 5.95 / 1.20``: the rule/BP ratio at ``depth`` under fit / balanced / search ('n/a' where
    missing)."""
    def one(s):
        vals = sr.get(f"{s}:{metric}:{rule}", {})
        v = vals.get(depth, vals.get(str(depth)))
        return f"{v:.2f}" if v is not None else "n/a"
    return " / ".join(one(s) for s in STRATEGIES)


def strategy_lines(table: dict) -> list:
    """Markdown: each rule's latency and energy ratio to BP under every strategy, side by side."""
    sr = table.get("strategy_ratios") or {}
    rules = [r for r in table["rules"] if r != BASELINE]
    if not sr or not rules:
        return []
    lines = ["", "## The ratios under each mapping strategy", "",
             f"Each point's trace costed again under `mapping.strategy` {', '.join(STRATEGIES)} (both rules "
             "mapped the same way; `search` with the table's objective): how far the mapping moves a verdict. "
             "Cells are fit / balanced / search.", "",
             "| depth | rule | step latency / BP | energy per sample / BP |", "|---|---|---|---|"]
    for d in table["depths"]:
        for rule in rules:
            lines.append(f"| {d} | {rule} | {strategy_cell(sr, 'latency_us', rule, d)} | "
                         f"{strategy_cell(sr, 'energy_per_sample_pj', rule, d)} |")
    return lines


def ratio_name(key: str) -> str:
    """``streaming:total_peak_bytes:df-o`` -> ``df-o / bp, SRAM, sum of core peaks (streaming)``."""
    mode, metric, rule = key.split(":")
    return f"{rule} / {BASELINE}, {RATIO_NAMES.get((mode, metric), f'{metric} ({mode})')}"


def ratio_lines(table: dict) -> list:
    """One line per (metric, rule) with every depth's ratio: what the console prints. The memory of
    ``mapping.memory_mode`` (the headline figure) comes first."""
    out = []
    mode = table.get("settings", {}).get("memory_mode", "streaming")
    first = f"{FIRST_MODE.get(mode, mode)}:total_peak_bytes:"
    for key, vals in sorted(table["ratios"].items(), key=lambda kv: not kv[0].startswith(first)):
        if vals:
            out.append(f"{ratio_name(key)}: " + ", ".join(f"{v:.2f} at {d} blocks" for d, v in vals.items()))
    if not out:
        out.append(f"no ratios to {BASELINE}: add {BASELINE} to --rules (and a rule it fits beside)")
    return out


def _settings_line(table: dict) -> str:
    st = table.get("settings", {})
    over = f"overrides `{' '.join(st['overrides'])}`" if st.get("overrides") else "no overrides"
    if st.get("labels"):
        return f"Settings: config `{rundir.display_path(table['config'])}`, {over}; {labels.line(st['labels'])}."
    return (f"Settings: config `{rundir.display_path(table['config'])}`, {over}; batch {st.get('batch_size', table['batch_size'])}, "
            f"N = {st.get('negatives', '?')} negatives ({st.get('negative_reduce', 'max')}), "
            f"{st.get('precision', '')}, mapping `{st.get('mapping', '')}`, micro-batch {st.get('micro_batch', '')}.")


def markdown(table: dict) -> str:
    flow = (f"Dataflow: `mapping.negatives: {table.get('negatives', 'parallel')}`, "
            f"`training.update: {table.get('update', 'batch')}`.")
    if table.get("model"):
        what = [f"# BP vs local rules on `{table['model']}`, chip `{table['chip']}`", "",
                f"The config's own model ({table['depths'][0]} blocks); one training step of "
                f"{table['batch_size']} samples executed by the engine per rule. {flow}", ""]
    else:
        what = [f"# BP vs local rules over depth on `{table['chip']}`", "",
                f"Depth family: `cnn_family(depth, width={table['width']}, pools={tuple(table.get('pools', (0, 1)))})` "
                f"(depth-1 conv3x3 blocks, then a dense block) on `{table.get('dataset', 'mnist5k')}`-shaped input; "
                f"one training step of {table['batch_size']} samples executed by the engine per point. {flow}", ""]
    lines = what + [_settings_line(table), "",
             "Streaming = samples stream through the cores (what the chip needs); whole-batch = every "
             "tensor of the batch held in one shared memory, peak over time, at the chip's widths. "
             "Backward phase = for one sample alone, time from its last forward op to its last update op. "
             f"Measured = one training step of the same rule, model, batch, N and optimizer in PyTorch "
             f"(`chipsim.framework`), peak allocator bytes over the step ({_measured_label(table)}); "
             "ckpt = BP with one activation checkpoint per block. The measured figure is the one "
             "`mapping.memory_mode: pytorch` names; a rule or model the framework does not implement shows -.", "",
             "| depth | rule | cores | total peak SRAM, streaming (KiB) | worst core (KiB) | whole-batch demand (KiB) "
             "| step latency (µs) | one sample (µs) | its backward phase (µs) | NoC (KiB/step) "
             "| energy/sample (µJ) | recomputed MACs | measured (KiB) | measured, BP ckpt (KiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        m, wb = r["streaming"], r["whole-batch"]
        ms = " | ".join(f"{x['total_peak_bytes'] / 1024:.0f}" if x.get("fits") else "-"
                        for x in (r.get("measured", {}), r.get("measured-ckpt", {}) if r["rule"] == BASELINE else {}))
        if not m.get("fits"):
            lines.append(f"| {r['depth']} | {r['rule']} | does not fit: {m['error'][:80]}... | | | "
                         f"{wb['total_peak_bytes'] / 1024:.0f} | | | | | | | {ms} |")
            continue
        lines.append(f"| {r['depth']} | {r['rule']} | {m['cores_used']} | {m['total_peak_bytes'] / 1024:.0f} | "
                     f"{m['peak_core_bytes'] / 1024:.0f} | {wb['total_peak_bytes'] / 1024:.0f} | "
                     f"{m['latency_us']:.0f} | {m['sample_latency_us']:.0f} | {m['backward_us']:.0f} | "
                     f"{m['noc_bytes'] / 1024:.0f} | {m['energy_per_sample_pj'] / 1e6:.2f} | "
                     f"{r.get('recompute_macs', 0):,} | {ms} |")
    lines += ["", "## Ratios to BP", ""]
    for k, vals in table["ratios"].items():
        if vals:
            lines.append(f"- {ratio_name(k)}: " + ", ".join(f"depth {d}: {v:.2f}" for d, v in vals.items()))
    lines += strategy_lines(table)
    if table.get("provenance"):
        lines += [""] + provenance.markdown(table["provenance"])
    return "\n".join(lines) + "\n"


def _title_settings(table: dict) -> str:
    """The settings of every figure's title (``labels.title_lines``), overrides after them."""
    st = table.get("settings", {})
    text = labels.title_lines(st["labels"]) if st.get("labels") else \
        f"chip {table['chip']}, batch {table['batch_size']}, N = {st.get('negatives', '?')}, {st.get('precision', '')}"
    return text + (f"\n{' '.join(st['overrides'])}" if st.get("overrides") else "")


def _measured_label(table: dict) -> str:
    """``measured, torch X.Y, cpu`` from the rows (each measured row carries its label)."""
    names = sorted({r["measured"]["label"] for r in table["rows"] if r.get("measured", {}).get("fits")})
    return ", ".join(names) or "not measured"


def plot(table: dict, out_dir: str) -> None:
    from .. import plots
    by = {(r["depth"], r["rule"]): r for r in table["rows"]}
    for mode, metric, label, fname in (
            ("streaming", "total_peak_bytes", "peak SRAM, sum over cores (KiB)", "memory_streaming"),
            ("whole-batch", "total_peak_bytes", "whole-batch memory demand (KiB)", "memory_whole_batch"),
            ("measured", "total_peak_bytes", f"framework peak (KiB, {_measured_label(table)})", "memory_measured"),
            ("streaming", "latency_us", "training step latency (µs)", "latency_step"),
            ("streaming", "backward_us", "one sample's backward phase (µs)", "latency_backward")):
        series = {}
        for rule in table["rules"]:
            xs, ys = [], []
            for d in table["depths"]:
                m = by.get((d, rule), {}).get(mode, {})
                if m.get("fits"):
                    xs.append(d)
                    ys.append(m[metric] / (1024 if metric.endswith("bytes") else 1))
            series[rule] = (xs, ys)
        title = f"{label.split(' (')[0]} vs depth\n{_title_settings(table)}"
        ratio = table["ratios"].get(f"{mode}:{metric}:df-r", {})
        if ratio:
            title += "\nDF-R/BP: " + ", ".join(f"{d}:{v:.2f}" for d, v in ratio.items())
        plots.lines(series, "number of blocks", label, os.path.join(out_dir, f"{fname}.png"), title,
                    xticks=table["depths"], y_from_zero=True)
    for mode, fname in (("streaming", "streaming"), ("whole-batch", "whole_batch"), ("measured", "measured"), ("measured-ckpt", "measured_vs_checkpointed_bp")):
        panels = {rule: {d: {c: v / 1024 for c, v in by[(d, rule)][mode]["by_category"].items()}
                         for d in table["depths"] if by.get((d, rule), {}).get(mode, {}).get("by_category")}
                  for rule in table["rules"]}
        if any(panels.values()):
            plots.stacked_by_depth(panels, os.path.join(out_dir, f"memory_by_category_{fname}.png"),
                                   f"{mode} memory by category vs depth\n{_title_settings(table)}", "KiB")
        series = {rule: (list(v), list(v.values())) for rule in table["rules"] if rule != BASELINE
                  for v in [table["ratios"].get(f"{mode}:total_peak_bytes:{rule}", {})] if v}
        if series:
            marks = {"paper (Fig. 4A)": (list(PAPER_RATIO), list(PAPER_RATIO.values()))}
            plots.lines(series, "number of blocks", f"memory / BP's ({mode})",
                        os.path.join(out_dir, f"ratio_{fname}.png"),
                        f"local rule / BP memory, {mode}"
                        + (f" ({_measured_label(table)})" if mode.startswith("measured") else "")
                        + f" (each rule and BP on the same model)\n{_title_settings(table)}",
                        xticks=table["depths"], hline=(1.0, "= BP"), marks=marks, y_from_zero=True)
