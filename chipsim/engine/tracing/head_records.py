"""The trace records of a local rule's one-pass head (``learning.inference: head``).

Why apart from ``step``: the head is an extra reader of the blocks' activity -- a forward under the
neutral label through every block, the features sent to the head, and the head's own forward -- that only
rules with a one-pass head record. :class:`HeadRecords` is a mixin of ``step.StepTracer`` and uses its
state (``rec``, ``on``, ``p``, ``act_cat``, ``params``, ``kept``, ``inp``, ``neutral_in``/``neutral_out``)
and its ``_op``; the head's loss and weight gradient are recorded as any layer's (``loss``, ``grad_weight``).
"""
from __future__ import annotations

import numpy as np

from ...trace import nbytes_of
from ...trace.roles import Role
from .kept import stored_elements


class HeadRecords:
    """The one-pass head's records, mixed into ``step.StepTracer``."""

    def neutral_forward(self, blk, out_values, next_layer):
        """A forward under the neutral label (eval-mode BN) for the head's features, ``out_values`` its
        output; sent on to block ``next_layer`` when given."""
        if not self.on:
            return
        rec, l = self.rec, blk.index
        par = self.params[l]
        src = self.neutral_in.get(l, self.inp.get(l))          # block 0 reads the sensor's image
        nb = nbytes_of(np.size(out_values), self.p.activation_bits)
        out = rec.buffer(l, "neutral_output", self.act_cat, nb, elements=np.size(out_values),
                         role=Role.ACTIVATION)
        self._op(l, "fwd", "neutral forward", reads=[src, par["weights"]] + [par[k] for k in ("bn", "emb")
                                                                               if k in par], writes=(out,))
        self.neutral_out[l] = out
        if next_layer is not None:
            recv = rec.buffer(next_layer, "neutral_input", "noc_buffers", nb, "sample", "replicated",
                              np.size(out_values), Role.RECEIVED)
            rec.send(l, next_layer, "neutral activation", out, recv, nb, "activation")
            self.neutral_in[next_layer] = recv

    def head_features(self, head, from_training: bool):
        """The head's input arrives from its feature blocks: their training outputs (rules without a
        label) or their neutral-pass outputs."""
        if not self.on:
            return
        self.inp_head = []
        for j in head.blocks:
            src = self.kept[j]["out"] if from_training else self.neutral_out[j]
            sent = self.rec.trace.buffers[src]
            recv = self.rec.buffer(head.layer.index, "features_in", "noc_buffers", sent.nbytes, "sample",
                                   "replicated", sent.elements, Role.RECEIVED)
            nb = sent.nbytes
            self.rec.send(j, head.layer.index, "features", src, recv, nb, "activation")
            self.inp_head.append(recv)

    def head_forward(self, head, cache):
        """The head's forward on the features it received (its loss and weight gradient follow through
        :meth:`loss` and :meth:`grad_weight`, as for any layer)."""
        if not self.on:
            return
        rec, l = self.rec, head.layer.index
        sb, ne = head.layer.stored_bytes(cache), stored_elements(cache)
        zq = rec.buffer(l, "kept_input", self.act_cat, sb["zq"], "sample", "replicated", ne["zq"], Role.KEPT_INPUT)
        out = rec.buffer(l, "output", self.act_cat, sb["out"], elements=ne["out"], role=Role.OUTPUT)
        self._op(l, "fwd", "forward", reads=self.inp_head + [self.params[l]["weights"]], writes=(zq, out))
        self.kept[l] = dict(zq=zq, out=out)
