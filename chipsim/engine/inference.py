"""Inference: decoding test inputs, and the trace of one costed inference on the chip.

Goodness decoding (FF, SymBa, DF) runs each input under every one of the C
labels, so one inference is C passes through the blocks, then the goodness
of the last k blocks is summed and the largest wins. BP runs one pass and
takes the argmax of its head's logits. :func:`trace_inference` records what
the engine executes for one test sample either way, so ``chipsim run`` can
cost an inference beside a training step from the same kind of record.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..trace import TraceRecorder, nbytes_of
from ..work import WorkLog, open_log
from .tracing import SENSOR_BITS


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
            out[s:s + m, :, l] = K.goodness(cache["gsrc"], bits=blk.goodness_bits).reshape(m, c)
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
        pred = K.decode(bp_logits(net, x))
        return {"accuracy": float((pred == y).mean()), "per_block": None}
    g = goodness_scores(net, x)
    k = min(last_k, net.depth)
    pred = K.decode(g[:, :, -k:])
    per_block = [float((g[:, :, l].argmax(axis=1) == y).mean()) for l in range(net.depth)]
    return {"accuracy": float((pred == y).mean()), "per_block": per_block}


def trace_inference(net, x, rule_is_bp: bool, last_k: int):
    """Trace of the inference of one sample ``x`` (shape (1, C, H, W)): every kernel the engine runs.

    Buffers: the weights (and BN statistics, label embedding) each layer reads,
    the input it receives, the output it sends; goodness decoding holds the C
    label variants of the sample as C rows.
    """
    rec = TraceRecorder(samples=1)
    layers = net.layers() if rule_is_bp else net.blocks
    par = {}
    for blk in layers:
        kind = "head" if blk.head else blk.kind
        rec.layer(blk.index, f"{kind}{blk.index}", blk.units, kind)
        pb = blk.param_bytes()
        par[blk.index] = [rec.buffer(blk.index, "weights", "weights", pb["weights"], "persistent")]
        if blk.use_bn:
            par[blk.index].append(rec.buffer(blk.index, "bn_stats", "bn_params", pb["bn"], "persistent",
                                             "replicated"))
    nb = nbytes_of(x.size, SENSOR_BITS)
    inp = rec.buffer(0, "input", "noc_buffers", nb, "sample", "replicated")
    rec.op(0, "send", "sensor input", writes=(inp,), dst_layer=0, nbytes=nb, tag="activation")
    c = net.num_classes
    with open_log(WorkLog()) as log:
        if rule_is_bp:
            a = x
        else:
            par[0].append(rec.buffer(0, "label_embedding", "label_embedding",
                                     nbytes_of(net.embedding.value.size, net.embedding.bits), "persistent",
                                     "replicated"))
            a = net.input_with_label(np.repeat(x, c, axis=0), np.arange(c))
        goods, gbufs = [], []
        for i, blk in enumerate(layers):
            a, cache = blk.forward(a, train=False)
            out = rec.buffer(blk.index, "output", "act_update", nbytes_of(a.size, blk.prec.activation_bits))
            rec.op(blk.index, "fwd", "forward", reads=[inp] + par[blk.index], writes=(out,), work=log.take())
            if not rule_is_bp:
                goods.append(K.goodness(cache["gsrc"], bits=blk.goodness_bits))
                g = rec.buffer(blk.index, "goodness", "act_update", 4 * c, "sample", "reduce")
                rec.op(blk.index, "goodness", "goodness", reads=(out,), writes=(g,), work=log.take())
                gbufs.append(g)
            if i + 1 < len(layers):
                nxt = rec.buffer(layers[i + 1].index, "input", "noc_buffers", nbytes_of(a.size, blk.prec.activation_bits),
                                 "sample", "replicated")
                rec.send(blk.index, layers[i + 1].index, "activation", out, nxt,
                         rec.trace.buffers[out].nbytes, "activation")
                inp = nxt
        k = min(last_k, net.depth)
        last = layers[-1].index
        decided_by = [out]
        if not rule_is_bp:                       # the last k blocks' goodness meet on the last block
            decided_by = [gbufs[-1]]
            for blk, g in zip(layers[-k:-1], gbufs[-k:-1]):
                recv = rec.buffer(last, "goodness_in", "noc_buffers", 4 * c, "sample", "replicated")
                rec.send(blk.index, last, "goodness", g, recv, 4 * c, "goodness")
                decided_by.append(recv)
        scores = a if rule_is_bp else np.stack(goods[-k:], axis=1)[None]      # (1, C) or (1, C, k)
        K.decode(scores)
        rec.op(last, "decode", "decode", reads=tuple(decided_by), work=log.take())
        assert not log.items
    return rec.trace
