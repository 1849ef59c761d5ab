"""``chipsim reproduce``: regenerate every table and figure under ``reports/``.

Each experiment of the DF paper's evaluation is re-run on the modelled chip at
a scale this 2-core CPU can afford, and ``reports/README.md`` puts each of our
numbers beside the paper's with sentences computed from them
(``reproduce_report``). Every training -- the rule table and every sweep --
runs at one scale (``PLANS["full"]``: all 4,000 mnist5k training images, the
same epochs, 3 seeds), so a sweep's verdict is judged against the spread over
seeds, not against one run. Everything is seeded, so a rerun reproduces the
committed numbers; ``--quick`` is a minutes-long smoke version (what CI runs)
written elsewhere.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass

from .. import rundir
from ..atomic import make_dirs
from ..errors import ConfigError
from ..config import PRESET_DIR, load_config
from .. import labels, provenance
from ..report import atomic_write, write_json
from . import args as check
from . import rule_table, vit_table
from .cluster import open_cluster
from .compare import compare
from .dataflow import dataflow
from .jobs import RESULTS_NAME, load_done
from .reproduce_report import markdown
from .sweep import sweep

@dataclass(frozen=True)
class Plan:
    """How big each experiment is. ``full`` is what reports/ holds; ``quick`` is a smoke test."""
    name: str
    epochs: int                     # of every training: the rule table and the sweeps alike
    train_limit: int | None
    test_limit: int | None
    depths: tuple
    levels: tuple
    bits: tuple
    negatives: tuple
    seeds: tuple
    rule_variants: tuple | None = None      # names in rule_table.VARIANTS; None = all
    dataflow_datasets: tuple = ("mnist", "cifar10")    # the dataflow verdict table (``dataflow``)
    dataflow_depths: tuple = (11, 25)
    dataflow_negatives: tuple = (1, 3, 9)
    vit: bool = True                                    # the vision-transformer table (``vit_table``)
    ladder_epochs: tuple = ()                           # the budget ladder's rungs (``ladder``)
    explore: dict | None = None                         # the design-space search (``explore``), its options
    # DF's memory claim on measured PyTorch peaks (``measured``): (folder under dataflow/, its grid's options)
    measured: tuple = ()


PLANS = {
    # the committed reports/: every training on all 4,000 mnist5k images, 3 epochs, 3 seeds
    "full": Plan("full", epochs=3, train_limit=None, test_limit=None, depths=(5, 8, 11, 15, 20, 25),
                 levels=(0, 1, 2, 3, 4, 5), bits=(32, 8, 4, 2), negatives=(1, 3, 9, "avg"), seeds=(0, 1, 2),
                 ladder_epochs=(3, 10, 30),
                 # the widened condition grid (128 measurements; narrow late/none families keep a 25-block
                 # step's peak small enough for this machine), and naive against memory-conscious local rules
                 measured=(("measured", dict(widths={"late": 8, "none": 8})),
                           ("measured_naive", dict(shapes=("early",), negatives=(1, 9), optimizers=("adam",),
                                                   variants=("conscious", "naive")))),
                 # rules x bits x negatives x dataflow on the default chip (270 settings, 150 distinct feasible
                 # configurations): NSGA-II and random search x 3 search seeds x 48 trials of 500 images for one
                 # epoch, the front retrained on 3 seeds. The population is explore's default (48/4 = 12); over
                 # 100 replayed search seeds 8 and 12 gave the same mean hypervolume (benchmarks/samplers.py)
                 explore=dict(space="rules_bits_dataflow.yaml", trials=48, search_seeds=(0, 1, 2),
                              train_limit=500, test_limit=300, epochs=1, reeval_seeds=3)),
    "quick": Plan("quick", epochs=1, train_limit=400, test_limit=200, depths=(3, 5), levels=(0, 3, 5), bits=(32, 4),
                  negatives=(1, "avg"), seeds=(0,), rule_variants=("ff", "symba", "df greedy", "df-o", "df-r", "bp", "cwc + head"),
                  dataflow_datasets=("mnist",), dataflow_depths=(4,), dataflow_negatives=(1, 9), vit=False,
                  explore=dict(space="rules_bits_dataflow.yaml", trials=2, population=2, search_seeds=(0,),
                               baseline=False, train_limit=200, test_limit=100, epochs=1, reeval_seeds=0)),
}


def _limits(train, test) -> list:
    out = []
    if train:
        out.append(f"workload.train_limit={train}")
    if test:
        out.append(f"workload.test_limit={test}")
    return out


def reproduce(config: str | None = None, compare_config: str | None = None, out_dir: str = "reports",
              quick: bool = False, jobs: int | None = None, progress: bool = True, cluster=None,
              ladder: bool = True, skip=(), ladder_epochs=None) -> dict:
    """Run every experiment of the plan and write ``out_dir/README.md`` plus one folder per experiment.

    ``ladder=False`` leaves out the budget ladder (the ranked rules retrained at 10 and 30 epochs, hours
    at the full scale): the report then says it was not run. ``ladder_epochs`` runs these rungs instead of
    the plan's (3, 10 and 30 at the full scale); the report names the plan's rungs it left out.

    ``config`` / ``compare_config`` default to the shipped presets ``44core_4bit`` and ``176core_512k``
    (found beside the package, whatever the working directory). ``cluster``: run every experiment's
    points on one Dask cluster, opened once for all of them (``chipsim.experiments.cluster``).
    """
    config = config or os.path.join(PRESET_DIR, "44core_4bit.yaml")
    compare_config = compare_config or os.path.join(PRESET_DIR, "176core_512k.yaml")
    jobs = check.jobs(jobs) or os.cpu_count() or 1
    if ladder_epochs is not None:
        ladder_epochs = tuple(sorted({int(e) for e in ladder_epochs}))
        if not ladder_epochs or ladder_epochs[0] < 1:
            raise ConfigError(f"--ladder-epochs {','.join(map(str, ladder_epochs))}: give epochs >= 1, "
                              "comma-separated (e.g. 3,10)")
        if not ladder:
            raise ConfigError("--ladder-epochs and --no-ladder contradict each other: give one of them")
    bad = [s for s in skip if s not in SKIPPABLE]
    if bad:
        raise ConfigError(f"--skip {','.join(bad)}: allowed: {', '.join(SKIPPABLE)}")
    out_dir = os.fspath(out_dir)
    # never into a directory another command wrote (its README.md is not ours to replace); held while it runs
    rundir.claim(out_dir, "reproduce", is_ours=_is_reproduce_dir)
    # one executor for every experiment: a cluster given, or the local one of --jobs workers (none for 1)
    pool = open_cluster(cluster, jobs) if cluster is not None or jobs > 1 else contextlib.nullcontext(None)
    with rundir.owned(out_dir), pool as client:
        return _reproduce(config, compare_config, out_dir, quick, jobs, progress, client, ladder, skip,
                          ladder_epochs)


#: what a reproduce directory holds: its README and one folder per experiment
_OWN_ENTRIES = ("README.md", "summary.json", "ladder", "explore", "accuracy", "rules", "compare", "compare_n1",
                "compare_recompute", "dataflow", "noise", "bits", "negatives", "vit")   # explore: chipsim explore's


def _is_reproduce_dir(path: str, entries: list) -> bool:
    """An existing ``--out`` that reproduce may write into: nothing but its own entries, and a README.md only
    beside a results log of its own (so a README of any other directory is never overwritten)."""
    if any(e not in _OWN_ENTRIES for e in entries):
        return False
    return "README.md" not in entries or any(os.path.isfile(os.path.join(path, e, RESULTS_NAME)) for e in entries)


#: the parts ``--skip`` may leave out (the rule table, compare and the dataflow grid are what the rest reads)
SKIPPABLE = ("noise", "bits", "negatives", "vit", "explore")


def _reproduce(config, compare_config, out_dir, quick, jobs, progress, cluster, ladder=True, skip=(),
               ladder_epochs=None) -> dict:
    plan = PLANS["quick" if quick else "full"]
    rungs_left_out = []
    if ladder_epochs is not None:                    # other rungs than the plan's: the report names the missing
        rungs_left_out = [e for e in plan.ladder_epochs if e not in ladder_epochs]
        plan = dataclasses.replace(plan, ladder_epochs=tuple(ladder_epochs))
    left_out = [s for s in SKIPPABLE if s in skip and (s not in ("vit", "explore") or getattr(plan, s))]
    plan = dataclasses.replace(plan, vit=plan.vit and "vit" not in skip,
                               explore=None if "explore" in skip else plan.explore)
    t0 = time.perf_counter()
    cfg = load_config(config)
    results = {"plan": plan.__dict__, "config": cfg.path, "left_out": left_out, "rungs_left_out": rungs_left_out}
    logged_before = _logged_points(out_dir, left_out)

    scale = _limits(plan.train_limit, plan.test_limit) + [f"training.epochs={plan.epochs}"]
    if progress:
        parts = [f"every rule over seeds {', '.join(map(str, plan.seeds))}", "memory and latency vs depth",
                 "the dataflow design space"]
        parts += [words for name, words in (("noise", "noise"), ("bits", "bit widths"), ("negatives", "negatives"))
                  if name not in skip]
        parts += (["the vision transformer"] if plan.vit else []) + (["the design-space search"] if plan.explore else [])
        print(f"chipsim reproduce{' --quick' if quick else ''}: {', '.join(parts)}, at the {plan.name} scale"
              f"{'; leaving out ' + ', '.join(left_out) if left_out else ''}; writing {out_dir}{os.sep}", flush=True)
    # 1 and 6. every rule of the FF family on the chip (the ranking of section 1 is its first rows)
    results["rules"] = rule_table.rule_table(config, plan.seeds, scale, os.path.join(out_dir, "rules"), jobs,
                                             progress, plan.rule_variants, cluster)
    models = {}
    for r in results["rules"]["rows"]:
        models.setdefault(r["model"], []).append(r["variant"])
    base_model = next(r["model"] for r in results["rules"]["rows"] if r["variant"] == "bp")
    model_words = base_model + "".join(f"; {', '.join(v)} on {m}" for m, v in models.items() if m != base_model)
    _plot_accuracy(results["rules"], os.path.join(out_dir, "accuracy", "accuracy.png"), labels.title_lines(
        labels.settings(cfg, model=model_words, scale=f"mnist5k, train_limit {plan.train_limit or 'all'}, "
                                                      f"{plan.epochs} epoch(s), seeds {', '.join(map(str, plan.seeds))}")))
    # 2. memory and latency vs depth (Fig. 4A-B), at the paper's N = C-1 and at N = 1
    results["compare"] = compare(compare_config, ("bp", "df-o", "df-r"), plan.depths,
                                 out_dir=os.path.join(out_dir, "compare"), jobs=jobs, progress=progress,
                                 cluster=cluster)
    results["compare_n1"] = compare(compare_config, ("bp", "df-o", "df-r"), plan.depths,
                                    overrides=("learning.negatives=1",),
                                    out_dir=os.path.join(out_dir, "compare_n1"), jobs=jobs, progress=progress,
                                    cluster=cluster)
    # 2b. ... with the dataflow that cuts the whole-batch memory most, and the design space at 11 and 25 blocks
    results["compare_recompute"] = compare(compare_config, ("bp", "df-o", "df-r"), plan.depths,
                                           # like with like: sequential negatives take the batch's
                                           # statistics, so BP does too (auto would give it running)
                                           overrides=("mapping.negatives=sequential-recompute",
                                                      "mapping.statistics=batch"),
                                           out_dir=os.path.join(out_dir, "compare_recompute"), jobs=jobs,
                                           progress=progress, cluster=cluster)
    # 2c. ... and on the peaks measured in PyTorch over the widened grid, whose verdicts join the table's
    from .measured import run as measured_grid
    for name, options in plan.measured:
        measured_grid(os.path.join(out_dir, "dataflow", name), progress=progress, **options)
    results["dataflow"] = dataflow(compare_config, os.path.join(out_dir, "dataflow"), plan.dataflow_datasets,
                                   plan.dataflow_depths, plan.dataflow_negatives, jobs=jobs, progress=progress,
                                   cluster=cluster, judge=plan.name != "quick", device="cpu",
                                   measured_dir=os.path.join(out_dir, "dataflow", "measured"))
    # 3. robustness (Fig. 4C-E and beyond), 4. bit widths (Fig. S3), 5. negatives (Table 2): the same scale
    if "noise" not in skip:
        results["noise"] = sweep(config, ("bp", "df-o"), noise=("shot", "impulse", "mismatch", "read", "stuck"),
                                 levels=plan.levels, seeds=plan.seeds, overrides=scale,
                                 out_dir=os.path.join(out_dir, "noise"), jobs=jobs, progress=progress,
                                 cluster=cluster)
    if "bits" not in skip:
        results["bits"] = sweep(config, ("df-o", "bp"), bits=plan.bits, seeds=plan.seeds, overrides=scale,
                                out_dir=os.path.join(out_dir, "bits"), jobs=jobs, progress=progress,
                                cluster=cluster)
    if "negatives" not in skip:
        results["negatives"] = sweep(config, ("df-o",), negatives=plan.negatives, seeds=plan.seeds,
                                     overrides=scale, out_dir=os.path.join(out_dir, "negatives"), jobs=jobs,
                                     progress=progress, cluster=cluster)
    # 1b. the budget ladder: the ranked rules at 3, 10 and 30 epochs (the plan's own budget reused)
    if ladder and plan.ladder_epochs:
        from .ladder import ladder as budget_ladder
        results["ladder"] = budget_ladder(
            config, plan.seeds, _limits(plan.train_limit, plan.test_limit), plan.ladder_epochs,
            os.path.join(out_dir, "ladder"), jobs, progress, cluster, reuse={plan.epochs: results["rules"]},
            settings=labels.title_lines(labels.settings(cfg, scale="mnist5k")))
    # 7. Contrastive Forward-Forward, FF and BP on a vision transformer
    if plan.vit:
        results["vit"] = vit_table.vit_table(config, plan.seeds, scale, os.path.join(out_dir, "vit"), jobs,
                                             progress, cluster)
    # 8. the design-space search: rule x precision x negatives x dataflow for the Pareto front
    if plan.explore:
        results["explore"] = _explore(config, plan.explore, os.path.join(out_dir, "explore"), jobs, progress,
                                      cluster)
    results["seconds"] = time.perf_counter() - t0
    logged = _logged_points(out_dir, left_out)
    results["points"], results["reused_points"] = len(logged), len(logged & logged_before)
    results["provenance"] = provenance.collect("reproduce" + (" --quick" if quick else ""))
    write_json(os.path.join(out_dir, "summary.json"), {k: v for k, v in results.items() if k in (
        "plan", "config", "seconds", "points", "reused_points", "provenance")})
    atomic_write(os.path.join(out_dir, "README.md"), markdown(results, plan, _compute_minutes(results)))
    return results


#: the shipped search spaces (``spaces/`` beside ``hwconfigs/``)
SPACE_DIR = os.path.join(os.path.dirname(PRESET_DIR), "spaces")


def _explore(config: str, options: dict, out: str, jobs, progress, cluster) -> dict:
    """The plan's exploration (``chipsim explore`` with the shipped space ``options["space"]``), into ``out``:
    a rerun with the same settings resumes its study (every finished trial is kept), and one with other
    settings is refused, as ``chipsim explore`` refuses it."""
    from .explore import explore
    opts = dict(options)
    space = os.path.join(SPACE_DIR, opts.pop("space"))
    table = explore(config, space, objectives=("accuracy", "train_energy", "peak_sram"), out_dir=out, jobs=jobs,
                    progress=progress, cluster=cluster, **opts)
    # the trials' own compute (the front's retraining on fresh seeds is not logged per point: its wall time)
    table["compute_seconds"] = sum(r.get("seconds") or 0.0 for r in table["rows"])
    return table


def _logged_points(out_dir: str, skipped=()) -> set:
    """(experiment, key) of every point logged in ``out_dir/*/points.jsonl``: what a rerun reuses (but not
    the logs of parts ``--skip`` left out, which this invocation neither ran nor read)."""
    out = set()
    names = sorted(n for n in os.listdir(out_dir) if n != "explore" and n not in skipped)   # explore: its study
    ladder_dir = os.path.join(out_dir, "ladder")
    if os.path.isdir(ladder_dir):                      # the ladder keeps one folder per rung
        names += [os.path.join("ladder", n) for n in sorted(os.listdir(ladder_dir))]
    for name in names:
        path = os.path.join(out_dir, name, RESULTS_NAME)
        if os.path.isfile(path):
            out |= {(name, key) for key in load_done(path)}
    return out


def _compute_minutes(res: dict) -> float:
    """Sum of the per-point compute times recorded by every experiment (process-minutes)."""
    total = sum(s for r in res["rules"]["rows"] for s in r.get("train_seconds", []))
    for k in ("compare", "compare_n1", "compare_recompute"):
        total += sum(r.get("engine_seconds", 0.0) + r.get("chip_seconds", 0.0) for r in res[k]["rows"])
    total += res["dataflow"]["compute_seconds"]
    for k in ("noise", "bits", "negatives"):
        total += sum(p.get("seconds", 0.0) for p in res[k]["points"]) if k in res else 0.0
    if "vit" in res:
        total += sum(r["train_seconds_mean"] * len(res["vit"]["seeds"]) for r in res["vit"]["rows"])
    if "explore" in res:
        total += res["explore"].get("compute_seconds", 0.0)
    for e, rows in (res.get("ladder") or {}).get("rungs", {}).items():
        if e != res["plan"]["epochs"]:                 # the plan's own rung is the rule table, counted above
            total += sum(s for r in rows for s in r.get("train_seconds", []))
    return total / 60


def _plot_accuracy(table: dict, path: str, scale: str) -> None:
    """Bars of the rule table's mean accuracy with the spread over seeds."""
    from .. import plots
    import matplotlib.pyplot as plt
    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(rows)), 3.4))
    names = [r["variant"] for r in rows]
    means = [100 * r["accuracy_mean"] for r in rows]
    from ..styles import rule_style
    ax.bar(names, means, yerr=[100 * r["accuracy_std"] for r in rows], capsize=3,
           color=[rule_style(n).color for n in names])
    for i, v in enumerate(means):
        ax.text(i, v + 1.0, f"{v:.1f}", ha="center", fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_title(f"Test accuracy per rule (mean and spread over seeds)\n{scale}", fontsize=9)
    fig.tight_layout()
    make_dirs(os.path.dirname(path))
    plots.save(fig, path)
