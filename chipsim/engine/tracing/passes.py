"""The trace of a ``mapping.negatives: sequential`` step (``sequential.sequential_step``).

Same recorder as ``step.StepTracer``; what differs is that a block's rows
arrive in passes (pass k = the k-th label variant of every sample) and what it
keeps shrinks as goodness comes in:

* pass k's forward writes one row per sample of each tensor a forward keeps
  (``kept_input:pass3`` ...), its goodness one value per sample, its output is
  sent on to the next block's ``input:pass3``. Block 0 reads the sensor's
  image, received once per sample, in every pass.
* ``keep_pass_rows`` is a ``select`` op: it reads pass k's rows and the rows
  kept so far (ending their lifetime) and the goodness that decided, and writes
  the new kept rows (``relu_mask:kept3`` ...), sized from what the engine's
  ``RowStore`` holds. It carries the running-max compares that decided it. A
  higher loss's goodness reaches the block as a ``goodness`` send.
* ``recompute`` (``sequential-recompute``) runs the block's forward again on
  rows a loss above asks for, from the input the block held (every pass's
  received input, or block 0's sensor image): a ``recompute`` op with that
  forward's work, whose outputs the backward ops that follow read; the held
  input is released by the block's weight gradient, its last backward op.

After the last pass ``self.kept[l]`` names the final kept buffers, so the
losses, errors and weight gradients are recorded by ``StepTracer`` unchanged.
"""
from __future__ import annotations

import numpy as np

from ...trace.roles import Role
from .kept import KEPT_ROLES, stored_elements
from .step import StepTracer

_EMPTY = np.zeros(0, np.float32)
# RowStore part -> the kept tensors (StepTracer keys) it holds
PART_KEYS = {"zq": ("zq",), "act": ("mask", "argmax"), "sq": ("sq",)}
NAMES = {"zq": "kept_input", "mask": "relu_mask", "argmax": "pool_index", "out": "output",
         "gsrc": "goodness_input"}


class PassTracer(StepTracer):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.pass_bufs = {}    # (layer, pass) -> StepTracer-style dict of that pass's row buffers
        self.pass_inp = {}     # (layer, pass) -> the pass's received input
        self.pass_g = {}       # (layer, pass) -> its goodness
        self.g_in = {}         # (layer, loss layer, pass) -> that loss's goodness, received
        self.holds_input = False   # sequential-recompute: a block holds its input until its weight gradient

    @staticmethod
    def _sq_key(bufs) -> str:
        """The goodness copy's key: the wider copy when there is one, else the output itself."""
        return "gsrc" if "gsrc" in bufs else "out"

    def pass_forward(self, blk, cache, k):
        if not self.on:
            return
        rec, l = self.rec, blk.index
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        ids = {key: rec.buffer(l, f"{NAMES[key]}:pass{k}", self.act_cat, sb[key], "sample",
                               "replicated" if key == "zq" else "units", ne[key], KEPT_ROLES[key])
               for key in ("zq", "mask", "out", "argmax", "gsrc") if key in sb and key in ne}
        par = self.params[l]
        src = self.inp[0] if l == 0 else self.pass_inp[(l, k)]
        self._op(l, "fwd", f"forward pass {k}", reads=[src, par["weights"]] + [par[x] for x in ("bn", "emb")
                                                                              if x in par],
                 writes=tuple(ids.values()))
        self.pass_bufs[(l, k)] = ids
        self.kept.setdefault(l, {})

    def pass_goodness(self, blk, g, k):
        if not self.on:
            return
        l, bufs = blk.index, self.pass_bufs[(blk.index, k)]
        bid = self.rec.buffer(l, f"goodness:pass{k}", "act_update", 4 * np.size(g), "sample", "reduce", np.size(g),
                              Role.GOODNESS)
        self._op(l, "goodness", f"goodness pass {k}", reads=(bufs[self._sq_key(bufs)],), writes=(bid,))
        self.pass_g[(l, k)] = bid
        self.kept[l].setdefault("g", []).append(bid)

    def pass_send(self, src, dst, k):
        if not self.on:
            return
        sent = self.rec.trace.buffers[self.pass_bufs[(src, k)]["out"]]
        recv = self.rec.buffer(dst, f"input:pass{k}", "noc_buffers", sent.nbytes, "sample", "replicated",
                               sent.elements, Role.RECEIVED)
        self.rec.send(src, dst, "activation", sent.id, recv, sent.nbytes, "activation")
        self.pass_inp[(dst, k)] = recv

    def goodness_down(self, loss, layer, k):
        """Loss ``loss``'s goodness of pass k, sent to block ``layer``, which keeps rows for that loss."""
        if not self.on:
            return
        g = self.rec.trace.buffers[self.pass_g[(loss, k)]]
        recv = self.rec.buffer(layer, f"goodness_in:pass{k}", "noc_buffers", g.nbytes, "sample", "replicated",
                               g.elements, Role.RECEIVED)
        self.rec.send(loss, layer, "goodness", g.id, recv, g.nbytes, "goodness")
        self.g_in[(layer, loss, k)] = recv

    def keep_pass_rows(self, blk, k, parts, store, deciders):
        """Block ``blk`` has decided, per sample, which of pass k's rows ``parts`` of its ``RowStore`` keeps
        (``deciders``: the losses whose goodness decided)."""
        if not self.on:
            return
        rec, l = self.rec, blk.index
        bufs, kept = self.pass_bufs[(l, k)], self.kept[l]
        arr = store.arrays()
        cache = {key: (_EMPTY if arr.get(src) is None else arr[src])
                 for key, src in (("zq", "zq"), ("y", "y"), ("argmax", "argmax"), ("out", "gsrc"), ("gsrc", "gsrc"))}
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        sq = self._sq_key(bufs)
        keys = [sq if key == "sq" else key for p in parts for key in PART_KEYS[p] if (sq if key == "sq" else key)
                in bufs]
        reads = [bufs[key] for key in keys] + [kept[key] for key in keys if key in kept]
        reads += [self.pass_g[(l, k)] if j == l else self.g_in[(l, j, k)] for j in deciders]
        new = {key: rec.buffer(l, f"{NAMES[key]}:kept{k}", self.act_cat, sb[key], "sample",
                               "replicated" if key == "zq" else "units", ne[key], KEPT_ROLES[key]) for key in keys}
        self._op(l, "select", f"keep pass {k} rows ({', '.join(parts)})", reads=reads, writes=tuple(new.values()))
        kept.update(new)

    def _held(self, l):
        """What block l received and still holds (``sequential-recompute``): every pass's input, or for
        block 0 the sensor's image and the label embedding that make its rows."""
        if l == 0:
            return [self.inp[0]] + ([self.params[0]["emb"]] if "emb" in self.params[0] else [])
        return [b for (layer, _), b in sorted(self.pass_inp.items()) if layer == l]

    def recompute(self, blk, cache, loss):
        """Block ``blk``'s forward again on the rows loss ``loss`` asks for, from its held input (``cache``:
        that forward's): its input codes, mask and pool index, read by the backward ops that follow."""
        if not self.on:
            return
        rec, l = self.rec, blk.index
        k, par = self.kept[l], self.params[l]
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        writes = [rec.buffer(l, f"{NAMES[key]}:recomputed", self.act_cat, sb[key], "sample",
                             "replicated" if key == "zq" else "units", ne[key], KEPT_ROLES[key])
                  for key in ("zq", "mask", "argmax") if key in sb and key in ne]
        self._op(l, "recompute", "recompute dropped rows", reads=self._held(l) + [par["weights"]]
                 + [par[x] for x in ("bn",) if x in par] + self.deciders(l, [loss]), writes=tuple(writes))
        k.setdefault("rc", []).extend(writes)

    # ------------------------------------------------------------ what differs in the backward
    def _error_sources(self, l, losses, weight_grad: bool):
        """As ``StepTracer``'s, plus recomputed rows; the weight gradient, the block's last backward op, also
        releases the input it held for recomputing."""
        held = self._held(l) if weight_grad and self.holds_input else []
        return super()._error_sources(l, losses, weight_grad) + list(self.kept[l].get("rc", ())) + held

    def select(self, blk, cache, losses):
        """The weight gradient's rows, out of the kept ones: as ``StepTracer.select``, but the goodness copy
        was cut to the own loss's rows already and recomputed routing ends here too."""
        if not self.on:
            return
        rec, l = self.rec, blk.index
        old = self.kept[l]
        sb, ne = blk.stored_bytes(cache), stored_elements(cache)
        keys = [key for key in ("zq", "mask", "argmax") if key in old and key in sb]
        new = {key: rec.buffer(l, f"{NAMES[key]}_kept_rows", self.act_cat, sb[key], "sample",
                               "replicated" if key == "zq" else "units", ne[key], KEPT_ROLES[key]) for key in keys}
        rec.op(l, "select", "drop error-free rows", reads=tuple(old[key] for key in keys) + tuple(old.get("rc", ()))
               + tuple(self.deciders(l, losses)), writes=tuple(new.values()))
        old.update(new)
        old.pop("rc", None)
