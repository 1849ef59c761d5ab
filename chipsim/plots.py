"""Matplotlib figures of a run: where memory sits, where traffic flows, who waits.

Every function takes plain data (the dicts of ``ChipReport.to_dict()`` or lists
of numbers), draws one figure and saves it atomically, so plots can be redrawn
from a ``summary.json`` without re-running anything.
"""
from __future__ import annotations

import ast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from .atomic import atomic_file  # noqa: E402

KIND_COLORS = {"fwd": "#4C72B0", "goodness": "#8172B2", "loss": "#937860", "grad_w": "#DD8452",
               "grad_x": "#C44E52", "feedback": "#55A868", "update": "#64B5CD", "send": "#999999",
               "select": "#222222", "recompute": "#8C564B"}


def save(fig, path: str) -> str:
    """Save to a temp file beside ``path`` and rename: a reader never sees half a PNG."""
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def sram_heatmap(chip: dict, path: str, title: str) -> str:
    """Peak SRAM per core on the mesh, as a fraction of capacity; idle cores blank."""
    rows, cols = chip["chip"]["rows"], chip["chip"]["cols"]
    cap = chip["ledger"]["capacity_bytes"]
    grid = np.full((rows, cols), np.nan)
    layer_of = np.full((rows, cols), -1)
    for layer in chip["mapping"]["layers"]:
        for s in layer["slices"]:
            r, c = s["coord"]
            layer_of[r, c] = layer["layer"]
            grid[r, c] = 100.0 * chip["ledger"]["cores"][str(s["core"])]["peak_bytes"] / cap
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * cols + 2), max(2.5, 0.7 * rows + 1)))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    for r in range(rows):
        for c in range(cols):
            if layer_of[r, c] >= 0:
                ax.text(c, r, f"L{layer_of[r, c]}\n{grid[r, c]:.0f}%", ha="center", va="center", fontsize=6,
                        color="white" if grid[r, c] < 60 else "black")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel("mesh column")
    ax.set_ylabel("mesh row")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=f"peak SRAM use (% of {cap / 1024:.0f} KiB)")
    return save(fig, path)


def link_traffic(chip: dict, path: str, title: str) -> str:
    """Bytes per mesh link over one step: thicker, darker lines carry more."""
    rows, cols = chip["chip"]["rows"], chip["chip"]["cols"]
    segs, vals = [], []
    for key, b in chip["noc"]["link_bytes"].items():
        a, z = key.split("->")
        (r0, c0), (r1, c1) = ast.literal_eval(a), ast.literal_eval(z)  # keys are "(r, c)->(r, c)"
        off = 0.08 if (r1 - r0) + (c1 - c0) > 0 else -0.08  # separate the two directions of a link
        segs.append([(c0 + (off if r0 != r1 else 0), r0 + (off if c0 != c1 else 0)),
                     (c1 + (off if r0 != r1 else 0), r1 + (off if c0 != c1 else 0))])
        vals.append(b)
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * cols + 2), max(2.5, 0.7 * rows + 1)))
    ax.scatter(*np.meshgrid(range(cols), range(rows)), s=30, c="lightgray", zorder=1)
    if segs:
        v = np.asarray(vals, float) / 1024
        lc = LineCollection(segs, array=v, cmap="magma_r", linewidths=1 + 4 * v / v.max(), zorder=2)
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, label="KiB per step on the link")
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlabel("mesh column")
    ax.set_ylabel("mesh row")
    ax.set_title(title)
    return save(fig, path)


def gantt(rows: list, latency_cycles: float, clock_mhz: float, path: str, title: str, max_cores: int = 48) -> str:
    """Per-core timeline of one step (µs), coloured by op kind."""
    cores = sorted({r["core"] for r in rows})[:max_cores]
    pos = {c: i for i, c in enumerate(cores)}
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.22 * len(cores) + 1)))
    us = 1.0 / clock_mhz
    by_kind = {}
    for r in rows:
        if r["core"] in pos:
            by_kind.setdefault(r["kind"], []).append((r["start"] * us, (r["end"] - r["start"]) * us, pos[r["core"]]))
    for kind, bars in by_kind.items():
        for start, width, y in bars:
            ax.broken_barh([(start, max(width, 1e-9))], (y - 0.4, 0.8), color=KIND_COLORS.get(kind, "k"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS.get(k, "k")) for k in by_kind]
    ax.legend(handles, list(by_kind), loc="upper right", fontsize=7, ncol=4)
    ax.set_yticks(range(len(cores)))
    ax.set_yticklabels([str(c) for c in cores], fontsize=6)
    ax.set_xlim(0, latency_cycles * us)
    ax.set_xlabel("time within one training step (µs)")
    ax.set_ylabel("core")
    ax.set_title(title)
    return save(fig, path)


def training_curve(history: list, path: str, title: str) -> str:
    """Test accuracy and training loss per epoch."""
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ep, [100 * h["test_accuracy"] for h in history], "o-", label="test accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["loss"] for h in history], "s--", color="gray", label="training loss")
    ax2.set_ylabel("mean training loss")
    ax.set_title(title)
    ax.set_xticks(ep)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=7, loc="center right")
    return save(fig, path)


def lines(series: dict, x_label: str, y_label: str, path: str, title: str, errors: dict | None = None,
          xticks=None, hline=None, marks: dict | None = None, from_zero: bool = False) -> str:
    """Generic multi-series line plot: series name -> (xs, ys); optional error bars per series;
    ``marks``: label -> (xs, ys) drawn as points only (e.g. a paper's figures); ``from_zero``: y from 0."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, (xs, ys) in series.items():
        err = errors.get(name) if errors else None
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    for name, (xs, ys) in (marks or {}).items():
        ax.plot(xs, ys, ls="none", marker="*", ms=12, color="black", label=name)
    if hline is not None:
        ax.axhline(hline[0], color="gray", ls=":", lw=1, label=hline[1])
    if from_zero:
        ax.set_ylim(bottom=0)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if xticks is not None:
        ax.set_xticks(xticks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save(fig, path)


CATEGORY_COLORS = {"weights": "#4C72B0", "master_weights": "#64B5CD", "optimizer_state": "#8172B2",
                   "bn_params": "#CCB974", "label_embedding": "#937860", "feedback_weights": "#55A868",
                   "act_update": "#DD8452", "act_backward": "#C44E52", "gradients": "#DA8BC3",
                   "noc_buffers": "#8C8C8C"}


def stacked_by_depth(panels: dict, path: str, title: str, y_label: str) -> str:
    """One panel per name (a rule): bars per depth, stacked by memory category, y from 0.

    ``panels``: name -> {depth: {category: value}}; every panel shares the y axis so rules compare."""
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1.5, 3.6), sharey=True, squeeze=False)
    cats = [c for c in CATEGORY_COLORS if any(v.get(c) for p in panels.values() for v in p.values())]
    top = max((sum(v.values()) for p in panels.values() for v in p.values()), default=1.0)
    for ax, name in zip(axes[0], names):
        depths = sorted(panels[name])
        bottom = np.zeros(len(depths))
        for c in cats:
            vals = np.array([panels[name][d].get(c, 0.0) for d in depths])
            ax.bar([str(d) for d in depths], vals, bottom=bottom, color=CATEGORY_COLORS[c], label=c)
            bottom += vals
        ax.set_title(name)
        ax.set_xlabel("number of blocks")
        ax.set_ylim(0, 1.05 * top)
    axes[0][0].set_ylabel(y_label)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
