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

from .. import checkpoint
from ..errors import CheckpointError, ConfigError
from ..modelspec import check_fits_host
from ..trace import Trace, TraceRecorder
from .network import Network
from .optim import cosine_lr, make_optimizer
from .rules import bp_step, evaluate, local_step
from .tracing import StepTracer

CHECKPOINT_NAME = checkpoint.NAME


@dataclass
class EpochStats:
    epoch: int
    loss: float
    test_accuracy: float
    per_block_accuracy: list | None
    seconds: float


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


def sample_negatives(labels, n: int, num_classes: int, rng):
    """N distinct wrong labels per sample, uniformly: y + 1 + (a random permutation of 0..C-2)."""
    b = labels.shape[0]
    perm = np.argsort(rng.random((b, num_classes - 1)), axis=1)[:, :n]
    return ((labels[:, None] + 1 + perm) % num_classes).astype(np.int64)


def build_network(hw, model, input_shape, num_classes):
    is_bp = hw.strategy == "bp"
    net = Network(model, input_shape, num_classes, hw.precision, hw.training.seed,
                  with_label=not is_bp, with_head=is_bp, bn_backward=hw.learning.bn_backward)
    if hw.strategy == "df-r":
        fb_rng = np.random.default_rng([hw.training.seed, 4])
        for blk in net.blocks[1:]:
            blk.set_feedback(fb_rng)
    return net


class Trainer:
    """Owns the network, optimizer and RNG streams of one training run."""

    def __init__(self, hw, model, dataset, grad_noise=None):
        self.hw, self.model, self.data = hw, model, dataset
        c = dataset.num_classes
        self.negatives = hw.learning.negatives if hw.learning.negatives is not None else c - 1
        if not 1 <= self.negatives <= c - 1:
            raise ConfigError(f"learning.negatives: {self.negatives} is out of range for {dataset.name} "
                              f"({c} classes); allowed 1..{c - 1}")
        self.is_bp = hw.strategy == "bp"
        # shapes and host memory are checked in plain integers before any array exists (absurd sizes would
        # otherwise end in a MemoryError); load_config did this for the config's own model and dataset
        check_fits_host(model, dataset.input_shape, c, hw.training.batch_size, self.negatives,
                        with_label=not self.is_bp, source=f"model {model.name!r}")
        self.net = build_network(hw, model, dataset.input_shape, c)
        self.opt = make_optimizer(hw.training.optimizer, hw.training.momentum)
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
        hw = self.hw
        rec = TraceRecorder(samples=x.shape[0], enabled=record)
        tracer = StepTracer(rec, self.net, self.opt, self.is_bp, hw.mapping.feedback_storage == "stored")
        if self.is_bp:
            res = bp_step(self.net, x, y, self.step, self.rng_round, tracer)
        else:
            neg = sample_negatives(y, self.negatives, self.net.num_classes, self.rng_data)
            res = local_step(self.net, x, y, neg, hw.loss, hw.strategy, hw.learning, self.step,
                             self.rng_round, tracer)
        lr = cosine_lr(hw.training.lr, self.step, hw.training.epochs * self.steps_per_epoch) \
            if hw.training.schedule == "cosine" else hw.training.lr
        self._apply(res.grads, lr, tracer)
        self.step += 1
        if record:
            self.trace = rec.trace
        return res

    def _apply(self, grads, lr, tracer):
        p = self.hw.precision
        for layer, g in zip(self.net.layers(), grads["blocks"]):
            if self.grad_noise is not None:
                g = self.grad_noise(layer.index, g, self.rng_noise)
            delta = self.opt.delta(("w", layer.index), g, lr)
            layer.master.apply(delta, p.rounding, self.rng_round)
            layer.requantize()
            tracer.update(layer)
        if grads["embedding"] is not None:
            delta = self.opt.delta("emb", grads["embedding"], lr)
            self.net.embedding.apply(delta, p.rounding, self.rng_round)

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
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            dt = time.perf_counter() - t0
            t_total += dt
            # testing takes seconds (every test image under every label): say so rather than sit silent
            bar.set_description_str(f"epoch {self.epoch + 1}/{hw.training.epochs}: testing on "
                                    f"{len(data.y_test)} images")
            bar.refresh()
            ev = evaluate(self.net, data.x_test, data.y_test, self.is_bp, hw.learning.decode_last_k)
            bar.close()
            stats = EpochStats(self.epoch + 1, float(np.mean(losses)), ev["accuracy"], ev["per_block"], dt)
            self.history.append(stats)
            self.epoch += 1
            if progress:
                print(f"epoch {stats.epoch}/{hw.training.epochs}: loss {stats.loss:.4f}  "
                      f"test acc {100 * stats.test_accuracy:.2f}%  ({dt:.1f} s)", flush=True)
            if checkpoint_dir and hw.training.checkpoint:
                self.save(os.path.join(checkpoint_dir, CHECKPOINT_NAME))
            if on_epoch is not None:
                on_epoch(stats)
        return TrainResult(self.net, self.history, self.trace, self.step, t_total)

    # ------------------------------------------------------------- checkpoints
    def state(self):
        """Plain data (``chipsim.checkpoint``): no object is stored, so loading one runs no code."""
        return dict(net=self.net.state(), opt=self.opt.state_dict(), epoch=self.epoch, step=self.step,
                    history=[dataclasses.asdict(h) for h in self.history],
                    trace=None if self.trace is None else self.trace.to_dict(),
                    rngs=[r.bit_generator.state for r in (self.rng_data, self.rng_round, self.rng_noise)])

    def load(self, s):
        self.net.load(s["net"])
        self.opt.load_state_dict(s["opt"])
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
        try:
            self.load(state)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path}: damaged checkpoint: its state does not fit this model "
                                  f"({type(exc).__name__}: {str(exc)[:100]})") from None
