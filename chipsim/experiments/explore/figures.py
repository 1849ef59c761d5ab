"""The figures of ``chipsim explore``: the front in 2-D projections coloured by rule, hypervolume vs trials."""
from __future__ import annotations

import numpy as np

from .objectives import OBJECTIVES
from .report import RULE_COLORS, _rule


def plot_front(table: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ... import plots
    objs = table["objectives"]
    pairs = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]]
    if not pairs:
        pairs = [(objs[0], objs[0])]
    ok = [r for r in table["rows"] if r["status"] == "ok"]
    front = {r["key"] for r in table["front"]}
    n = len(pairs)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        for rule in sorted({_rule(r, table) for r in ok}):
            pts = [r for r in ok if _rule(r, table) == rule]
            col = RULE_COLORS.get(rule, "#333333")
            ax.scatter([r["values"][b] for r in pts], [_show(a, r["values"][a]) for r in pts], s=14, alpha=0.35,
                       color=col)
            on = [r for r in pts if r["key"] in front]
            ax.scatter([r["values"][b] for r in on], [_show(a, r["values"][a]) for r in on], s=46, color=col,
                       edgecolor="k", label=rule)
        ax.set_xlabel(f"{b} ({OBJECTIVES[b].unit})" if OBJECTIVES[b].unit else b)
        ax.set_ylabel("accuracy (%)" if a == "accuracy" else f"{a} ({OBJECTIVES[a].unit})")
        ax.grid(alpha=0.3)
    if table["front"]:
        axes[0][0].legend(fontsize=8, title="rule (front: outlined)")
    fig.suptitle("Feasible trials and the Pareto set, coloured by rule", fontsize=10)
    plots.save(fig, path)


def _show(o, v):
    return 100 * v if o == "accuracy" else v


def plot_hv(table: dict, curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ... import plots
    fig, ax = plt.subplots(figsize=(6, 4))
    by = {}
    for st in table["studies"]:
        by.setdefault(st["sampler"], []).append(curves[st["study"]])
    for name, cs in by.items():
        n = min(len(c) for c in cs)
        if not n:
            continue
        arr = np.array([c[:n] for c in cs])
        x = np.arange(1, n + 1)
        line, = ax.plot(x, arr.mean(0), label=f"{name} (mean of {len(cs)} search seed(s))")
        if len(cs) > 1:
            ax.fill_between(x, arr.min(0), arr.max(0), alpha=0.2, color=line.get_color())
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume")
    ax.set_title("Hypervolume against trials (band: min-max over search seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.save(fig, path)
