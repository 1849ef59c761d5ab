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

Greedy, DF-O, DF-R, span-n, chunked, Trifecta's alternating OLU, CwC and CFF are
then data (``compose``), not branches. A rule may add a one-pass inference
head (``layers.head.OnePassHead``), trained beside the blocks (``head_step``).

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


from .backward import AllRows, LocalBackward, StepResult, check_finite
from ..layers.head import concat_features
from .losses import cross_entropy
from .objectives import ContrastiveObjective, CwcObjective, GoodnessObjective
from .routing import Routing
from .rows import LabelledRows, OneRow, TwoViews

__all__ = ["LocalRule", "StepResult", "bp_step", "compose", "head_step", "local_step"]


@dataclass(frozen=True)
class LocalRule:
    rows: object         # rows.LabelledRows | rows.OneRow | rows.TwoViews
    objective: object    # objectives.GoodnessObjective | CwcObjective | ContrastiveObjective
    routing: object      # routing.Routing
    negatives: str = "parallel"   # mapping.negatives: how a block processes a sample's label variants
    update: str = "batch"         # training.update: immediate takes a complete gradient before the error


def compose(hw, depth: int, num_classes: int, negatives: int) -> LocalRule:
    """The local rule of an ``HwConfig``: its rows, its per-block objective, its routing and how a block
    schedules a sample's label variants (``mapping.negatives``; one-row rules have none to schedule)."""
    if hw.loss == "cwc":
        return LocalRule(OneRow(), CwcObjective(num_classes), Routing.from_config(hw, depth),
                         update=hw.training.update)
    if hw.loss == "contrastive":
        return LocalRule(TwoViews(hw.learning.augment),
                         ContrastiveObjective(hw.learning.temperature, per_layer_margins(hw.learning, depth)),
                         Routing.from_config(hw, depth), update=hw.training.update)
    return LocalRule(LabelledRows(negatives), GoodnessObjective(hw.loss, hw.learning),
                     Routing.from_config(hw, depth), hw.mapping.negatives, hw.training.update)


def per_layer_margins(learning, depth: int) -> tuple:
    """``learning.contrastive_margin`` as one margin per layer (one value given: every layer's)."""
    m = tuple(learning.contrastive_margin)
    if len(m) == 1:
        return m * depth
    if len(m) != depth:
        from ...errors import ConfigError
        raise ConfigError(f"learning.contrastive_margin: {len(m)} values for a {depth}-layer model; give one value "
                          f"(every layer) or {depth} (one per layer)")
    return m


def local_step(net, rule: LocalRule, rows, step, rng, tracer) -> StepResult:
    """Gradients of one local-rule step on ``rows`` (``rule.rows.make(...)``); ``rng`` rounds.

    ``rule.negatives`` other than ``parallel`` runs the label variants one after another
    (``sequential.sequential_step``)."""
    if rule.negatives != "parallel":
        from .sequential import sequential_step
        return sequential_step(net, rule, rows, step, rng, tracer)
    bw = LocalBackward(net, rule, rows, step, rng, tracer)
    tracer.sensor_input(rows.x)
    a, outputs, L = rows.a0, [], len(net.blocks)
    for l, blk in enumerate(net.blocks):
        out, cache = blk.forward(a, train=True)
        tracer.forward(blk, cache, goodness=True)
        if l + 1 < L:
            tracer.send_activation(l, l + 1)
        bw.kept[l] = AllRows(cache, rows.n)
        outputs.append(out)
        if bw.plan.reaches(l):                       # a loss the routing does not use this step is not run
            bw.block_loss(l, rule.objective.evaluate(blk, cache, rows, tracer, bw.sparse))
        bw.finish_ready(l)
        a = out
    return bw.result(outputs)


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
    step = head.train_grad(feats, rows.labels, rng, tracer)
    return step.loss, step.grad


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
    check_finite(loss, "loss", len(layers) - 1, step)
    rows = x.shape[0]
    tracer.loss(len(layers) - 1, g)
    grads = [None] * len(layers)
    last = len(layers) - 1
    for i in range(last, -1, -1):
        layer = layers[i]
        gyi = layer.backward_pre(g, caches[i])
        grads[i] = layer.grad_weight(gyi, caches[i], rng)
        check_finite(grads[i], "weight gradient", i, step)
        tracer.grad_weight(layer, [last])
        if i > 0:
            below = layers[i - 1]
            # the sender quantises (a conv/dense block: to gradient_bits) before the error goes down
            sent = layer.send_error(layer.grad_input(gyi, caches[i], rng).reshape((rows,) + below.out_shape), rng)
            tracer.error_down(layer, below, rows, use_feedback=False, loss=last, sent=sent)
            g = sent()                                  # the layer below computes with what arrived
        caches[i] = None
    tracer.close()
    return StepResult(loss, dict(blocks=grads, embedding=None))
