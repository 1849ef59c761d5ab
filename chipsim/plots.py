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

from .atomic import atomic_file  # noqa: E402
from .styles import rule_style  # noqa: E402

KIND_COLORS = {"fwd": "#4C72B0", "goodness": "#8172B2", "loss": "#937860", "grad_w": "#DD8452",
               "grad_x": "#C44E52", "feedback": "#55A868", "update": "#64B5CD", "send": "#999999",
               "select": "#222222", "recompute": "#8C564B"}


MAX_INCHES = 16.0              # a figure of a 1000-column mesh must still fit in memory and on a screen
MAX_LABELLED_CELLS = 400       # above this many cores the heatmap drops its per-core text


def _mesh_figsize(rows: int, cols: int, extra_w: float = 2.0, extra_h: float = 1.0) -> tuple:
    w, h = 0.7 * cols + extra_w, 0.7 * rows + extra_h
    scale = min(1.0, MAX_INCHES / w, MAX_INCHES / h)
    return max(4.0, w * scale), max(2.5, h * scale)


def _ticks(n: int) -> list:
    """Integer tick positions 0..n-1, thinned to at most about 24 so their labels stay readable."""
    step = max(1, -(-n // 24))
    return list(range(0, n, step))


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
    fig, ax = plt.subplots(figsize=_mesh_figsize(rows, cols))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    if rows * cols <= MAX_LABELLED_CELLS:
        for r, c in zip(*np.nonzero(layer_of >= 0)):
            ax.text(c, r, f"L{layer_of[r, c]}\n{grid[r, c]:.0f}%", ha="center", va="center", fontsize=6,
                    color="white" if grid[r, c] < 60 else "black")
    ax.set_xticks(_ticks(cols))
    ax.set_yticks(_ticks(rows))
    ax.set_xlabel("mesh column")
    ax.set_ylabel("mesh row")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=f"peak SRAM use (% of {cap / 1024:.0f} KiB)")
    return save(fig, path)


def link_traffic(chip: dict, path: str, title: str) -> str:
    """Bytes per directed mesh link over one step, as arrows on the mesh.

    Each direction of a link has its own lane (offset to the right of travel)
    and arrowhead, so east- and westbound traffic read apart. Colour and width
    follow a logarithmic scale: on a mesh one hot link can carry a thousand
    times a quiet one, and a linear scale would draw the quiet ones invisible.
    """
    from matplotlib.colors import LogNorm
    rows, cols = chip["chip"]["rows"], chip["chip"]["cols"]
    arrows = []
    for key, b in chip["noc"]["link_bytes"].items():
        if b <= 0:
            continue
        a, z = key.split("->")
        (r0, c0), (r1, c1) = ast.literal_eval(a), ast.literal_eval(z)  # keys are "(r, c)->(r, c)"
        dr, dc = r1 - r0, c1 - c0
        lane = 0.12                                # to the right of the direction of travel (y grows down)
        ox, oy = -dr * lane, dc * lane
        arrows.append(((c0 + ox + 0.2 * dc, r0 + oy + 0.2 * dr), (c1 + ox - 0.2 * dc, r1 + oy - 0.2 * dr), b / 1024))
    fig, ax = plt.subplots(figsize=_mesh_figsize(rows, cols, 2.5, 1.2))
    if rows * cols <= 4096:
        ax.scatter(*np.meshgrid(range(cols), range(rows)), s=40, c="lightgray", zorder=1)
    if arrows:
        v = np.array([k for *_, k in arrows])
        lo = max(v.min(), v.max() / 1e4)
        norm = LogNorm(vmin=lo, vmax=max(v.max(), lo * 1.0001))
        cmap = plt.get_cmap("viridis")
        for (x0, y0), (x1, y1), kib in arrows:
            t = float(norm(max(kib, lo)))
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color=cmap(t), lw=0.8 + 2.7 * t, mutation_scale=8))
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="KiB per step on the link (log scale)")
    ax.set_xticks(_ticks(cols))
    ax.set_yticks(_ticks(rows))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlabel("mesh column")
    ax.set_ylabel("mesh row")
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def gantt(rows: list, latency_cycles: float, clock_mhz: float, path: str, title: str, max_cores: int = 48,
          layer_names: dict | None = None) -> str:
    """Per-core timeline of one step (µs), coloured by op kind; each core labelled with the layer it runs."""
    cores = sorted({r["core"] for r in rows})[:max_cores]
    pos = {c: i for i, c in enumerate(cores)}
    layer_of = {r["core"]: r["layer"] for r in rows}
    fig, ax = plt.subplots(figsize=(10, max(2.8, 0.26 * len(cores) + 1.4)))
    us = 1.0 / clock_mhz
    by_kind = {}                   # kind -> core row -> bars: one draw call per (kind, core), not per bar
    for r in rows:
        if r["core"] in pos:
            by_kind.setdefault(r["kind"], {}).setdefault(pos[r["core"]], []).append(
                (r["start"] * us, max((r["end"] - r["start"]) * us, 1e-9)))
    for kind, per_core in by_kind.items():
        for y, bars in per_core.items():
            ax.broken_barh(bars, (y - 0.4, 0.8), color=KIND_COLORS.get(kind, "k"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS.get(k, "k")) for k in by_kind]
    # the legend sits outside the axes, right of the data, so it never hides a core's bars
    ax.legend(handles, list(by_kind), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="op kind",
              title_fontsize=8, frameon=False)
    names = layer_names or {}

    def label(c):
        layer = layer_of.get(c)
        name = names.get(layer, f"L{layer}")
        return f"core {c} · L{layer} {name}" if name != f"L{layer}" else f"core {c} · L{layer}"

    ax.set_yticks(range(len(cores)))
    ax.set_yticklabels([label(c) for c in cores], fontsize=7 if len(cores) <= 24 else 6)
    ax.set_ylim(len(cores) - 0.5, -0.5)
    ax.set_xlim(0, latency_cycles * us)
    ax.set_xlabel("time within one training step (µs)")
    ax.set_title(title, fontsize=9)
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
    ax.set_title(title, fontsize=9)
    ax.set_xticks(ep)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=7, loc="center right")
    return save(fig, path)


LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)))


def lines(series: dict, x_label: str, y_label: str, path: str, title: str, errors: dict | None = None,
          xticks=None, hline=None, y_from_zero: bool = False, marks: dict | None = None,
          xticklabels=None, log2_x: bool = False) -> str:
    """Generic multi-series line plot: series name -> (xs, ys); optional error bars per series.

    A series named after a rule has that rule's colour and marker in every
    figure (``chipsim.styles``); each series also has its own line style and a
    smaller marker than the one before, so two series with the same values
    (DF-O on DF-R) both show. Numeric x values are plotted as numbers, so
    they sort as numbers; text x values (``avg``) keep their order.
    ``y_from_zero`` starts the y axis at 0: ratios and sizes read honestly.
    ``marks``: label -> (xs, ys) drawn as points only (e.g. a paper's figures).
    """
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    for i, (name, (xs, ys)) in enumerate(series.items()):
        err = errors.get(name) if errors else None
        st = rule_style(name, i)
        ax.errorbar(xs, ys, yerr=err, marker=st.marker, color=st.color, ls=LINESTYLES[i % len(LINESTYLES)],
                    ms=max(3.5, 9 - 2 * i), mfc="none" if i else None, capsize=3, label=name, zorder=3 + i)
    for name, (xs, ys) in (marks or {}).items():
        ax.plot(xs, ys, ls="none", marker="*", ms=12, color="black", label=name, zorder=10)
    if hline is not None:
        ax.axhline(hline[0], color="gray", ls=":", lw=1, label=hline[1])
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if log2_x:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    if xticks is not None:
        ax.set_xticks(xticks)
        ax.set_xticklabels(xticklabels if xticklabels is not None else [f"{x:g}" if isinstance(x, (int, float))
                                                                           else str(x) for x in xticks])
    if y_from_zero:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
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
