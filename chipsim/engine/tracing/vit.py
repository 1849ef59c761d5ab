"""The trace of a step on a vision transformer: each layer as its two sub-layers (``vit_block.SubLayer``).

``StepTracer`` records a conv/dense block as one layer of the trace; a
transformer layer is two (its attention half and its MLP half, each with cores
of its own, split by heads and by MLP hidden units: see ``vit_block``). This
subclass records them where they differ and leaves everything else -- the
losses, goodness, the BP head, the optimizer steps' bookkeeping -- to
``StepTracer``, keyed as there by block index: a block's MLP sub-layer *is*
trace layer ``blk.index``, so its output, its loss and the errors it receives
are where ``StepTracer`` looks for them.

Per transformer layer and sample:

* forward: ``attention`` (reads the received tokens and the attention half's
  tensors; writes what its backward keeps -- LN1's state, the Q/K/V input
  codes, Q/K/V, the attention matrix, the output projection's input -- the
  projection's full-size partial, reduced over the head slices, and the
  attention output ``z``) -> send ``z`` to every MLP slice -> ``mlp`` (writes
  LN2's state, FC1's input, the pre-activations GELU's backward reads, FC2's
  input, FC2's partial, the output and its token mean);
* backward (``grad_w`` ops, the whole backward of each half: a transformer
  layer's error to the input shares every product with its weight gradient):
  ``mlp backward`` (reads the loss's error and the MLP half's kept buffers;
  writes its gradient accumulators, FC1's input-error partial, the error at
  ``z``) -> send it to every head slice -> ``attention backward`` (its
  accumulators, Q/K/V's input-error partial and, under BP, the error at the
  layer input, which ``error_down`` then sends to the layer below);
* update: one ``update`` op per sub-layer.

Which buffers are split by units and which are replicated on a split
sub-layer is ``vit_block``'s table (``TransformerBlock.kept_buffers``); the
work inside each op carries its own split (``chipsim.trace.work``).
"""
from __future__ import annotations

from ...trace import nbytes_of
from ...trace.roles import Role
from .step import SENSOR_BITS, StepTracer
from ..layers.vit.block import SubLayer


def _is_vit(blk) -> bool:
    return getattr(blk, "parts", None) is not None


class VitStepTracer(StepTracer):
    def __init__(self, rec, net, optimizer, accumulators: dict, rule_is_bp: bool, extra_layers=()):
        self.kept_attn, self.kept_mlp, self.stream, self.err_out, self.again = {}, {}, {}, {}, {}
        super().__init__(rec, net, optimizer, accumulators, rule_is_bp, extra_layers)
        patches = getattr(net, "label_patches", None)
        if self.on and patches is not None:               # FF's fixed label patches, where the patches enter
            b0 = net.blocks[0]
            a0 = b0.parts[0].index
            self.params[a0]["labels"] = rec.buffer(a0, "label_patches", "label_embedding",
                                                   nbytes_of(patches.size, b0.layer.embed.in_bits),
                                                   "persistent", "replicated", patches.size,
                                                   Role.LABEL_EMBEDDING)

    # ---------------------------------------------------------------- layers and their tensors
    def _register(self, blk, optimizer, accumulators) -> None:
        if not _is_vit(blk):
            return super()._register(blk, optimizer, accumulators)
        rec, masters = self.rec, blk.masters()
        for part in blk.parts:
            rec.layer(part.index, part.name, part.units, part.kind)
            ids = {}
            for shared, how, sfx in ((False, "units", ""), (True, "replicated", "_shared")):
                names = [n for n in part.names if (n in part.shared) == shared]
                pb = blk.param_bytes(names)
                keys = [f"w{blk.index}.{n}" for n in names]
                n_w = sum(masters[n].value.size for n in names)
                ids["weights" + sfx] = rec.buffer(part.index, "weights" + sfx, "weights", pb["weights"],
                                                  "persistent", how, n_w, Role.WEIGHTS)
                ids["master" + sfx] = rec.buffer(part.index, "master" + sfx, "master_weights", pb["master"],
                                                 "persistent", how, n_w, Role.MASTER)
                ids["opt" + sfx] = rec.buffer(part.index, "optimizer" + sfx, "optimizer_state",
                                              sum(optimizer.state_bytes(k) for k in keys), "persistent", how,
                                              sum(optimizer.state_values(k) for k in keys), Role.OPTIMIZER_STATE)
                ids["gacc" + sfx] = rec.buffer(part.index, "grad_acc" + sfx, "gradients",
                                               sum(accumulators[k].nbytes for k in keys), "step", how, n_w,
                                               Role.GRADIENT_ACC)
            self.params[part.index] = ids

    def _weights(self, layer) -> list:
        par = self.params[layer]
        return [par[k] for k in ("weights", "weights_shared", "labels") if k in par]

    def _entry(self, block: int) -> int:
        """The trace layer that receives block ``block``'s input (its attention sub-layer; the head itself)."""
        blocks = self.net.blocks
        return blocks[block].parts[0].index if block < len(blocks) and _is_vit(blocks[block]) else block

    @staticmethod
    def _error_in_split(below) -> str:
        """An error arriving at a transformer layer's output is read whole by every FC2 slice."""
        return "replicated" if _is_vit(below) else "units"

    # ---------------------------------------------------------------- forward
    def sensor_input(self, x):
        if not self.on:
            return
        entry = self._entry(0)
        nb = nbytes_of(x.size, SENSOR_BITS)
        bid = self.rec.buffer(entry, "input", "noc_buffers", nb, "sample", "replicated", x.size, Role.SENSOR)
        self.rec.op(entry, "send", "sensor input", writes=(bid,), dst_layer=entry, nbytes=nb, tag="activation")
        self.inp[0] = bid

    def send_activation(self, src, dst):
        if not self.on:
            return
        entry = self._entry(dst)
        sent = self.rec.trace.buffers[self.kept[src]["out"]]
        nb = sent.nbytes
        bid = self.rec.buffer(entry, "input", "noc_buffers", nb, "sample", "replicated", sent.elements,
                              Role.RECEIVED)
        self.rec.send(src, entry, "activation", self.kept[src]["out"], bid, nb, "activation")
        self.inp[dst] = bid

    def forward(self, blk, cache, goodness: bool):
        """A transformer layer's forward. Under recompute (``cache["kept"]``: the sizes the second pass's
        buffers take) it keeps nothing for the backward: each half's core keeps what it received."""
        if not _is_vit(blk):
            return super().forward(blk, cache, goodness)
        if not self.on:
            return
        rec, l, cat = self.rec, blk.index, self.act_cat
        a, m = blk.parts
        items, (cut,) = self.log.take(), blk.work_cuts
        again = "kept" in cache
        kb = cache["kept"] if again else blk.kept_buffers(cache)
        n = kb["stream"]
        ka = [] if again else self._kept(a.index, kb["attn"])
        partial = rec.buffer(a.index, "proj_partial", cat, kb["attn_partial"], "sample", "reduce", n, Role.PARTIAL)
        z = rec.buffer(a.index, "attention_output", cat, kb["z"], "sample", "units", n, Role.OUTPUT)
        rec.op(a.index, "fwd", "attention", work=items[:cut], reads=[self.inp[l]] + self._weights(a.index),
               writes=tuple(ka) + (partial, z))
        z_in = rec.buffer(m.index, "input", "noc_buffers", kb["z"], "sample", "replicated", n, Role.RECEIVED)
        rec.send(a.index, m.index, "attention output", z, z_in, kb["z"], "activation")
        km = [] if again else self._kept(m.index, kb["mlp"])
        partial = rec.buffer(m.index, "fc2_partial", cat, kb["mlp_partial"], "sample", "reduce", n, Role.PARTIAL)
        out = rec.buffer(m.index, "output", cat, kb["out"], "sample", "units", n, Role.OUTPUT)
        pooled = rec.buffer(m.index, "token_mean", cat, kb["pooled"], "sample", "units", kb["pooled_values"],
                            Role.GOODNESS_INPUT)
        rec.op(m.index, "fwd", "mlp", work=items[cut:], reads=[z_in] + self._weights(m.index),
               writes=tuple(km) + (partial, out, pooled))
        self.kept_attn[l], self.kept_mlp[l] = ka, km
        self.kept[l] = dict(out=out, gsrc=pooled)
        self.stream[l] = cache["out"].size
        self.again[l] = (kb, z_in) if again else None

    def _kept(self, layer, table) -> list:
        """Buffers of a half's kept tensors (``TransformerBlock.kept_buffers``'s (name, bytes, split, values))."""
        return [self.rec.buffer(layer, name, self.act_cat, nb, "sample", how, n, Role.ACTIVATION)
                for name, nb, how, n in table]

    # ---------------------------------------------------------------- backward
    def grad_weight(self, blk, losses):
        """A transformer layer's backward, the MLP half then the attention half. Under recompute each half
        reads what its core kept (z; the layer input) and writes its recomputed buffers, which live while
        its backward runs."""
        if not _is_vit(blk):
            return super().grad_weight(blk, losses)
        if not self.on:
            return
        rec, l, cat = self.rec, blk.index, self.act_cat
        a, m = blk.parts
        items, (cut,) = self.log.take(), blk.work_cuts
        nb = nbytes_of(self.stream[l], self.p.gradient_bits)
        k = self.kept[l]
        squared = [k["gsrc"]] if "g" in k and l in losses else []      # a goodness gradient reads the token mean
        again = self.again.pop(l, None)
        if again is None:
            reads_m, reads_a, temp_m, temp_a = self.kept_mlp.pop(l), self.kept_attn.pop(l), [], []
        else:
            kb, z_in = again
            reads_m, reads_a = [z_in], [self.inp[l]]
            temp_m, temp_a = self._kept(m.index, kb["mlp"]), self._kept(a.index, kb["attn"])
        par, n = self.params[m.index], self.stream[l]
        partial = rec.buffer(m.index, "fc1_grad_partial", "gradients", nb, "sample", "reduce", n, Role.ERROR)
        gz = rec.buffer(m.index, "error_out", "gradients", nb, "sample", "units", n, Role.ERROR)
        rec.op(m.index, "grad_w", "mlp backward" + (" (recompute)" if again else ""), work=items[:cut],
               reads=self._deciders(l, losses) + squared + reads_m + self._weights(m.index),
               writes=tuple(temp_m) + (par["gacc"], par["gacc_shared"], partial, gz))
        gz_in = rec.buffer(a.index, "error_in", "gradients", nb, "sample", "replicated", n, Role.ERROR)
        rec.send(m.index, a.index, "error", gz, gz_in, nb, "error")
        par = self.params[a.index]
        writes = temp_a + [par["gacc"], par["gacc_shared"],
                           rec.buffer(a.index, "qkv_grad_partial", "gradients", nb, "sample", "reduce", n, Role.ERROR)]
        if blk.sends_error:
            self.err_out[l] = rec.buffer(a.index, "error_out", "gradients", nb, "sample", "units", n, Role.ERROR)
            writes.append(self.err_out[l])
        rec.op(a.index, "grad_w", "attention backward" + (" (recompute)" if again else ""), work=items[cut:],
               reads=[gz_in] + reads_a + self._weights(a.index), writes=tuple(writes))

    def error_down(self, blk, below, rows, use_feedback: bool, loss: int):
        """BP's error from a transformer layer's input into the layer below (computed by its attention
        backward, so only the send is left)."""
        if not _is_vit(blk):
            return super().error_down(blk, below, rows, use_feedback, loss)
        if not self.on:
            return
        err = self.err_out.pop(blk.index)
        sent = self.rec.trace.buffers[err]
        nb = sent.nbytes
        recv = self.rec.buffer(below.index, "error_in", "gradients", nb, "sample", self._error_in_split(below),
                               sent.elements, Role.ERROR)
        self.rec.send(blk.parts[0].index, below.index, "error", err, recv, nb, "error")
        self.err_in[(below.index, loss)] = recv

    def update(self, blk):
        """The optimizer step of one sub-layer's tensors (``update._update_parts`` calls it per sub-layer)."""
        if not isinstance(blk, SubLayer):
            return super().update(blk)
        if not self.on:
            return
        par = self.params[blk.index]
        own = [par[k + s] for k in ("gacc", "opt", "master") for s in ("", "_shared")]
        out = [par[k + s] for k in ("master", "weights", "opt") for s in ("", "_shared")]
        self._op(blk.index, "update", "optimizer_update", scope="step", reads=tuple(own), writes=tuple(out))
