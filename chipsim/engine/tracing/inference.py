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


def evaluate(net, objective, x, y, last_k: int, head=None):
    """Test accuracy, per-block accuracy (local rules) and the one-pass head's (if any). ``objective``
    None: BP. Returns a dict."""
    if objective is None:
        pred = K.decode(bp_logits(net, x))
        return {"accuracy": float((pred == y).mean()), "per_block": None, "head_accuracy": None}
    g = block_scores(net, objective, x)
    k = min(last_k, net.depth)
    pred = K.decode(g[:, :, -k:])
    per_block = [float((g[:, :, l].argmax(axis=1) == y).mean()) for l in range(net.depth)]
    head_acc = None
    if head is not None:
        head_acc = float((head.predict(neutral_features(net, x, head.blocks)) == y).mean())
    return {"accuracy": float((pred == y).mean()), "per_block": per_block, "head_accuracy": head_acc}


class _InferenceRecorder:
    """Records an inference: the weights each layer reads, what it receives and sends, and its work."""

    def __init__(self, layers, x, log):
        self.rec, self.log = TraceRecorder(samples=1), log
        self.par = {}
        for blk in layers:
            kind = "head" if blk.head else blk.kind
            self.rec.layer(blk.index, f"{kind}{blk.index}", blk.units, kind)
            pb = blk.param_bytes()
            self.par[blk.index] = [self.rec.buffer(blk.index, "weights", "weights", pb["weights"], "persistent",
                                                   elements=blk.master.value.size, role=Role.WEIGHTS)]
            if blk.use_bn:
                self.par[blk.index].append(self.rec.buffer(blk.index, "bn_stats", "bn_params", pb["bn"],
                                                           "persistent", "replicated",
                                                           blk.running_mean.size + blk.running_var.size,
                                                           Role.NORM_PARAMS))
        nb = nbytes_of(x.size, SENSOR_BITS)
        self.inp = {layers[0].index: self.rec.buffer(layers[0].index, "input", "noc_buffers", nb, "sample",
                                                     "replicated", x.size, Role.SENSOR)}
        self.rec.op(layers[0].index, "send", "sensor input", writes=(self.inp[layers[0].index],),
                    dst_layer=layers[0].index, nbytes=nb, tag="activation")

    def label_table(self, net):
        size = net.embedding.value.size if net.embedding is not None else net.label_table.size
        self.par[0].append(self.rec.buffer(0, "label_embedding", "label_embedding",
                                           nbytes_of(size, net.prec.update_bits), "persistent", "replicated",
                                           size, Role.LABEL_EMBEDDING))

    def forward(self, blk, a, inputs=None):
        """The layer's forward, reading ``inputs`` (default: what it received) and its parameters."""
        bits = 32 if blk.head else blk.prec.activation_bits       # logits stay float32
        out = self.rec.buffer(blk.index, "output", "act_update", nbytes_of(a.size, bits), elements=a.size,
                              role=Role.OUTPUT)
        inputs = [self.inp[blk.index]] if inputs is None else list(inputs)
        self.rec.op(blk.index, "fwd", "forward", reads=inputs + self.par[blk.index], writes=(out,),
                    work=self.log.take())
        return out

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

    ``objective`` None is BP (one pass and its head); ``head`` (an ``OnePassHead``) decides by the
    one-pass head instead of the objective's scores.
    """
    if getattr(net, "is_transformer", False):       # two sub-layers per transformer layer
        from .vit_inference import trace_vit_inference
        return trace_vit_inference(net, x, objective, last_k, head)
    with open_log(WorkLog()) as log:
        if objective is None or head is not None:
            return _one_pass(net, x, head, log)
        layers = net.blocks
        r = _InferenceRecorder(layers, x, log)
        if net.label_encoding in ("learned", "random"):
            r.label_table(net)
        a, scores, bufs = objective.inference_rows(net, x), [], []
        for i, blk in enumerate(layers):
            a, cache = blk.forward(a, train=False)
            out = r.forward(blk, a)
            scores.append(objective.block_scores(blk, cache, 1))
            bufs.append(r.score(blk, out, scores[-1].size))
            if i + 1 < len(layers):
                r.inp[layers[i + 1].index] = r.send(blk.index, layers[i + 1].index, out)
        k = min(last_k, net.depth)
        last = layers[-1].index
        decided_by = [bufs[-1]] + [r.send(blk.index, last, g, "goodness", "scores_in")   # meet on the last block
                                   for blk, g in zip(layers[-k:-1], bufs[-k:-1])]
        K.decode(np.stack(scores[-k:], axis=2))
        r.decide(last, decided_by)
        return r.rec.trace


def _one_pass(net, x, head, log):
    """BP's forward and head, or a local rule's pass under the neutral label and its one-pass head."""
    blocks = net.blocks if head is None else net.blocks[:max(head.blocks) + 1]
    top = net.head if head is None else head.layer
    features = (blocks[-1].index,) if head is None else head.blocks
    r = _InferenceRecorder(blocks + [top], x, log)
    a = x
    if head is not None:
        a = net.input_with_label(x, None)
        if net.label_encoding in ("learned", "random"):
            r.label_table(net)
    feats, feat_in = [], []
    for i, blk in enumerate(blocks):
        a, _ = blk.forward(a, train=False)
        out = r.forward(blk, a)
        if i + 1 < len(blocks):
            r.inp[blocks[i + 1].index] = r.send(blk.index, blocks[i + 1].index, out)
        if blk.index in features:
            feats.append(a.reshape(len(a), -1))
            feat_in.append(r.send(blk.index, top.index, out, name="features_in"))
    z, _ = top.forward(np.concatenate(feats, axis=1), train=False)
    out = r.forward(top, z, inputs=feat_in)
    K.decode(z)
    r.decide(top.index, [out])
    return r.rec.trace
