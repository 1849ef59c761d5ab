"""What a trial of ``chipsim explore`` measures, and the evaluation of one trial (runs in a worker).

Order of work, cheapest first, so a configuration that cannot work costs seconds, not a training:

1. load the config with the trial's settings (a combination the config refuses is a violation);
2. map one traced engine step onto the chip (``chipsim map``: seconds) -- a configuration that does not
   fit is a *constraint violation*, recorded with the mapper's reason, never a crash; this also gives every
   cost objective, which depends on the dataflow and not on the trained weights;
3. only if accuracy is an objective, train on the chip's arithmetic, seed by seed. After the first epoch of
   the first seed, a trial whose accuracy plus ``prune_margin`` would still be dominated by the front
   (with its exactly known costs) is stopped: it cannot reach the front, and the epochs it did not train
   are reported as compute saved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ...errors import ConfigError

#: noise kinds that act at test time on a trained network (mismatch acts during training: use ``sweep``)
TEST_NOISES = ("shot", "impulse", "read", "stuck")


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str          # "maximize" or "minimize"
    unit: str
    doc: str

    def to_min(self, value: float) -> float:
        """The value as a quantity to minimise (accuracy -> error)."""
        return 1.0 - value if self.direction == "maximize" else value


OBJECTIVES = {o.name: o for o in (
    Objective("accuracy", "maximize", "", "test accuracy after training on the chip's arithmetic "
              "(under --noise, if given)"),
    Objective("train_energy", "minimize", "µJ/sample", "training energy per sample of one step"),
    Objective("inference_energy", "minimize", "µJ", "energy of one test sample's inference"),
    Objective("latency", "minimize", "µs", "latency of one training step (one batch)"),
    Objective("peak_sram", "minimize", "KiB", "peak SRAM of the fullest core"),
    Objective("total_sram", "minimize", "KiB", "SRAM the chip provides: cores x sram_kib (an area proxy)"),
    Objective("sram_used", "minimize", "KiB", "sum over cores of each core's peak SRAM"),
)}


def parse_objectives(names) -> list:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = [str(n).strip().lower() for n in names]
    if not names:
        raise ConfigError(f"--objectives: give at least one; allowed: {', '.join(OBJECTIVES)}")
    for n in names:
        if n not in OBJECTIVES:
            raise ConfigError(f"--objectives: {n!r} is not an objective; allowed: {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ConfigError("--objectives: an objective is named twice; give each once")
    return names


def parse_noise(text):
    """``"shot:3"`` -> ("shot", 3); None or "" -> None."""
    if not text:
        return None
    kind, _, level = str(text).partition(":")
    kind = kind.strip().lower()
    if kind not in TEST_NOISES:
        raise ConfigError(f"--noise {text!r}: kind must be one of {', '.join(TEST_NOISES)} (as KIND:LEVEL, e.g. "
                          "shot:3; mismatch acts during training: use chipsim sweep)")
    try:
        lv = int(level)
    except ValueError:
        raise ConfigError(f"--noise {text!r}: give KIND:LEVEL with a level 1-5, e.g. shot:3") from None
    if not 1 <= lv <= 5:
        raise ConfigError(f"--noise {text!r}: the level must be 1-5")
    return kind, lv


def costs(summary: dict) -> dict:
    """Every cost objective from a ``chipsim map`` summary."""
    chip = summary["chip"]
    led, info = chip["ledger"], chip["chip"]
    inf = summary.get("inference") or {}
    mode = inf.get("decode") or inf.get("one-pass head") or {}
    return {"train_energy": chip["energy"]["per_sample"]["total_pj"] / 1e6,
            "inference_energy": mode.get("energy_pj", float("nan")) / 1e6,
            "latency": chip["timing"]["latency_us"],
            "peak_sram": led["peak_bytes"] / 1024,
            "total_sram": info["rows"] * info["cols"] * info["sram_bytes"] / 1024,
            "sram_used": led["total_peak_bytes"] / 1024}


class _Hopeless(Exception):
    """Raised from the epoch callback to stop a trial that cannot reach the front."""


def _hopeless(acc: float, cost: dict, point: dict) -> bool:
    names = point["objectives"]
    optimistic = dict(cost, accuracy=min(1.0, acc + point["prune_margin"]))
    mine = [OBJECTIVES[n].to_min(optimistic[n]) for n in names]
    from .pareto import dominates
    return any(dominates(f, mine) for f in point.get("front", ()))


def evaluate_point(point: dict) -> dict:
    """One trial: ``point`` holds the config, its overrides and the scale; returns the status and values.

    status "ok" (values of every objective), "infeasible" (``violation`` says why), or "pruned".
    """
    from ...config import load_config
    from ...errors import MappingError, TrainingDiverged
    from ..jobs import limit_threads
    limit_threads(point.get("threads", 1))
    t0 = time.perf_counter()
    try:
        cfg = load_config(point["config"], tuple(point["overrides"]))
    except ConfigError as exc:
        return {"status": "infeasible", "violation": f"config: {exc}", "seconds": time.perf_counter() - t0}
    from ... import api
    try:
        mapped = api.map(cfg, write=False, progress=False)
    except MappingError as exc:
        return {"status": "infeasible", "violation": f"mapping: {exc}", "seconds": time.perf_counter() - t0}
    values = costs(mapped.summary)
    out = {"status": "ok", "values": values, "map_seconds": time.perf_counter() - t0}
    if "accuracy" in point["objectives"]:
        try:
            out.update(_train(point, values))
        except TrainingDiverged as exc:
            return {"status": "infeasible", "violation": f"training diverged: {exc}",
                    "seconds": time.perf_counter() - t0}
        if out["status"] == "ok":
            values["accuracy"] = out["accuracy"]
    out["seconds"] = time.perf_counter() - t0
    return out


def _train(point: dict, cost: dict) -> dict:
    """Train on every seed of the trial; mean accuracy (under the noise, if any), or a pruned verdict."""
    import numpy as np
    from ...config import load_config
    from ...data import load_dataset
    from ...engine.training.trainer import Trainer
    from ...noise import NoiseSpec, corrupt_inputs, perturbed_weights
    seeds = point["seeds"]
    epochs = None
    per_seed, clean, first, epoch_seconds = [], [], None, []
    for i, seed in enumerate(seeds):
        cfg = load_config(point["config"], tuple(point["overrides"]) + (f"training.seed={seed}",))
        hw, wl = cfg.hw, cfg.hw.workload
        epochs = hw.training.epochs
        data = load_dataset(wl.dataset, root=wl.data_root, download=wl.download, train_limit=wl.train_limit,
                            test_limit=wl.test_limit, seed=0)
        trainer = Trainer(hw, cfg.model, data)
        can_save = epochs * len(seeds) > 1 and point.get("front")

        def on_epoch(stats, first_seed=(i == 0)):
            nonlocal first
            epoch_seconds.append(time.perf_counter() - t_epoch[0])
            t_epoch[0] = time.perf_counter()
            if first_seed and stats.epoch == 1:
                first = stats.test_accuracy
                if can_save and _hopeless(first, cost, point):
                    raise _Hopeless
        t_epoch = [time.perf_counter()]
        try:
            trainer.run(progress=False, on_epoch=on_epoch, record_trace=False)
        except _Hopeless:
            left = epochs * len(seeds) - 1
            return {"status": "pruned", "epoch1_accuracy": first, "epochs_trained": 1,
                    "saved_seconds": left * epoch_seconds[0], "epoch_seconds": epoch_seconds[0]}
        acc = trainer.history[-1].test_accuracy
        clean.append(acc)
        if point.get("noise"):
            kind, level = point["noise"]
            spec = NoiseSpec(kind, level, data.kind, seed=seed)
            with perturbed_weights(trainer.net, spec):
                acc = trainer.evaluate(corrupt_inputs(data.x_test, spec), data.y_test)["accuracy"]
        per_seed.append(acc)
    return {"status": "ok", "accuracy": float(np.mean(per_seed)), "accuracy_per_seed": per_seed,
            "clean_accuracy_per_seed": clean, "epoch1_accuracy": first, "epochs_trained": epochs * len(seeds),
            "epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else None}
