"""``chipsim explore``: search learning rule, precision, dataflow and chip for the Pareto front.

One function, :func:`explore`, checks every input, claims the output directory, runs the studies (the
chosen sampler and, as its baseline, random search at the same budget, once per search seed), re-evaluates
the Pareto points on fresh training seeds and writes the report (``report.py``). Evaluation of a trial is
``objectives.evaluate_point``; a cheap function of the same shape may be given instead (tests).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from ... import rundir
from ...config import LoadedConfig, load_config
from ...errors import ConfigError, OutputError
from ...report import write_json
from ...safe_files import read_bytes
from .. import args as check
from ..cluster import check_cluster
from ..keys import digest, resolved
from . import search, studies
from .objectives import OBJECTIVES, evaluate_point, parse_noise, parse_objectives
from .space import load_space

SETTINGS_NAME = "explore-settings.json"
STUDY_DB = "study.db"
LOCK_NAME = ".explore.lock"
DEFAULT_OBJECTIVES = ("accuracy", "train_energy", "peak_sram")
MAX_SETTINGS_BYTES = 1 << 20


def _scale_overrides(train_limit, test_limit, epochs) -> list:
    out = []
    if train_limit is not None:
        out.append(f"workload.train_limit={train_limit}")
    if test_limit is not None:
        out.append(f"workload.test_limit={test_limit}")
    if epochs is not None:
        out.append(f"training.epochs={epochs}")
    return out


@contextlib.contextmanager
def _locked(out_dir: str):
    """One search at a time per output directory (so RUNNING trials found at start are orphans)."""
    fh = open(os.path.join(out_dir, LOCK_NAME), "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(f"--out {out_dir}: another chipsim explore is running on this directory; wait for "
                              "it, or give another --out") from None
        yield
    finally:
        fh.close()


#: what a resumed search must share with the one in the directory. The config and the space by what they
#: say (the resolved config's digest, the space's parameters), not where their files are: a clone of the
#: repository elsewhere resumes the committed search
SAME_SEARCH = {"config": lambda s: s.get("config_digest"), "space": lambda s: (s.get("space") or {}).get("params"),
               **{k: (lambda s, k=k: s.get(k)) for k in ("base_overrides", "objectives", "scale", "noise", "sampler",
                                                        "population", "storage")}}


def _check_settings(out_dir: str, settings: dict) -> None:
    """A directory resumes only the search it holds: same config, space, objectives and scale."""
    path = os.path.join(out_dir, SETTINGS_NAME)
    if not os.path.lexists(path):
        write_json(path, settings)
        return
    try:
        old = json.loads(read_bytes(path, "search settings", MAX_SETTINGS_BYTES, OutputError).decode("utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"{path}: cannot read the search's settings: {exc}") from None
    diff = [k for k, value in SAME_SEARCH.items() if value(old) != value(settings)]
    if diff:
        raise ConfigError(f"--out {out_dir}: holds a search with other {', '.join(diff)}; resume it with the same "
                          "settings (--trials may grow) or give a new --out")
    write_json(path, dict(settings, trials=max(old.get("trials", 0), settings["trials"])))


def explore(config, space, objectives=DEFAULT_OBJECTIVES, sampler: str = search.DEFAULT_SAMPLER, trials: int = 24,
            search_seeds=(0,), baseline: bool = True, population: int | None = None, train_limit=None,
            test_limit=None, epochs=None, seeds=(0,), noise=None, prune_margin: float = 0.1,
            reeval_seeds: int = 3, storage: str | None = None, overrides=(), out_dir: str | None = None,
            jobs: int | None = None, progress: bool = True, cluster=None, evaluate=None) -> dict:
    """Search ``space`` on ``config`` for the Pareto front of ``objectives``; returns the result table.

    ``evaluate(point) -> dict`` replaces the trial evaluation (``objectives.evaluate_point``), e.g. by a
    cheap function in tests; it must be a module-level function when ``jobs`` > 1.
    """
    import optuna
    check_cluster(cluster)
    cfg = config if isinstance(config, LoadedConfig) else load_config(os.fspath(config), tuple(overrides))
    objectives = parse_objectives(objectives)
    if sampler not in search.SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: allowed: {', '.join(search.SAMPLERS)}")
    trials = check.positive_int(trials, "--trials", "trials per study", allow_none=False)
    search_seeds = check.integers(search_seeds, "--search-seeds", 0, "seed")
    seeds = check.integers(seeds, "--seeds", 0, "seed")
    for name, v in (("--search-seeds", search_seeds), ("--seeds", seeds)):
        if len(set(v)) != len(v):
            raise ConfigError(f"{name}: a seed is given twice; give each once")
    check.positive_int(train_limit, "--train-limit", "training samples")
    check.positive_int(test_limit, "--test-limit", "test samples")
    check.positive_int(epochs, "--epochs", "epochs per trial")
    reeval_seeds = check.integers([reeval_seeds], "--reeval-seeds", 0, "count")[0]
    prune_margin = check.finite_nonnegative(prune_margin, "--prune-margin")
    population = population or search.default_population(trials)
    check.positive_int(population, "--population", "random start of the search")
    noise = parse_noise(noise) if isinstance(noise, (str, type(None))) else tuple(noise)
    if noise and "accuracy" not in objectives:
        raise ConfigError("--noise: applies to the accuracy objective; add accuracy to --objectives")
    jobs = check.jobs(jobs) or os.cpu_count() or 1
    base = list(cfg.overrides) + _scale_overrides(train_limit, test_limit, epochs)
    load_config(cfg.path, tuple(base))
    the_space = load_space(space, cfg.path, tuple(base))
    if sampler == "grid":
        size = the_space.size()
        if size is None:
            raise ConfigError(f"--sampler grid: {the_space.path} has a continuous range; grid search needs choices "
                              "or integer ranges")
        trials = min(trials, size)
    evaluate = evaluate or evaluate_point
    directions = [OBJECTIVES[o].direction for o in objectives]
    scale_cfg = load_config(cfg.path, tuple(base)).hw
    scale = {"train_limit": scale_cfg.workload.train_limit, "test_limit": scale_cfg.workload.test_limit,
             "epochs": scale_cfg.training.epochs, "seeds": list(seeds), "dataset": scale_cfg.workload.dataset}
    samplers = [sampler] + (["random"] if baseline and sampler != "random" else [])

    with rundir.claimed(out_dir, cfg.name, "explore", reusable_marker=SETTINGS_NAME) as out:
        shared = storage is not None
        url = storage or f"sqlite:///{os.path.abspath(os.path.join(out, STUDY_DB))}"
        settings = {"config": cfg.path, "config_digest": digest(resolved(cfg)), "base_overrides": base,
                    "space": {"path": the_space.path, "params": the_space.describe()},
                    "objectives": objectives, "scale": scale,
                    "noise": list(noise) if noise else None, "sampler": sampler, "population": population,
                    "storage": storage, "trials": trials, "search_seeds": search_seeds, "baseline": baseline,
                    "prune_margin": prune_margin}
        with _locked(out):
            _check_settings(out, settings)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            store = search.make_storage(url, shared)
            t0 = time.perf_counter()
            ctx = dict(cfg=cfg, base=base, space=the_space, objectives=objectives, scale=scale, noise=noise,
                       prune_margin=prune_margin, jobs=jobs, cluster=cluster, evaluate=evaluate, out=out,
                       progress=progress, trials=trials, shared=shared, store=store, population=population,
                       directions=directions)
            if progress:
                print(f"chipsim explore: {the_space.describe()}; objectives {', '.join(objectives)}; "
                      f"{trials} trials x {', '.join(samplers)} x search seeds {', '.join(map(str, search_seeds))}; "
                      f"scale: train_limit {scale['train_limit'] or 'all'}, {scale['epochs']} epoch(s), training "
                      f"seeds {', '.join(map(str, seeds))}; study {url}; writing {out}{os.sep}", flush=True)
            try:
                runs = [studies.open_study(ctx, name, s) for s in search_seeds for name in samplers]
                studies.run_studies(ctx, runs)
            except KeyboardInterrupt as exc:
                exc.resume_hint = f"every finished trial is in {url}; rerun the same command with --out {out} to " \
                                  "continue (a trial cut off is retried with the same settings)"
                raise
            results = [studies.study_result(run) for run in runs]
            search_seconds = time.perf_counter() - t0
            rows = [r for st in results for r in st["rows"]]
            front = studies.pareto_rows(rows, objectives)
            reeval = _reevaluate(ctx, front, reeval_seeds) if "accuracy" in objectives and reeval_seeds else {}
            from .report import write_report
            table = {"config": cfg.path, "base_overrides": base, "space": settings["space"], "objectives": objectives,
                     "directions": directions, "scale": scale, "noise": settings["noise"], "sampler": sampler,
                     "samplers": samplers, "search_seeds": search_seeds, "trials": trials,
                     "population": population, "storage": url, "prune_margin": prune_margin,
                     "studies": [{k: v for k, v in st.items() if k != "rows"} for st in results],
                     "rows": rows, "front": front, "reeval": reeval, "reeval_seeds": reeval_seeds,
                     "search_seconds": search_seconds, "wall_seconds": time.perf_counter() - t0}
            write_report(table, out)
    table["out_dir"] = out
    return table


def _reevaluate(ctx: dict, front: list, n: int) -> dict:
    """key -> {"accuracy": [one per seed], "seeds": [...]}: each Pareto point trained again on ``n`` seeds."""
    seeds = list(range(n))
    points, owner = [], {}
    for r in front:
        for s in seeds:
            scale = dict(ctx["scale"], seeds=[s])
            key = studies.trial_key(ctx, r["params"], scale)
            owner[key] = (r["key"], s)
            if key not in {p["key"] for p in points}:
                points.append(studies.point_of(ctx, key, r["params"], [s], []))
    if ctx["progress"] and points:
        print(f"re-evaluating {len(front)} Pareto point(s) on training seeds {', '.join(map(str, seeds))} "
              f"({len(points)} trainings)", flush=True)
    results = studies.evaluate(ctx, points, "re-evaluation")
    out = {}
    for key, (front_key, s) in owner.items():
        res = results[key]
        acc = res.get("values", {}).get("accuracy") if res.get("status") == "ok" else None
        out.setdefault(front_key, {"seeds": [], "accuracy": []})
        out[front_key]["seeds"].append(s)
        out[front_key]["accuracy"].append(acc)
    return out
