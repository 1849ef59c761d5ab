"""The budget ladder of ``chipsim reproduce``: the accuracy ranking of the rules at 3, 10 and 30 epochs.

Why: a ranking measured at one training budget may be an artefact of that
budget -- a rule that learns fast leads at 3 epochs and trails at 30. The
ladder trains the ranked rules (section 1 of the report) at each budget over
the same seeds, through the rule table's own points (``rule_table``), one
folder per rung, and says which pairs of rules swap order between budgets --
counting a swap only where both orders are clear (at least 2 seeds and a gap
larger than its spread, ``verdicts``).
"""
from __future__ import annotations

import os

from ..report import write_json
from . import rule_table
from .verdicts import Gap, Scale, judgeable

#: the report's ranked rules, by their rule-table variant names
RANKED = ("ff", "symba", "df greedy", "df-o", "df-r", "bp")


def ladder(config: str, seeds, limits: list, epochs, out_dir: str, jobs: int, progress: bool = True,
           cluster=None, names=RANKED, reuse: dict | None = None, settings: str = "") -> dict:
    """Train ``names`` over ``seeds`` at each of ``epochs`` (``limits``: the scale's other overrides) into
    ``out_dir/epochs<E>/``; ``reuse``: {epochs: rule table} already trained at that budget (the rule
    table's own rung); ``settings``: the chip, model, N ... words for the figure (``labels``). Writes ``out_dir/ladder.json``; returns {"epochs", "seeds", "rungs": {E: rows}}."""
    rungs = {}
    for e in epochs:
        if reuse and e in reuse:
            rows = [r for r in reuse[e]["rows"] if r["variant"] in names]
        else:
            rows = rule_table.rule_table(config, seeds, list(limits) + [f"training.epochs={e}"],
                                         os.path.join(out_dir, f"epochs{e}"), jobs, progress, names, cluster)["rows"]
        rungs[e] = [{k: r[k] for k in ("variant", "accuracy", "accuracy_mean", "accuracy_std", "train_seconds")}
                    for r in rows]
    table = {"epochs": list(epochs), "seeds": list(seeds), "limits": list(limits), "rungs": rungs,
             "settings": settings}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "ladder.json"), table)
    plot(table, os.path.join(out_dir, "ladder.png"))
    return table


def _rung(table, e):
    """Rows of rung ``e`` (JSON turns the int keys into strings)."""
    return table["rungs"].get(e, table["rungs"].get(str(e), []))


def clear_order(rows, scale: Scale) -> set:
    """{(a, b)}: pairs where rule a is clearly more accurate than b at this rung (the verdict rule)."""
    out = set()
    for a in rows:
        for b in rows:
            g = Gap(a["accuracy_mean"] - b["accuracy_mean"], max(a["accuracy_std"], b["accuracy_std"]))
            n = min(len(a["accuracy"]), len(b["accuracy"]))
            if a is not b and g.difference > 0 and judgeable([g], n, scale) is None:
                out.add((a["variant"], b["variant"]))
    return out


def swaps(table, scale: Scale) -> list:
    """[(a, b, e1, e2)]: a clearly ahead of b at budget e1 and clearly behind at e2."""
    orders = {e: clear_order(_rung(table, e), scale) for e in table["epochs"]}
    out = []
    for i, e1 in enumerate(table["epochs"]):
        for e2 in table["epochs"][i + 1:]:
            out += [(a, b, e1, e2) for a, b in sorted(orders[e1]) if (b, a) in orders[e2]]
    return out


def _and(xs) -> str:
    xs = [str(x) for x in xs]
    return xs[0] if len(xs) == 1 else f"{', '.join(xs[:-1])} and {xs[-1]}"


def markdown(table: dict | None, scale: Scale, planned=(3, 10, 30), left_out=()) -> list:
    """Section 1b of reports/README.md: the rungs run (``table``), and those of the plan (``planned``) that
    this invocation left out (``left_out``, ``chipsim reproduce --ladder-epochs``)."""
    rungs = sorted(set(planned) | set(left_out))
    lines = [f"## 1b. The ranking at {_and(rungs)} epochs (the budget ladder)", ""]
    if not table:
        return lines + ["Not run in this invocation (`chipsim reproduce --no-ladder`, or the quick scale): the "
                        "ranking above is judged at one training budget only.", ""]
    epochs = table["epochs"]
    if left_out:
        lines += [f"**Not run: the {_and(left_out)}-epoch rung{'s' if len(left_out) > 1 else ''}** "
                  f"(this reproduction ran `chipsim reproduce --ladder-epochs {','.join(map(str, epochs))}`); the "
                  f"ranking below is judged at {_and(epochs)} epochs only.", ""]
    names = [r["variant"] for r in _rung(table, epochs[0])]
    lines += [f"The ranked rules over seeds {', '.join(map(str, table['seeds']))} at each budget (mean ± sample sd, "
              "%); everything else as in section 1. A pair counts as swapping only where it is clearly ordered "
              "(at least 2 seeds, a gap larger than its spread) at both budgets.", "",
              "| rule | " + " | ".join(f"{e} epochs" for e in epochs) + " |", "|---|" + "---|" * len(epochs)]
    for name in names:
        cells = []
        for e in epochs:
            r = next((x for x in _rung(table, e) if x["variant"] == name), None)
            cells.append("-" if r is None else f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for e in epochs:
        rows = sorted(_rung(table, e), key=lambda r: -r["accuracy_mean"])
        text = f"- {e} epochs, by mean: " + " > ".join(r["variant"] for r in rows)
        if scale.judge:
            text += (f" ({len(clear_order(rows, scale))} of {len(rows) * (len(rows) - 1) // 2} pairs clearly "
                     "ordered)")
        lines.append(text + ".")
    if not scale.judge:
        lines.append("- Whether the ranking depends on the budget: **Not judged at this scale** (a smoke test).")
    else:
        sw = swaps(table, scale)
        lines.append("- Pairs whose order the budget reverses: " + ("; ".join(
            f"{a} ahead of {b} at {e1} epochs, behind at {e2}" for a, b, e1, e2 in sw) if sw else
            "none among the clearly ordered pairs") + ".")
    lines += ["", "![ladder](ladder/ladder.png)", ""]
    return lines


def plot(table: dict, path: str) -> None:
    """Accuracy against the training budget, one line per rule in its colour (``styles``)."""
    from .. import plots
    series, errors = {}, {}
    for name in [r["variant"] for r in _rung(table, table["epochs"][0])]:
        xs, ys, es = [], [], []
        for e in table["epochs"]:
            r = next((x for x in _rung(table, e) if x["variant"] == name), None)
            if r is not None:
                xs.append(e)
                ys.append(100 * r["accuracy_mean"])
                es.append(100 * r["accuracy_std"])
        series[name], errors[name] = (xs, ys), es
    plots.lines(series, "training epochs (log scale)", "test accuracy (%)", path,
                f"Accuracy vs training budget, seeds {', '.join(map(str, table['seeds']))}; "
                f"{' '.join(table['limits']) or 'all mnist5k images'}\n{table.get('settings', '')}",
                errors=errors if len(table["seeds"]) > 1 else None, xticks=list(table["epochs"]), log2_x=True)
