"""Turns what the engine executes into trace records (``chipsim.trace``).

Kept apart from the rules so the step code reads as the algorithm. Each
method is called right after the engine has run the work it records:

* the *work* of an op (kernel calls, their counts and widths) is not computed
  here -- the kernels log it themselves into the step's
  ``chipsim.trace.work.WorkLog``, and each method attaches what was logged since the
  previous record to the op it writes; :meth:`close` checks that nothing was
  left unattributed. One exception, :meth:`accumulation`: each sample's
  rescale-and-add into a gradient accumulator, which a streaming chip does per
  sample and the engine does once, in a batched product;
* the *buffers* are sized from the arrays the engine actually holds
  (``stored_bytes``, ``param_bytes``, the optimizer's and the accumulators'
  ``QuantStore`` s), at the widths it holds them.

Conventions (see ``chipsim.trace``): a block's kept input ``zq`` is
*replicated* on its slices (every output channel needs the whole input);
outputs, masks and pool indices are split by units; goodness and grad-input
are *reduce* partials. Sizes are per step; the first layer's input is the
8-bit sensor image, stored once per sample (the engine repeats it for the
negative labels in software, a chip need not).

Errors are tracked per loss: the error that loss ``l`` sends into block ``j``
arrives in its own receive buffer (``err_in[(j, l)]``), read by block ``j``'s
weight gradient if loss ``l`` updates ``j`` and by the error it passes further
down if the loss reaches lower.
"""
from __future__ import annotations

import numpy as np

from ...trace import TraceRecorder, nbytes_of
from ...trace.roles import Role
from .head_records import HeadRecords
from .kept import KEPT_ROLES, stored_elements
from .params import register_layer
from ...trace.work import Work, WorkLog

SENSOR_BITS = 8
#: vector operations per accumulator value per sample: rescale the sample's integer gradient (1 multiply),
#: add it into the accumulator (1 add)
ACCUMULATE_OPS = 2
ACCUMULATE_BITS = 32           # the engine sums the gradient in float32 (QuantStore quantises it once, at the update)
class StepTracer(HeadRecords):
    """Records one training step's ops and buffers as the engine runs them (see the module doc); the
    one-pass head's records are :class:`HeadRecords`'."""

    def __init__(self, rec: TraceRecorder, net, optimizer, accumulators: dict, rule_is_bp: bool, extra_layers=()):
        self.rec = rec
        self.on = rec.enabled
        self.log = WorkLog() if self.on else None
        self.net = net
        self.p = net.prec
        self.act_cat = "act_backward" if rule_is_bp else "act_update"
        self.kept = {}     # layer -> dict of buffer ids kept by forward
        self.inp = {}      # layer -> buffer id of its received input
        self.err_in = {}   # (layer, loss layer) -> buffer id of the error that loss sent into the layer
        self.dg = {}       # layer -> buffer id of dL/dgoodness (local) or dlogits (head)
        self.params = {}   # layer -> dict of persistent buffer ids
        self.neutral_in, self.neutral_out = {}, {}     # the head's neutral pass: received / produced buffers
        self.layer_state = {}  # layer -> what a layer's own recording keeps between its forward and backward
        self.sending = None    # the error the layer being recorded sends down (set by error_down)
        if not self.on:
            return
        for blk in list(net.layers()) + list(extra_layers):      # extra: a local rule's one-pass head
            self.params.update(register_layer(rec, blk, optimizer, accumulators))
        label = net.label_input()
        if label is not None:                  # the label table the first layer reads with the image
            name, nb, size = label
            entry = net.blocks[0].trace_parts()[0].index
            par = self.params[entry]
            par["emb"] = rec.buffer(entry, name, "label_embedding", nb, "persistent", "replicated", size,
                                    Role.LABEL_EMBEDDING)
            if "emb" in accumulators:            # a learned embedding: its optimizer state and accumulator
                par["emb_opt"] = rec.buffer(entry, "label_embedding_optimizer", "optimizer_state",
                                            optimizer.state_bytes("emb"), "persistent", "replicated",
                                            optimizer.state_values("emb"), Role.OPTIMIZER_STATE)
                # each slice of a split first layer accumulates a partial (the error through its own output
                # channels): reduced onto slice 0 and sent back before the update (embedding_update)
                par["emb_gacc"] = rec.buffer(entry, "embedding_grad_acc", "gradients", accumulators["emb"].nbytes,
                                             "step", "reduce", size, Role.GRADIENT_ACC)

    def _op(self, layer, kind, name, **kw) -> int:
        """Record an op with the work the kernels logged since the last record."""
        return self.rec.op(layer, kind, name, work=self.log.take(), **kw)

    def accumulation(self, *gacc) -> tuple:
        """The work of streaming each sample's gradient into the accumulators ``gacc`` (buffer ids).

        Why the tracer adds it: the engine sums a step's weight gradient over its rows inside one batched
        product and rescales the sum once, but a chip that streams samples rescales each sample's product
        and adds it into the accumulator, a read-modify-write per sample. So every accumulator costs
        ``ACCUMULATE_OPS`` x its values x the step's samples (``accumulate``), in the op that writes it.
        An accumulator every slice holds whole is accumulated by every slice.
        """
        buffers = [self.rec.trace.buffers[bid] for bid in gacc]
        return tuple(Work("accumulate", "accumulate", ACCUMULATE_OPS * b.elements * self.rec.trace.samples,
                          (ACCUMULATE_BITS,), "units" if b.split == "units" else "replicated")
                     for b in buffers if b.elements)

    def close(self) -> None:
        """End of the step: every kernel call must belong to some op."""
        if self.on and self.log.items:
            left = sorted({(w.kind, w.kernel) for w in self.log.items})
            raise AssertionError(f"kernel work not attributed to any trace op: {left}")

    # ---------------------------------------------------------------- forward
    def _entry(self, layer: int) -> int:
        """The trace layer that receives layer ``layer``'s input: its first part (``layers.protocol``)."""
        layers = self.net.layers()
        return layers[layer].trace_parts()[0].index if layer < len(layers) else layer

    def weight_reads(self, part: int) -> list:
        """The parameter buffers a part's forward reads (weights, shared weights, the label table)."""
        par = self.params[part]
        return [par[k] for k in ("weights", "weights_shared", "emb") if k in par]

    def sensor_input(self, x):
        """The sensor's image (8-bit codes) arrives at the first layer: a send that reads no buffer, which
        the chip model routes from the mesh's input port (``chip.noc.input_port``) to every slice."""
        if not self.on:
            return
        entry = self._entry(0)
        nb = nbytes_of(x.size, SENSOR_BITS)
        bid = self.rec.buffer(entry, "input", "noc_buffers", nb, "sample", "replicated", x.size, Role.SENSOR)
        self.rec.op(entry, "send", "sensor input", writes=(bid,), dst_layer=entry, nbytes=nb, tag="activation")
        self.inp[0] = bid

    def forward(self, blk, cache, goodness: bool):
        """The layer's forward (``blk.forward`` has just run): what it keeps, and its work. The layer says
        how it is recorded (``trace_forward``): a one-part block by :meth:`block_forward`."""
        if self.on:
            blk.trace_forward(self, cache, goodness)

    def block_forward(self, blk, cache, goodness: bool):
        """A one-part block's forward: its kept input, ReLU mask, pool index, output and goodness copy."""
        rec, l = self.rec, blk.index
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        ids = dict(zq=rec.buffer(l, "kept_input", self.act_cat, sb["zq"], "sample", "replicated", ne["zq"],
                                 Role.KEPT_INPUT),
                   mask=rec.buffer(l, "relu_mask", self.act_cat, sb["mask"], elements=ne["mask"], role=Role.MASK),
                   out=rec.buffer(l, "output", self.act_cat, sb["out"], elements=ne["out"], role=Role.OUTPUT))
        if "argmax" in sb and blk.pool:
            ids["argmax"] = rec.buffer(l, "pool_index", self.act_cat, sb["argmax"], elements=ne["argmax"],
                                       role=Role.POOL_INDEX)
        if goodness and "gsrc" in sb:   # the forward also writes the wider copy that goodness squares
            ids["gsrc"] = rec.buffer(l, "goodness_input", self.act_cat, sb["gsrc"], elements=ne["gsrc"],
                                     role=Role.GOODNESS_INPUT)
        par = self.params[l]
        reads = [self.inp[l], par["weights"]] + [par[k] for k in ("bn", "emb") if k in par]
        self._op(l, "fwd", "forward", reads=reads,
                 writes=tuple(ids[k] for k in ("zq", "mask", "argmax", "out", "gsrc") if k in ids))
        self.kept[l] = ids

    def goodness(self, blk, g):
        """Goodness of the block output, ``g`` (float32, a reduce partial on a split layer), just computed."""
        if not self.on:
            return
        k = self.kept[blk.index]
        k["g"] = self.rec.buffer(blk.index, "goodness", "act_update", 4 * np.size(g), "sample", "reduce", np.size(g),
                                   Role.GOODNESS)
        self._op(blk.index, "goodness", "goodness", reads=(k.get("gsrc", k["out"]),), writes=(k["g"],))

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

    def loss(self, l, dg):
        """The block's (or head's) loss: goodness -> dL/dgoodness, or logits -> dL/dlogits (``dg``, float32)."""
        if not self.on:
            return
        src = self.kept[l]["g"] if "g" in self.kept[l] else self.kept[l]["out"]
        self.dg[l] = self.rec.buffer(l, "loss_grad", "gradients", 4 * np.size(dg), "sample", "replicated", np.size(dg),
                                     Role.LOSS_GRAD)
        # the goodness of every row: one buffer, or one per pass of a sequential step
        self._op(l, "loss", "loss", reads=tuple(src) if isinstance(src, list) else (src,), writes=(self.dg[l],))
        self.share_loss_grad(l, "sample")

    def share_loss_grad(self, l, scope: str):
        """The loss's gradient is slice 0's on a split layer (its goodness partials were reduced there): it
        goes to the layer's other slices before any slice's backward reads it -- a send from the layer to
        itself, which ``chip.noc`` multicasts from slice 0 (unsplit: it moves nothing). The trace has no
        "slice 0 only" split, so the loss op itself stays a ``units`` op whose work the slices share and
        whose ``replicated`` output every slice is charged for writing; only the transfer is slice 0's."""
        nb = self.rec.trace.buffers[self.dg[l]].nbytes
        self.rec.op(l, "send", "loss gradient to the layer's slices", scope=scope, reads=(self.dg[l],),
                    writes=(self.dg[l],), dst_layer=l, nbytes=nb, tag="error")

    def batch_loss(self, blk, dfeats):
        """A loss over the whole batch (CFF's contrastive loss, ``dfeats`` its error at what it read): one op
        per step, after every sample's forward, whose error every sample's backward then reads -- so a core
        holds all the batch's kept activations until the loss is known."""
        if not self.on:
            return
        l = blk.index
        src = self.kept[l].get("gsrc", self.kept[l]["out"])
        self.dg[l] = self.rec.buffer(l, "loss_grad", "gradients", 4 * np.size(dfeats), "step", "replicated",
                                     np.size(dfeats), Role.LOSS_GRAD)
        self._op(l, "loss", "batch loss", scope="step", reads=(src,), writes=(self.dg[l],))
        self.share_loss_grad(l, "step")

    def goodness_rows(self, blk, kept):
        """Block ``blk``'s own loss has picked the rows it gives an error: the wider copy of the output
        that goodness squared shrinks to them (``kept``, the copy on those rows) at once.

        Only that copy is needed by the goodness gradient alone, so it need not wait, as the other kept
        buffers do (see :meth:`select`), for the losses above to say which rows their errors reach.
        """
        if not self.on or "gsrc" not in self.kept[blk.index]:
            return
        rec, l = self.rec, blk.index
        old = self.kept[l]["gsrc"]
        nb = nbytes_of(kept.size, blk.goodness_bits)
        new = rec.buffer(l, "goodness_input_loss_rows", self.act_cat, nb, "sample", "units", kept.size,
                         Role.GOODNESS_INPUT)
        rec.op(l, "select", "keep the loss's rows of the goodness copy", reads=(old, self.dg[l]), writes=(new,))
        self.kept[l]["gsrc"] = new

    def select(self, blk, cache, losses):
        """Block ``blk`` now knows every row an error reaches (from ``losses``): the others are dropped."""
        if not self.on:
            return
        rec, l = self.rec, blk.index
        old = self.kept[l]
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        new = dict(old)
        # what the backward reads; a wider goodness copy replaces the output there, and was cut to the own
        # loss's rows already (goodness_rows), so it is carried over as it is
        kept = ("zq", "mask", "argmax") + (() if "gsrc" in old else ("out",))
        for name, key, split in (("kept_input", "zq", "replicated"), ("relu_mask", "mask", "units"),
                                 ("output", "out", "units"), ("pool_index", "argmax", "units")):
            if key in old and key in kept:
                new[key] = rec.buffer(l, f"{name}_kept_rows", self.act_cat, sb[key], "sample", split, ne[key],
                                      KEPT_ROLES[key])
        rec.op(l, "select", "drop error-free rows", reads=tuple(old[k] for k in kept if k in old)
               + tuple(self.deciders(l, losses)), writes=tuple(new[k] for k in kept if k in new))
        self.kept[l] = new

    # ---------------------------------------------------------------- backward
    def deciders(self, l, losses):
        """The error buffers at layer l's output from ``losses`` (l's own loss: its dL/dgoodness)."""
        return [self.dg[l] if src == l else self.err_in[(l, src)] for src in losses
                if (src == l and l in self.dg) or (l, src) in self.err_in]

    def _error_sources(self, l, losses, weight_grad: bool):
        """What a backward op of layer l reads: the errors of ``losses``, the kept routing (mask, pool
        index), for a goodness loss (gradient 2*out/D) the output or the wider copy goodness squared,
        and -- for the weight gradient, or an error through batch statistics -- the kept input."""
        k = self.kept[l]
        squared = [k["gsrc"] if "gsrc" in k else k["out"]] if "g" in k and l in losses else []
        need_input = weight_grad or self.net.bn_backward == "batch-stats"
        return (self.deciders(l, losses) + [k[n] for n in ("mask", "argmax") if n in k] + squared
                + ([k["zq"]] if need_input else []))

    def error_down(self, blk, below, rows, use_feedback: bool, loss: int, sent=None):
        """Loss ``loss``'s error from layer ``blk`` into the layer below, as the layer records it
        (``trace_error_down``): a one-part block by :meth:`block_error_down`. ``sent``: what the layer
        sends (a ``layers.sent_error.SentError``: its width, and where its quantisation's work begins)."""
        if self.on:
            self.sending = sent
            blk.trace_error_down(self, below, rows, use_feedback, loss)
            self.sending = None

    def block_error_down(self, blk, below, rows, use_feedback: bool, loss: int):
        """A one-part block's error into the block below (grad-input via W, or DF-R's B), and its send.

        Widths are those the engine used (issue 23, defect 7): the grad-input op writes float32 values
        (on a split layer each slice's full-size partial, summed onto slice 0 at 32 bits); the sender then
        quantises the sum (:meth:`QuantBlock.send_error`, an op of its own on the reduced error, which
        slice 0 holds and sends) and the send carries those codes, at ``gradient_bits``. An error sent as
        float32 (``gradient_bits: 32``) is sent as the grad-input op wrote it.

        The quantised error is declared ``replicated``, the split whose send leaves from slice 0 alone;
        on a split layer the ledger therefore also charges the other slices a copy of its codes, which
        they do not hold (the trace has no "slice 0 only" split).
        """
        rec, l = self.rec, blk.index
        par = self.params[l]
        sent = self.sending
        bits = 32 if sent is None else sent.bits
        link = [par["fb"]] if use_feedback and "fb" in par else [] if use_feedback else [par["weights"]]
        reads = self._error_sources(l, [loss], weight_grad=False) + link + ([par["bn"]] if "bn" in par else [])
        n = rows * int(np.prod(below.out_shape))
        items = self.log.take()
        cut = len(items) if sent is None or sent.cut is None or bits == 32 else sent.cut
        partial = rec.buffer(l, "grad_input_partial" if bits != 32 else "error_out", "gradients",
                             nbytes_of(n, 32), "sample", "reduce", n, Role.ERROR)
        kind = "feedback" if use_feedback else "grad_x"
        rec.op(l, kind, "feedback" if use_feedback else "grad_input", reads=reads, writes=(partial,),
               work=items[:cut])
        err = partial
        if bits != 32:                               # the sender quantises the summed error before it goes down
            err = rec.buffer(l, "error_out", "gradients", nbytes_of(n, bits), "sample", "replicated", n,
                             Role.ERROR)
            # kind grad_x under DF-R too: it reads no weights (a feedback op is the product through B)
            rec.op(l, "grad_x", "quantize error", reads=(partial,), writes=(err,), work=items[cut:])
        nb = nbytes_of(n, bits)
        recv = rec.buffer(below.index, "error_in", "gradients", nb, "sample", below.error_in_split, n, Role.ERROR)
        rec.send(l, below.index, "error", err, recv, nb, "error")
        self.err_in[(below.index, loss)] = recv

    def grad_weight(self, blk, losses):
        """Layer ``blk``'s weight gradient from the errors of ``losses`` (accumulated over the step), as the
        layer records it (``trace_grad_weight``): a one-part block by :meth:`block_grad_weight`."""
        if self.on:
            blk.trace_grad_weight(self, losses)

    def block_grad_weight(self, blk, losses):
        """A one-part block's weight-gradient op."""
        l, gacc = blk.index, self.params[blk.index]["gacc"]
        # accumulating is read-modify-write: the op reads the accumulator it adds each sample into
        self.rec.op(l, "grad_w", "grad_weight", work=self.log.take() + self.accumulation(gacc),
                    reads=self._error_sources(l, losses, weight_grad=True) + [gacc], writes=(gacc,))

    def embedding_grad(self, blk, losses):
        """The label embedding's gradient: the error through block 0 into its label channel."""
        if not self.on:
            return
        par = self.params[0]
        reads = self._error_sources(0, losses, weight_grad=False) + [par["weights"]] + \
            ([par["bn"]] if "bn" in par else [])
        self.rec.op(0, "grad_x", "label_embedding_grad", work=self.log.take() + self.accumulation(par["emb_gacc"]),
                    reads=reads + [par["emb_gacc"]], writes=(par["emb_gacc"],))

    def update(self, part):
        """The optimizer step of one trace part's tensors (once per step; ``part``: a layer, or one part of
        a layer of several, anything with the part's ``index``)."""
        if not self.on:
            return
        par = self.params[part.index]
        own = [par[k + s] for k in ("gacc", "opt", "master") for s in ("", "_shared") if k + s in par]
        out = [par[k + s] for k in ("master", "weights", "opt") for s in ("", "_shared") if k + s in par]
        self._op(part.index, "update", "optimizer_update", scope="step", reads=tuple(own), writes=tuple(out))

    def embedding_update(self):
        """The optimizer step of the learned label embedding."""
        if not self.on:
            return
        par = self.params[0]
        # the slices' partial gradients are reduced onto slice 0 (chip.noc.reductions_before) and the sum is
        # multicast back, so that every slice updates its copy of the table (a send from the layer to itself)
        nb = self.rec.trace.buffers[par["emb_gacc"]].nbytes
        self.rec.op(0, "send", "label embedding gradient to the layer's slices", scope="step",
                    reads=(par["emb_gacc"],), writes=(par["emb_gacc"],), dst_layer=0, nbytes=nb, tag="reduce")
        self._op(0, "update", "label_embedding_update", scope="step",
                 reads=(par["emb_gacc"], par["emb_opt"], par["emb"]), writes=(par["emb"], par["emb_opt"]))
