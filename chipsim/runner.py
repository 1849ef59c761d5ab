"""``run`` and ``map``: the two commands that put one config on the modelled chip.

``run`` trains on real data, records the trace of the first step (every step
of a run executes the same dataflow; only the last, shorter batch differs),
costs it on the chip and writes a run directory. ``map`` executes one real
training step of the engine on synthetic input of the dataset's shape and
costs that trace: the mapping and SRAM table without training -- and still
from what the engine executed, not from a formula.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from .config import LoadedConfig, load_config
from .schema import to_plain

# (channels, height, width, classes) per dataset, so `map` needs no data files
DATASET_SHAPES = {"mnist5k": (1, 28, 28, 10), "mnist": (1, 28, 28, 10), "fashion_mnist": (1, 28, 28, 10),
                  "cifar10": (3, 32, 32, 10), "svhn": (3, 32, 32, 10)}


@dataclass
class RunResult:
    """What ``chipsim.run`` returns: the summary (as written to summary.json) and live objects."""
    summary: dict
    chip: object                      # chipsim.chip.ChipReport
    out_dir: str | None
    files: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    @property
    def test_accuracy(self):
        return self.summary.get("training", {}).get("test_accuracy")


def default_out_dir(cfg: LoadedConfig, kind: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("reports", "runs", f"{cfg.name}{'-' + kind if kind else ''}-{stamp}")


def _base_summary(cfg: LoadedConfig) -> dict:
    hw = cfg.hw
    import numba
    import torch
    return {
        "config_name": cfg.name, "config_file": cfg.path, "overrides": list(cfg.overrides),
        "rule": hw.workload.rule, "loss": hw.loss, "strategy": hw.strategy, "model": cfg.model.name,
        "depth": cfg.model.depth, "dataset": hw.workload.dataset, "seed": hw.training.seed,
        "precision": to_plain(hw.precision), "config": cfg.to_dict(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                     "torch": torch.__version__},
    }


class _Synthetic:
    """A stand-in dataset of the right shape for ``map`` (values uniform in [0,1])."""

    def __init__(self, name, shape, batch, seed):
        c, h, w, k = shape
        rng = np.random.default_rng(seed)
        self.name, self.num_classes, self.kind = name, k, "synthetic"
        self.x_train = rng.random((batch, c, h, w), dtype=np.float32)
        self.y_train = rng.integers(0, k, batch)
        self.x_test, self.y_test = self.x_train, self.y_train

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def _one_step(cfg: LoadedConfig):
    """A Trainer that has executed one real, traced training step on synthetic input."""
    from .engine.trainer import Trainer
    hw = cfg.hw
    data = _Synthetic(hw.workload.dataset, DATASET_SHAPES[hw.workload.dataset], hw.training.batch_size,
                      hw.training.seed)
    tr = Trainer(hw, cfg.model, data)
    tr.train_step(data.x_train, data.y_train, record=True)
    return tr


def trace_one_step(cfg: LoadedConfig):
    """Execute one real training step on synthetic input; returns its trace."""
    return _one_step(cfg).trace


def cost_inference(trainer, x_one, hw, mapping) -> dict:
    """Cost the inference of one test sample on the cores the training step was mapped to.

    Goodness decoding runs the sample under every label (C passes through the
    blocks), BP one pass; the engine executes it and the chip costs its trace.
    A rule that does not decode by itself (CFF) has only its head's pass.
    """
    from .chip import simulate_on
    from .engine.inference import trace_inference
    objective = None if trainer.is_bp else trainer.rule.objective
    decodes = getattr(objective, "decodes", True)
    modes = {"one-pass head" if trainer.is_bp else "decode": None} if decodes else {}
    if trainer.head is not None:
        modes["one-pass head"] = trainer.head
    out = {}
    for name, head in modes.items():
        trace = trace_inference(trainer.net, x_one, objective, hw.learning.decode_last_k, head)
        rep = simulate_on(trace, hw, mapping)
        # rows one input becomes: C label variants under goodness decoding, else the input itself
        passes = len(objective.inference_rows(trainer.net, x_one)) if objective is not None and head is None else 1
        out[name] = {"passes": passes, "latency_cycles": rep.latency_cycles, "latency_us": rep.latency_us,
                     "energy_pj": rep.energy.total_pj, "energy": rep.energy.to_dict(),
                     "busy_cycles_by_op": dict(sorted(rep.schedule.busy_by_kind.items(), key=lambda kv: -kv[1]))}
    return out


def map(config, overrides=(), out_dir: str | None = None, write: bool = True) -> RunResult:  # noqa: A001
    """Map a config's model onto its chip and cost one step, without training."""
    from .chip import simulate
    from .report import write_run
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    t0 = time.perf_counter()
    trainer = _one_step(cfg)
    chip = simulate(trainer.trace, cfg.hw)
    summary = _base_summary(cfg)
    summary.update(chip=chip.to_dict(), training=None, accounting_seconds=time.perf_counter() - t0,
                   inference=cost_inference(trainer, trainer.data.x_test[:1], cfg.hw, chip.mapping),
                   scale_note="mapping only: one engine step on synthetic input of the dataset's shape; no training.")
    files = {}
    if write:
        out_dir = out_dir or default_out_dir(cfg, "map")
        files = write_run(out_dir, summary, chip, None)
    return RunResult(summary, chip, out_dir if write else None, files)


def run(config, overrides=(), out_dir: str | None = None, progress: bool = True, resume: str | None = None,
        write: bool = True, grad_noise=None) -> RunResult:
    """Train the config's model with its rule on its dataset, cost it on the chip, write a run directory.

    ``resume`` is a run directory (or checkpoint file) of an interrupted run of
    the same config: training continues from its last finished epoch.
    """
    from .chip import simulate
    from .data import load_dataset
    from .engine.trainer import CHECKPOINT_NAME, Trainer
    from .report import write_run
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    hw = cfg.hw
    wl = hw.workload
    data = load_dataset(wl.dataset, root=wl.data_root, download=wl.download, train_limit=wl.train_limit,
                        test_limit=wl.test_limit, seed=hw.training.seed)
    if resume and os.path.isdir(resume):
        out_dir = out_dir or resume
        resume = os.path.join(resume, CHECKPOINT_NAME)
    if write:
        out_dir = out_dir or default_out_dir(cfg)
        os.makedirs(out_dir, exist_ok=True)
    trainer = Trainer(hw, cfg.model, data, grad_noise=grad_noise)
    if resume:
        from .errors import ChipsimError
        if not os.path.exists(resume):
            raise ChipsimError(f"--resume {resume}: no checkpoint there (a run writes {CHECKPOINT_NAME} "
                               "into its run directory after each epoch)")
        trainer.resume(resume)
    result = trainer.run(progress=progress, checkpoint_dir=out_dir if write else None)
    t0 = time.perf_counter()
    chip = simulate(result.trace, hw)
    inference = cost_inference(trainer, data.x_test[:1], hw, chip.mapping)
    sim_seconds = time.perf_counter() - t0
    history = [h.__dict__ for h in result.history]
    summary = _base_summary(cfg)
    summary.update(
        training={"epochs": len(history), "steps": result.steps, "test_accuracy": result.test_accuracy,
                  "per_block_accuracy": history[-1]["per_block_accuracy"] if history else None,
                  "train_seconds": result.train_seconds, "history": history,
                  "train_samples": int(len(data.y_train)), "test_samples": int(len(data.y_test)),
                  "negatives": trainer.negatives if not trainer.is_bp else None},
        chip=chip.to_dict(), inference=inference, accounting_seconds=sim_seconds,
        scale_note=(f"trained on {len(data.y_train)} samples of {wl.dataset} for {len(history)} epoch(s) on "
                    f"a CPU; chip figures are for one step of {hw.training.batch_size} samples on the modelled "
                    f"{hw.chip.name} chip."))
    files = write_run(out_dir, summary, chip, history) if write else {}
    return RunResult(summary, chip, out_dir if write else None, files, history)
