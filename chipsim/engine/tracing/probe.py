"""The traces of CFF's second stage, the linear probe (``training.probe``): a phase of its own, "probe".

After every epoch of stage 1 the trainer encodes the whole training set on the frozen encoder and
trains the probe on those features for ``learning.head_epochs`` passes (``LinearProbe.fit``). That is
work the chip executes, so it is costed as the training step is (issue 23, defect 8): the engine runs
one batch of each kind of work under a work log, and the chip model costs the two traces on the
training's mapping (``runner.cost_probe`` scales them to an epoch):

* ``encode``: ``PROBE_BATCH`` training images through the frozen encoder (eval mode, the neutral
  label), the last layer's output sent to the probe's core, its token mean there -- what
  ``LinearProbe.features`` runs on every training image once per epoch;
* ``step``: one probe training step on ``PROBE_BATCH`` of those features (forward with batch
  norm, cross-entropy, weight gradient, Adam update and requantisation: ``LinearProbe.step``), run
  ``ceil(M / PROBE_BATCH)`` times per pass, ``head_epochs`` passes per epoch.

Both run on copies (the probe's layer, a fresh optimizer and RNG), so tracing them changes nothing the
training computes. The features of the whole training set (M token means, float32, as the engine holds
them) must be kept somewhere between the two; the traces hold one batch's, and ``feature_bytes`` states
the whole set's, which the chip's SRAM ledger does not carry.
"""
from __future__ import annotations

import copy

import numpy as np

from ...trace import TraceRecorder, nbytes_of
from ...trace.roles import Role
from ...trace.work import WorkLog, open_log
from ..training.probe import PROBE_BATCH, PROBE_LR
from .inference import InferenceRecorder
from .params import register_layer

PHASE = "probe"


class _Float32Gradient:
    """The probe's weight gradient as ``LinearProbe.step`` holds it (float32, no accumulator store)."""

    def __init__(self, values: int):
        self.nbytes = 4 * int(values)


def trace_encode(probe, x):
    """Trace of encoding images ``x`` (a batch) for the probe: encoder passes, the send, the token mean.
    Returns (trace, features (M, E))."""
    net, head = probe.net, probe.layer
    with open_log(WorkLog()) as log:
        r = InferenceRecorder(net, list(net.blocks) + [head], x, log)
        r.rec.trace.samples = len(x)                # one sample-scope instance per image of the batch
        a = net.input_with_label(x, None)
        out = None
        for i, blk in enumerate(net.blocks):
            a, cache = blk.forward(a, train=False)
            out = r.forward(blk, a, cache)
            if i + 1 < len(net.blocks):
                nxt = net.blocks[i + 1].trace_parts()[0].index
                r.inp[nxt] = r.send(blk.index, nxt, out)
        feat_in = r.send(net.blocks[-1].index, head.index, out, name="features_in")
        f = head.pooled(a)
        stored = r.rec.buffer(head.index, "probe_features", "act_update", nbytes_of(f.size, 32), "sample",
                              "replicated", f.size, Role.ACTIVATION)
        r.rec.op(head.index, "fwd", "token mean (probe features)", reads=(feat_in,), writes=(stored,),
                 work=log.take())
    return r.rec.trace, f


def trace_step(probe, features, labels):
    """Trace of one probe training step on ``features`` (M, E) with ``labels``, on a copy of the probe."""
    twin = copy.copy(probe)
    twin.layer = layer = copy.deepcopy(probe.layer)
    key = layer.param_tensors()[0][1]
    opt = twin.new_optimizer(key)
    rec = TraceRecorder(samples=len(features))
    par = register_layer(rec, layer, opt, {key: _Float32Gradient(layer.master.value.size)})[layer.index]
    marks = []
    with open_log(WorkLog()) as log:
        twin.step(np.asarray(features, np.float32), np.asarray(labels), opt, PROBE_LR,
                  np.random.default_rng([probe.seed, 9]), key=key, marks=marks)
        items = log.take()
    fwd, loss, grad, upd = (items[a:b] for a, b in zip([0] + marks[:-1], marks))
    l = layer.index
    f = np.asarray(features)
    inp = rec.buffer(l, "probe_features", "act_update", nbytes_of(f.size, 32), "sample", "replicated", f.size,
                     Role.ACTIVATION)
    rec.op(l, "send", "probe features", writes=(inp,), dst_layer=l, nbytes=nbytes_of(f.size, 32), tag="activation")
    _, cache = twin.logits(f[:1], train=False)      # shapes of what the forward keeps, per row (no work logged)
    rows = len(f)
    zq = rec.buffer(l, "kept_input", "act_update", nbytes_of(rows * cache["zq"][0].size, layer.prec.activation_bits),
                    "sample", "replicated", rows * cache["zq"][0].size, Role.KEPT_INPUT)
    n_out = rows * cache["out"][0].size
    out = rec.buffer(l, "output", "act_update", 4 * n_out, "sample", "units", n_out, Role.OUTPUT)
    rec.op(l, "fwd", "probe forward", reads=[inp, par["weights"]] + ([par["bn"]] if "bn" in par else []),
           writes=(zq, out), work=fwd)
    dg = rec.buffer(l, "loss_grad", "gradients", 4 * n_out, "sample", "replicated", n_out, Role.LOSS_GRAD)
    rec.op(l, "loss", "probe loss", reads=(out,), writes=(dg,), work=loss)
    rec.op(l, "grad_w", "probe grad_weight", reads=(dg, zq), writes=(par["gacc"],), work=grad)
    rec.op(l, "update", "probe update", scope="step", reads=(par["gacc"], par["opt"], par["master"]),
           writes=(par["master"], par["weights"], par["opt"]), work=upd)
    return rec.trace


def trace_probe(probe, x, y):
    """(encode trace, step trace) of the probe phase, on the first ``PROBE_BATCH`` images of ``x``."""
    xb, yb = x[:PROBE_BATCH], np.asarray(y)[:PROBE_BATCH]
    enc, f = trace_encode(probe, xb)
    return enc, trace_step(probe, f, yb)
