"""The rule table of ``chipsim reproduce``: every learning rule of the FF family on mnist5k, on the chip.

For each rule (and the variants the papers propose: spans, chunked groups,
Trifecta's alternating OLU, CwC, one-pass heads) and each seed, one training
run gives the test accuracy, and its trace the chip's per-step SRAM, latency
and energy, plus the latency and energy of one inference in each decoding
mode the rule has. Each paper's own number stands beside ours where the paper
gives one for MNIST; theirs are full MNIST on GPUs at paper scale, ours a
4-bit chip at CPU scale, so the table compares rankings and costs, not
absolute accuracies.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import MODEL_DIR, load_config
from ..report import write_json
from .jobs import limit_threads, number, run_points, threads_per_job
from .keys import point_key

CWC_MODEL = os.path.join(MODEL_DIR, "cwc_mnist.yaml")

# (name, overrides, paper MNIST accuracy or None, where the paper number comes from)
VARIANTS = (
    ("bp", ["workload.rule=bp"], 99.63, "DF paper Table 1 (BP-CNN)"),
    ("ff", ["workload.rule=ff"], 99.4, "Hinton 2022, via DF Table 1"),
    ("symba", ["workload.rule=symba"], 98.48, "Lee & Song 2023, via DF Table 1"),
    ("df greedy", ["workload.rule=df"], None, ""),
    ("df-o", ["workload.rule=df-o"], 99.70, "DF paper Table 1"),
    ("df-r", ["workload.rule=df-r"], 99.53, "DF paper Table 1"),
    ("df-r span 3", ["workload.rule=df-r", "learning.span=3"], None, "DF Fig. S2 (span n)"),
    ("df-o chunked 2", ["workload.rule=df-o", "learning.grouping=chunked"], None, "Advancements (chunked)"),
    ("trifecta", ["workload.rule=symba", "learning.strategy=df-o", "learning.olu_schedule=alternate"], 99.58,
     "Trifecta TFF/s, via DF Table 1"),
    ("df-r + head", ["workload.rule=df-r", "learning.inference=head"], None, "one-pass head (Trifecta App. H)"),
    ("cwc", ["workload.rule=cwc", f"workload.model={CWC_MODEL}"], 99.42, "CFSE, Papachristodoulou 2024"),
    ("cwc + head", ["workload.rule=cwc", f"workload.model={CWC_MODEL}", "learning.inference=head"], 99.2,
     "Advancements Table II (one-pass)"),
)


def _point(p: dict) -> dict:
    """Train one variant at one seed and cost its step and its inference on the chip (a worker process)."""
    limit_threads(p["threads"])
    from ..runner import run
    s = run(p["config"], p["overrides"], progress=False, write=False).summary
    chip, t = s["chip"], s["training"]
    last = t["history"][-1]
    return {"test_accuracy": t["test_accuracy"], "head_accuracy": last.get("head_accuracy"),
            "history": [h["test_accuracy"] for h in t["history"]], "train_seconds": t["train_seconds"],
            "peak_core_bytes": chip["ledger"]["peak_bytes"], "total_peak_bytes": chip["ledger"]["total_peak_bytes"],
            "whole_batch_bytes": chip["pool"]["whole_batch"]["peak_bytes"], "cores": chip["mapping"]["cores_used"],
            "latency_us": chip["timing"]["latency_us"],
            "energy_per_sample_pj": chip["energy"]["per_sample"]["total_pj"],
            "inference": {m: {"latency_us": v["latency_us"], "energy_pj": v["energy_pj"], "passes": v["passes"]}
                          for m, v in s["inference"].items()}}


def check_result(p: dict, r: dict) -> None:
    """A logged training has what the table reads: accuracies in [0, 1], sizes and times >= 0."""
    number(r["test_accuracy"], 0, 1)
    if r.get("head_accuracy") is not None:
        number(r["head_accuracy"], 0, 1)
    for a in r["history"]:
        number(a, 0, 1)
    for k in ("train_seconds", "peak_core_bytes", "total_peak_bytes", "whole_batch_bytes", "cores", "latency_us",
              "energy_per_sample_pj"):
        number(r[k], 0)
    for mode in r["inference"].values():
        for k in ("latency_us", "energy_pj", "passes"):
            number(mode[k], 0)


def rule_table(config: str, seeds, scale: list, out_dir: str, jobs: int, progress: bool = True,
               names=None, cluster=None) -> dict:
    """Run every variant (or those ``names``) over ``seeds`` at ``scale`` (overrides: epochs, limits);
    write rules.json."""
    variants = [v for v in VARIANTS if names is None or v[0] in names]
    points = []
    for name, over, _, _ in variants:
        for seed in seeds:
            overrides = list(scale) + over + [f"training.seed={seed}"]
            points.append({"key": point_key(f"{name.replace(' ', '_')}-s{seed}", load_config(config, tuple(overrides))),
                           "variant": name, "seed": seed, "config": config, "overrides": overrides,
                           "threads": threads_per_job(jobs)})
    res = run_points(_point, points, out_dir, jobs=jobs, progress=progress, desc="rules", cluster=cluster,
                     check=check_result)
    rows = []
    for name, over, paper, source in variants:
        runs = [res[p["key"]] for p in points if p["variant"] == name]
        acc = np.array([r["test_accuracy"] for r in runs])
        head = [r["head_accuracy"] for r in runs if r.get("head_accuracy") is not None]
        first = runs[0]                          # the chip figures do not depend on the seed's weights
        rows.append({"variant": name, "overrides": over, "paper": paper, "paper_source": source,
                     "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                     "accuracy": acc.tolist(), "head_accuracy_mean": float(np.mean(head)) if head else None,
                     "train_seconds": [r["train_seconds"] for r in runs],
                     **{k: first[k] for k in ("peak_core_bytes", "total_peak_bytes", "whole_batch_bytes", "cores",
                                               "latency_us", "energy_per_sample_pj", "inference")}})
    table = {"seeds": list(seeds), "scale": list(scale), "rows": rows}
    write_json(os.path.join(out_dir, "rules.json"), table)
    return table


def markdown(table: dict) -> list:
    """The section of reports/README.md: the table and sentences computed from it."""
    rows = table["rows"]
    n = len(table["seeds"])
    lines = ["## The rule table: every rule of the FF family on the chip", "",
             f"mnist5k, {' '.join(table['scale']) or 'default scale'}, {n} seed(s) "
             f"({', '.join(map(str, table['seeds']))}); mean ± standard deviation over seeds. Chip figures are "
             "one training step of the default 44-core 4-bit chip; inference is one test sample on the training "
             "mapping (goodness decoding needs C passes, CwC and one-pass heads one). `cwc` variants run "
             f"`models/{os.path.basename(CWC_MODEL)}`, whose channels divide into 10 class groups; the others the default `cnn_small`.", "",
             "| rule | accuracy (%) | paper (MNIST) | head (%) | SRAM, sum over cores (KiB) | whole-batch (KiB) "
             "| step latency (µs) | energy / sample (µJ) | inference: latency (µs) / energy (µJ) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        inf = "; ".join(f"{m} {v['latency_us']:.0f} / {v['energy_pj'] / 1e6:.2f}" for m, v in r["inference"].items())
        head = f"{100 * r['head_accuracy_mean']:.1f}" if r["head_accuracy_mean"] is not None else "-"
        lines.append(f"| {r['variant']} | {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} | "
                     f"{r['paper'] if r['paper'] is not None else '-'} | {head} | {r['total_peak_bytes'] / 1024:.0f} | "
                     f"{r['whole_batch_bytes'] / 1024:.0f} | {r['latency_us']:.0f} | "
                     f"{r['energy_per_sample_pj'] / 1e6:.2f} | {inf} |")
    best = max(rows, key=lambda r: r["accuracy_mean"])
    cheap = min(rows, key=lambda r: r["total_peak_bytes"])
    fast = min(rows, key=lambda r: r["latency_us"])
    bp = next(r for r in rows if r["variant"] == "bp")
    local = [r for r in rows if r["variant"] != "bp"]
    best_local = max(local, key=lambda r: r["accuracy_mean"])
    lines += ["", f"- Most accurate: {best['variant']} ({100 * best['accuracy_mean']:.1f}%); best local rule: "
              f"{best_local['variant']} ({100 * best_local['accuracy_mean']:.1f}%, "
              f"{100 * (best_local['accuracy_mean'] - bp['accuracy_mean']):+.1f} points against BP).",
              f"- Least SRAM: {cheap['variant']} ({cheap['total_peak_bytes'] / 1024:.0f} KiB, "
              f"{cheap['total_peak_bytes'] / bp['total_peak_bytes']:.2f}x BP); shortest step: {fast['variant']} "
              f"({fast['latency_us']:.0f} µs, {fast['latency_us'] / bp['latency_us']:.2f}x BP).",
              "- Against BP, per rule (SRAM / step latency / energy per sample): " + "; ".join(
                  f"{r['variant']} {r['total_peak_bytes'] / bp['total_peak_bytes']:.2f} / "
                  f"{r['latency_us'] / bp['latency_us']:.2f} / "
                  f"{r['energy_per_sample_pj'] / bp['energy_per_sample_pj']:.2f}" for r in local) + ".", ""]
    return lines
