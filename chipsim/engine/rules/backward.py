"""The backward half of a local step: losses, their errors down the blocks they reach, weight gradients.

Shared by the two ways a block can process a sample's rows (``mapping.negatives``):
``compose.local_step`` (all rows of a block together) and ``sequential.sequential_step``
(one label variant after another). Both hand :class:`LocalBackward` each block's
kept activations as an object with ``rows(blk, ids, loss)``
(the cache on those rows) and ``n_rows``; :class:`AllRows` is the parallel case
(every row of the step, in order). Execution order is the chip's: a loss's error
goes down as soon as the loss has run, and a block's weight gradient is taken as
soon as every loss reaching it has sent its error, after which its activations
are dropped.
"""
from __future__ import annotations

import numpy as np

from ...errors import TrainingDiverged
from ...trace.work import record


def check_finite(value, what: str, layer: int, step: int):
    if isinstance(value, dict):                      # a transformer layer's gradient: one array per tensor
        for v in value.values():
            check_finite(v, what, layer, step)
        return
    if not np.all(np.isfinite(value)):
        bad = value if np.ndim(value) == 0 else np.asarray(value)[~np.isfinite(value)].flat[0]
        raise TrainingDiverged(f"{what} of block {layer} is {bad} at step {step}; "
                               "lower training.lr or raise precision.gradient_bits")


class StepResult:
    __slots__ = ("loss", "grads", "outputs")

    def __init__(self, loss, grads, outputs=None):
        self.loss, self.grads, self.outputs = loss, grads, outputs


class AllRows:
    """A block's forward cache on every row of the step (``mapping.negatives: parallel``)."""

    def __init__(self, cache, n_rows: int):
        self.cache, self.n_rows = cache, n_rows

    def rows(self, blk, ids, loss: int):
        return self.cache if ids is None else blk.select(self.cache, ids)

    def all(self, blk, loss: int):
        return self.cache

    def is_all(self, ids) -> bool:
        """Are ``ids`` (sorted) every row kept?"""
        return len(ids) == self.n_rows


def union_rows(parts):
    """The rows any of the parts gives an error (None: every row)."""
    if any(r is None for _, r, _ in parts):
        return None
    keep = parts[0][1]
    for _, r, _ in parts[1:]:
        keep = np.union1d(keep, r)
    return keep


def sum_errors(parts, keep, n_rows, out_shape):
    """The error at a block's output: the sum of what each loss sent, placed on the kept rows. A part is
    an array, or a callable giving one (a loss's error, computed on demand, or a ``SentError``: what a
    block above sent, its codes read back as values here, by the receiver)."""
    if len(parts) == 1:
        _, r, e = parts[0]
        return e() if callable(e) else e
    err = np.zeros((n_rows if keep is None else len(keep),) + tuple(out_shape), np.float32)
    for _, r, e in parts:
        e = e() if callable(e) else e
        if keep is None:
            err += e
        else:
            err[np.searchsorted(keep, r)] += e
        record("error_sum", "local_step", e.size)
    return err


class LocalBackward:
    """Gradients of one local step, built block by block as losses run (``rule``: a ``rules.LocalRule``)."""

    def __init__(self, net, rule, rows, step, rng, tracer):
        self.net, self.rule, self.rows, self.step, self.rng, self.tracer = net, rule, rows, step, rng, tracer
        self.blocks = net.blocks
        L = len(self.blocks)
        self.plan = rule.routing.plan(step)
        self.sparse = net.bn_backward == "fixed-stats"
        self.kept = [None] * L          # per block: its kept activations (AllRows or a sequential RowStore)
        self.grads, self.losses = [None] * L, []
        # errors at each block's output that update it: (loss, rows or None, error or a function computing it)
        self.parts = [[] for _ in range(L)]
        self.emb_grad = None
        self.finished = set()
        # training.update: immediate -- a block whose gradient this loss completes takes it before passing
        # the error on, so its update may run as soon as the update lock allows
        self.gradient_first = getattr(rule, "update", "batch") == "immediate"

    def block_loss(self, l, res):
        """Block ``l``'s loss has run (``res``: an ``objectives.LossResult``): send its error down."""
        check_finite(res.value, "loss", l, self.step)
        self.losses.append(res.value)
        if res.rows is not None and not len(res.rows):
            return
        self.parts[l].append((l, res.rows, res.error))
        reach = self.plan.reaches(l)
        n_rows = self.rows.n if res.rows is None else len(res.rows)
        top = None
        if reach[0] < l:
            top = self.kept[l].rows(self.blocks[l], res.rows, loss=l)
        if self.gradient_first and self.plan.finish_after(l) == l:
            self.finish(l)                           # W_l's gradient is complete: take it first
        sent = None
        for j in range(l, reach[0], -1):            # the loss's error, down to the lowest block it reaches
            upper, below = self.blocks[j], self.blocks[j - 1]
            # block j computes with what arrived: its own loss's error, or the codes block j+1 sent
            err = res.error() if sent is None else sent()
            sub = top if j == l else self.kept[j].rows(upper, res.rows, loss=l)
            gy = upper.backward_pre(err, sub)
            gx = upper.grad_input(gy, sub, self.rng, use_feedback=self.plan.uses_feedback)
            # the sender quantises (a conv/dense block: to gradient_bits) before the error goes down
            sent = upper.send_error(gx.reshape((len(gx),) + below.out_shape), self.rng)
            self.tracer.error_down(upper, below, n_rows, use_feedback=self.plan.uses_feedback, loss=l, sent=sent)
            self.parts[j - 1].append((l, res.rows, sent))

    def finish_ready(self, l):
        """After loss ``l``: take the weight gradient of every block that has all its errors."""
        for j in range(l, -1, -1):
            if self.plan.finish_after(j) <= l:
                self.finish(j)

    def finish(self, j):
        """Block j has every error it will get: its weight gradient (and block 0's label embedding's).
        Once per block and step."""
        if j in self.finished:
            return
        self.finished.add(j)
        blk, tracer, parts = self.blocks[j], self.tracer, self.parts[j]
        kept = self.kept[j]
        self.kept[j] = None                          # block j's activations are dead after this
        if not parts:                                # no loss updates this block this step
            self.grads[j] = np.zeros(blk.w_shape, np.float32)
            return
        src = [p[0] for p in parts]
        keep = union_rows(parts) if self.sparse else None
        if keep is not None and not kept.is_all(keep):
            cache = kept.rows(blk, keep, loss=src[-1])
            tracer.select(blk, cache, src)           # the other rows are dropped here
        else:
            cache = kept.all(blk, src[-1])
        err = sum_errors(parts, keep, self.rows.n, blk.out_shape)
        gy = blk.backward_pre(err, cache)
        self.grads[j] = blk.grad_weight(gy, cache, self.rng)
        check_finite(self.grads[j], "weight gradient", j, self.step)
        tracer.grad_weight(blk, src)
        if j == 0 and self.net.label_trainable:
            gx = blk.grad_input(gy, cache, self.rng)
            self.emb_grad = self.net.label_grad(gx, self.rows.row_labels if keep is None
                                                else self.rows.row_labels[keep])
            tracer.embedding_grad(blk, src)
        self.parts[j] = []

    def result(self, outputs) -> StepResult:
        if self.emb_grad is None and self.net.label_trainable:
            self.emb_grad = np.zeros_like(self.net.embedding.value)
        self.tracer.close()
        return StepResult(float(np.mean(self.losses)) if self.losses else 0.0,
                          dict(blocks=self.grads, embedding=self.emb_grad), outputs)
