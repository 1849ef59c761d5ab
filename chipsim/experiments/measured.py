"""The widened condition search for DF's memory claim, on measured framework peaks (issue 24).

The DF paper's Fig. 4A says DF needs < ~40% of BP's memory at 11 blocks and ~60% at 25, measured in
PyTorch. This experiment measures one PyTorch training step (``chipsim.framework.measure_peak``) of
BP and of DF-O / DF-R on the depth family under every condition it varies -- the family's shape
(pools early, late or none; channels doubling after block 0 or uniform), N wrong labels per sample,
the BP baseline (plain or activation-checkpointed), the optimizer (Adam or SGD with momentum) and the
local rule's implementation (memory-conscious or naive) -- and states, from the table alone, every
condition under which DF-R/BP is below the paper's figure, each ratio with its two absolute peaks.

    python -m chipsim.experiments.measured --out reports/dataflow/measured [--depths 11,25] [--device cpu]

Resumable: each measurement is one line of ``points.jsonl`` in ``--out`` (read back as data, like every
results log: ``jobs.load_done``). ``chipsim reproduce`` runs the committed grids (``Plan.measured``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from ..modelspec import Block, ModelSpec
from ..report import atomic_write, write_json
from .compare import PAPER_RATIO

#: shape -> (pool positions given the depth, channels doubling after block 0?)
SHAPES = {
    "early": (lambda d: (0, 1), True),              # compare's depth family (cnn_family's default)
    "uniform": (lambda d: (0, 1), False),           # the same pools, every conv block `width` channels
    "late": (lambda d: (d - 3, d - 2), True),       # the map stays full size until the last two conv blocks
    "none": (lambda d: (), True),                   # no pooling at all
}
SHAPE_WORDS = {"early": "pools after blocks 0, 1", "uniform": "pools after blocks 0, 1, uniform width",
               "late": "pools after the last two conv blocks", "none": "no pools"}
BASELINES = ("plain", "checkpointed")
LOCAL = ("df-o", "df-r")
OPTIMIZERS = ("adam", "sgd")


def family(depth: int, shape: str, width: int, dense_units: int = 64) -> ModelSpec:
    """A member of the depth family: ``depth - 1`` conv3x3 blocks and one dense block (``modelspec.cnn_family``
    for ``early``), with the pools and widths of ``shape``."""
    pools_of, doubling = SHAPES[shape]
    pools = set(pools_of(depth))
    blocks = [Block(type="conv", channels=(2 * width if doubling and i > 0 else width), pool=2 if i in pools else 0)
              for i in range(depth - 1)]
    return ModelSpec(name=f"cnn{depth}-{shape}-w{width}", blocks=tuple(blocks) + (Block(type="dense", units=dense_units),))


def points(depths, shapes, widths, negatives, optimizers, variants=("conscious",)):
    """Every measurement of the grid: BP under each baseline, DF-O / DF-R under each N and variant.

    In the order they are measured, most telling first, so that a run cut short by its time budget
    (``run(budget_s=...)``) has the claim's own cells: under the first optimizer, the first shape
    (compare's family) whole, then BP and DF-R on the other shapes, the smallest N (the claim's best case)
    first; then the other optimizers' BP and DF-R; then DF-O on the other shapes; then the rest."""
    out = []
    for d in depths:
        for s in shapes:
            for opt in optimizers:
                base = dict(depth=d, shape=s, width=widths[s], optimizer=opt)
                out += [dict(base, rule="bp", variant=b, n=0) for b in BASELINES]
                out += [dict(base, rule=r, variant=v, n=n) for n in negatives for v in variants for r in LOCAL]

    def priority(p):
        first_opt, first_shape = p["optimizer"] == optimizers[0], p["shape"] == shapes[0]
        core = p["rule"] == "bp" or (p["rule"] == "df-r" and p["n"] == min(negatives))
        if p["rule"] != "bp" and p["variant"] != variants[0]:
            tier = 4                                              # the other implementations last
        elif first_opt:
            tier = 2 if p["rule"] == "df-o" and not first_shape else 0
        else:
            tier = 1 if core or (first_shape and p["rule"] == "df-r") else 3
        return (tier, not (first_shape or core), p["rule"] == "df-o")
    return sorted(out, key=priority)


def key(p) -> str:
    return f"d{p['depth']}-{p['shape']}-w{p['width']}-{p['optimizer']}-{p['rule']}-{p['variant']}-n{p['n']}"


def run(out_dir, depths=(11, 25), shapes=tuple(SHAPES), widths=None, negatives=(1, 3, 9), optimizers=OPTIMIZERS,
        variants=("conscious",), batch: int = 64, dataset: str = "mnist5k", device: str = "cpu",
        progress: bool = True, budget_s: float | None = None) -> dict:
    """Measure the grid (resuming ``out_dir/points.jsonl``), write measured.json / .md and the plot.

    ``budget_s``: stop starting new measurements after this many seconds; the table then holds the
    points measured so far (this run's and earlier runs') and says how many of the grid's are missing."""
    from ..framework.measure import for_dataset, measure_peak
    from ..safe_files import open_append
    from .jobs import RESULTS_NAME, load_done
    widths = {s: 32 for s in SHAPES} | dict(widths or {})
    shape_in, classes = for_dataset(dataset)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, RESULTS_NAME)
    done = load_done(path)          # a log from whoever wrote the directory: read as data, within bounds
    pts = points(depths, shapes, widths, negatives, optimizers, variants)
    t0 = time.perf_counter()
    for i, p in enumerate(pts):
        k = key(p) + f"-b{batch}-{dataset}-{device}"
        if k in done:
            continue
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        t = time.perf_counter()
        m = measure_peak(family(p["depth"], p["shape"], p["width"]), p["rule"], batch, max(p["n"], 1), p["optimizer"],
                         shape_in, variant=p["variant"], device=device, num_classes=classes)
        done[k] = {"key": k, **m.to_dict(), **p, "optimizer_used": m.optimizer, "seconds": time.perf_counter() - t}
        with open_append(path, "results log") as f:
            f.write(json.dumps(done[k]) + "\n")
        if progress:
            print(f"[{i + 1}/{len(pts)}] {k}: {m.mib:.2f} MiB ({done[k]['seconds']:.1f} s)", flush=True)
    rows = [done[k] for p in pts if (k := key(p) + f"-b{batch}-{dataset}-{device}") in done]
    table = {"batch": batch, "dataset": dataset, "device": device, "depths": list(depths), "shapes": list(shapes),
             "widths": {s: widths[s] for s in shapes}, "negatives": list(negatives), "optimizers": list(optimizers),
             "variants": list(variants), "rows": rows, "grid_points": len(pts), "label": rows[0]["label"] if rows else "measured",
             "seconds": time.perf_counter() - t0}
    table["ratios"] = ratios(table)
    table["verdicts"] = verdicts(table)
    write_json(os.path.join(out_dir, "measured.json"), table)
    atomic_write(os.path.join(out_dir, "measured.md"), "\n".join(markdown(table)) + "\n")
    plot(table, out_dir)
    return table


def ratios(table) -> list:
    """One entry per (depth, shape, optimizer, N, variant, rule, baseline): the local peak over BP's,
    with both peaks in MiB."""
    by = {(r["depth"], r["shape"], r["optimizer"], r["rule"], r["variant"], r["n"]): r for r in table["rows"]}
    out = []
    for (d, s, opt, rule, var, n), r in by.items():
        if rule == "bp":
            continue
        for base in BASELINES:
            b = by.get((d, s, opt, "bp", base, 0))
            if b:
                out.append({"depth": d, "shape": s, "width": r["width"], "optimizer": opt, "rule": rule,
                            "variant": var, "n": n, "baseline": base, "ratio": r["bytes"] / b["bytes"],
                            "mib": r["bytes"] / 2 ** 20, "bp_mib": b["bytes"] / 2 ** 20})
    return out


def condition(c) -> str:
    return (f"{c['rule'].upper()} {c['variant']}, N = {c['n']}, {SHAPE_WORDS[c['shape']]}, width {c['width']}, "
            f"{c['optimizer']}, vs BP {c['baseline']}: {c['ratio']:.2f}x ({c['mib']:.1f} / {c['bp_mib']:.1f} MiB)")


def verdicts(table) -> list:
    """Per paper depth: every condition under which DF-R/BP is below the paper's ratio, or that none is,
    with the lowest ratio found; then DF-O's lowest. From the table alone."""
    out = []
    for d in table["depths"]:
        if d not in PAPER_RATIO:
            continue
        target = PAPER_RATIO[d]
        cells = [c for c in table["ratios"] if c["depth"] == d]
        for rule in ("df-r", "df-o"):
            mine = sorted((c for c in cells if c["rule"] == rule), key=lambda c: c["ratio"])
            if not mine:
                continue
            holds = [c for c in mine if c["ratio"] < target]
            head = f"**{rule.upper()}/BP < {target:.2f} at {d} blocks ({table['label']}, batch {table['batch']})"
            if holds:
                out.append(f"{head}: holds in {len(holds)} of {len(mine)} conditions**: "
                           + "; ".join(condition(c) for c in holds) + ".")
            else:
                below = sum(c["ratio"] < 1 for c in mine)
                out.append(f"{head}: holds in none of the {len(mine)} conditions measured.** Lowest: "
                           f"{condition(mine[0])}; {rule.upper()} needs less than BP in {below} of them.")
    return out


def _mib(row) -> str:
    return "-" if row is None else f"{row['bytes'] / 2 ** 20:.1f}"


def markdown(table) -> list:
    lines = [f"# DF's memory claim on measured framework peaks ({table['label']})", "",
             f"One training step of each rule in PyTorch (`chipsim.framework`), peak allocator bytes over the step "
             f"(parameters, gradients, optimizer state, the batch and autograd's saved tensors included), "
             f"{table['dataset']}, batch {table['batch']} samples (a local rule's block sees batch x (N + 1) rows). "
             f"BP `plain` / `checkpointed` (torch.utils.checkpoint per block); local rules "
             f"{' / '.join(table['variants'])}. Widths: "
             + ", ".join(f"{s} {w}" for s, w in table["widths"].items()) + ".", ""]
    lines += [f"- {v}" for v in table["verdicts"]] + [""]
    by = {(r["depth"], r["shape"], r["optimizer"], r["rule"], r["variant"], r["n"]): r for r in table["rows"]}
    rat = {(c["depth"], c["shape"], c["optimizer"], c["rule"], c["variant"], c["n"], c["baseline"]): c["ratio"]
           for c in table["ratios"]}
    for d in table["depths"]:
        target = PAPER_RATIO.get(d)
        lines += [f"## {d} blocks" + (f" (paper: DF < {target:.2f}x BP)" if target else ""), "",
                  "| shape | optimizer | N | variant | BP MiB (plain / ckpt) | DF-O MiB | DF-R MiB | DF-O/BP (plain / ckpt) "
                  "| DF-R/BP (plain / ckpt) |", "|---|---|---|---|---|---|---|---|---|"]
        for s in table["shapes"]:
            for opt in table["optimizers"]:
                bp = [by.get((d, s, opt, "bp", b, 0)) for b in BASELINES]
                bp_txt = " / ".join("-" if b is None else f"{b['bytes'] / 2 ** 20:.1f}" for b in bp)
                for n in table["negatives"]:
                    for v in table["variants"]:
                        o, r = by.get((d, s, opt, "df-o", v, n)), by.get((d, s, opt, "df-r", v, n))

                        def rr(rule):
                            return " / ".join(f"{rat[k]:.2f}" if (k := (d, s, opt, rule, v, n, b)) in rat else "-"
                                              for b in BASELINES)
                        lines.append(f"| {s} (w{table['widths'][s]}) | {opt} | {n} | {v} | {bp_txt} | "
                                     f"{_mib(o)} | "
                                     f"{_mib(r)} | "
                                     f"{rr('df-o')} | {rr('df-r')} |")
        lines.append("")
    missing = table.get("grid_points", len(table["rows"])) - len(table["rows"])
    lines.append(f"{len(table['rows'])} measurements" + (f" ({missing} of the grid's not measured: '-' above; "
                 "rerun with the same --out to add them)" if missing else "")
                 + f" (together {sum(r.get('seconds', 0) for r in table['rows']) / 60:.1f} process-minutes, on a "
                 f"shared 2-core machine; threads {sorted({r.get('threads') for r in table['rows']})})"
                 + f"; this invocation took {table['seconds'] / 60:.1f} min.")
    return lines


def plot(table, out_dir) -> None:
    """DF-R/BP against depth under the first optimizer: every shape at the smallest N (the claim's best
    case) against plain and checkpointed BP, and the first shape at the largest N; the paper's two points
    marked, the y axis from 0."""
    from .. import plots
    n_lo, n_hi, v, opt = min(table["negatives"]), max(table["negatives"]), table["variants"][0], table["optimizers"][0]
    wanted = [(s, n_lo, base) for s in table["shapes"] for base in BASELINES]
    wanted += [(table["shapes"][0], n_hi, "plain")] if n_hi != n_lo else []
    series = {}
    for s, n, base in wanted:
        pts = sorted((c["depth"], c["ratio"]) for c in table["ratios"]
                     if (c["shape"], c["n"], c["baseline"], c["rule"], c["optimizer"], c["variant"])
                     == (s, n, base, "df-r", opt, v))
        if pts:
            series[f"{s} (w{table['widths'][s]}), N={n}, vs BP {base}"] = ([p[0] for p in pts], [p[1] for p in pts])
    marks = {"paper (Fig. 4A)": (list(PAPER_RATIO), list(PAPER_RATIO.values()))}
    plots.lines(series, "number of blocks", "DF-R peak / BP peak", os.path.join(out_dir, "ratio_measured.png"),
                f"DF-R / BP, {table['label']}, {opt}", xticks=table["depths"],
                hline=(1.0, "= BP"), marks=marks, y_from_zero=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/dataflow/measured")
    ap.add_argument("--depths", default="11,25")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--widths", default="", help="shape=width,... (default 32 for every shape)")
    ap.add_argument("--negatives", default="1,3,9")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--variants", default="conscious", help="conscious,naive")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--budget-min", type=float, default=None, help="stop starting measurements after this long")
    a = ap.parse_args(argv)
    widths = dict((k, int(v)) for k, v in (x.split("=") for x in a.widths.split(",") if x))
    ints = lambda s: tuple(int(x) for x in s.split(","))   # noqa: E731
    t = run(a.out, ints(a.depths), tuple(a.shapes.split(",")), widths, ints(a.negatives),
            tuple(a.optimizers.split(",")), tuple(a.variants.split(",")), a.batch, a.dataset, a.device,
            budget_s=None if a.budget_min is None else 60 * a.budget_min)
    for v in t["verdicts"]:
        print(v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
