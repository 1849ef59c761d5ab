"""Learning rules: one training step each (no update applied; the trainer applies the gradients).

A local rule is a composition of three parts (``LocalRule``), so FF, SymBa,
greedy DF, DF-O and DF-R are data, not branches of ``local_step``:

* **rows** (``rows.py``): how a sample becomes rows -- a positive and N
  negatives, or one row;
* **objective** (``objectives.py``): the per-block loss on the block's
  output, and the rows it gives an error;
* **routing** (``routing.py``): which blocks each loss reaches and updates,
  and the link its error takes into the block below: the true ``W^T``
  (DF-O) or a fixed random ``B`` (DF-R, so a block never waits on its own
  weights: no update lock).

``bp_step`` is the baseline: the same blocks plus a linear head and
cross-entropy, one error walked back through every block.

Execution order is the one a chip would follow, block by block: forward l,
loss l, its error down through the blocks it reaches, then the weight
gradient of every block that no later loss reaches (it has every error it
will get). Buffers are therefore dead as soon as the dataflow says so, and
the trace's liveness is the algorithm's, not an artefact of batching.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels as K
from ..errors import TrainingDiverged
from ..work import record
from .losses import cross_entropy
from .objectives import GoodnessObjective
from .routing import Routing
from .rows import LabelledRows


def _check(value, what: str, layer: int, step: int):
    if not np.all(np.isfinite(value)):
        bad = value if np.ndim(value) == 0 else np.asarray(value)[~np.isfinite(value)].flat[0]
        raise TrainingDiverged(f"{what} of block {layer} is {bad} at step {step}; "
                               "lower training.lr or raise precision.gradient_bits")


class StepResult:
    __slots__ = ("loss", "grads")

    def __init__(self, loss, grads):
        self.loss, self.grads = loss, grads


@dataclass(frozen=True)
class LocalRule:
    rows: object         # rows.LabelledRows | rows.OneRow
    objective: object    # objectives.GoodnessObjective | ...
    routing: object      # routing.Routing

    @property
    def uses_feedback(self) -> bool:
        return self.routing.link == "random"


def compose(strategy: str, loss: str, learning, negatives: int) -> LocalRule:
    """A local rule from the config's resolved ``strategy`` and ``loss``: rows, objective, routing."""
    return LocalRule(rows=LabelledRows(negatives),
                     objective=GoodnessObjective(loss, learning),
                     routing=Routing(span=2 if strategy in ("df-o", "df-r") else 1,
                                     link="random" if strategy == "df-r" else "true",
                                     olu_schedule=learning.olu_schedule))


def _last_touch(plan) -> list:
    """Per block: the last loss (block index) whose error reaches it, or None."""
    last = [None] * len(plan)
    for l, reach in enumerate(plan):
        if reach.updates:
            for j in range(reach.lowest, l + 1):
                last[j] = l
    return last


def _union(parts):
    keep = parts[0][1]
    for _, r, _ in parts[1:]:
        keep = np.union1d(keep, r)
    return keep


def local_step(net, rule: LocalRule, rows, step, rng, tracer) -> StepResult:
    """Gradients of one local-rule step on ``rows`` (``rule.rows.make(...)``); ``rng`` rounds."""
    blocks = net.blocks
    L = len(blocks)
    plan = rule.routing.plan(L, step)
    last_touch = _last_touch(plan)
    sparse = net.bn_backward == "fixed-stats"
    caches, grads, losses = [None] * L, [None] * L, []
    # errors at each block's output that update it: (loss, rows or None, error or a function computing it)
    parts = [[] for _ in range(L)]
    emb_grad = None
    tracer.sensor_input(rows.x)

    def finish(j):
        """Block j has every error it will get: its weight gradient (and block 0's label embedding's)."""
        nonlocal emb_grad
        blk = blocks[j]
        if not parts[j]:                             # no loss updates this block this step
            grads[j] = np.zeros(blk.w_shape, np.float32)
            caches[j] = None
            return
        src = [p[0] for p in parts[j]]
        cache = caches[j]
        keep = _union(parts[j]) if sparse else None
        if keep is not None and len(keep) < rows.n:
            cache = blk.select(cache, keep)          # the other rows are dropped here
            tracer.select(blk, cache, src)
        err = _sum_errors(parts[j], keep, rows.n, blk.out_shape)
        gy = blk.backward_pre(err, cache)
        grads[j] = blk.grad_weight(gy, cache, rng)
        _check(grads[j], "weight gradient", j, step)
        tracer.grad_weight(blk, src)
        if j == 0 and net.embedding_learnable:
            gx = blk.grad_input(gy, cache, rng)
            emb_grad = K.embedding_grad(net.label_channel(gx), rows.row_labels if keep is None else
                                        rows.row_labels[keep], net.num_classes)
            tracer.embedding_grad(blk, src)
        caches[j] = None                             # block j's activations are dead now
        parts[j] = []

    a = rows.a0
    for l, blk in enumerate(blocks):
        out, cache = blk.forward(a, train=True)
        tracer.forward(blk, cache, goodness=True)
        if l + 1 < L:
            tracer.send_activation(l, l + 1)
        caches[l] = cache
        res = rule.objective.evaluate(blk, cache, rows, tracer, sparse)
        _check(res.value, "loss", l, step)
        losses.append(res.value)
        reach = plan[l]
        if reach.updates and (res.rows is None or len(res.rows)):
            if l in reach.updates:
                parts[l].append((l, res.rows, res.error))
            err, n_rows = None, rows.n if res.rows is None else len(res.rows)
            for j in range(l, reach.lowest, -1):     # the loss's error, down to the lowest block it reaches
                upper, below = blocks[j], blocks[j - 1]
                if err is None:
                    err = res.error()
                sub = caches[j] if res.rows is None else upper.select(caches[j], res.rows, for_weight_grad=False)
                gy = upper.backward_pre(err, sub)
                gx = upper.grad_input(gy, sub, rng, use_feedback=rule.uses_feedback)
                tracer.error_down(upper, below, n_rows, use_feedback=rule.uses_feedback, loss=l)
                err = gx.reshape((len(gx),) + below.out_shape)
                if j - 1 in reach.updates:
                    parts[j - 1].append((l, res.rows, err))
        for j in range(l, -1, -1):
            if last_touch[j] == l:
                finish(j)
            elif last_touch[j] is None and caches[j] is not None:
                finish(j)
        a = out
    if emb_grad is None and net.embedding_learnable:
        emb_grad = np.zeros_like(net.embedding.value)
    tracer.close()
    return StepResult(float(np.mean(losses)), dict(blocks=grads, embedding=emb_grad))


def _sum_errors(parts, keep, n_rows, out_shape):
    """The error at a block's output: the sum of what each loss sent, placed on the kept rows."""
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


def bp_step(net, x, labels, step, rng, tracer) -> StepResult:
    """Gradients of one backpropagation step through all blocks and the head."""
    layers = net.layers()
    caches = []
    a = x
    tracer.sensor_input(x)
    for i, layer in enumerate(layers):
        out, cache = layer.forward(a, train=True)
        tracer.forward(layer, cache, goodness=False)
        if i + 1 < len(layers):
            tracer.send_activation(i, i + 1)
        caches.append(cache)
        a = out
    loss, g = cross_entropy(a, labels)
    _check(loss, "loss", len(layers) - 1, step)
    rows = x.shape[0]
    tracer.loss(len(layers) - 1, rows)
    grads = [None] * len(layers)
    last = len(layers) - 1
    for i in range(last, -1, -1):
        layer = layers[i]
        gyi = layer.backward_pre(g, caches[i])
        grads[i] = layer.grad_weight(gyi, caches[i], rng)
        _check(grads[i], "weight gradient", i, step)
        tracer.grad_weight(layer, [last])
        if i > 0:
            below = layers[i - 1]
            g = layer.grad_input(gyi, caches[i], rng).reshape((rows,) + below.out_shape)
            tracer.error_down(layer, below, rows, use_feedback=False, loss=last)
        caches[i] = None
    tracer.close()
    return StepResult(loss, dict(blocks=grads, embedding=None))
