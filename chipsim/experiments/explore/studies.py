"""Running the studies of ``chipsim explore``: asking for new configurations, evaluating them in batches,
telling the results.

Why its own module: the driver (``driver.py``) checks inputs, owns the output directory and writes the
report; this is the search loop between them -- which studies take the next batch, what identifies a trial
(``trial_key``), what a sampler that only proposes what its study has seen gets instead (``ask_new``), and
how a result, a violation or a pruned trial is told to Optuna (``tell``). ``benchmarks/samplers.py`` replays
searches through the same functions.
"""
from __future__ import annotations

import contextlib
import json
import math
import warnings

from ...config import load_config
from ...config.ignored import ignored_keys
from ...errors import ChipsimError, OutputError
from ..jobs import RESULTS_NAME, run_points, threads_per_job
from . import search
from .objectives import OBJECTIVES
from .pareto import front_indices
from .space import overrides as param_overrides


def open_study(ctx: dict, sampler_name: str, seed: int) -> dict:
    """One study of the search (a sampler and a search seed), opened or resumed from the storage."""
    name = f"{sampler_name}-seed{seed}"
    sampler = search.make_sampler(sampler_name, seed, ctx["population"])
    study = search.open_study(ctx["store"], name, sampler, ctx["directions"])
    recovered = search.recover_orphans(study, ctx["shared"])
    if recovered and ctx["progress"]:
        print(f"{name}: {recovered} trial(s) cut off by an earlier stop are retried with the same settings",
              flush=True)
    return {"name": name, "sampler": sampler_name, "seed": seed, "study": study}


def run_studies(ctx: dict, runs: list) -> None:
    """Run every study to ``trials`` finished trials, ``jobs`` trainings at a time, the studies in turn.

    Why the studies take turns rather than each filling the pool: a sampler that models its results (TPE)
    chooses better when it has seen every earlier result of its study. A batch takes one trial from each
    of the next ``jobs`` open studies, so whenever at least ``jobs`` studies are open (two samplers x three
    search seeds on two cores), every study asks one trial at a time and its trials do not depend on
    ``--jobs``. A study asks for several trials at once only when fewer studies than ``jobs`` are open.
    """
    trials, turn = ctx["trials"], 0
    while True:
        left = {run["name"]: trials - search.finished(run["study"]) for run in runs}
        open_runs = [run for run in runs if left[run["name"]] > 0]
        if not open_runs:
            return
        start = turn % len(open_runs)
        order, turn = open_runs[start:] + open_runs[:start], turn + 1
        want, slots = dict.fromkeys(left, 0), ctx["jobs"]
        while slots and any(want[r["name"]] < left[r["name"]] for r in order):
            for run in order:
                if slots and want[run["name"]] < left[run["name"]]:
                    want[run["name"]] += 1
                    slots -= 1
        batch = [(run, trial, point) for run in order if want[run["name"]]
                 for trial, point in _ask_batch(ctx, run, want[run["name"]])]
        unique = list({p["key"]: p for _, _, p in batch}.values())
        beat = search.Heartbeat(ctx["store"], [t._trial_id for _, t, _ in batch]) if ctx["shared"] \
            else contextlib.nullcontext()
        with beat:
            results = evaluate(ctx, unique, "trials")
        for run, trial, point in batch:
            res = results[point["key"]]
            tell(run["study"], trial, res, ctx["objectives"], point["key"])
            if ctx["progress"]:
                print(f"{run['name']} trial {trial.number}: {_one_line(point['params'], res, ctx['objectives'])}",
                      flush=True)


def _ask_batch(ctx: dict, run: dict, n: int) -> list:
    """``n`` new trials of one study, each with its point (settings, scale, and the study's front for pruning)."""
    rows = rows_of(run["study"], run["name"])
    front = [min_vector(r["values"], ctx["objectives"]) for r in pareto_rows(rows, ctx["objectives"])]
    seen, out = {r["key"] for r in rows}, []
    dists = ctx["space"].distributions()
    for _ in range(n):
        trial, params, key = ask_new(run["study"], dists, ctx, seen)
        seen.add(key)
        out.append((trial, point_of(ctx, key, params, ctx["scale"]["seeds"], front)))
    return out


def study_result(run: dict) -> dict:
    from optuna.trial import TrialState
    rows = rows_of(run["study"], run["name"])
    fails = run["study"].get_trials(deepcopy=False, states=(TrialState.FAIL,))
    repeats = sum(bool(t.user_attrs.get("repeat")) for t in fails)
    drawn = sum(bool(t.user_attrs.get("drawn_unseen")) for t in run["study"].get_trials(deepcopy=False))
    return {"study": run["name"], "sampler": run["sampler"], "search_seed": run["seed"], "rows": rows,
            "failed_retried": len(fails) - repeats, "repeats_refused": repeats, "drawn_unseen": drawn}


ENUMERABLE = 200_000  # a finite space up to this size is listed to find its unseen settings


def ask_new(study, dists, ctx, seen: set):
    """Ask for a trial whose setting this study has not evaluated yet.

    Samplers propose settings again (NSGA-II's children of similar parents, TPE's mode once its model is
    sure, random draws in a small space); a repeat would spend a trial of the budget on nothing new. It is
    told FAIL with ``repeat`` set (a failed trial is one no sampler learns from) and another is asked. After
    ``search.REASKS`` repeats in a row the sampler is stuck on what it has seen: an unseen setting of a finite space
    is drawn at random (seeded by the study and its trial count) and enqueued, so the budget still goes to
    new settings. Once every setting has been evaluated, repeats are accepted (their evaluation comes from
    the log).
    """
    from optuna.trial import TrialState
    size = ctx["space"].size()
    for _ in range(search.REASKS):
        with warnings.catch_warnings():       # "heartbeat is supposed to be used with Study.optimize":
            warnings.filterwarnings("ignore", message="Heartbeat")   # here the Heartbeat class beats
            trial = study.ask(dists)
        params = {k: trial.params[k] for k in ctx["space"].keys}
        key = trial_key(ctx, params, ctx["scale"])
        if key not in seen or (size is not None and len(seen) >= size):
            return trial, params, key
        trial.set_user_attr("repeat", True)
        study.tell(trial, state=TrialState.FAIL)
    unseen = _draw_unseen(ctx, seen, f"{study.study_name}:{len(study.get_trials(deepcopy=False))}")
    if unseen is not None:
        study.enqueue_trial(unseen, user_attrs={"drawn_unseen": True})
    trial = study.ask(dists)
    params = {k: trial.params[k] for k in ctx["space"].keys}
    return trial, params, trial_key(ctx, params, ctx["scale"])


def trial_key(ctx: dict, params: dict, scale: dict) -> str:
    """A trial's identity: its settings less the keys its resolved config ignores, and the scale.

    Why: a space crosses keys that only some rules read (BP takes no negatives, so ``learning.negatives``
    and ``mapping.negatives`` are ignored for it). Settings that differ only in ignored keys are one
    configuration: evaluated once, and a second proposal of it is a repeat, not a new trial. (In the
    committed space, 54 of BP's settings are 6 configurations.) A setting the config refuses keeps all its
    keys: it is a violation of its own. Resolved once per setting (about 10 ms) and cached in ``ctx``.
    """
    cache = ctx.setdefault("effective", {})
    text = json.dumps(params, sort_keys=True, default=str)
    if text not in cache:
        try:
            loaded = load_config(ctx["cfg"].path, tuple(ctx["base"] + param_overrides(params, ctx["cfg"].hw)))
            drop = ignored_keys(loaded.hw, loaded.model)
        except ChipsimError:
            drop = set()
        cache[text] = {k: v for k, v in params.items() if k not in drop}
    return search.point_key(cache[text], scale)


def _draw_unseen(ctx, seen: set, seed: str) -> dict | None:
    """A setting of the (finite) space that ``seen`` lacks, drawn with ``random.Random(seed)``; None if the
    space is continuous or too large to list."""
    import itertools
    import random
    size = ctx["space"].size()
    if size is None or size > ENUMERABLE:
        return None
    keys = ctx["space"].keys
    values = [p.values() for p in ctx["space"].params]
    unseen = [dict(zip(keys, combo)) for combo in itertools.product(*values)
              if trial_key(ctx, dict(zip(keys, combo)), ctx["scale"]) not in seen]
    return random.Random(seed).choice(unseen) if unseen else None


def point_of(ctx, key, params, seeds, front) -> dict:
    return {"key": key, "params": params, "config": ctx["cfg"].path,
            "overrides": ctx["base"] + param_overrides(params, ctx["cfg"].hw), "objectives": ctx["objectives"],
            "seeds": list(seeds), "noise": list(ctx["noise"]) if ctx["noise"] else None,
            "prune_margin": ctx["prune_margin"], "front": front, "threads": threads_per_job(ctx["jobs"])}


def evaluate(ctx, points, desc) -> dict:
    try:
        return run_points(ctx["evaluate"], points, ctx["out"], jobs=ctx["jobs"], progress=False, desc=desc,
                          cluster=ctx["cluster"])
    except OSError as exc:
        raise OutputError(f"{ctx['out']}: cannot write {RESULTS_NAME}: {exc.strerror or exc}") from None


def tell(study, trial, res: dict, objectives: list, key: str) -> None:
    """Record one evaluation: its result in one user attribute (each write is a storage commit), its
    constraint (> 0: infeasible), then its values or state."""
    from optuna.trial import TrialState
    status = res.get("status", "ok")
    if status == "ok":
        bad = [o for o in objectives if not math.isfinite(float(res["values"].get(o, math.nan)))]
        if bad:              # Optuna would fail the trial, and the search would ask again forever
            res = dict(res, status="infeasible", violation=f"objective {bad[0]} is not a finite number")
            status = "infeasible"
    result = {k: v for k, v in res.items() if k not in ("key", "point") and _plain(v)}
    result["key"] = key
    trial.set_user_attr("result", result)
    violation = 1.0 if status == "infeasible" else 0.0
    trial.set_user_attr("constraint", [violation])
    if search.native_constraints():
        trial.set_constraint("violation", violation)
    if status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    elif status == "infeasible":
        # worst values, so no sampler mistakes it for a good point; the constraint says it is infeasible
        study.tell(trial, [0.0 if OBJECTIVES[o].direction == "maximize" else math.inf for o in objectives])
    else:
        study.tell(trial, [float(res["values"][o]) for o in objectives])


def _plain(v) -> bool:
    try:
        json.dumps(v, allow_nan=True)
        return True
    except (TypeError, ValueError):
        return False


def _one_line(params, res, objectives) -> str:
    leaves = [k.rsplit(".", 1)[-1] for k in params]      # a key by its last part, unless two keys share it
    settings = " ".join(f"{leaf if leaves.count(leaf) == 1 else k}={v}" for (k, v), leaf in zip(params.items(), leaves))
    if res.get("status") == "infeasible":
        return f"{settings}: infeasible ({str(res.get('violation', ''))[:120]})"
    if res.get("status") == "pruned":
        return f"{settings}: pruned after epoch 1 (accuracy {100 * res.get('epoch1_accuracy', 0):.1f}%)"
    vals = res.get("values", {})
    return settings + ": " + ", ".join(f"{o} {_fmt(o, vals.get(o))}" for o in objectives)


def _fmt(name, v) -> str:
    if v is None:
        return "-"
    if name == "accuracy":
        return f"{100 * v:.1f}%"
    return f"{v:.4g} {OBJECTIVES[name].unit}"


def rows_of(study, name: str) -> list:
    """Every finished trial of a study as plain data (COMPLETE and PRUNED; FAIL ones were retried)."""
    from optuna.trial import TrialState
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        res = t.user_attrs.get("result", {})
        status = res.get("status", "ok") if t.state == TrialState.COMPLETE else "pruned"
        out.append({"study": name, "number": t.number, "params": dict(t.params), "status": status,
                    "values": dict(res.get("values") or {}),      # every objective measured, chosen or not
                    "violation": res.get("violation"), "key": res.get("key"),
                    "retry_of": t.user_attrs.get("retry_of"), "seconds": res.get("seconds"),
                    "saved_seconds": res.get("saved_seconds", 0.0), "epoch_seconds": res.get("epoch_seconds"),
                    "epoch1_accuracy": res.get("epoch1_accuracy"),
                    "accuracy_per_seed": res.get("accuracy_per_seed")})
    return sorted(out, key=lambda r: r["number"])


def min_vector(values: dict, objectives: list) -> list:
    return [OBJECTIVES[o].to_min(values[o]) for o in objectives]


def pareto_rows(rows: list, objectives: list) -> list:
    """The feasible finished trials on the Pareto front, one per distinct setting."""
    ok, seen = [], set()
    for r in rows:
        if r["status"] == "ok" and r["key"] not in seen and all(o in r["values"] for o in objectives):
            seen.add(r["key"])
            ok.append(r)
    vecs = [min_vector(r["values"], objectives) for r in ok]
    return [ok[i] for i in front_indices(vecs)]
