"""Learning rules: one training step each, plus decoding.

* ``local_step`` -- FF, SymBa or DF loss at every block, with the update
  strategy ``greedy`` (each loss updates its own block), ``df-o`` (OLU: block
  l's loss also updates block l-1 through the true W_l^T) or ``df-r`` (as df-o,
  but the error into block l-1 goes through a fixed random kernel B_l, so block
  l never waits on its own weights: no update lock).
* ``bp_step`` -- the same blocks plus a linear head and cross-entropy.

Execution order is the one a chip would follow, block by block: forward l,
loss l, error from l into l-1, then block l-1's weight gradient (it now has
every error it will get). Buffers are therefore dead as soon as the dataflow
says so, and the trace's liveness is the algorithm's, not an artefact of
batching everything layer-major.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..errors import TrainingDiverged
from .losses import cross_entropy, goodness_loss


def _check(value, what: str, layer: int, step: int):
    if not np.all(np.isfinite(value)):
        bad = value if np.ndim(value) == 0 else np.asarray(value)[~np.isfinite(value)].flat[0]
        raise TrainingDiverged(f"{what} of block {layer} is {bad} at step {step}; "
                               "lower training.lr or raise precision.gradient_bits")


class StepResult:
    __slots__ = ("loss", "grads")

    def __init__(self, loss, grads):
        self.loss, self.grads = loss, grads


def olu_active(l: int, step: int, schedule: str) -> bool:
    """Does block l's loss reach block l-1 at this step? (Trifecta alternates pairs.)"""
    return schedule == "every-step" or (l % 2) == (step % 2)


def _active_rows(dg):
    """Rows whose loss gradient is non-zero (DF: the positive and the hardest negative)."""
    return np.flatnonzero(dg)


def local_step(net, x, labels, negatives, loss_name, strategy, learning, step, rng, tracer):
    """Gradients of one local-rule step (no update applied). Returns StepResult.

    ``negatives`` (B, N) are N distinct wrong labels per sample; the positive
    and its N negatives are stacked sample-major, so row r*(N+1) is sample r's
    positive.

    With ``bn_backward == "fixed-stats"`` rows are independent in the backward
    pass, so a block keeps, and back-propagates, only the rows that some loss
    gives an error: its own loss's and, under DF-O/DF-R, the block above's.
    Under DF's max loss that is the positive and at most two hardest negatives
    of the N+1 rows; FF and SymBa give every row an error. With
    ``"batch-stats"`` every row is kept: the statistics' gradient reaches all.
    """
    b, n = negatives.shape
    reps = n + 1
    lab = np.concatenate([labels[:, None], negatives], axis=1).reshape(-1)
    a = net.input_with_label(np.repeat(x, reps, axis=0), lab)
    rows = a.shape[0]
    overlap = strategy in ("df-o", "df-r")
    sparse = net.bn_backward == "fixed-stats"
    blocks = net.blocks
    L = len(blocks)
    caches, grads, losses = [None] * L, [None] * L, []
    # errors at each block's output, as (rows or None for all rows, error on those rows):
    # from its own loss, and (DF-O/DF-R) from the block above through W or B
    own, above = [None] * L, [None] * L
    emb_grad = None
    tracer.sensor_input(x)

    def output_error(j):
        """Block j's output error on the rows it must keep: (rows or None, error)."""
        parts = [p for p in (own[j], above[j]) if p is not None]
        if not sparse:
            return None, sum(e for _, e in parts)
        keep = parts[0][0] if len(parts) == 1 else np.union1d(parts[0][0], parts[1][0])
        err = np.zeros((len(keep),) + blocks[j].out_shape, np.float32)
        for r, e in parts:
            err[np.searchsorted(keep, r)] += e
        return keep, err

    def finish(j):
        nonlocal emb_grad
        blk = blocks[j]
        if own[j] is None and above[j] is None:       # no loss gave this block an error this step
            grads[j] = np.zeros(blk.w_shape, np.float32)
            if j == 0:
                emb_grad = np.zeros_like(net.embedding.value)
            caches[j] = None
            return
        keep, err = output_error(j)
        cache = caches[j]
        if keep is not None and len(keep) < rows:
            cache = blk.select(cache, keep)           # the other rows are dropped here
            tracer.select(blk, cache)
        n_rows = rows if keep is None else len(keep)
        gy = blk.backward_pre(err, cache)
        grads[j] = blk.grad_weight(gy, cache, rng)
        _check(grads[j], "weight gradient", j, step)
        tracer.grad_weight(blk, n_rows)
        if j == 0:
            gx = blk.grad_input(gy, cache, rng)
            emb_grad = np.zeros_like(net.embedding.value)
            label_channel = gx.reshape((gx.shape[0], -1) + emb_grad.shape[1:])[:, -1]   # dense: flat input
            np.add.at(emb_grad, lab if keep is None else lab[keep], label_channel)
            tracer.embedding_grad(blk, n_rows)
        caches[j] = own[j] = above[j] = None      # block j's activations are dead now

    for l, blk in enumerate(blocks):
        out, cache = blk.forward(a, train=True)
        g = K.goodness(cache["gsrc"])               # the output, or its wider copy (goodness_bits)
        tracer.forward(blk, cache, goodness=True)
        if l + 1 < L:
            tracer.send_activation(l, l + 1)
        gg = g.reshape(b, reps)
        loss, dgp, dgn = goodness_loss(loss_name, gg[:, 0], gg[:, 1:], learning)
        _check(loss, "loss", l, step)
        losses.append(loss)
        tracer.loss(l, rows)
        dg = np.empty((b, reps), np.float32)
        dg[:, 0], dg[:, 1:] = dgp, dgn
        dg = dg.reshape(-1)
        caches[l] = cache
        r = _active_rows(dg) if sparse else None
        squared = cache["gsrc"] if r is None else cache["gsrc"][r]   # what goodness squared, on the loss's rows
        if r is not None and len(r) < rows:
            tracer.goodness_rows(blk, squared)
        if r is None or len(r):
            own[l] = (r, K.goodness_backward(dg if r is None else dg[r], squared))
        if overlap and l > 0 and own[l] is not None and olu_active(l, step, learning.olu_schedule):
            below = blocks[l - 1]
            sub = cache if r is None else blk.select(cache, r, for_weight_grad=False)
            gy = blk.backward_pre(own[l][1], sub)
            gx = blk.grad_input(gy, sub, rng, use_feedback=(strategy == "df-r"))
            tracer.error_down(blk, below, rows if r is None else len(r), use_feedback=(strategy == "df-r"))
            above[l - 1] = (r, gx.reshape((len(gx),) + below.out_shape))
        if overlap and l > 0:
            finish(l - 1)
        elif not overlap:
            finish(l)
        a = out
    if overlap:
        finish(L - 1)
    return StepResult(float(np.mean(losses)), dict(blocks=grads, embedding=emb_grad))


def bp_step(net, x, labels, step, rng, tracer):
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
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        gyi = layer.backward_pre(g, caches[i])
        grads[i] = layer.grad_weight(gyi, caches[i], rng)
        _check(grads[i], "weight gradient", i, step)
        tracer.grad_weight(layer, rows)
        if i > 0:
            below = layers[i - 1]
            g = layer.grad_input(gyi, caches[i], rng).reshape((rows,) + below.out_shape)
            tracer.error_down(layer, below, rows, use_feedback=False)
        caches[i] = None
    return StepResult(loss, dict(blocks=grads, embedding=None))


def goodness_scores(net, x, batch: int = 256):
    """Goodness of every block under every label: array (N, C, L). Eval-mode BN."""
    c = net.num_classes
    out = np.empty((x.shape[0], c, net.depth), np.float32)
    labels_all = np.arange(c)
    for s in range(0, x.shape[0], batch):
        xb = x[s:s + batch]
        m = xb.shape[0]
        a = net.input_with_label(np.repeat(xb, c, axis=0), np.tile(labels_all, m))
        for l, blk in enumerate(net.blocks):
            a, cache = blk.forward(a, train=False)
            out[s:s + m, :, l] = K.goodness(cache["gsrc"]).reshape(m, c)
    return out


def bp_logits(net, x, batch: int = 512):
    outs = []
    for s in range(0, x.shape[0], batch):
        a = x[s:s + batch]
        for layer in net.layers():
            a, _ = layer.forward(a, train=False)
        outs.append(a)
    return np.concatenate(outs)


def evaluate(net, x, y, rule_is_bp: bool, last_k: int):
    """Test accuracy; for local rules also per-block accuracy. Returns a dict."""
    if rule_is_bp:
        pred = bp_logits(net, x).argmax(axis=1)
        return {"accuracy": float((pred == y).mean()), "per_block": None}
    g = goodness_scores(net, x)
    k = min(last_k, net.depth)
    pred = g[:, :, -k:].sum(axis=2).argmax(axis=1)
    per_block = [float((g[:, :, l].argmax(axis=1) == y).mean()) for l in range(net.depth)]
    return {"accuracy": float((pred == y).mean()), "per_block": per_block}
