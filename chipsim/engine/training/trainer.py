"""The training loop: seeded, deterministic, resumable, with a progress bar.

Randomness has four independent, seeded streams -- weights, data order and
negatives, stochastic rounding, DF-R feedback -- so changing one knob (say the
rounding mode) does not reshuffle the data. The same seed gives bit-identical
weights: the kernels are deterministic and nothing else reads the clock.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ... import checkpoint
from ... import progress as point_progress
from ...config.hwconfig import resolve_statistics
from ...errors import CheckpointError, ConfigError
from ...modelspec import check_fits_host
from ...quant import QuantStore
from ...trace import Trace, TraceRecorder
from ...trace.vector import vector_width
from ...trace.work import open_log
from ..tracing.inference import evaluate
from ..networks.network import Network
from .optim import make_optimizer
from ..rules.rows import sample_negatives  # noqa: F401  (used by benchmarks)
from ..layers.head import OnePassHead
from ..layers.statistics import rows_per_sample
from ..rules.losses import check_cwc_divisible
from ..rules.compose import bp_step, compose, head_step, local_step
from .schedules import learning_rate
from ..tracing.passes import PassTracer
from ..tracing.step import StepTracer
from .update import apply_gradients, tensor_keys
from .probe import LinearProbe
from ...threads import single_threaded
from ..networks.vit import TransformerNetwork, check_rule_model

CHECKPOINT_NAME = checkpoint.NAME


@dataclass
class EpochStats:
    epoch: int
    loss: float
    test_accuracy: float
    per_block_accuracy: list | None
    seconds: float
    head_accuracy: float | None = None      # the one-pass head's, when the rule trains one


@dataclass
class TrainResult:
    net: Network
    history: list = field(default_factory=list)
    trace: object = None                 # chipsim.trace.Trace of the first step
    steps: int = 0
    train_seconds: float = 0.0

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else float("nan")


def build_network(hw, model, input_shape, num_classes):
    is_bp = hw.strategy == "bp"
    if model.is_transformer:
        return TransformerNetwork(model, input_shape, num_classes, hw.precision, hw.training.seed,
                                  with_label=hw.uses_label, with_head=is_bp, normalise_inputs=hw.uses_label,
                                  recompute=hw.loss == "contrastive" and hw.mapping.batch_loss == "recompute")
    net = Network(model, input_shape, num_classes, hw.precision, hw.training.seed,
                  with_label=hw.uses_label, with_head=is_bp, bn_backward=hw.learning.bn_backward,
                  label_encoding=hw.learning.label_encoding)
    if hw.strategy == "df-r":
        seeds = np.random.default_rng([hw.training.seed, 4]).integers(0, 2 ** 63, size=len(net.blocks))
        for blk, seed in zip(net.blocks[1:], seeds[1:]):
            blk.set_feedback(int(seed), stored=hw.mapping.feedback_storage == "stored")
    return net


def training_state(net, precision, optimizer: str = "adam", momentum: float = 0.9, extra_layers=()):
    """(optimizer, accumulators): what a core keeps between steps for every weight tensor of ``net``
    (its learned label embedding, and ``extra_layers`` such as a one-pass head), at
    ``precision.optimizer_bits`` / ``accumulator_bits``."""
    p = precision
    opt = make_optimizer(optimizer, momentum, p.optimizer_bits, p.rounding, p.scale)
    acc = {}
    shapes = [ks for layer in list(net.layers()) + list(extra_layers) for ks in tensor_keys(layer)]
    if net.label_trainable:
        shapes.append(("emb", net.embedding.value.shape))
    for key, shape in shapes:
        opt.register(key, shape)
        acc[key] = QuantStore(shape, p.accumulator_bits, rounding=p.rounding, scale_mode=p.scale)
    return opt, acc


class Trainer:
    """Owns the network, optimizer and RNG streams of one training run."""

    def __init__(self, hw, model, dataset, grad_noise=None):
        hw = resolve_statistics(hw, model)        # mapping.statistics auto, for a config not from load_config
        self.hw, self.model, self.data = hw, model, dataset
        c = dataset.num_classes
        self.negatives = hw.learning.negatives if hw.learning.negatives is not None else c - 1
        if not 1 <= self.negatives <= c - 1:
            raise ConfigError(f"learning.negatives: {self.negatives} is out of range for {dataset.name} "
                              f"({c} classes); allowed 1..{c - 1}")
        self.is_bp = hw.strategy == "bp"
        check_rule_model(hw, model)
        if model.is_transformer:
            single_threaded()
        # shapes and host memory are checked in plain integers before any array exists (absurd sizes would
        # otherwise end in a MemoryError); load_config did this for the config's own model and dataset
        check_fits_host(model, dataset.input_shape, c, hw.training.batch_size, self.negatives,
                        with_label=hw.uses_label, source=f"model {model.name!r}")
        self.net = build_network(hw, model, dataset.input_shape, c)
        if hw.loss == "cwc":
            check_cwc_divisible(model.blocks, c, origin=hw.workload.model)
        self.rule = None if self.is_bp else compose(hw, self.net.depth, c, self.negatives)
        self.head = None
        if model.is_transformer and not self.is_bp and (hw.loss == "contrastive" or hw.learning.inference == "head"):
            self.head = LinearProbe(self.net, hw.precision, hw.training.seed, hw.learning.head_epochs)   # stage 2
        elif not self.is_bp and hw.learning.inference == "head":
            self.head = OnePassHead(self.net, hw.learning.head_last_k, hw.precision, hw.training.seed)
        self.extra = [self.head.layer] if self.head is not None else []
        if hw.mapping.statistics != "batch":        # mapping.statistics: conv and dense blocks (config checks)
            for layer in list(self.net.blocks) + ([self.net.head] if self.net.head is not None else []) + self.extra:
                if hasattr(layer, "use_statistics"):
                    layer.use_statistics(hw.mapping.statistics, hw.mapping.micro_batch)
        self.opt, self.acc = training_state(self.net, hw.precision, hw.training.optimizer, hw.training.momentum,
                                            self.extra)
        seed = hw.training.seed
        self.rng_data = np.random.default_rng([seed, 2])
        self.rng_round = np.random.default_rng([seed, 3])
        self.grad_noise = grad_noise     # callable(layer_index, grad, rng) -> grad (device mismatch)
        self.rng_noise = np.random.default_rng([seed, 5])
        self.epoch = 0
        self.step = 0
        self.history = []
        self.trace = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.y_train) / self.hw.training.batch_size)

    # ------------------------------------------------------------- one step
    def train_step(self, x, y, record: bool = False):
        """One step of the rule on the batch ``(x, y)``, its vector work at ``precision.vector_bits``."""
        with vector_width(self.hw.precision.vector_bits):
            return self._train_step(x, y, record)

    def _train_step(self, x, y, record: bool):
        hw = self.hw
        rec = TraceRecorder(samples=x.shape[0], enabled=record, barriers=hw.mapping.statistics == "batch")
        sequential = self.rule is not None and self.rule.negatives != "parallel"
        tracer = (PassTracer if sequential else StepTracer)(rec, self.net, self.opt, self.acc, self.is_bp,
                                                                    self.extra)
        with open_log(tracer.log):
            if self.is_bp:
                res = bp_step(self.net, x, y, self.step, self.rng_round, tracer)
            else:
                rows = self.rule.rows.make(self.net, x, y, self.rng_data)
                with rows_per_sample(rows.reps):     # mapping.statistics: micro-batch groups whole samples
                    res = local_step(self.net, self.rule, rows, self.step, self.rng_round, tracer)
                    if self.head is not None and getattr(self.head, "alongside", True):
                        _, g = head_step(self.net, self.head, rows, res.outputs, self.rng_round, tracer)
                        res.grads["extra"] = [(self.head.layer, g)]
            lr = learning_rate(hw.training, self.step, self.steps_per_epoch)
            apply_gradients(self.net, res.grads, lr, self.opt, self.acc, hw.precision, self.rng_round, tracer,
                            self.grad_noise, self.rng_noise)
            tracer.close()
        self.step += 1
        if record:
            self.trace = rec.trace
        return res

    # ------------------------------------------------------------- epochs
    def run(self, progress: bool = True, checkpoint_dir: str | None = None, on_epoch=None,
            record_trace: bool = True) -> TrainResult:
        """Train the remaining epochs. ``record_trace=False`` skips the (first-step) trace: benchmarks only."""
        from tqdm.auto import tqdm
        hw, data = self.hw, self.data
        bs = hw.training.batch_size
        n = len(data.y_train)
        t_total = 0.0
        while self.epoch < hw.training.epochs:
            order = self.rng_data.permutation(n)
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(range(self.steps_per_epoch), disable=not progress, leave=False, unit="step",
                       desc=f"epoch {self.epoch + 1}/{hw.training.epochs}")
            for i in bar:
                idx = order[i * bs:(i + 1) * bs]
                res = self.train_step(data.x_train[idx], data.y_train[idx],
                                      record=record_trace and self.trace is None)
                losses.append(res.loss)
                point_progress.note(f"epoch {self.epoch + 1}/{hw.training.epochs}, step {i + 1}/{self.steps_per_epoch}")
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            dt = time.perf_counter() - t0
            t_total += dt
            # testing takes seconds (every test image under every label): say so rather than sit silent
            bar.set_description_str(f"epoch {self.epoch + 1}/{hw.training.epochs}: testing on "
                                    f"{len(data.y_test)} images")
            bar.refresh()
            ev = self.evaluate(data.x_test, data.y_test)
            bar.close()
            stats = EpochStats(self.epoch + 1, float(np.mean(losses)), ev["accuracy"], ev["per_block"], dt,
                               ev["head_accuracy"])
            self.history.append(stats)
            self.epoch += 1
            point_progress.note(f"epoch {stats.epoch}/{hw.training.epochs} done, test acc "
                                f"{100 * stats.test_accuracy:.1f}%", force=True)
            if progress:
                head = "" if stats.head_accuracy is None else f"  head {100 * stats.head_accuracy:.2f}%"
                print(f"epoch {stats.epoch}/{hw.training.epochs}: loss {stats.loss:.4f}  "
                      f"test acc {100 * stats.test_accuracy:.2f}%{head}  ({dt:.1f} s)", flush=True)
            if checkpoint_dir and hw.training.checkpoint:
                self.save(os.path.join(checkpoint_dir, CHECKPOINT_NAME))
            if on_epoch is not None:
                on_epoch(stats)
        return TrainResult(self.net, self.history, self.trace, self.step, t_total)

    def evaluate(self, x, y) -> dict:
        """Test accuracy by the rule's decoding (and its one-pass head's, if any), per-block accuracy.

        A vit model's linear probe (stage 2) is first fit on the frozen encoder of the current epoch; a rule
        that does not decode by itself (CFF) is then judged by the probe alone."""
        with vector_width(self.hw.precision.vector_bits):
            return self._evaluate(x, y)

    def _evaluate(self, x, y) -> dict:
        objective = None if self.is_bp else self.rule.objective
        if not isinstance(self.head, LinearProbe):
            return evaluate(self.net, objective, x, y, self.hw.learning.decode_last_k, self.head)
        if self.head.fitted != self.step:           # the encoder changed since the last fit
            self.head.fit(self.data.x_train, self.data.y_train, self.step)
        head_acc = self.head.accuracy(x, y)
        if not getattr(objective, "decodes", True):
            return {"accuracy": head_acc, "per_block": None, "head_accuracy": head_acc}
        ev = evaluate(self.net, objective, x, y, self.hw.learning.decode_last_k, None)
        return dict(ev, head_accuracy=head_acc)

    # ------------------------------------------------------------- checkpoints
    def state(self):
        """Plain data (``chipsim.checkpoint``): no object is stored, so loading one runs no code."""
        return dict(net=self.net.state(), opt=self.opt.state_dict(), epoch=self.epoch, step=self.step,
                    acc={k: a.state() for k, a in self.acc.items()},
                    head=None if self.head is None else self.head.state(),
                    history=[dataclasses.asdict(h) for h in self.history],
                    trace=None if self.trace is None else self.trace.to_dict(),
                    rngs=[r.bit_generator.state for r in (self.rng_data, self.rng_round, self.rng_noise)])

    def load(self, s):
        self.net.load(s["net"])
        self.opt.load_state_dict(s["opt"])
        for k, a in s["acc"].items():
            self.acc[k].load_state(a)
        if self.head is not None:
            self.head.load(s["head"])
        self.epoch, self.step = s["epoch"], s["step"]
        self.history = [EpochStats(**h) for h in s["history"]]
        self.trace = None if s["trace"] is None else Trace.from_dict(s["trace"])
        for r, st in zip((self.rng_data, self.rng_round, self.rng_noise), s["rngs"]):
            r.bit_generator.state = st

    def config(self) -> dict:
        """What determines this training, as stored in its checkpoint and compared on resume."""
        return checkpoint.training_config(self.hw, self.model)

    def save(self, path: str):
        """Atomic: an interrupted save leaves the previous checkpoint intact."""
        checkpoint.save(path, self.state(), self.config())

    def resume(self, path: str):
        """Continue from a checkpoint of the same config (``checkpoint.RESUMABLE_KEYS`` may differ)."""
        state, saved = checkpoint.load(path)
        checkpoint.check_resumable(path, saved, state, self.config(), self.hw.training.epochs)
        self.restore(state, path)

    def restore(self, state, path: str):
        """``load`` a checked checkpoint state; a state that does not fit this network is one clear error."""
        checkpoint.check_state(path, state)        # counters, history and every number finite, before any load
        try:
            self.load(state)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path}: damaged checkpoint: its state does not fit this model "
                                  f"({type(exc).__name__}: {str(exc)[:100]})") from None
