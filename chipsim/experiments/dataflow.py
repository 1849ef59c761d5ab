"""The dataflow design space: under which on-chip dataflow, if any, do DF's memory and parallelism claims hold?

The DF paper claims (a) less than ~40% of BP's memory at 11 blocks and ~60% at
25 (Fig. 4A) and (b) that DF-R's updates are more parallel than BP's backward,
with no update lock (Fig. 4B). One dataflow gives one answer; this experiment
costs the same depth family under every dataflow chipsim models --
``mapping.negatives`` (parallel / sequential / sequential-recompute) x
``training.update`` (batch / immediate) x N negatives -- at two depths and two
input shapes, and states each claim's verdict with the conditions under which it
holds, computed from the table. Every point is one real engine step costed by
the chip model (``compare._point``), so no number here is a formula.
"""
from __future__ import annotations

import os
import time

from .. import labels, provenance, rundir
from ..config import load_config
from ..report import atomic_write, write_json
from .compare import PAPER_RATIO, _point
from .jobs import run_points, threads_per_job
from .keys import digest, resolved
from .verdicts import Scale, verdict

NEGATIVES_MODES = ("parallel", "sequential", "sequential-recompute")
UPDATES = ("batch", "immediate")
DATAFLOWS = tuple((n, u) for u in UPDATES for n in NEGATIVES_MODES)
RULES = ("df-r", "df-o")
SHAPES = {"mnist": "MNIST 1x28x28", "cifar10": "CIFAR-10 3x32x32"}
# (mode, metric, column label); memory columns first, the parallelism ones after
METRICS = (("streaming", "total_peak_bytes", "SRAM, streaming"), ("whole-batch", "total_peak_bytes", "whole-batch"),
           ("measured", "total_peak_bytes", "measured framework"),
           ("measured-ckpt", "total_peak_bytes", "measured vs BP ckpt"), ("streaming", "latency_us", "step latency"),
           ("streaming", "backward_us", "backward phase"), ("streaming", "energy_per_sample_pj", "energy/sample"))


def _key(ds, depth, rule, neg, upd, n, base: str):
    """A point's key: what it varies, then ``base``, the hash of the resolved compare config (``keys``)."""
    label = f"{ds}-d{depth}-bp-{upd}" if rule == "bp" else f"{ds}-d{depth}-{rule}-{neg}-{upd}-n{n}"
    return f"{label}-{base}"


#: the grid's mapping.statistics (see ``points``)
STATISTICS = "mapping.statistics=batch"


def points(config, datasets, depths, negatives, jobs, device: str | None = None):
    """Every engine step of the grid: the local rules under each dataflow and N, BP under each update.

    ``device``: measure the framework peak (``chipsim.framework``) at the ``parallel`` / ``batch`` points
    only -- a framework forms all N + 1 rows at once and updates once a step, whatever the chip's dataflow."""
    pts = []
    for ds in datasets:
        for d in depths:
            for upd in UPDATES:
                pts.append(("bp", "parallel", upd, None, ds, d))
                pts += [(r, neg, upd, n, ds, d) for neg in NEGATIVES_MODES for n in negatives for r in RULES]
    out, base = [], digest(resolved(load_config(config))) + (f"-measured-{device}" if device else "")
    for rule, neg, upd, n, ds, d in pts:
        # like with like: sequential dataflows take the positive pass's batch statistics, so every point of
        # the grid, BP's included, runs on the batch's statistics and pays the schedule's barrier for them
        sets = [f"workload.dataset={ds}", f"training.update={upd}", STATISTICS]
        if rule != "bp":
            sets += [f"mapping.negatives={neg}", f"learning.negatives={n}"]
        out.append({"key": _key(ds, d, rule, neg, upd, n, base), "base": base, "depth": d, "rule": rule, "width": 32,
                    "own_model": False, "measure_device": device if (neg, upd) == ("parallel", "batch") else None,
                    "config": config, "overrides": sets, "threads": threads_per_job(jobs), "dataset": ds,
                    "negatives_mode": neg, "update": upd, "n": n,
                    "strategies": False})        # the grid compares dataflows at one mapping, not mappings
    return out


def dataflow(config: str = "hwconfigs/176core_512k.yaml", out_dir: str = "reports/dataflow", datasets=tuple(SHAPES),
             depths=(11, 25), negatives=(1, 3, 9), jobs: int | None = None, progress: bool = True,
             cluster=None, judge: bool = True, device: str | None = None, measured_dir: str | None = None) -> dict:
    """Run the grid (resumable: ``out_dir/points.jsonl``), write dataflow.json and dataflow.md, return the table.

    ``judge=False`` (a smoke scale: ``reproduce --quick``) states every claim's numbers without a verdict.
    ``device``: also measure the framework peak (cpu or cuda; see ``points``). ``measured_dir``: a run of
    ``experiments.measured`` (the widened condition grid on measured peaks) whose verdicts join the table's."""
    cfg = load_config(config)
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    pts = points(cfg.path, datasets, depths, negatives, jobs, device)
    res = run_points(_point, pts, out_dir, jobs=jobs, progress=progress, desc="dataflow", cluster=cluster)
    rows = table_rows(pts, res, datasets, depths, negatives)
    words = labels.settings(load_config(cfg.path, (STATISTICS,)), model="cnn_family(depth, width=32)",
                            scale="one engine step per point, no training")
    words.update(negatives="per row", dataflow="per row (mapping.negatives x training.update)")
    table = {"config": cfg.path, "chip": cfg.hw.chip.name, "batch_size": cfg.hw.training.batch_size,
             "settings": words,
             "datasets": list(datasets), "depths": list(depths), "negatives": list(negatives), "rows": rows,
             "lock": lock_summary(pts, res), "recompute": recompute_summary(pts, res),
             "compute_seconds": sum(res[p["key"]].get("engine_seconds", 0.0) + res[p["key"]].get("chip_seconds", 0.0)
                                    for p in pts),
             "points": len(pts), "seconds": time.perf_counter() - t0, "judge": judge,
             "provenance": provenance.collect("dataflow")}
    table["verdicts"] = verdicts(table) + measured_verdicts(measured_dir)
    write_json(os.path.join(out_dir, "dataflow.json"), table)
    atomic_write(os.path.join(out_dir, "dataflow.md"),
                 "\n".join(markdown(table) + [""] + provenance.markdown(table["provenance"])) + "\n")
    return table


def table_rows(pts, res, datasets, depths, negatives) -> list:
    """One row per (dataflow, N): for every shape, depth, metric and rule, the rule's value over BP's."""
    rows, base = [], pts[0]["base"]
    for neg, upd in DATAFLOWS:
        for n in negatives:
            row = {"negatives_mode": neg, "update": upd, "n": n, "ratio": {}}
            for ds in datasets:
                for d in depths:
                    bp = res[_key(ds, d, "bp", None, upd, None, base)]
                    for rule in RULES:
                        r = res[_key(ds, d, rule, neg, upd, n, base)]
                        for mode, metric, _ in METRICS:
                            a, b = r.get(mode, {}), bp.get(mode, {})
                            if a.get("fits") and b.get("fits") and b.get(metric):
                                row["ratio"][f"{ds}|{d}|{mode}:{metric}|{rule}"] = a[metric] / b[metric]
            rows.append(row)
    return rows


def lock_summary(pts, res) -> dict:
    """Under immediate updates: the update-lock waits and step latencies of DF-O against DF-R."""
    out = {"df-o_lock_us": 0.0, "df-r_lock_us": 0.0, "max_latency_gain": 0.0, "where": None, "lock_share": 0.0,
           "df-o_layers": [], "df-r_layers": []}
    for p in pts:
        if p["rule"] != "df-o" or p["update"] != "immediate":
            continue
        o, r = res[p["key"]]["streaming"], res[_key(p["dataset"], p["depth"], "df-r", p["negatives_mode"],
                                                    "immediate", p["n"], p["base"])]["streaming"]
        if not (o.get("fits") and r.get("fits")):
            continue
        out["df-o_lock_us"] = max(out["df-o_lock_us"], o["lock_wait_us"])
        out["df-r_lock_us"] = max(out["df-r_lock_us"], r["lock_wait_us"])
        out["lock_share"] = max(out["lock_share"], o["lock_wait_us"] / o["latency_us"])
        for rule, m in (("df-o", o), ("df-r", r)):       # which blocks locked, counted from the top (-1 = top)
            top = m["layers"] - 1
            seen = {("top" if int(k) == top else int(k)) for k in m.get("lock_wait_by_layer_us", {})}
            out[f"{rule}_layers"] = sorted(set(out[f"{rule}_layers"]) | seen, key=str)
        gain = 1 - r["latency_us"] / o["latency_us"]
        if gain > out["max_latency_gain"] or out["where"] is None:
            out["max_latency_gain"], out["where"] = gain, _where(p)
    return out


def recompute_summary(pts, res) -> dict:
    """The compute sequential-recompute spends: recomputed MACs against the step's, worst case."""
    worst = {"share": 0.0, "where": None}
    for p in pts:
        r = res[p["key"]]
        if p.get("negatives_mode") == "sequential-recompute" and p["rule"] != "bp" and r.get("macs"):
            share = r["recompute_macs"] / (r["macs"] - r["recompute_macs"])
            if share >= worst["share"]:
                worst = {"share": share, "where": _where(p)}
    return worst


def _where(p) -> str:
    return (f"{p['negatives_mode']}, {p['update']} update, N = {p['n']}, {SHAPES[p['dataset']]}, "
            f"{p['depth']} blocks")


def _cells(table):
    """(row, ds, depth, mode:metric, rule, ratio) for every table cell."""
    for row in table["rows"]:
        for k, v in row["ratio"].items():
            ds, d, mm, rule = k.split("|")
            yield row, ds, int(d), mm, rule, v


def _cond(row, ds, d, mode) -> str:
    return (f"{mode}, `{row['negatives_mode']}`, {row['update']} update, N = {row['n']}, {SHAPES[ds]}, "
            f"{d} blocks")


def best_memory(table, rule="df-r", n=None) -> dict:
    """depth -> (ratio, condition) of the lowest memory ratio of ``rule`` over every mode and dataflow
    (at ``n`` negatives only, if given)."""
    best = {}
    for row, ds, d, mm, r, v in _cells(table):
        mode = mm.split(":")[0]
        if r == rule and mm.endswith("total_peak_bytes") and (n is None or row["n"] == n) \
                and (d not in best or v < best[d][0]):
            best[d] = (v, _cond(row, ds, d, mode))
    return best


def _scale(table) -> Scale:
    """Chip costs of one engine step: exact (no seed changes them), judged unless the table is a smoke test."""
    return Scale(f"one engine step per point on {table['chip']}, batch {table['batch_size']}; exact",
                 judge=table.get("judge", True))


def verdicts(table) -> list:
    """The claims' verdicts, each naming the conditions under which it holds, from the table alone; each
    through the gate (``verdicts.verdict``), so a smoke-scale table states numbers, not verdicts."""
    out = []
    scale = _scale(table)
    targets = {d: PAPER_RATIO[d] for d in table["depths"] if d in PAPER_RATIO}
    for rule in RULES:
        holds, below_bp = [], []
        for row, ds, d, mm, r, v in _cells(table):
            mode = mm.split(":")[0]
            if r != rule or not mm.endswith("total_peak_bytes"):
                continue
            if d in targets and v <= targets[d]:
                holds.append(_cond(row, ds, d, mode))
            if v < 1:
                below_bp.append(_cond(row, ds, d, mode))
        best, n_max = best_memory(table, rule), max(table["negatives"])
        at_n_max = best_memory(table, rule, n_max)
        best_txt = "; ".join(f"{d} blocks: {v:.2f}x ({c})" for d, (v, c) in sorted(best.items())) or "none measured"
        if at_n_max:
            best_txt += f"; at N = {n_max}: " + "; ".join(f"{d} blocks: {v:.2f}x ({c})" for d, (v, c)
                                                         in sorted(at_n_max.items()))
        target_txt = " and ".join(f"<= {t:.2f} at {d} blocks" for d, t in targets.items()) or "the paper's ratios"
        claim = f"{rule.upper()} memory ({target_txt}): "
        if holds:
            out.append(claim + verdict(True, f"In {len(holds)} of the table's conditions: " + "; ".join(holds)
                                       + f". Best: {best_txt}.", scale=scale, exact=True))
        else:
            out.append(claim + verdict(False, f"Under no dataflow measured. {rule.upper()} needs less memory than "
                                              f"BP in {len(below_bp)} conditions"
                       + (f" ({'; '.join(below_bp[:6])}{' ...' if len(below_bp) > 6 else ''})" if below_bp else "")
                       + f". Its lowest ratio: {best_txt}.", scale=scale, exact=True))
    bwd = [(_cond(row, ds, d, "streaming"), v) for row, ds, d, mm, r, v in _cells(table)
           if r == "df-r" and mm == "streaming:backward_us"]
    lat = [(_cond(row, ds, d, "streaming"), v) for row, ds, d, mm, r, v in _cells(table)
           if r == "df-r" and mm == "streaming:latency_us"]
    faster_bwd = [c for c, v in bwd if v < 1]
    faster_step = [c for c, v in lat if v < 1]
    if bwd:
        out.append("DF-R's update phase after a sample's forward shorter than BP's backward: " + verdict(
            bool(faster_bwd), f"In {len(faster_bwd)} of {len(bwd)} conditions (DF-R/BP {min(v for _, v in bwd):.2f}-"
                              f"{max(v for _, v in bwd):.2f}).", scale=scale, exact=True)
                   + f" Its whole training step is faster than BP's in {len(faster_step)} of {len(lat)} conditions "
                     f"(DF-R/BP step latency {min(v for _, v in lat):.2f}-"
                   f"{max(v for _, v in lat):.2f}): a sample passes each block as N + 1 rows, so the forward work "
                   "grows with N while BP's does not.")
    lk = table["lock"]
    if lk["where"] is not None:
        gain = lk["max_latency_gain"]
        def blocks(names):
            return ", ".join("the top block" if b == "top" else f"block {b}" for b in names) or "no block"
        if gain < 0.01:
            out.append("No update lock (DF-R faster than DF-O under immediate updates): " + verdict(
                       False, f"No measurable gain (at most {100 * gain:.2f}% of the step, {lk['where']}).",
                       scale=scale, exact=True) + " The lock is modelled: DF-O's "
                       f"updates waited for their errors through W^T up to {lk['df-o_lock_us']:.0f} µs in a step "
                       f"({100 * lk['lock_share']:.2f}% of it), at {blocks(lk['df-o_layers'])}; DF-R's "
                       f"{lk['df-r_lock_us']:.0f} µs, at {blocks(lk['df-r_layers'])}"
                       + (" (block 0's error into the label embedding goes through W_0 under both rules)"
                          if 0 in lk["df-r_layers"] else "")
                       + (". In DF's overlapping every-step groups a block's gradient is complete only once the "
                          "loss above has run, after its own error through W^T has gone down, so the lock binds only "
                          "where no loss lies above -- and the step's latency is set by the chain of errors below, "
                          "which both rules share." if set(lk["df-o_layers"]) <= {0, "top"} else "."))
        else:
            out.append("No update lock (DF-R faster than DF-O under immediate updates): " + verdict(
                       True, f"DF-R's step is up to {100 * gain:.1f}% shorter than DF-O's ({lk['where']}); DF-O's "
                             f"updates waited up to {lk['df-o_lock_us']:.0f} µs for their W^T errors, at "
                             f"{blocks(lk['df-o_layers'])}.", scale=scale, exact=True))
    rc = table["recompute"]
    if rc["where"] is not None:
        out.append(f"**Cost of recomputing**: sequential-recompute re-runs at most {100 * rc['share']:.1f}% of a "
                   f"step's other MACs ({rc['where']}).")
    return out


def measured_verdicts(measured_dir) -> list:
    """The verdicts of the measured condition grid (``experiments.measured``) in ``measured_dir``, if run."""
    import json
    path = os.path.join(measured_dir, "measured.json") if measured_dir else None
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        m = json.load(f)
    where = rundir.display_path(os.path.join(measured_dir, "measured.md"))   # relative: no machine's layout
    return [f"{v} (widened grid: `{where}`)" for v in m["verdicts"]]


def _fmt(v):
    return "-" if v is None else f"{v:.2f}"


def markdown(table) -> list:
    """The verdict table: per input shape and depth, rows = dataflow x N, columns = DF-R/BP | DF-O/BP per metric."""
    lines = [f"Settings: {labels.line(table['settings'])}.", ""] if table.get("settings") else []
    head = "| negatives | update | N | " + " | ".join(f"{label} R / O" for _, _, label in METRICS) + " |"
    for ds in table["datasets"]:
        for d in table["depths"]:
            lines += [f"**{SHAPES[ds]}, {d} blocks** (DF-R/BP / DF-O/BP; below 1: less than BP)", "", head,
                      "|---|---|---|" + "---|" * len(METRICS)]
            for row in table["rows"]:
                cells = []
                for mode, metric, _ in METRICS:
                    r = row["ratio"].get(f"{ds}|{d}|{mode}:{metric}|df-r")
                    o = row["ratio"].get(f"{ds}|{d}|{mode}:{metric}|df-o")
                    cells.append(f"{_fmt(r)} / {_fmt(o)}")
                lines.append(f"| {row['negatives_mode']} | {row['update']} | {row['n']} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += [f"- {v}" for v in table["verdicts"]]
    lines += ["", f"{table['points']} engine steps (each costed on `{table['chip']}`, batch {table['batch_size']}); "
              f"their compute sums to {table['compute_seconds'] / 60:.1f} process-minutes; this invocation took "
              f"{table['seconds'] / 60:.1f} min."]
    return lines
