"""Inference: decoding test inputs, and the trace of one costed inference on the chip.

Three ways to decide a class, each what the engine executes:

* **goodness** (FF, SymBa, DF): each input under every one of the C labels,
  so C rows through the blocks (C passes); the goodness of the last k blocks
  is summed and the largest wins;
* **class groups** (CwC): one pass; the class-group goodness of the last k
  blocks is summed and the largest wins;
* **head** (``learning.inference: head``, and BP): one pass under the
  neutral label (or none), a linear classifier on the last blocks' activity.

The rule's objective (``objectives``) says which rows an input becomes and
what each block scores. :func:`trace_inference` records one test sample's
inference, so ``chipsim run`` costs an inference beside a training step.
"""
from __future__ import annotations

import numpy as np

from ... import kernels as K
from ...trace import TraceRecorder, nbytes_of
from ...trace.roles import Role
from ...trace.work import WorkLog, open_log
from ..layers.head import neutral_features
from .params import register_layer
from .step import SENSOR_BITS


def block_scores(net, objective, x, batch: int = 256):
    """Class scores of every block: array (N, C, L). Eval-mode BN."""
    out = np.empty((x.shape[0], net.num_classes, net.depth), np.float32)
    for s in range(0, x.shape[0], batch):
        xb = x[s:s + batch]
        a = objective.inference_rows(net, xb)
        for l, blk in enumerate(net.blocks):
            a, cache = blk.forward(a, train=False)
            out[s:s + len(xb), :, l] = objective.block_scores(blk, cache, len(xb))
    return out


def bp_logits(net, x, batch: int = 512):
    outs = []
    for s in range(0, x.shape[0], batch):
        a = x[s:s + batch]
        for layer in net.layers():
            a, _ = layer.forward(a, train=False)
        outs.append(a)
    return np.concatenate(outs)


def decide(scores, last_k: int):
    """Class decisions from every block's class scores (N, C, L): their sum over the last ``last_k`` blocks
    (clipped to the depth), argmax -- the goodness and the class-group (CwC) decoding."""
    k = min(max(int(last_k), 1), scores.shape[2])
    return K.decode(scores[:, :, -k:])


def evaluate(net, objective, x, y, last_k: int, head=None):
    """Test accuracy, per-block accuracy (local rules) and the one-pass head's (if any). ``objective``
    None: BP. Returns a dict."""
    if objective is None:
        pred = K.decode(bp_logits(net, x))
        return {"accuracy": float((pred == y).mean()), "per_block": None, "head_accuracy": None}
    g = block_scores(net, objective, x)
    pred = decide(g, last_k)
    per_block = [float((g[:, :, l].argmax(axis=1) == y).mean()) for l in range(net.depth)]
    head_acc = None
    if head is not None:
        head_acc = float((head.predict(neutral_features(net, x, head.blocks)) == y).mean())
    return {"accuracy": float((pred == y).mean()), "per_block": per_block, "head_accuracy": head_acc}


class InferenceRecorder:
    """Records an inference: the weights each trace layer reads, what it receives and sends, and its work.

    Layers are recorded through the layer protocol (``layers.protocol``): a layer of several parts (a
    transformer layer's attention and MLP halves) is an op per part, with a send between them."""

    def __init__(self, net, layers, x, log):
        self.rec, self.log = TraceRecorder(samples=1), log
        self.par = {}
        for blk in layers:
            for index, ids in register_layer(self.rec, blk).items():
                self.par[index] = list(ids.values())
        entry = layers[0].trace_parts()[0].index
        label = net.label_input()
        if label is not None:                       # the label table the first layer reads with the image
            name, nb, n = label
            self.par[entry].append(self.rec.buffer(entry, name, "label_embedding", nb, "persistent", "replicated",
                                                   n, Role.LABEL_EMBEDDING))
        nb = nbytes_of(x.size, SENSOR_BITS)
        self.inp = {entry: self.rec.buffer(entry, "input", "noc_buffers", nb, "sample", "replicated", x.size,
                                           Role.SENSOR)}
        self.rec.op(entry, "send", "sensor input", writes=(self.inp[entry],), dst_layer=entry, nbytes=nb,
                    tag="activation")

    def forward(self, blk, out, cache, inputs=None):
        """The layer's forward (just run, ``out`` its output): one op per part, reading ``inputs`` (default:
        what its first part received) and the part's parameters, each part's output sent to the next part.
        Returns the buffer of the layer's output."""
        parts = blk.trace_parts()
        items = self.log.take()
        cuts = (0,) + tuple(blk.work_cuts) + (len(items),)
        src = [self.inp[parts[0].index]] if inputs is None else list(inputs)
        for j, (part, (nb, n)) in enumerate(zip(parts, blk.trace_outputs(out, cache))):
            last = j == len(parts) - 1
            buf = self.rec.buffer(part.index, "output" if last else f"{part.op_name}_output", "act_update", nb,
                                  "sample", "units", n, Role.OUTPUT)
            self.rec.op(part.index, "fwd", part.op_name, reads=src + self.par[part.index], writes=(buf,),
                        work=items[cuts[j]:cuts[j + 1]])
            if not last:
                src = [self.send(part.index, parts[j + 1].index, buf)]
        return buf

    def score(self, blk, src, n):
        g = self.rec.buffer(blk.index, "scores", "act_update", 4 * n, "sample", "reduce", n, Role.GOODNESS)
        self.rec.op(blk.index, "goodness", "class scores", reads=(src,), writes=(g,), work=self.log.take())
        return g

    def send(self, src_layer, dst_layer, buf, tag="activation", name="input"):
        sent = self.rec.trace.buffers[buf]
        nb = sent.nbytes
        recv = self.rec.buffer(dst_layer, name, "noc_buffers", nb, "sample", "replicated", sent.elements, Role.RECEIVED)
        self.rec.send(src_layer, dst_layer, tag, buf, recv, nb, tag)
        return recv

    def decide(self, layer, reads):
        self.rec.op(layer, "decode", "decode", reads=tuple(reads), work=self.log.take())
        assert not self.log.items, self.log.items


def trace_inference(net, x, objective, last_k: int, head=None):
    """Trace of the inference of one sample ``x`` (shape (1, C, H, W)): every kernel the engine runs.

    ``objective`` None is BP (one pass and its head); ``head`` (an ``OnePassHead`` or ``LinearProbe``)
    decides by the one-pass head instead of the objective's scores; else goodness decoding (C rows)."""
    one_pass = objective is None or head is not None
    if one_pass:
        blocks = net.blocks if head is None else net.blocks[:max(head.blocks) + 1]
        top = net.head if head is None else head.layer
        features = (blocks[-1].index,) if head is None else head.blocks
    else:
        blocks, top, features = net.blocks, None, ()
    with open_log(WorkLog()) as log:
        r = InferenceRecorder(net, blocks + ([top] if one_pass else []), x, log)
        a = net.input_with_label(x, None) if one_pass else objective.inference_rows(net, x)
        scores, bufs, feats, feat_in = [], [], [], []
        for i, blk in enumerate(blocks):
            a, cache = blk.forward(a, train=False)
            out = r.forward(blk, a, cache)
            if not one_pass:
                scores.append(objective.block_scores(blk, cache, 1))
                bufs.append(r.score(blk, out, scores[-1].size))
            if i + 1 < len(blocks):
                nxt = blocks[i + 1].trace_parts()[0].index
                r.inp[nxt] = r.send(blk.index, nxt, out)
            if blk.index in features:
                feats.append(a.reshape(len(a), -1))
                feat_in.append(r.send(blk.index, top.index, out, name="features_in"))
        if one_pass:
            z, cache = top.forward(np.concatenate(feats, axis=1), train=False)
            logits = r.forward(top, z, cache, inputs=feat_in)
            K.decode(z)
            r.decide(top.index, [logits])
            return r.rec.trace
        k = min(last_k, net.depth)
        last = blocks[-1].index
        decided_by = [bufs[-1]] + [r.send(blk.index, last, g, "goodness", "scores_in")   # meet on the last block
                                   for blk, g in zip(blocks[-k:-1], bufs[-k:-1])]
        decide(np.stack(scores, axis=2), last_k)
        r.decide(last, decided_by)
        return r.rec.trace
