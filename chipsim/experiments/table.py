"""``chipsim table``: several rules over several seeds on one model and chip -- accuracy beside the chip's costs.

Why: the plain question "which rule, at what accuracy, for what SRAM, latency
and energy?" had no command; people borrowed ``sweep --noise shot --levels 0``.
A table is a sweep with no axis: one training per (rule, seed), run in
parallel and resumable through the same executor as every experiment
(``jobs.run_points``, ``points.jsonl``), each point the rule table's own
(``rule_table._point``: a full ``chipsim run`` without files). Accuracy is
mean ± sample standard deviation over seeds; the chip figures of one step do
not depend on the seed. Every rule runs the same model on the same chip, so
each ratio to BP compares like with like; which rule is most accurate is said
only where the seeds can tell (``verdicts``).
"""
from __future__ import annotations

import os

import numpy as np

from .. import provenance, rundir
from ..config import LoadedConfig, load_config
from ..errors import OutputError
from ..report import atomic_write, write_json
from . import args as check
from .. import labels
from .cluster import check_cluster
from .jobs import RESULTS_NAME, run_points, threads_per_job
from .keys import point_key
from .rule_table import _point
from .verdicts import Scale, ranked

DEFAULT_RULES = ("bp", "df-o", "df-r")
DEFAULT_SEEDS = (0, 1, 2)
BASELINE = "bp"


def table(config, rules=DEFAULT_RULES, seeds=DEFAULT_SEEDS, overrides=(), out_dir: str | None = None,
          jobs: int | None = None, progress: bool = True, cluster=None) -> dict:
    """Train every rule at every seed; write table.json, table.md, accuracy.png into ``out_dir``; return
    the table. A rerun into the same ``out_dir`` reuses the trainings whose settings are unchanged."""
    check_cluster(cluster)
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    rules = check.rules(rules)
    seeds = check.integers(seeds, "--seeds", 0, "seed")
    if len(set(seeds)) != len(seeds):
        from ..errors import ConfigError
        raise ConfigError("--seeds: a seed is given twice; give each once")
    jobs = check.jobs(jobs) or os.cpu_count() or 1
    clash = [o for o in cfg.overrides if o.startswith(("workload.rule=", "training.seed="))]
    if clash:
        from ..errors import ConfigError
        raise ConfigError(f"--set {clash[0]}: table sets the rule and seed of each training; give them with "
                          "--rules and --seeds instead")
    base = list(cfg.overrides)
    points = []
    for rule in rules:
        for seed in seeds:
            over = base + [f"workload.rule={rule}", f"training.seed={seed}"]
            pcfg = load_config(cfg.path, tuple(over))          # every point valid before any training
            points.append({"key": point_key(f"{rule}-s{seed}", pcfg), "rule": rule, "seed": seed,
                           "config": cfg.path, "overrides": over, "threads": threads_per_job(jobs)})
    hw = cfg.hw
    scale = (f"{hw.workload.dataset}, train_limit {hw.workload.train_limit or 'all'}, test_limit "
             f"{hw.workload.test_limit or 'all'}, {hw.training.epochs} epoch(s), seeds {', '.join(map(str, seeds))}")
    with rundir.claimed(out_dir, cfg.name, "table", reusable_marker=RESULTS_NAME) as out_dir:
        if progress:
            print(f"chipsim table: {len(points)} training(s) of {', '.join(rules)} x seeds "
                  f"{', '.join(map(str, seeds))} on {cfg.model.name}, chip {hw.chip.name}"
                  + (f"; overrides: {' '.join(base)}" if base else "") + f"; writing {out_dir}{os.sep}", flush=True)
        try:
            res = run_points(_point, points, out_dir, jobs=jobs, progress=progress, desc="table", cluster=cluster)
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot write {RESULTS_NAME}: {exc.strerror or exc}") from None
        except KeyboardInterrupt as exc:
            exc.resume_hint = f"finished trainings are in {os.path.join(out_dir, RESULTS_NAME)}; rerun the " \
                              f"same command with --out {out_dir} to continue"
            raise
        rows = [summarize(rule, [res[p["key"]] for p in points if p["rule"] == rule], seeds) for rule in rules]
        out = {"config": cfg.path, "overrides": base, "rules": rules, "seeds": list(seeds),
               "settings": labels.settings(cfg, scale=scale), "rows": rows, "provenance": provenance.collect("table")}
        write_json(os.path.join(out_dir, "table.json"), out)
        atomic_write(os.path.join(out_dir, "table.md"), markdown(out))
        plot(out, os.path.join(out_dir, "accuracy.png"))
    return out


def summarize(rule: str, runs: list, seeds) -> dict:
    """One row: accuracy over seeds (mean, sample sd, each seed's) and the chip costs of one step."""
    acc = np.array([r["test_accuracy"] for r in runs], dtype=float)
    first = runs[0]                              # the chip figures do not depend on the seed's weights
    return {"rule": rule, "seeds": list(seeds), "accuracy": acc.tolist(), "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "train_seconds": [r["train_seconds"] for r in runs],
            **{k: first[k] for k in ("total_peak_bytes", "peak_core_bytes", "whole_batch_bytes", "cores",
                                      "latency_us", "energy_per_sample_pj", "inference")}}


def markdown(t: dict) -> str:
    """table.md: the settings, one row per rule, the ratios to BP and the gated 'most accurate'."""
    n = len(t["seeds"])
    rows = t["rows"]
    lines = [f"# Rules x seeds on `{t['settings']['model']}`, chip `{t['settings']['chip']}`", "",
             f"Config `{rundir.display_path(t['config'])}`"
             + (f", overrides `{' '.join(t['overrides'])}`" if t["overrides"] else ", no overrides")
             + f". Settings: {labels.line(t['settings'])}.", "",
             f"Accuracy: mean ± sample standard deviation over {n} seed(s), then each seed's. Chip figures: one "
             "training step on the chip (they do not depend on the seed). Every rule runs the same model and chip.",
             "", "| rule | accuracy (%) | per seed (%) | SRAM, sum over cores (KiB) | worst core (KiB) "
             "| whole-batch (KiB) | cores | step latency (µs) | energy / sample (µJ) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = f" ± {100 * r['accuracy_std']:.1f}" if n > 1 else ""
        lines.append(f"| {r['rule']} | {100 * r['accuracy_mean']:.1f}{sd} | "
                     f"{' / '.join(f'{100 * a:.1f}' for a in r['accuracy'])} | {r['total_peak_bytes'] / 1024:.0f} | "
                     f"{r['peak_core_bytes'] / 1024:.0f} | {r['whole_batch_bytes'] / 1024:.0f} | {r['cores']} | "
                     f"{r['latency_us']:.0f} | {r['energy_per_sample_pj'] / 1e6:.3f} |")
    lines.append("")
    scale = Scale(t["settings"]["scale"])
    best, why = ranked(rows, lambda r: r["accuracy_mean"], lambda r: r["accuracy_std"], lambda r: len(r["accuracy"]),
                       lambda r: r["rule"], scale)
    if len(rows) > 1:
        top = max(rows, key=lambda r: r["accuracy_mean"])
        lines.append("- Most accurate: " + (f"{best['rule']} ({100 * best['accuracy_mean']:.1f}%), by more than the "
                                            f"spread over seeds ({scale.text})." if best is not None else
                                            f"not judged at this scale ({why}; highest mean: {top['rule']}, "
                                            f"{100 * top['accuracy_mean']:.1f}%)."))
    bp = next((r for r in rows if r["rule"] == BASELINE), None)
    if bp is not None and len(rows) > 1:
        lines.append(f"- Against {BASELINE} on the same model and chip (SRAM / step latency / energy per sample): "
                     + "; ".join(f"{r['rule']} {r['total_peak_bytes'] / bp['total_peak_bytes']:.2f} / "
                                 f"{r['latency_us'] / bp['latency_us']:.2f} / "
                                 f"{r['energy_per_sample_pj'] / bp['energy_per_sample_pj']:.2f}"
                                 for r in rows if r is not bp) + ".")
    lines += ["", "![accuracy](accuracy.png)", ""] + provenance.markdown(t["provenance"])
    return "\n".join(lines) + "\n"


def plot(t: dict, path: str) -> None:
    """Accuracy per rule (mean and each seed) beside its step energy, in each rule's colour."""
    import matplotlib.pyplot as plt
    from .. import plots
    from ..styles import rule_style
    rows = t["rows"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(rows) + 4), 3.6))
    names = [r["rule"] for r in rows]
    colors = [rule_style(n).color for n in names]
    means = [100 * r["accuracy_mean"] for r in rows]
    errs = [100 * r["accuracy_std"] for r in rows] if len(t["seeds"]) > 1 else None
    ax.bar(names, means, yerr=errs, capsize=3, color=colors)
    for i, r in enumerate(rows):
        ax.plot([i] * len(r["accuracy"]), [100 * a for a in r["accuracy"]], ls="none",
                marker=rule_style(r["rule"]).marker, color="black", ms=4)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("accuracy (bars: mean ± sd; dots: seeds)", fontsize=8)
    bx.bar(names, [r["energy_per_sample_pj"] / 1e6 for r in rows], color=colors)
    bx.set_ylabel("energy per sample (µJ), one step")
    bx.set_title("energy per sample on the chip", fontsize=8)
    fig.suptitle(f"Rules x seeds\n{labels.title_lines(t['settings'])}", fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)
