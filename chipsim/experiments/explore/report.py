"""What ``chipsim explore`` writes: the Pareto table, hypervolume curves, plots and explore.md.

Every sentence of explore.md is computed from the numbers of the table it sits above; where the sampler
did worse than random search, or BP was cheaper, the sentence says so.
"""
from __future__ import annotations

import csv
import io
import os
import shlex

import numpy as np

from ... import rundir
from ...report import atomic_write, write_json
from .objectives import OBJECTIVES
from .pareto import hypervolume
from .search import REASKS

#: one colour per rule (the coordinator may unify this with chipsim/styles.py)
RULE_COLORS = {"bp": "#C44E52", "ff": "#4C72B0", "symba": "#8172B2", "df": "#55A868", "df-o": "#DD8452",
               "df-r": "#64B5CD", "cwc": "#937860", "cff": "#DA8BC3"}
WIDTH_KEYS = ("precision.weight_bits", "precision.activation_bits", "precision.gradient_bits")
EQUAL_ACCURACY = 0.01          # "equal accuracy": within one percentage point


def reference_point(table: dict) -> list:
    """Per objective, as minimised: error 1.0 for accuracy (accuracy 0); for a cost, its worst feasible value
    over every study plus 10 % of its range -- one point for every study, so their hypervolumes compare."""
    ok = [r for r in table["rows"] if r["status"] == "ok"]
    ref = []
    for o in table["objectives"]:
        if o == "accuracy":
            ref.append(1.0)
            continue
        col = [r["values"][o] for r in ok if o in r["values"]]
        if not col:
            ref.append(1.0)
            continue
        lo, hi = min(col), max(col)
        ref.append(hi + 0.1 * (hi - lo if hi > lo else (abs(hi) or 1.0)))
    return ref


def _vec(r, objectives):
    return [OBJECTIVES[o].to_min(r["values"][o]) for o in objectives]


def hv_curves(table: dict, ref: list) -> dict:
    """study -> hypervolume after each finished trial (in trial order)."""
    out = {}
    for st in table["studies"]:
        rows = [r for r in table["rows"] if r["study"] == st["study"]]
        pts, curve = [], []
        for r in rows:
            if r["status"] == "ok":
                pts.append(_vec(r, table["objectives"]))
            curve.append(hypervolume(pts, ref) if pts else 0.0)
        out[st["study"]] = curve
    return out


def _rule(r, table) -> str:
    return str(r["params"].get("workload.rule", table.get("base_rule", "")))


def _widths(r) -> str:
    got = [f"{k.split('.')[1][0].upper()}{r['params'][k]}" for k in WIDTH_KEYS if k in r["params"]]
    return "/".join(got) if got else "the config's widths"


def _settings(r) -> str:
    return ", ".join(f"{k}={v}" for k, v in r["params"].items())


def command(table: dict, r: dict) -> str:
    """The exact ``chipsim run`` that trains and costs this point (first training seed of the trial)."""
    from ...config import load_config
    from .space import overrides
    base_hw = load_config(table["config"], tuple(table["base_overrides"])).hw
    sets = list(table["base_overrides"]) + overrides(r["params"], base_hw)
    sets.append(f"training.seed={table['scale']['seeds'][0]}")
    return shlex.join(["chipsim", "run", rundir.display_path(table["config"])]
                      + [x for s in sets for x in ("--set", s)])


def _fmt(o, v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{100 * v:.1f}%" if o == "accuracy" else f"{v:.4g}"


def _acc_reeval(table, r):
    rv = table["reeval"].get(r["key"])
    if not rv:
        return None
    vals = [a for a in rv["accuracy"] if a is not None]
    return (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)) if vals \
        else None


def pareto_csv(table: dict) -> str:
    buf = io.StringIO()
    keys = list(table["front"][0]["params"]) if table["front"] else []
    w = csv.writer(buf)
    w.writerow(["study", "trial"] + keys + table["objectives"] + ["reeval_accuracy_mean", "reeval_accuracy_std",
                                                                  "command"])
    for r in table["front"]:
        m = _acc_reeval(table, r)
        w.writerow([r["study"], r["number"]] + [r["params"].get(k) for k in keys]
                   + [r["values"].get(o) for o in table["objectives"]]
                   + ([m[0], m[1]] if m else ["", ""]) + [command(table, r)])
    return buf.getvalue()


# ------------------------------------------------------------------ sentences
def counts(table: dict) -> dict:
    rows = table["rows"]
    return {"finished": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
            "infeasible": sum(r["status"] == "infeasible" for r in rows),
            "pruned": sum(r["status"] == "pruned" for r in rows),
            "retried": sum(st["failed_retried"] for st in table["studies"]),
            "distinct": len({r["key"] for r in rows})}


def pruning_sentence(table: dict) -> str:
    rows = table["rows"]
    per_trial = table["scale"]["epochs"] * len(table["scale"]["seeds"])
    if "accuracy" not in table["objectives"]:
        return "No trial trained (accuracy is not an objective), so there was nothing to prune."
    if per_trial <= 1:
        return ("Pruning could save nothing at this scale: a trial trains one epoch on one seed, so its first "
                "epoch is its whole training.")
    pruned = [r for r in rows if r["status"] == "pruned"]
    saved = sum(r.get("saved_seconds") or 0.0 for r in pruned)
    spent = sum(r.get("seconds") or 0.0 for r in rows)
    if not pruned:
        return (f"No trial was pruned: none fell more than {100 * table['prune_margin']:.0f} points below the front "
                "after its first epoch.")
    return (f"{len(pruned)} trial(s) were stopped after their first epoch (accuracy plus "
            f"{100 * table['prune_margin']:.0f} points still dominated by the front), saving an estimated "
            f"{saved:.0f} s of training: {100 * saved / (spent + saved):.0f} % of the {spent + saved:.0f} s the "
            "trials would have taken.")


def time_sentence(table: dict) -> str:
    """Wall time of this invocation beside the compute of the evaluations it used: a resumed or regenerated
    search reuses logged evaluations, and its wall time alone would understate what the search cost."""
    compute = sum({r["key"]: r.get("seconds") or 0.0 for r in table["rows"]}.values())
    return (f"The distinct evaluations took {compute:.0f} s of training and costing as logged (one process "
            f"each); this invocation ran {table['search_seconds']:.0f} s for the search and "
            f"{table['wall_seconds']:.0f} s in all (less than the compute where evaluations ran in parallel or "
            "came from the log).")


def hv_sentences(table: dict, ref: list, curves: dict) -> list:
    ref_text = ", ".join(f"{'error' if o == 'accuracy' else o} {r:.4g}"
                         + ("" if o == "accuracy" else f" {OBJECTIVES[o].unit}") for o, r in zip(table["objectives"], ref))
    out = [f"Hypervolume reference point (every objective minimised; accuracy as error = 1 - accuracy): "
           f"{ref_text}. A cost's reference is its worst feasible value over every study plus 10 % of its range."]
    finals = {}
    for st in table["studies"]:
        finals.setdefault(st["sampler"], {})[st["search_seed"]] = curves[st["study"]][-1] if curves[st["study"]] \
            else 0.0
    for name, per in finals.items():
        out.append(f"Final hypervolume of {name} after {table['trials']} trials: mean {np.mean(list(per.values())):.4g} "
                   f"over search seed(s) {', '.join(map(str, per))} ({', '.join(f'{v:.4g}' for v in per.values())}).")
    distinct = {}
    for st in table["studies"]:
        keys = {r["key"] for r in table["rows"] if r["study"] == st["study"]}
        distinct.setdefault(st["sampler"], []).append(len(keys))
    refused, drawn = {}, {}
    for st in table["studies"]:
        refused.setdefault(st["sampler"], []).append(st.get("repeats_refused", 0))
        drawn.setdefault(st["sampler"], []).append(st.get("drawn_unseen", 0))
    out.append("Distinct configurations evaluated per study (settings that differ only in keys their rule "
               "ignores, such as BP's negatives, are one configuration): "
               + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in distinct.items())
               + ". Configurations a sampler proposed again were refused and asked anew (they would spend a "
               "trial on nothing new): " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in refused.items())
               + f"; after {REASKS} refusals in a row an unseen configuration was drawn at random: "
               + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in drawn.items()) + ".")
    s = table["sampler"]
    if s != "random" and "random" in finals:
        seeds = sorted(set(finals[s]) & set(finals["random"]))
        wins = sum(finals[s][k] >= finals["random"][k] for k in seeds)
        ms, mr = np.mean([finals[s][k] for k in seeds]), np.mean([finals["random"][k] for k in seeds])
        verdict = "at least" if ms >= mr else "below"
        out.append(f"At the same budget, {s}'s mean final hypervolume is {verdict} random search's "
                   f"({ms:.4g} vs {mr:.4g}); {s} reached at least random's on {wins} of {len(seeds)} search seed(s).")
    return out


def budget_sentences(table: dict) -> list:
    if "accuracy" not in table["objectives"]:
        return []
    front = table["front"]
    if not front:
        return ["No feasible trial: there is no front to read budgets from."]
    out = []
    if any("chip.core.sram_kib" in r["params"] for r in front):
        budgets = sorted({r["params"]["chip.core.sram_kib"] for r in table["rows"]
                          if r["status"] == "ok" and "chip.core.sram_kib" in r["params"]})
        pick = lambda b: [r for r in front if r["params"].get("chip.core.sram_kib") <= b]  # noqa: E731
        what = "With chip.core.sram_kib = {b} KiB per core or less"
    else:
        budgets = sorted({round(r["values"]["peak_sram"], 1) for r in front if "peak_sram" in r["values"]})
        pick = lambda b: [r for r in front if r["values"].get("peak_sram", 0) <= b + 1e-9]  # noqa: E731
        what = "Within {b} KiB of SRAM per core"
    previous = None
    for b in budgets:
        got = pick(b)
        if not got:
            out.append(what.format(b=b) + ", no point of the front fits.")
            continue
        best = max(got, key=lambda r: r["values"]["accuracy"])
        if best is previous:                 # a larger budget that buys nothing more: said once, below
            continue
        previous = best
        energy = best["values"].get("train_energy")
        out.append(what.format(b=b) + f", the most accurate point on the front is {_rule(best, table)} at "
                   f"{_widths(best)}: {100 * best['values']['accuracy']:.1f}%"
                   + (f", {energy:.4g} µJ/sample to train" if energy is not None else "") + ".")
    return out


def bp_sentence(table: dict) -> str:
    if "accuracy" not in table["objectives"]:
        return ""
    ok = [r for r in table["rows"] if r["status"] == "ok"]
    bp = [r for r in ok if _rule(r, table) == "bp"]
    local = [r for r in ok if _rule(r, table) not in ("bp", "")]
    if not bp or not local:
        return "BP and a local rule did not both have feasible trials, so they cannot be compared here."
    b = max(bp, key=lambda r: r["values"]["accuracy"])
    ab = b["values"]["accuracy"]
    near = [r for r in local if r["values"]["accuracy"] >= ab - EQUAL_ACCURACY]
    best_local = max(local, key=lambda r: r["values"]["accuracy"])
    if not near:
        return (f"No local rule came within {100 * EQUAL_ACCURACY:.0f} point of BP's best accuracy "
                f"({100 * ab:.1f}%, {_widths(b)}); the most accurate local rule, {_rule(best_local, table)} at "
                f"{_widths(best_local)}, reached {100 * best_local['values']['accuracy']:.1f}%, "
                f"{100 * (ab - best_local['values']['accuracy']):.1f} points below.")
    cost = "train_energy" if "train_energy" in b["values"] else next(o for o in b["values"] if o != "accuracy")
    c = min(near, key=lambda r: r["values"][cost])
    parts = []
    for o in ("train_energy", "peak_sram", "latency"):
        if o in b["values"] and o in c["values"] and c["values"][o]:
            ratio = b["values"][o] / c["values"][o]
            parts.append(f"{ratio:.2f}x the {o.replace('_', ' ')} ({b['values'][o]:.4g} vs {c['values'][o]:.4g} "
                         f"{OBJECTIVES[o].unit})")
    return (f"At equal accuracy (within {100 * EQUAL_ACCURACY:.0f} point of BP's best, {100 * ab:.1f}% at "
            f"{_widths(b)}), the cheapest local rule is {_rule(c, table)} at {_widths(c)} "
            f"({100 * c['values']['accuracy']:.1f}%); BP costs " + "; ".join(parts) + ".")


def efficiency_sentences(table: dict) -> list:
    """Where, if anywhere, a local rule beats BP on accuracy per µJ of training and per KiB of peak SRAM."""
    ok = [r for r in table["rows"] if r["status"] == "ok" and "accuracy" in r["values"]]
    out = []
    for cost, per in (("train_energy", "µJ/sample of training energy"), ("peak_sram", "KiB of peak SRAM per core")):
        best = {}
        for r in ok:
            if r["values"].get(cost):
                eff = r["values"]["accuracy"] / r["values"][cost]
                rule = _rule(r, table)
                if eff > best.get(rule, (0.0, None))[0]:
                    best[rule] = (eff, r)
        if "bp" not in best or len(best) < 2:
            continue
        top_rule, (top, r) = max(best.items(), key=lambda kv: kv[1][0])
        bp_eff = best["bp"][0]
        if top_rule == "bp":
            local_rule, (local, _) = max(((k, v) for k, v in best.items() if k != "bp"), key=lambda kv: kv[1][0])
            out.append(f"Per {per}, no local rule beats BP: BP's best is {100 * bp_eff:.3g} accuracy points, the best "
                       f"local rule's ({local_rule}) {100 * local:.3g}.")
        else:
            out.append(f"Per {per}, {top_rule} at {_widths(r)} beats BP: {100 * top:.3g} accuracy points against BP's "
                       f"best {100 * bp_eff:.3g} ({top / bp_eff:.2f}x).")
    return out


def markdown(table: dict, ref: list, curves: dict) -> str:
    c = counts(table)
    sc = table["scale"]
    objs = table["objectives"]
    lines = ["# chipsim explore", "",
             f"Config `{rundir.display_path(table['config'])}`"
             + (f" with `{' '.join(table['base_overrides'])}`" if table["base_overrides"] else "")
             + f"; space `{rundir.display_path(table['space']['path'])}`: {table['space']['params']}.", "",
             f"Scale of every trial: train_limit {sc['train_limit'] or 'all'}, test_limit {sc['test_limit'] or 'all'}, "
             f"{sc['epochs']} epoch(s), training seed(s) {', '.join(map(str, sc['seeds']))} (accuracy is their mean)"
             + (f", accuracy under {table['noise'][0]} noise level {table['noise'][1]}" if table["noise"] else "")
             + ". Costs are for one training step on the modelled chip, from one traced engine step.", "",
             f"Objectives: {', '.join(f'{o} ({OBJECTIVES[o].direction}, {OBJECTIVES[o].doc})' for o in objs)}.", "",
             f"Search: {', '.join(table['samplers'])}, {table['trials']} trials per study, search seed(s) "
             f"{', '.join(map(str, table['search_seeds']))}, a random start of {table['population']} trials (TPE's "
             f"startup, NSGA-II's population); the studies take turns, one trial each per batch. "
             + time_sentence(table), "",
             f"{c['finished']} finished trials ({c['distinct']} distinct settings): {c['ok']} feasible, "
             f"{c['infeasible']} infeasible (constraint violations: the configuration did not map or was refused), "
             f"{c['pruned']} pruned; {c['retried']} trial(s) cut off by a stop were retried with the same settings.",
             "", pruning_sentence(table), "", "## Hypervolume", ""] + hv_sentences(table, ref, curves) + [
             "", "![hypervolume](hypervolume.png)", "", "## Pareto set", ""]
    keys = list(table["front"][0]["params"]) if table["front"] else []
    reeval = bool(table["reeval"])
    head = ["study", "trial"] + keys + [f"{o} ({OBJECTIVES[o].unit})" if OBJECTIVES[o].unit else o for o in objs]
    if reeval:
        head.append(f"accuracy on {table['reeval_seeds']} seeds")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(table["front"], key=lambda r: _vec(r, objs)):
        cells = [r["study"], str(r["number"])] + [str(r["params"].get(k)) for k in keys] \
            + [_fmt(o, r["values"].get(o)) for o in objs]
        if reeval:
            m = _acc_reeval(table, r)
            cells.append(f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}%" if m else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each point reproduces with (first training seed):", ""]
    for r in sorted(table["front"], key=lambda r: _vec(r, objs)):
        lines.append(f"- {r['study']} #{r['number']}: `{command(table, r)}`")
    if reeval:
        shifts = [abs(_acc_reeval(table, r)[0] - r["values"]["accuracy"]) for r in table["front"]
                  if _acc_reeval(table, r)]
        if shifts:
            lines += ["", f"Re-evaluated on training seeds 0-{table['reeval_seeds'] - 1}, the Pareto points' accuracy "
                      f"moved by {100 * np.mean(shifts):.1f} points on average (at most {100 * max(shifts):.1f}) from "
                      "the search's value."]
    lines += ["", "## What the front says", ""] + [f"- {s}" for s in budget_sentences(table) + [bp_sentence(table)]
                                                    + efficiency_sentences(table)
                                                    if s]
    lines += ["", "![front](front.png)", "",
              f"Open the study: `optuna-dashboard {shown_storage(table['storage'])}` (studies "
              f"{', '.join(st['study'] for st in table['studies'])})."]
    return "\n".join(lines) + "\n"


def shown_storage(url: str) -> str:
    """A SQLite URL with its path as a reader should see it (relative below the working directory)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and os.path.isabs(url[len(prefix):]):
        return prefix + rundir.display_path(url[len(prefix):])
    return url


def write_report(table: dict, out: str) -> None:
    from ...config import load_config
    table["base_rule"] = load_config(table["config"], tuple(table["base_overrides"])).hw.workload.rule
    ref = reference_point(table)
    curves = hv_curves(table, ref)
    table["reference_point"] = dict(zip(table["objectives"], ref))
    table["hypervolume"] = curves
    table["counts"] = counts(table)
    write_json(os.path.join(out, "explore.json"), table)
    atomic_write(os.path.join(out, "pareto.csv"), pareto_csv(table))
    from .figures import plot_front, plot_hv
    plot_front(table, os.path.join(out, "front.png"))
    plot_hv(table, curves, os.path.join(out, "hypervolume.png"))
    atomic_write(os.path.join(out, "explore.md"), markdown(table, ref, curves))
