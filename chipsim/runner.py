"""``run`` and ``map``: the two commands that put one config on the modelled chip.

``run`` trains on real data, records the trace of the first step (every step
of a run executes the same dataflow; only the last, shorter batch differs),
costs it on the chip and writes a run directory. ``map`` executes one real
training step of the engine on synthetic input of the dataset's shape and
costs that trace: the mapping and SRAM table without training -- and still
from what the engine executed, not from a formula.

Order of work in ``run``, cheapest check first, so a bad input fails in
seconds rather than after the last epoch: config, checkpoint (``--resume``),
output directory, dataset, then the mapping of one engine step; only then
training, the chip costing of the real first step, and the files.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np

from . import checkpoint, labels, provenance, rundir, terminal
from .config import DATASET_SHAPES, LoadedConfig, load_config
from .errors import CheckpointError, OutputError, interrupt_of
from .schema import to_plain


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


def _version(package: str) -> str:
    """A package's installed version without importing it (torch takes seconds to import)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _limit(n) -> str:
    return "all" if n is None else f"{n:,}"


def describe(cfg: LoadedConfig) -> str:
    """One line naming what a config runs: rule, model, dataset and its scale, precision, seed, chip."""
    hw = cfg.hw
    wl, tr, p = hw.workload, hw.training, hw.precision
    n = hw.learning.negatives
    classes = DATASET_SHAPES[wl.dataset][3]
    negatives = "" if hw.strategy == "bp" else f", N = {classes - 1 if n is None else n} negatives"
    over = f"; overrides: {' '.join(cfg.overrides)}" if cfg.overrides else ""
    return (f"{wl.rule} on {cfg.model.name} ({cfg.model.depth} blocks), {wl.dataset} (train_limit "
            f"{_limit(wl.train_limit)}, test_limit {_limit(wl.test_limit)}), {tr.epochs} epoch(s) of batch "
            f"{tr.batch_size}{negatives}, W{p.weight_bits}/A{p.activation_bits}/G{p.gradient_bits}/"
            f"U{p.update_bits}{'' if p.vector_bits == 32 else f'/V{p.vector_bits}'}, seed {tr.seed}, chip {hw.chip.name} ({hw.chip.mesh.rows}x{hw.chip.mesh.cols} "
            f"cores){over}")


def _base_summary(cfg: LoadedConfig, command: str) -> dict:
    hw = cfg.hw
    return {
        "command": command,
        "config_name": cfg.name, "config_file": cfg.path, "overrides": list(cfg.overrides),
        "rule": hw.workload.rule, "loss": hw.loss, "strategy": hw.strategy, "model": cfg.model.name,
        "depth": cfg.model.depth, "dataset": hw.workload.dataset, "seed": hw.training.seed,
        "precision": to_plain(hw.precision), "config": cfg.to_dict(), "settings": describe(cfg),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "numba": _version("numba"),
                     "torch": _version("torch")},
        "provenance": provenance.collect(command),
        "labels": labels.settings(cfg, scale=_scale_words(cfg, command)),
    }


def _scale_words(cfg: LoadedConfig, command: str) -> str:
    wl, tr = cfg.hw.workload, cfg.hw.training
    if command == "map":
        return f"one engine step on synthetic {wl.dataset}-shaped input, no training"
    return (f"{wl.dataset}, train_limit {_limit(wl.train_limit)}, test_limit {_limit(wl.test_limit)}, "
            f"{tr.epochs} epoch(s), seed {tr.seed}")


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
    from .engine.training.trainer import Trainer
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
    from .engine.tracing.inference import trace_inference
    from .trace.vector import vector_width
    objective = None if trainer.is_bp else trainer.rule.objective
    decodes = getattr(objective, "decodes", True)
    modes = {"one-pass head" if trainer.is_bp else "decode": None} if decodes else {}
    if trainer.head is not None:
        modes["one-pass head"] = trainer.head
    out = {}
    for name, head in modes.items():
        with vector_width(hw.precision.vector_bits):
            trace = trace_inference(trainer.net, x_one, objective, hw.learning.decode_last_k, head)
        rep = simulate_on(trace, hw, mapping)
        # rows one input becomes: C label variants under goodness decoding, else the input itself
        passes = len(objective.inference_rows(trainer.net, x_one)) if objective is not None and head is None else 1
        out[name] = {"passes": passes, "latency_cycles": rep.latency_cycles, "latency_us": rep.latency_us,
                     "energy_pj": rep.energy.total_pj, "energy": rep.energy.to_dict(),
                     "busy_cycles_by_op": dict(sorted(rep.schedule.busy_by_kind.items(), key=lambda kv: -kv[1]))}
    return out


def cost_probe(trainer, x_train, y_train, hw, mapping) -> dict | None:
    """Cost CFF's second stage (the linear probe, refit after every epoch) on the training mapping: the
    phase "probe" (``engine.tracing.probe``). None for a run without a linear probe.

    Per epoch the trainer encodes all M training images and trains the probe for ``head_epochs`` passes
    of ceil(M / PROBE_BATCH) steps; the engine executes one encoding batch and one probe step under a work
    log, the chip costs each, and the epoch's figures are those times their counts (batches run one after
    another: latencies add)."""
    from .engine.training.probe import PROBE_BATCH, LinearProbe
    if not isinstance(trainer.head, LinearProbe):
        return None
    from .chip import simulate_on
    from .engine.tracing.probe import PHASE, trace_probe
    enc, step = trace_probe(trainer.head, x_train, y_train)
    m = int(len(y_train))
    batches = math.ceil(m / enc.samples)
    steps = trainer.head.epochs * math.ceil(m / PROBE_BATCH)
    out = {"phase": PHASE, "images": m, "head_epochs": trainer.head.epochs, "batch": PROBE_BATCH,
           "encode_batches_per_epoch": batches, "probe_steps_per_epoch": steps,
           "feature_bytes": 4 * m * int(np.prod(trainer.head.layer.in_shape))}
    for name, trace, count in (("encode", enc, batches), ("train", step, steps)):
        rep = simulate_on(trace, hw, mapping)
        out[name] = {"samples": trace.samples, "latency_us": rep.latency_us, "energy_pj": rep.energy.total_pj,
                     "energy": rep.energy.to_dict(), "per_epoch_latency_us": count * rep.latency_us,
                     "per_epoch_energy_pj": count * rep.energy.total_pj,
                     "busy_cycles_by_op": dict(sorted(rep.schedule.busy_by_kind.items(), key=lambda kv: -kv[1]))}
    out["per_epoch_latency_us"] = out["encode"]["per_epoch_latency_us"] + out["train"]["per_epoch_latency_us"]
    out["per_epoch_energy_pj"] = out["encode"]["per_epoch_energy_pj"] + out["train"]["per_epoch_energy_pj"]
    return out


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


def _writing(out) -> str:
    return f"writing {out}{os.sep}" if out else "writing no files"


def framework_memory(cfg: LoadedConfig, device: str = "cpu", progress: bool = False) -> dict | None:
    """Under ``mapping.memory_mode: pytorch``: one training step of the same rule, model, batch, N and optimizer
    measured in PyTorch (``chipsim.framework``: peak allocator bytes, labelled with torch version and device,
    once per such point in a process); None otherwise, so the other modes cost no extra step."""
    if cfg.hw.mapping.memory_mode != "pytorch":
        return None
    from .framework.point import measure_point
    _say(progress, "measuring one PyTorch training step's peak allocator bytes (mapping.memory_mode: pytorch)")
    return measure_point(cfg.hw, cfg.model, device, timing=True)


def map(config, overrides=(), out_dir: str | None = None, write: bool = True,  # noqa: A001
        progress: bool = True) -> RunResult:
    """Map a config's model onto its chip and cost one step, without training."""
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    ctx = rundir.claimed(out_dir, cfg.name, "map") if write else contextlib.nullcontext(None)
    with ctx as out:
        from .chip import simulate
        from .report import write_run
        _say(progress, f"chipsim map: {describe(cfg)}; one engine step on synthetic input of "
                       f"{cfg.hw.workload.dataset}'s shape, then mapping and costing it (no training); {_writing(out)}")
        t0 = time.perf_counter()
        trainer = _one_step(cfg)
        chip = simulate(trainer.trace, cfg.hw)
        summary = _base_summary(cfg, "map")
        summary.update(chip=chip.to_dict(), training=None, accounting_seconds=time.perf_counter() - t0,
                       inference=cost_inference(trainer, trainer.data.x_test[:1], cfg.hw, chip.mapping),
                       scale_note="mapping only: one engine step on synthetic input of the dataset's shape; "
                                  "no training.")
        summary["framework"] = framework_memory(cfg, progress=progress)
        files = write_run(out, summary, chip, None) if write else {}
    return RunResult(summary, chip, out, files)


def _resume_source(resume: str) -> tuple:
    """(run directory, checkpoint file) of ``--resume`` (a run directory or a checkpoint file)."""
    if os.path.isdir(resume):
        ckpt = os.path.join(resume, checkpoint.NAME)
        if not os.path.exists(ckpt):
            legacy = os.path.join(resume, checkpoint.LEGACY_NAME)
            if os.path.exists(legacy):
                return resume, legacy                 # checkpoint.load refuses it, saying why
            raise CheckpointError(f"--resume {resume}: no {checkpoint.NAME} there (a run writes it into its run "
                                  "directory after each epoch; this one stopped before its first epoch ended, "
                                  "or ran with training.checkpoint false)")
        return resume, ckpt
    if not os.path.exists(resume):
        raise CheckpointError(f"--resume {resume}: no such run directory or checkpoint file")
    return os.path.dirname(os.path.abspath(resume)), resume


def _command(cfg: LoadedConfig, *extra) -> str:
    sets = [x for o in cfg.overrides for x in ("--set", o)]
    return shlex.join(["chipsim", "run", rundir.display_path(cfg.path), *sets, *extra])


def _interrupt_hint(cfg: LoadedConfig, out: str | None, out_arg: str | None) -> str:
    """What to type after Ctrl-C: the exact --resume command, or how to start again."""
    if out and os.path.exists(os.path.join(out, checkpoint.NAME)):
        return "resume with: " + _command(cfg, "--resume", out)
    again = _command(cfg, *(["--out", out_arg] if out_arg else []))
    return "no epoch had finished, so there is no checkpoint to resume; start again with: " + again


def run(config, overrides=(), out_dir: str | None = None, progress: bool = True, resume: str | None = None,
        write: bool = True, grad_noise=None) -> RunResult:
    """Train the config's model with its rule on its dataset, cost it on the chip, write a run directory.

    ``resume`` is a run directory (or checkpoint file) of an interrupted run of
    the same config: training continues from its last finished epoch, in that
    directory unless ``out_dir`` names a new one. A checkpoint of another
    config is refused, naming the keys that differ (``checkpoint.RESUMABLE_KEYS``
    may change). On Ctrl-C the ``KeyboardInterrupt`` carries ``resume_hint``,
    the exact command that continues the run.
    """
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    hw = cfg.hw
    wl = hw.workload
    state = ckpt = resume_dir = None
    if resume:
        resume_dir, ckpt = _resume_source(resume)
        state, saved = checkpoint.load(ckpt)
        checkpoint.check_resumable(ckpt, saved, state, checkpoint.training_config(hw, cfg.model),
                                   hw.training.epochs)
    if not write:
        ctx = contextlib.nullcontext(None)
    elif resume and (out_dir is None or os.path.abspath(out_dir) == os.path.abspath(resume_dir)):
        rundir.check_writable(resume_dir, "--resume")
        ctx = rundir.owned(resume_dir, "--resume")          # resuming is the one way to write into a run directory
    else:
        ctx = rundir.claimed(out_dir, cfg.name)
    out = None
    try:
        with ctx as out:
            doing = (f"resuming {ckpt} after epoch {state['epoch']}: " if resume else "training ")
            _say(progress, f"chipsim run: {doing}{describe(cfg)}; {_writing(out)}")
            with terminal.interrupts_deferred():     # a Ctrl-C inside torch's import would abort the interpreter
                from .kernels.int8 import kernel_path
                unit = kernel_path()
                from .chip import simulate      # heavy imports (numba, matplotlib) only once the inputs are checked
                from .data import load_dataset
                from .engine.training.trainer import Trainer
                from .report import write_run
            _say(progress, f"exact GEMMs on {unit} (CHIPSIM_KERNELS=auto|int8|float, "
                           "CHIPSIM_DIRECT_CONV=auto|off; the same bits on each)")
            data = load_dataset(wl.dataset, root=wl.data_root, download=wl.download, train_limit=wl.train_limit,
                                test_limit=wl.test_limit, seed=hw.training.seed)
            # an unmappable config fails here, in seconds, not after every epoch has trained
            _say(progress, f"checking that one step maps onto {hw.chip.name} ...")
            simulate(trace_one_step(cfg), hw)
            trainer = Trainer(hw, cfg.model, data, grad_noise=grad_noise)
            if resume:
                trainer.restore(state, ckpt)
            result = trainer.run(progress=progress, checkpoint_dir=out)
            _say(progress, f"costing one training step on {hw.chip.name} (mapping, schedule, NoC, energy)"
                           + (" and writing the report ..." if out else " ..."))
            t0 = time.perf_counter()
            chip = simulate(result.trace, hw)
            inference = cost_inference(trainer, data.x_test[:1], hw, chip.mapping)
            probe = cost_probe(trainer, data.x_train, data.y_train, hw, chip.mapping)
            sim_seconds = time.perf_counter() - t0
            history = [h.__dict__ for h in result.history]
            summary = _base_summary(cfg, "run")
            summary.update(
                training={"epochs": len(history), "steps": result.steps, "test_accuracy": result.test_accuracy,
                          "per_block_accuracy": history[-1]["per_block_accuracy"] if history else None,
                          # every epoch's time, those before a resume included
                          "train_seconds": float(sum(h["seconds"] for h in history)),
                          "resumed_after_epoch": state["epoch"] if resume else None, "history": history,
                          "train_samples": int(len(data.y_train)), "test_samples": int(len(data.y_test)),
                          "negatives": trainer.negatives if not trainer.is_bp else None},
                chip=chip.to_dict(), inference=inference, probe=probe, accounting_seconds=sim_seconds,
                scale_note=(f"trained on {len(data.y_train)} samples of {wl.dataset} for {len(history)} epoch(s) "
                            f"on a CPU, tested on {len(data.y_test)}; chip figures are for one step of "
                            f"{hw.training.batch_size} samples on the modelled {hw.chip.name} chip."))
            summary["framework"] = framework_memory(cfg, progress=progress)
            try:
                files = write_run(out, summary, chip, history) if out else {}
            except OutputError as exc:
                if hw.training.checkpoint and os.path.exists(os.path.join(out, checkpoint.NAME)):
                    raise OutputError(f"{exc}; the training is saved: once there is room, "
                                      f"{_command(cfg, '--resume', out)} writes the report without "
                                      "training again") from None
                raise
    except (KeyboardInterrupt, SystemError) as exc:
        interrupt = interrupt_of(exc)
        if interrupt is None:
            raise
        interrupt.resume_hint = _interrupt_hint(cfg, out, out_dir)
        raise interrupt from None
    return RunResult(summary, chip, out, files, history)
