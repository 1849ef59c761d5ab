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

from .. import provenance
from ..config import MODEL_DIR, load_config
from ..report import write_json
from .jobs import limit_threads, number, run_points, threads_per_job
from .keys import point_key
from .verdicts import Scale, ranked

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
    points, models = [], {}
    for name, over, _, _ in variants:
        models[name] = load_config(config, tuple(list(scale) + over)).model.name
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
        rows.append({"variant": name, "model": models[name], "overrides": over, "paper": paper,
                     "paper_source": source,
                     "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                     "accuracy": acc.tolist(), "head_accuracy_mean": float(np.mean(head)) if head else None,
                     "train_seconds": [r["train_seconds"] for r in runs],
                     **{k: first[k] for k in ("peak_core_bytes", "total_peak_bytes", "whole_batch_bytes", "cores",
                                               "latency_us", "energy_per_sample_pj", "inference")}})
    table = {"seeds": list(seeds), "scale": list(scale), "rows": rows, "provenance": provenance.collect("rules")}
    write_json(os.path.join(out_dir, "rules.json"), table)
    return table


def _scale_of(table: dict) -> Scale:
    n = len(table["seeds"])
    return Scale(f"{' '.join(table['scale']) or 'default scale'}, {n} seed{'s' if n != 1 else ''}")


def markdown(table: dict, scale: Scale | None = None) -> list:
    """The section of reports/README.md: the table and sentences computed from it.

    Ratios to BP compare a rule with BP on the same model only; a rule on another model (CwC's grouped
    channels) is named with its model and left out of them. Which rule is most accurate is said only
    where the data can tell (``verdicts.ranked``)."""
    scale = scale or _scale_of(table)
    rows = table["rows"]
    n = len(table["seeds"])
    bp = next(r for r in rows if r["variant"] == "bp")
    bp_model = bp.get("model", "cnn_small")
    other = sorted({r.get("model", bp_model) for r in rows} - {bp_model})
    lines = ["## The rule table: every rule of the FF family on the chip", "",
             f"mnist5k, {' '.join(table['scale']) or 'default scale'}, {n} seed(s) "
             f"({', '.join(map(str, table['seeds']))}); mean ± standard deviation over seeds. Chip figures are "
             "one training step of the default 44-core 4-bit chip (W4/A4/G8/U16, batch and N as the preset: "
             "`hwconfigs/44core_4bit.yaml`, parallel negatives, batch update); inference is one test sample on the "
             "training mapping (goodness decoding needs C passes, CwC and one-pass heads one). The model column "
             f"says which model each rule ran; ratios to BP compare rules on BP's model (`{bp_model}`) only"
             + (f" -- rules on {', '.join(f'`{m}`' for m in other)} have no BP run on their model, so no ratio"
                if other else "") + ".", "",
             "| rule | model | accuracy (%) | paper (MNIST) | head (%) | SRAM, sum over cores (KiB) | whole-batch (KiB) "
             "| step latency (µs) | energy / sample (µJ) | inference: latency (µs) / energy (µJ) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        inf = "; ".join(f"{m} {v['latency_us']:.0f} / {v['energy_pj'] / 1e6:.2f}" for m, v in r["inference"].items())
        head = f"{100 * r['head_accuracy_mean']:.1f}" if r["head_accuracy_mean"] is not None else "-"
        lines.append(f"| {r['variant']} | {r.get('model', bp_model)} | {100 * r['accuracy_mean']:.1f} ± "
                     f"{100 * r['accuracy_std']:.1f} | "
                     f"{r['paper'] if r['paper'] is not None else '-'} | {head} | {r['total_peak_bytes'] / 1024:.0f} | "
                     f"{r['whole_batch_bytes'] / 1024:.0f} | {r['latency_us']:.0f} | "
                     f"{r['energy_per_sample_pj'] / 1e6:.2f} | {inf} |")
    same = [r for r in rows if r.get("model", bp_model) == bp_model]
    local = [r for r in same if r["variant"] != "bp"]

    def acc_rank(cands):
        return ranked(cands, lambda r: r["accuracy_mean"], lambda r: r["accuracy_std"],
                      lambda r: len(r["accuracy"]), lambda r: r["variant"], scale)

    best, why = acc_rank(rows)
    best_local, why_local = acc_rank(local)
    pct = (lambda r: f"{100 * r['accuracy_mean']:.1f}%")
    top = sorted(rows, key=lambda r: -r["accuracy_mean"])[0]
    most = (f"{best['variant']} ({pct(best)})" if best is not None else
            f"not judged at this scale ({why}; highest mean: {top['variant']}, {pct(top)})")
    text = f"Most accurate: {most}"
    if local:
        top_local = max(local, key=lambda r: r["accuracy_mean"])
        text += ("; best local rule on " + f"`{bp_model}`: " +
                 (f"{best_local['variant']} ({pct(best_local)}" if best_local is not None else
                  f"not judged at this scale ({why_local}; highest mean: {top_local['variant']}, {pct(top_local)}")
                 + f", {100 * (top_local['accuracy_mean'] - bp['accuracy_mean']):+.1f} points against BP).")
    lines += ["", "- " + text]
    if local:
        cheap = min(same, key=lambda r: r["total_peak_bytes"])
        fast = min(same, key=lambda r: r["latency_us"])
        def vs_bp(r, key, unit, scale_by):
            ratio = "" if r is bp else f", {r[key] / bp[key]:.2f}x BP"
            return f"{r['variant']} ({r[key] / scale_by:.0f} {unit}{ratio})"
        lines += [f"- On `{bp_model}`, least SRAM: {vs_bp(cheap, 'total_peak_bytes', 'KiB', 1024)}; shortest step: "
                  f"{vs_bp(fast, 'latency_us', 'µs', 1)}.",
                  f"- Against BP on `{bp_model}`, per rule (SRAM / step latency / energy per sample): " + "; ".join(
                      f"{r['variant']} {r['total_peak_bytes'] / bp['total_peak_bytes']:.2f} / "
                      f"{r['latency_us'] / bp['latency_us']:.2f} / "
                      f"{r['energy_per_sample_pj'] / bp['energy_per_sample_pj']:.2f}" for r in local) + "."]
    for m in other:
        on = [r for r in rows if r.get("model") == m]
        lines.append(f"- On `{m}` (no BP run on it): " + "; ".join(
            f"{r['variant']} {r['total_peak_bytes'] / 1024:.0f} KiB SRAM, {r['latency_us']:.0f} µs per step, "
            f"{r['energy_per_sample_pj'] / 1e6:.2f} µJ per sample" for r in on) + ".")
    lines.append("")
    return lines
