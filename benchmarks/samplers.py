"""Which search sampler finds more of the front at a fixed budget: samplers replayed on an exhaustive grid.

Why a replay: a trial of the committed exploration is a training (seconds to minutes), so comparing
samplers over the dozens of search seeds their spread needs would take days. But a trial is a function of
its settings: the engine is integer-exact and seeded, so the same settings at the same scale and training
seed give the same accuracy and costs. Once every setting of a finite space has been evaluated
(``chipsim explore --sampler grid``), any search on it can be replayed by looking its trials up. The replay
runs ``chipsim explore``'s own samplers (``search.make_sampler``), its asking (``studies.ask_new``: repeats
refused, an unseen setting drawn when a sampler is stuck) and its telling (``studies.tell``: constraints),
one trial at a time as each study runs when the studies take turns; only the study lives in memory rather
than in a database, and a lookup replaces the training. So what it measures is what the committed search
does, about a hundred times faster.

Run: ``python benchmarks/samplers.py [--grid DIR] [--samplers nsga2,tpe] [--seeds 100] [--trials 48]``.
It prints one line per sampler: the final hypervolume's mean, median and spread over the search seeds, the
fraction of the grid's own hypervolume it reached, its difference from random search's on the same search
seed (mean and standard error), and on how many seeds it reached at least random search's. The reference
point is explore's own (``report.reference_point``) over the whole grid: error 1 for accuracy, each cost's
worst feasible value plus 10 % of its range.

``--grid`` (default ``benchmarks/data/grid-rules_bits_dataflow``) is an explore output directory of a grid
search; the committed one was made with

    chipsim explore hwconfigs/44core_4bit.yaml --space spaces/rules_bits_dataflow.yaml --sampler grid \
        --no-baseline --trials 270 --train-limit 500 --test-limit 300 --epochs 1 --reeval-seeds 0 \
        --out benchmarks/data/grid-rules_bits_dataflow

at the committed exploration's scale, so its trials are the ones ``reports/explore/`` looked up.
``benchmarks/data/grid-rules_bits`` holds the same for the shipped rules x bits space
(``spaces/rules_bits.yaml``, 120 settings); each data folder's README gives its command.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tqdm  # noqa: E402

from chipsim.experiments.explore.objectives import OBJECTIVES  # noqa: E402
from chipsim.experiments.explore.pareto import hypervolume  # noqa: E402
from chipsim.experiments.explore.report import reference_point  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GRID = os.path.join(HERE, "data", "grid-rules_bits_dataflow")


def _settings_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def load_grid(grid_dir: str) -> dict:
    """The grid search's table and settings: every setting's result, its space, config and scale."""
    with open(os.path.join(grid_dir, "explore.json")) as fh:
        table = json.load(fh)
    rows = {_settings_key(r["params"]): {"status": r["status"], "values": r["values"], "seconds": 0.0,
                                          "violation": r.get("violation")} for r in table["rows"]}
    return {"rows": rows, "table": table}


def replay(sampler: str, seed: int, trials: int, population: int, ctx: dict, rows: dict, objectives: list) -> list:
    """One study of ``trials`` finished trials, as ``chipsim explore`` runs it; returns its rows' results."""
    import optuna
    from chipsim.experiments.explore import search, studies
    study = optuna.create_study(directions=[OBJECTIVES[o].direction for o in objectives],
                                sampler=search.make_sampler(sampler, seed, population),
                                study_name=f"{sampler}-seed{seed}")
    dists, seen, out = ctx["space"].distributions(), set(), []
    while len(out) < trials:
        trial, params, key = studies.ask_new(study, dists, ctx, seen)
        seen.add(key)
        res = dict(rows[_settings_key(params)])
        studies.tell(study, trial, res, objectives, key)
        out.append(res)
    return out


def final_hypervolume(results: list, ref: list, objectives: list) -> float:
    pts = [[OBJECTIVES[o].to_min(r["values"][o]) for o in objectives] for r in results if r["status"] == "ok"]
    return hypervolume(pts, ref)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default=DEFAULT_GRID, help="an explore output directory of a grid search")
    ap.add_argument("--samplers", default="nsga2,tpe", help="samplers compared with random search")
    ap.add_argument("--seeds", type=int, default=100, help="search seeds 0..N-1 per sampler")
    ap.add_argument("--trials", type=int, default=48, help="finished trials per study")
    ap.add_argument("--population", type=int, default=None, help="random start (default: explore's)")
    args = ap.parse_args()
    grid = load_grid(args.grid)
    g = grid["table"]
    objectives = g["objectives"]
    ref = reference_point({"rows": list(grid["rows"].values()), "objectives": objectives})
    whole = hypervolume([[OBJECTIVES[o].to_min(r["values"][o]) for o in objectives]
                         for r in grid["rows"].values() if r["status"] == "ok"], ref)
    import optuna
    from chipsim.experiments.explore import search
    from chipsim.config import load_config
    from chipsim.experiments.explore.space import load_space
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = os.path.dirname(HERE)
    config = os.path.join(root, "hwconfigs", os.path.basename(g["config"]))
    base = list(g["base_overrides"])
    # what studies.ask_new reads of a search's context: the space, the scale, and the config (to tell
    # settings that differ only in keys their rule ignores)
    ctx = {"space": load_space(os.path.join(root, "spaces", os.path.basename(g["space"]["path"])), config,
                               tuple(base)),
           "scale": g["scale"], "cfg": load_config(config, tuple(base)), "base": base}
    population = args.population or search.default_population(args.trials)
    names = ["random"] + [n for n in args.samplers.split(",") if n != "random"]
    print(f"samplers.py: {', '.join(names[1:])} against random search, {args.trials} trials (a random start of "
          f"{population}), search seeds 0-{args.seeds - 1}, replayed on the {len(grid['rows'])} settings of "
          f"{os.path.relpath(args.grid)} (a trial is looked up, not trained); writes nothing", flush=True)
    t0 = time.perf_counter()
    finals = {(n, s): final_hypervolume(replay(n, s, args.trials, population, ctx, grid["rows"], objectives),
                                        ref, objectives)
              for n in tqdm.tqdm(names, desc="samplers") for s in range(args.seeds)}
    print(f"reference point {', '.join(f'{o} {r:.4g}' for o, r in zip(objectives, ref))} (accuracy as error); "
          f"the grid's own hypervolume {whole:.4g}; {time.perf_counter() - t0:.0f} s")
    rand = [finals[("random", s)] for s in range(args.seeds)]
    for name in names:
        hv = [finals[(name, s)] for s in range(args.seeds)]
        wins = sum(a >= b for a, b in zip(hv, rand))
        line = (f"{name:7s} final hypervolume mean {statistics.mean(hv):.4g} (median {statistics.median(hv):.4g}, "
                f"sd {statistics.pstdev(hv):.4g}, {100 * statistics.mean(hv) / whole:.1f} % of the grid's); "
                f"seeds 0-2: {', '.join(f'{v:.4g}' for v in hv[:3])}")
        if name != "random":
            diff = [a - b for a, b in zip(hv, rand)]
            se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
            line += (f"; minus random's, paired: {statistics.mean(diff):+.4g} (standard error {se:.3g}); at least "
                     f"random's on {wins} of {args.seeds} seeds")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
