"""Learning rules: one training step each (no update applied; the trainer applies the gradients).

A local rule is a composition of three parts (``LocalRule``), so FF, SymBa,
greedy DF, DF-O and DF-R are data, not branches of ``local_step``:

* **rows** (``rows.py``): how a sample becomes rows -- a positive and N
  negatives (FF, SymBa, DF), one row (CwC), or two augmented views (CFF);
* **objective** (``objectives.py``): the per-block loss on the block's
  output (goodness losses, CwC's channel-wise cross-entropy, CFF's
  contrastive loss), the rows it gives an error, and how it decodes;
* **routing** (``routing.py``): which blocks each loss reaches and updates
  (span, overlapping or chunked groups, alternating schedules), and the link
  its error takes into the block below: the true ``W^T`` (DF-O) or a fixed
  random ``B`` (DF-R, so a block never waits on its own weights: no update
  lock).

Greedy, DF-O, DF-R, span-n, chunked, Trifecta's alternating OLU and CwC are
then data (``compose``), not branches. A rule may add a one-pass inference
head (``head.OnePassHead``), trained beside the blocks (``head_step``).

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

from ..errors import TrainingDiverged
from ..work import record
from .head import concat_features
from .losses import cross_entropy
from .objectives import ContrastiveObjective, CwcObjective, GoodnessObjective
from .routing import Routing
from .rows import LabelledRows, OneRow, TwoViews


def _check(value, what: str, layer: int, step: int):
    if isinstance(value, dict):                      # a transformer layer's gradient: one array per tensor
        for v in value.values():
            _check(v, what, layer, step)
        return
    if not np.all(np.isfinite(value)):
        bad = value if np.ndim(value) == 0 else np.asarray(value)[~np.isfinite(value)].flat[0]
        raise TrainingDiverged(f"{what} of block {layer} is {bad} at step {step}; "
                               "lower training.lr or raise precision.gradient_bits")


class StepResult:
    __slots__ = ("loss", "grads", "outputs")

    def __init__(self, loss, grads, outputs=None):
        self.loss, self.grads, self.outputs = loss, grads, outputs


@dataclass(frozen=True)
class LocalRule:
    rows: object         # rows.LabelledRows | rows.OneRow
    objective: object    # objectives.GoodnessObjective | objectives.CwcObjective
    routing: object      # routing.Routing


def compose(hw, depth: int, num_classes: int, negatives: int) -> LocalRule:
    """The local rule of an ``HwConfig``: its rows, its per-block objective and its routing."""
    if hw.loss == "cwc":
        rows, objective = OneRow(), CwcObjective(num_classes)
    elif hw.loss == "contrastive":
        rows = TwoViews(hw.learning.augment)
        objective = ContrastiveObjective(hw.learning.temperature, per_layer_margins(hw.learning, depth))
    else:
        rows, objective = LabelledRows(negatives), GoodnessObjective(hw.loss, hw.learning)
    return LocalRule(rows, objective, Routing.from_config(hw, depth))


def per_layer_margins(learning, depth: int) -> tuple:
    """``learning.contrastive_margin`` as one margin per layer (one value given: every layer's)."""
    m = tuple(learning.contrastive_margin)
    if len(m) == 1:
        return m * depth
    if len(m) != depth:
        from ..errors import ConfigError
        raise ConfigError(f"learning.contrastive_margin: {len(m)} values for a {depth}-layer model; give one value "
                          f"(every layer) or {depth} (one per layer)")
    return m


def _union(parts):
    """The rows any of the parts gives an error (None: every row)."""
    if any(r is None for _, r, _ in parts):
        return None
    keep = parts[0][1]
    for _, r, _ in parts[1:]:
        keep = np.union1d(keep, r)
    return keep


def local_step(net, rule: LocalRule, rows, step, rng, tracer) -> StepResult:
    """Gradients of one local-rule step on ``rows`` (``rule.rows.make(...)``); ``rng`` rounds."""
    blocks = net.blocks
    L = len(blocks)
    plan = rule.routing.plan(step)
    feedback = plan.uses_feedback
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
        if j == 0 and net.label_trainable:
            gx = blk.grad_input(gy, cache, rng)
            emb_grad = net.label_grad(gx, rows.row_labels if keep is None else rows.row_labels[keep])
            tracer.embedding_grad(blk, src)
        caches[j] = None                             # block j's activations are dead now
        parts[j] = []

    a, outputs = rows.a0, []
    for l, blk in enumerate(blocks):
        out, cache = blk.forward(a, train=True)
        tracer.forward(blk, cache, goodness=True)
        if l + 1 < L:
            tracer.send_activation(l, l + 1)
        caches[l] = cache
        outputs.append(out)
        reach = plan.reaches(l)
        if reach:                                    # a loss the routing does not use this step is not run
            res = rule.objective.evaluate(blk, cache, rows, tracer, sparse)
            _check(res.value, "loss", l, step)
            losses.append(res.value)
        if reach and (res.rows is None or len(res.rows)):
            parts[l].append((l, res.rows, res.error))
            err, n_rows = None, rows.n if res.rows is None else len(res.rows)
            for j in range(l, reach[0], -1):        # the loss's error, down to the lowest block it reaches
                upper, below = blocks[j], blocks[j - 1]
                if err is None:
                    err = res.error()
                sub = caches[j] if res.rows is None else upper.select(caches[j], res.rows, for_weight_grad=False)
                gy = upper.backward_pre(err, sub)
                gx = upper.grad_input(gy, sub, rng, use_feedback=feedback)
                tracer.error_down(upper, below, n_rows, use_feedback=feedback, loss=l)
                err = gx.reshape((len(gx),) + below.out_shape)
                parts[j - 1].append((l, res.rows, err))
        for j in range(l, -1, -1):
            if caches[j] is not None and plan.finish_after(j) <= l:
                finish(j)
        a = out
    if emb_grad is None and net.label_trainable:
        emb_grad = np.zeros_like(net.embedding.value)
    tracer.close()
    return StepResult(float(np.mean(losses)) if losses else 0.0, dict(blocks=grads, embedding=emb_grad),
                      outputs)


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


def head_step(net, head, rows, outputs, rng, tracer):
    """The one-pass head's training step: its features, forward, cross-entropy and weight gradient.
    Returns (loss, gradient); no gradient reaches the blocks.

    A rule whose input carries no label (CwC) feeds the head the outputs of its training pass; a rule
    with one runs an extra pass under the neutral label (eval-mode BN) for them, since its training
    rows carry the true or a wrong label, which the head would learn to read.
    """
    if net.label_encoding is None:
        feats = concat_features(outputs[j] for j in head.blocks)
        tracer.head_features(head, from_training=True)
    else:
        a, outs, last = net.input_with_label(rows.x, None), [], max(head.blocks)
        for j, blk in enumerate(net.blocks[:last + 1]):
            a, _ = blk.forward(a, train=False)
            tracer.neutral_forward(blk, a, j + 1 if j < last else None)
            outs.append(a)
        feats = concat_features(outs[j] for j in head.blocks)
        tracer.head_features(head, from_training=False)
    z, cache = head.logits(feats, train=True)
    tracer.head_forward(head, cache)
    loss, g = cross_entropy(z, rows.labels)
    tracer.loss(head.layer.index, g)
    grad = head.layer.grad_weight(head.layer.backward_pre(g, cache), cache, rng)
    tracer.grad_weight(head.layer, [head.layer.index])
    return loss, grad


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
    tracer.loss(len(layers) - 1, g)
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
