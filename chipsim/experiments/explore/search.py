"""The Optuna side of ``chipsim explore``: storage, samplers, crash recovery and the ask/tell loop.

Why ask/tell in batches rather than ``study.optimize``: trials are trainings, which run in worker processes
(or on the Dask cluster) through the experiments' executor, ``jobs.run_points`` -- the same path, results
log and ``--cluster`` as every other experiment. A batch of ``--jobs`` trials is asked, evaluated in
parallel and told.

No trial lost or repeated, whatever moment the search is killed at:

* the study is in Optuna's storage (``sqlite:///OUT/study.db`` by default), written as each trial is
  asked and told;
* each evaluation is appended to ``OUT/points.jsonl`` as it finishes, keyed by the trial's settings, so a
  finished evaluation is never redone;
* a trial asked but not told when the process died stays RUNNING in the storage. On resume it is marked
  FAIL and its parameters are enqueued again (``retry_of`` names it): the count of COMPLETE and PRUNED trials
  reaches ``--trials`` exactly, and its evaluation comes from the log if it had finished. With the default
  storage the output directory is locked while a search runs, so a RUNNING trial found at start is known
  to be orphaned; with a shared ``--storage`` (several machines) only trials whose heartbeat stopped are
  (Optuna's heartbeat and ``RetryFailedTrialCallback``).
"""
from __future__ import annotations

import hashlib
import json
import threading

from ...errors import ConfigError

SAMPLERS = ("nsga2", "tpe", "random", "grid")
DEFAULT_SAMPLER = "nsga2"
HEARTBEAT_S = 20
GRACE_S = 90
REASKS = 20          # asks for one trial before an unseen configuration is drawn at random (studies.ask_new)


def default_population(trials: int) -> int:
    """The random start of a search: NSGA-II's population, TPE's startup trials; a quarter of the budget,
    4 to 50. (Replayed on the committed space, 100 search seeds, 48 trials: NSGA-II's mean final
    hypervolume was the same at a population of 8 and of 12, 3427 and 3425; ``benchmarks/samplers.py
    --population 8``.)"""
    return max(4, min(50, trials // 4))


def native_constraints() -> bool:
    """Optuna >= 5 takes a trial's constraint through ``trial.set_constraint`` (``constraints_func`` is
    deprecated there); older releases only through the sampler's ``constraints_func``."""
    import optuna
    return hasattr(optuna.trial.Trial, "set_constraint")


def make_sampler(name: str, seed: int, population: int):
    """Optuna's sampler ``name``, constraint-aware where it can be.

    NSGA-II is the default. Replayed against every setting of the committed space (each evaluated once;
    ``benchmarks/samplers.py``, 100 search seeds, 48 trials, a random start of 12), with a trial identified
    by the settings its rule reads (``studies.trial_key``), NSGA-II's final hypervolume was 3425 on average
    against random search's 3316 (paired difference +109, standard error 35; at least random's on 58 of
    100 seeds); multivariate TPE's was 3364 (+48, standard error 35; 54 of 100). Before trials were
    identified that way, NSGA-II matched random search (49 of 100 seeds) and spent its budget on BP settings
    that differ only in the negatives BP ignores.
    """
    import optuna
    cf = None if native_constraints() else constraint_of
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=cf)
    if name == "tpe":             # constant_liar: trials of one study evaluated together do not all land alike
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, multivariate=True,
                                          n_startup_trials=population, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":                                  # every point of a small finite space, once
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _Grid(seed=seed)
    raise ConfigError(f"--sampler {name!r}: allowed: {', '.join(SAMPLERS)}")


def _grid_class():
    import optuna

    class Grid(optuna.samplers.BruteForceSampler):
        """Optuna's brute force, without its ``study.stop()`` once every point is done (that call is only
        allowed inside ``study.optimize``; here the trial budget, capped at the space's size, stops it)."""

        def after_trial(self, study, trial, state, values):
            pass
    return Grid


def _Grid(seed):  # noqa: N802
    return _grid_class()(seed=seed)


def constraint_of(trial) -> list:
    """Optuna < 5's ``constraints_func``: > 0 is a violation (the configuration does not map, or is refused)."""
    return list(trial.user_attrs.get("constraint", [0.0]))


def make_storage(url: str, shared: bool):
    """Optuna's RDB storage; a shared one has heartbeats, so a trial whose machine died is failed and retried
    (``RetryHeartbeatStaleTrialCallback`` from Optuna 4.9, ``RetryFailedTrialCallback`` before)."""
    import warnings

    import optuna
    if not shared:
        return optuna.storages.RDBStorage(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **retry)
        except Exception as exc:                       # an unreachable server, a malformed URL
            raise ConfigError(f"--storage {url}: cannot open: {str(exc).splitlines()[0]}") from None


def open_study(storage, name: str, sampler, directions: list):
    import optuna
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                    load_if_exists=True)
    except Exception as exc:                           # an unreachable or incompatible storage
        raise ConfigError(f"--storage: cannot open study {name!r}: {str(exc).splitlines()[0]}") from None
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise ConfigError(f"--storage: study {name!r} exists with directions {have}, not {directions} (another "
                          "--objectives); give another --out or --storage")
    return study


def recover_orphans(study, shared: bool) -> int:
    """RUNNING trials of a killed process -> FAIL, their parameters enqueued again; returns how many."""
    import optuna
    from optuna.trial import TrialState
    if shared:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return len(optuna.storages.fail_stale_trials(study) or [])   # the callback enqueues the retries
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING}
    n = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if t.number not in queued:                     # enqueue first: a kill in between leaves no hole
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n


def finished(study) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def point_key(params: dict, scale: dict) -> str:
    """The evaluation's identity: settings and scale (not the trial number), so a retried or re-proposed
    configuration reuses its finished evaluation."""
    text = json.dumps({"params": params, "scale": scale}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Heartbeat:
    """Records a heartbeat for each running trial while a batch is evaluated (shared storage only)."""

    def __init__(self, storage, trial_ids):
        self.storage, self.ids, self.stop = storage, list(trial_ids), threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while True:
            for tid in self.ids:
                self.storage.record_heartbeat(tid)
            if self.stop.wait(HEARTBEAT_S):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
