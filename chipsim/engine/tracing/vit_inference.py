"""The trace of one inference on a vision transformer: each layer as its two sub-layers.

The counterpart of ``inference.trace_inference`` (which dispatches here for a
``TransformerNetwork``), with the same decoding modes:

* **goodness** (FF, SymBa, DF): the sample under each of the C label patches
  (C rows), the token-mean goodness of the last k layers summed, the largest
  wins;
* **one pass and a head**: BP's average-pooling head, or the linear probe of
  a local rule (CFF's only mode; FF's with ``learning.inference: head``,
  under the zero label patch): the last layer's output is sent to the head's
  core, which averages the tokens and classifies.

As in training, a layer's attention half and MLP half are separate layers of
the trace (``vit_block``), so the inference runs on the cores the training
step was mapped to.
"""
from __future__ import annotations

import numpy as np

from ... import kernels as K
from ...trace import TraceRecorder, nbytes_of
from ...trace.roles import Role
from ...trace.work import WorkLog, open_log
from .inference import _InferenceRecorder
from .step import SENSOR_BITS


class _VitRecorder(_InferenceRecorder):
    """``_InferenceRecorder`` whose transformer layers are two trace layers each; the head is a plain layer."""

    def __init__(self, net, x, log, top=None):
        self.rec, self.log, self.par = TraceRecorder(samples=1), log, {}
        for blk in net.blocks:
            masters = blk.masters()
            for part in blk.parts:
                self.rec.layer(part.index, part.name, part.units, part.kind)
                self.par[part.index] = []
                for shared, how, sfx in ((False, "units", ""), (True, "replicated", "_shared")):
                    names = [n for n in part.names if (n in part.shared) == shared]
                    self.par[part.index].append(self.rec.buffer(
                        part.index, "weights" + sfx, "weights", blk.param_bytes(names)["weights"], "persistent", how,
                        sum(masters[n].value.size for n in names), Role.WEIGHTS))
        b0 = net.blocks[0]
        a0 = b0.parts[0].index
        if net.label_patches is not None:
            self.par[a0].append(self.rec.buffer(a0, "label_patches", "label_embedding",
                                                nbytes_of(net.label_patches.size, b0.layer.embed.in_bits),
                                                "persistent", "replicated", net.label_patches.size,
                                                Role.LABEL_EMBEDDING))
        if top is not None:
            self.rec.layer(top.index, f"head{top.index}", top.units, "head")
            self.par[top.index] = [self.rec.buffer(top.index, "weights", "weights", top.param_bytes()["weights"],
                                                   "persistent", elements=top.master.value.size, role=Role.WEIGHTS)]
            if top.use_bn:
                self.par[top.index].append(self.rec.buffer(top.index, "bn_stats", "bn_params",
                                                           top.param_bytes()["bn"], "persistent", "replicated",
                                                           top.running_mean.size + top.running_var.size,
                                                           Role.NORM_PARAMS))
        nb = nbytes_of(x.size, SENSOR_BITS)
        self.inp = {a0: self.rec.buffer(a0, "input", "noc_buffers", nb, "sample", "replicated", x.size, Role.SENSOR)}
        self.rec.op(a0, "send", "sensor input", writes=(self.inp[a0],), dst_layer=a0, nbytes=nb, tag="activation")

    def block(self, blk, cache):
        """A transformer layer's forward (just run): its attention op, the send of z, its MLP op."""
        a, m = blk.parts
        items, (cut,) = self.log.take(), blk.work_cuts
        kb = blk.kept_buffers(cache)
        z = self.rec.buffer(a.index, "attention_output", "act_update", kb["z"], "sample", "units", kb["stream"],
                            Role.OUTPUT)
        self.rec.op(a.index, "fwd", "attention", reads=[self.inp[a.index]] + self.par[a.index], writes=(z,),
                    work=items[:cut])
        z_in = self.send(a.index, m.index, z)
        out = self.rec.buffer(m.index, "output", "act_update", kb["out"], "sample", "units", kb["stream"],
                              Role.OUTPUT)
        self.rec.op(m.index, "fwd", "mlp", reads=[z_in] + self.par[m.index], writes=(out,), work=items[cut:])
        return out


def trace_vit_inference(net, x, objective, last_k: int, head=None):
    """Trace of the inference of one sample ``x`` (1, C, H, W) on a ``TransformerNetwork``: ``objective``
    None is BP (its head); ``head`` a local rule's probe (one pass); else goodness decoding (C passes)."""
    one_pass = objective is None or head is not None
    top = (net.head if head is None else head.layer) if one_pass else None
    with open_log(WorkLog()) as log:
        r = _VitRecorder(net, x, log, top)
        a = net.input_with_label(x, None) if one_pass else objective.inference_rows(net, x)
        scores, bufs = [], []
        blocks = net.blocks
        for i, blk in enumerate(blocks):
            a, cache = blk.forward(a, train=False)
            out = r.block(blk, cache)
            if not one_pass:
                scores.append(objective.block_scores(blk, cache, 1))
                bufs.append(r.score(blk, out, scores[-1].size))
            if i + 1 < len(blocks):
                nxt = blocks[i + 1].parts[0].index
                r.inp[nxt] = r.send(blk.index, nxt, out)
        last = blocks[-1].index
        if one_pass:
            feat = r.send(last, top.index, out, name="features_in")
            z, _ = top.forward(a, train=False)
            logits = r.forward(top, z, inputs=[feat])
            K.decode(z)
            r.decide(top.index, [logits])
            return r.rec.trace
        k = min(last_k, net.depth)
        decided_by = [bufs[-1]] + [r.send(blk.index, last, g, "goodness", "scores_in")
                                   for blk, g in zip(blocks[-k:-1], bufs[-k:-1])]
        K.decode(np.stack(scores[-k:], axis=2))
        r.decide(last, decided_by)
        return r.rec.trace
