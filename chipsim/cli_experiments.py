"""The experiment subcommands (compare, sweep, table, reproduce, explore): their own module because
each is a long argument list over an experiment API, and ``cli`` stays the registry and ``main``."""
from __future__ import annotations

import argparse
import os

from .cli_options import EXIT_OK, _csv_list, _print_table, add_cluster_option, add_out_option, add_set_option
from .errors import ChipsimError


def _configure_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG",
                   help="chip + workload file (its model is replaced by the depth family, unless --own-model)")
    p.add_argument("--rules", default="bp,df-o,df-r", help="comma-separated rules (default: bp,df-o,df-r)")
    p.add_argument("--depths", default=None, help="comma-separated block counts (default: 5,8,11,15,20,25)")
    p.add_argument("--own-model", action="store_true",
                   help="compare on the config's own model (workload.model) instead of the depth family")
    p.add_argument("--width", type=int, default=32, help="conv channels of the depth family (default: 32)")
    p.add_argument("--pools", default="0,1", help="conv blocks of the depth family followed by a 2x2 max-pool "
                   "(default: 0,1); the input shape is the dataset's (--set workload.dataset=cifar10)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes, >= 1 (default: all cores)")
    p.add_argument("--device", default="cpu", help="where the framework figure is measured in PyTorch: cpu "
                   "(torch.profiler memory events), cuda (torch.cuda.max_memory_allocated) or none (default: cpu)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-compare-<timestamp>/; rerun with the same --out to resume")


def cmd_compare(args: argparse.Namespace) -> int:
    from . import api
    if args.own_model and args.depths is not None:
        raise ChipsimError("compare: give --depths (the depth family) or --own-model, not both")
    depths = _csv_list("5,8,11,15,20,25" if args.depths is None else args.depths, "--depths", int, "integers")
    table = api.compare(args.config, _csv_list(args.rules, "--rules", what="rules"), depths, args.overrides,
                        width=args.width, out_dir=args.out, jobs=args.jobs, own_model=args.own_model,
                        cluster=args.cluster,
                        pools=_csv_list(args.pools, "--pools", int, "integers"),
                        device=None if args.device == "none" else args.device)
    rows = []
    for r in table["rows"]:
        m, wb = r["streaming"], r["whole-batch"]
        rows.append({"depth": r["depth"], "rule": r["rule"], "cores": m.get("cores_used", "no fit"),
                     "SRAM KiB": round(m["total_peak_bytes"] / 1024) if m.get("fits") else "-",
                     "whole-batch KiB": round(wb["total_peak_bytes"] / 1024) if wb.get("fits") else "-",
                     "measured KiB": round(r["measured"]["total_peak_bytes"] / 1024)
                     if r.get("measured", {}).get("fits") else "-",
                     "step us": round(m["latency_us"]) if m.get("fits") else "-",
                     "backward us": round(m["backward_us"]) if m.get("fits") else "-",
                     "uJ/sample": round(m["energy_per_sample_pj"] / 1e6, 2) if m.get("fits") else "-"})
    _print_table(rows, list(rows[0]))
    from .experiments.compare import _measured_label, ratio_lines
    print()
    errors = sorted({r["measured"]["error"] for r in table["rows"] if not r.get("measured", {"fits": True})["fits"]})
    print("measured KiB: one PyTorch training step's peak allocator bytes ("
          + (_measured_label(table) if any(r.get("measured", {}).get("fits") for r in table["rows"])
             else "not measured: --device none" if not errors else "none measured")
          + ")" + "".join(f"; -: {e}" for e in errors))
    for line in ratio_lines(table):
        print(line)
    return EXIT_OK


def _configure_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file")
    p.add_argument("--rules", default="bp,df-o", help="comma-separated rules (default: bp,df-o)")
    p.add_argument("--noise", default="", help="noise kinds: shot, impulse (test inputs), mismatch (training "
                   "gradients, per core), read, stuck (weights at inference)")
    p.add_argument("--levels", default="0-5", help="noise levels, a range or list (default: 0-5)")
    p.add_argument("--bits", default="", help="bit widths for weights and activations, e.g. 32,8,6,4,3,2")
    p.add_argument("--negatives", default="", help="numbers of negatives, e.g. 1,3,9,avg")
    p.add_argument("--seeds", default="0", help="seeds, for error bars (default: 0)")
    p.add_argument("--gain-std", type=float, default=0.0, help="fixed per-core gain error (std, >= 0) with "
                   "--noise mismatch")
    p.add_argument("--jobs", type=int, default=None, help="parallel trainings, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-sweep-<timestamp>/; rerun with the same --out to resume")


def _negative(text: str):
    return "avg" if text.lower() == "avg" else int(text)


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import api
    from .experiments.sweep import parse_levels
    table = api.sweep(args.config, _csv_list(args.rules, "--rules", what="rules"),
                      _csv_list(args.noise, "--noise", what="noise kinds"), parse_levels(args.levels),
                      _csv_list(args.bits, "--bits", int, "bit widths"),
                      _csv_list(args.negatives, "--negatives", _negative, "integers or avg"),
                      _csv_list(args.seeds, "--seeds", int, "integers"), args.overrides,
                      out_dir=args.out, jobs=args.jobs, gain_std=args.gain_std,
                      cluster=args.cluster)
    from .experiments.sweep import markdown
    print(markdown(table))
    return EXIT_OK


def _configure_table(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train each rule of --rules once per seed of --seeds on the config's model and chip (every "
        "training in parallel, like any experiment), then write table.md, table.json, accuracy.png and "
        "points.jsonl: accuracy as mean ± sample standard deviation over the seeds and each seed's, beside "
        "the chip's SRAM (sum over cores, worst core, whole-batch), cores, step latency and energy per "
        "sample of one training step, and each rule's ratio to bp on the same model and chip. The most "
        "accurate rule is named only when at least 2 seeds separate it from the next by more than their "
        "spread. The scale is the config's (--set training.epochs=..., workload.train_limit=...); rerun "
        "with the same --out to resume.")
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file (its model, dataset and scale)")
    p.add_argument("--rules", default="bp,df-o,df-r", help="comma-separated rules (default: bp,df-o,df-r)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, at least 2 for a spread "
                   "(default: 0,1,2)")
    p.add_argument("--jobs", type=int, default=None, help="parallel trainings, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-table-<timestamp>/; rerun with the same --out to resume")


def cmd_table(args: argparse.Namespace) -> int:
    from . import api
    t = api.table(args.config, _csv_list(args.rules, "--rules", what="rules"),
                  _csv_list(args.seeds, "--seeds", int, "integers"), args.overrides, out_dir=args.out,
                  jobs=args.jobs, cluster=args.cluster)
    from .experiments.table import markdown
    print(markdown(t))
    return EXIT_OK


def _configure_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="minutes-long smoke version (what CI runs)")
    p.add_argument("--no-ladder", action="store_true", help="leave out the budget ladder (the ranked rules "
                   "retrained at 10 and 30 epochs, hours at the full scale); the report says it was not run")
    p.add_argument("--ladder-epochs", default=None, metavar="E,E,...", help="the budget ladder's rungs "
                   "(default 3,10,30; e.g. 3,10 leaves out the longest), the report names the rungs left out")
    p.add_argument("--skip", default="", metavar="PARTS", help="leave out these parts, comma-separated: noise, "
                   "bits, negatives, vit, explore (the report names what it left out)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    add_cluster_option(p)
    add_out_option(p, "reports/ (or a temp-like reports/runs/quick-<timestamp>/ with --quick)")


def _epochs(text: str) -> tuple:
    """``--ladder-epochs 3,10``: positive integers, comma-separated."""
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise ChipsimError(f"--ladder-epochs {text!r}: give epochs >= 1, comma-separated (e.g. 3,10)")
    return out


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import api, rundir
    if args.jobs is not None and args.jobs < 1:
        raise ChipsimError(f"--jobs {args.jobs}: must be >= 1 (or leave it out to use every core)")
    out = args.out or (rundir.new_default("quick") if args.quick else "reports")
    api.reproduce(out_dir=out, quick=args.quick, jobs=args.jobs, cluster=args.cluster, ladder=not args.no_ladder,
                  skip=tuple(x.strip() for x in args.skip.split(",") if x.strip()),
                  ladder_epochs=None if args.ladder_epochs is None else _epochs(args.ladder_epochs))
    print(f"report: {os.path.join(out, 'README.md')}")
    return EXIT_OK


def _configure_explore(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file: the base every trial changes")
    p.add_argument("--space", required=True, metavar="SPACE.yaml",
                   help="config keys to search, with their choices or ranges (see spaces/ and docs/explore.md)")
    p.add_argument("--objectives", default="accuracy,train_energy,peak_sram",
                   help="comma-separated: accuracy, train_energy, inference_energy, latency, peak_sram, "
                        "total_sram, sram_used (default: accuracy,train_energy,peak_sram)")
    p.add_argument("--noise", default=None, metavar="KIND:LEVEL",
                   help="measure accuracy under test-time noise, e.g. shot:3 (shot, impulse, read, stuck; 1-5)")
    p.add_argument("--sampler", default="nsga2", choices=("nsga2", "tpe", "random", "grid"),
                   help="search algorithm (default: nsga2; tpe: multivariate, constraint-aware; grid: every point "
                        "of a small finite space); random search at the same budget is run beside it as the "
                        "baseline unless --no-baseline")
    p.add_argument("--no-baseline", action="store_true", help="do not run random search beside the sampler")
    p.add_argument("--trials", type=int, default=24, help="finished trials per study (default: 24)")
    p.add_argument("--search-seeds", default="0", help="sampler seeds: one study per seed and sampler (default: 0)")
    p.add_argument("--population", type=int, default=None,
                   help="the search's random start: TPE's startup trials, NSGA-II's population (default: "
                        "trials/4, between 4 and 50)")
    p.add_argument("--train-limit", type=int, default=None, help="training samples per trial (default: the config's)")
    p.add_argument("--test-limit", type=int, default=None, help="test samples per trial (default: the config's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the config's)")
    p.add_argument("--seeds", default="0", help="training seeds per trial; accuracy is their mean (default: 0)")
    p.add_argument("--prune-margin", type=float, default=0.1,
                   help="stop a trial after its first epoch if its accuracy plus this (0.1 = 10 points) is still "
                        "dominated by the front (default: 0.1)")
    p.add_argument("--reeval-seeds", type=int, default=3,
                   help="re-train each Pareto point on this many seeds (default: 3; 0: skip)")
    p.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna storage shared by several machines, e.g. postgresql://host/db (default: "
                        "sqlite:///OUT/study.db)")
    p.add_argument("--jobs", type=int, default=None, help="trials evaluated in parallel, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-explore-<timestamp>/; rerun with the same --out to resume")
    p.add_argument("--quiet", action="store_true", help="no start line or per-trial lines")


def cmd_explore(args: argparse.Namespace) -> int:
    from . import api
    table = api.explore(args.config, args.space, _csv_list(args.objectives, "--objectives", what="objectives"),
                        args.sampler, args.trials, args.overrides, out_dir=args.out, jobs=args.jobs,
                        progress=not args.quiet, cluster=args.cluster, noise=args.noise,
                        baseline=not args.no_baseline,
                        search_seeds=_csv_list(args.search_seeds, "--search-seeds", int, "integers"),
                        population=args.population, train_limit=args.train_limit, test_limit=args.test_limit,
                        epochs=args.epochs, seeds=_csv_list(args.seeds, "--seeds", int, "integers"),
                        prune_margin=args.prune_margin, reeval_seeds=args.reeval_seeds, storage=args.storage)
    c = table["counts"]
    print(f"\n{c['finished']} trials: {c['ok']} feasible, {c['infeasible']} infeasible, {c['pruned']} pruned; "
          f"{len(table['front'])} on the Pareto front")
    print(f"report: {os.path.join(table['out_dir'], 'explore.md')}")
    from .experiments.explore.report import shown_storage
    print(f"dashboard: optuna-dashboard {shown_storage(table['storage'])}")
    return EXIT_OK
