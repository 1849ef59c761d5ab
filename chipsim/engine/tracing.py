"""Turns the engine's kernel calls into trace records (``chipsim.trace``).

Kept apart from the rules so the step code reads as the algorithm; each method
here is called right where the engine executes the thing it records, with
sizes taken from the arrays the engine actually produced (``stored_bytes``)
and MACs from the shapes it actually multiplied.

Conventions (see ``chipsim.trace``): a block's kept input ``zq`` is
*replicated* on its slices (every output channel needs the whole input);
outputs, masks and pool indices are split by units; goodness and grad-input
are *reduce* partials. Sizes are per step; the first layer's input is the
8-bit sensor image, stored once per sample (the engine repeats it for the
negative labels in software, a chip need not).
"""
from __future__ import annotations

import numpy as np

from ..trace import TraceRecorder, nbytes_of

SENSOR_BITS = 8


class StepTracer:
    def __init__(self, rec: TraceRecorder, net, optimizer, rule_is_bp: bool, feedback_stored: bool):
        self.rec = rec
        self.on = rec.enabled
        self.net = net
        self.p = net.prec
        self.act_cat = "act_backward" if rule_is_bp else "act_update"
        self.kept = {}     # layer -> dict of buffer ids kept by forward
        self.inp = {}      # layer -> buffer id of its received input
        self.err_in = {}   # layer -> buffer id of the error received from above
        self.dg = {}       # layer -> buffer id of dL/dgoodness (local) or dlogits (head)
        self.params = {}   # layer -> dict of persistent buffer ids
        if not self.on:
            return
        p = self.p
        for blk in net.layers():
            kind = "head" if blk.head else blk.kind
            rec.layer(blk.index, f"{kind}{blk.index}", blk.units, kind)
            pb = blk.param_bytes()
            numel = int(np.prod(blk.w_shape))
            ids = dict(
                weights=rec.buffer(blk.index, "weights", "weights", pb["weights"], "persistent"),
                master=rec.buffer(blk.index, "master", "master_weights", pb["master"], "persistent"),
                opt=rec.buffer(blk.index, "optimizer", "optimizer_state",
                               nbytes_of(optimizer.state_numel(numel), p.update_bits), "persistent"),
                gacc=rec.buffer(blk.index, "grad_acc", "gradients", 4 * numel, "step"),
            )
            if blk.use_bn:
                ids["bn"] = rec.buffer(blk.index, "bn_stats", "bn_params", pb["bn"], "persistent", "replicated")
            if blk.feedback is not None and feedback_stored:
                ids["fb"] = rec.buffer(blk.index, "feedback", "feedback_weights",
                                       nbytes_of(numel, p.weight_bits), "persistent")
            self.params[blk.index] = ids
        if net.embedding is not None:
            e = net.embedding.value
            self.params[0]["emb"] = rec.buffer(0, "label_embedding", "label_embedding",
                                               nbytes_of(e.size, p.update_bits), "persistent", "replicated")
            self.params[0]["emb_gacc"] = rec.buffer(0, "embedding_grad_acc", "gradients", 4 * e.size,
                                                    "step", "replicated")

    # ---------------------------------------------------------------- forward
    def sensor_input(self, x):
        if not self.on:
            return
        nb = nbytes_of(x.size, SENSOR_BITS)
        bid = self.rec.buffer(0, "input", "noc_buffers", nb, "sample", "replicated")
        self.rec.op(0, "send", "sensor input", writes=(bid,), dst_layer=0, nbytes=nb, tag="activation")
        self.inp[0] = bid

    def forward(self, blk, cache, goodness: bool):
        if not self.on:
            return
        rec, l = self.rec, blk.index
        sb = blk.stored_bytes(cache)
        ids = dict(zq=rec.buffer(l, "kept_input", self.act_cat, sb["zq"], "sample", "replicated"),
                   mask=rec.buffer(l, "relu_mask", self.act_cat, sb["mask"]),
                   out=rec.buffer(l, "output", self.act_cat, sb["out"]))
        if "argmax" in sb and blk.pool:
            ids["argmax"] = rec.buffer(l, "pool_index", self.act_cat, sb["argmax"])
        if goodness and "gsrc" in sb:   # the forward also writes the wider copy that goodness squares
            ids["gsrc"] = rec.buffer(l, "goodness_input", self.act_cat, sb["gsrc"])
        par = self.params[l]
        reads = [self.inp[l], par["weights"]] + [par[k] for k in ("bn", "emb") if k in par]
        rows = cache["zq"].shape[0]
        rec.op(l, "fwd", "forward", macs=blk.macs_forward(rows),
               bits=(self.p.activation_bits, self.p.weight_bits),
               reads=reads, writes=tuple(ids[k] for k in ("zq", "mask", "argmax", "out", "gsrc") if k in ids))
        if goodness:
            ids["g"] = rec.buffer(l, "goodness", "act_update", 4 * rows, "sample", "reduce")
            rec.op(l, "goodness", "goodness", macs=cache["out"].size,
                   bits=(blk.goodness_bits, blk.goodness_bits), reads=(ids.get("gsrc", ids["out"]),),
                   writes=(ids["g"],))
        self.kept[l] = ids

    def send_activation(self, src, dst):
        if not self.on:
            return
        nb = self.rec.trace.buffers[self.kept[src]["out"]].nbytes
        bid = self.rec.buffer(dst, "input", "noc_buffers", nb, "sample", "replicated")
        self.rec.send(src, dst, "activation", self.kept[src]["out"], bid, nb, "activation")
        self.inp[dst] = bid

    def loss(self, l, rows):
        """The block's (or head's) loss: goodness -> dL/dgoodness, or logits -> dL/dlogits."""
        if not self.on:
            return
        src = self.kept[l]["g"] if "g" in self.kept[l] else self.kept[l]["out"]
        self.dg[l] = self.rec.buffer(l, "loss_grad", "gradients", 4 * rows, "sample", "replicated")
        self.rec.op(l, "loss", "loss", reads=(src,), writes=(self.dg[l],))

    def goodness_rows(self, blk, kept):
        """Block ``blk``'s own loss has picked the rows it gives an error: the wider copy of the output
        that goodness squared shrinks to them (``kept``, the copy on those rows) at once.

        Only that copy is needed by the goodness gradient alone, so it need not wait, as the other kept
        buffers do (see :meth:`select`), for the block above to say which rows its error reaches.
        """
        if not self.on or "gsrc" not in self.kept[blk.index]:
            return
        rec, l = self.rec, blk.index
        old = self.kept[l]["gsrc"]
        nb = nbytes_of(kept.size, blk.goodness_bits)
        new = rec.buffer(l, "goodness_input_loss_rows", self.act_cat, nb, "sample", "units")
        rec.op(l, "select", "keep the loss's rows of the goodness copy", reads=(old, self.dg[l]), writes=(new,))
        self.kept[l]["gsrc"] = new

    def select(self, blk, cache):
        """Block ``blk`` drops the rows no loss gave an error: its kept buffers shrink to ``cache``'s rows.

        The op reads the full buffers (ending their lifetime) and the errors
        that decided which rows stay, and writes the smaller kept buffers.
        """
        if not self.on:
            return
        rec, l = self.rec, blk.index
        old = self.kept[l]
        sb = blk.stored_bytes(cache)
        new = dict(old)
        # what the backward reads; a wider goodness copy replaces the output there, and was cut to the own
        # loss's rows already (goodness_rows), so it is carried over as it is
        kept = ("zq", "mask", "argmax") + (() if "gsrc" in old else ("out",))
        for name, key, split in (("kept_input", "zq", "replicated"), ("relu_mask", "mask", "units"),
                                 ("output", "out", "units"), ("pool_index", "argmax", "units")):
            if key in old and key in kept:
                new[key] = rec.buffer(l, f"{name}_kept_rows", self.act_cat, sb[key], "sample", split)
        deciders = [b for b in (self.dg.get(l), self.err_in.get(l)) if b is not None]
        rec.op(l, "select", "drop error-free rows", reads=tuple(old[k] for k in kept if k in old) + tuple(deciders),
               writes=tuple(new[k] for k in kept if k in new))
        self.kept[l] = new

    # ---------------------------------------------------------------- backward
    def _error_sources(self, l):
        """What a backward op of layer l reads: its errors, the kept routing (mask, pool index),
        the kept input, and -- for a goodness loss, whose gradient is 2*out/D -- the output (or the
        wider copy that goodness squared)."""
        k = self.kept[l]
        srcs = [b for b in (self.dg.get(l), self.err_in.get(l)) if b is not None]
        squared = [k["gsrc"] if "gsrc" in k else k["out"]] if "g" in k else []
        return srcs + [k[n] for n in ("mask", "argmax", "zq") if n in k] + squared

    def error_down(self, blk, below, rows, use_feedback: bool):
        """Error from block ``blk`` into the block below (grad-input via W, or DF-R's feedback)."""
        if not self.on:
            return
        rec, l, p = self.rec, blk.index, self.p
        w = self.params[l]["fb"] if use_feedback and "fb" in self.params[l] else self.params[l]["weights"]
        reads = self._error_sources(l) + [w]
        nb = nbytes_of(rows * int(np.prod(below.out_shape)), p.gradient_bits)
        err = rec.buffer(l, "error_out", "gradients", nb, "sample", "reduce")
        rec.op(l, "feedback" if use_feedback else "grad_x", "feedback" if use_feedback else "grad_input",
               macs=blk.macs_grad(rows), bits=(p.gradient_bits, p.weight_bits), reads=reads, writes=(err,))
        recv = rec.buffer(below.index, "error_in", "gradients", nb, "sample", "units")
        rec.send(l, below.index, "error", err, recv, nb, "error")
        self.err_in[below.index] = recv

    def grad_weight(self, blk, rows):
        if not self.on:
            return
        p, l = self.p, blk.index
        self.rec.op(l, "grad_w", "grad_weight", macs=blk.macs_grad(rows), bits=(p.activation_bits, p.gradient_bits),
                    reads=self._error_sources(l), writes=(self.params[l]["gacc"],))

    def embedding_grad(self, blk, rows):
        if not self.on:
            return
        p = self.p
        self.rec.op(0, "grad_x", "label_embedding_grad", macs=blk.macs_grad(rows),
                    bits=(p.gradient_bits, p.weight_bits),
                    reads=self._error_sources(0) + [self.params[0]["weights"]],
                    writes=(self.params[0]["emb_gacc"],))

    def update(self, blk):
        if not self.on:
            return
        par = self.params[blk.index]
        numel = int(np.prod(blk.w_shape))
        self.rec.op(blk.index, "update", "optimizer_update", macs=numel, bits=(self.p.update_bits,) * 2,
                    scope="step", reads=(par["gacc"], par["opt"], par["master"]),
                    writes=(par["master"], par["weights"], par["opt"]))
        if blk.index == 0 and "emb" in par:
            self.rec.op(0, "update", "label_embedding_update", macs=self.net.embedding.value.size,
                        bits=(self.p.update_bits,) * 2, scope="step", reads=(par["emb_gacc"], par["emb"]),
                        writes=(par["emb"],))
