"""Per-block objectives: what a block's own loss computes from its output, and how it decodes.

The second of a local rule's three parts (``rules.LocalRule``). An objective

* in training (:meth:`evaluate`) runs its kernels on the block's output,
  records them with the tracer right where they run, and returns a
  :class:`LossResult`: the loss value, the rows it gives an error, and a
  function that computes that error at the block's output when the backward
  needs it. The error is recomputed on each call rather than kept: a core
  keeps the narrow inputs it is made of (the goodness copy on the loss's rows
  and dL/dg), which are smaller than the error itself, and the few
  operations per element are costed each time;
* in inference gives the rows one test input becomes (:meth:`inference_rows`)
  and each block's class scores on them (:meth:`block_scores`): goodness
  under each of the C labels (C rows, the C passes of FF/SymBa/DF), or the
  class-group goodness of CwC (one row, one pass). The contrastive objective
  (CFF) has no class scores of its own: a linear probe decides
  (``probe.LinearProbe``), so it says ``decodes = False``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import numpy as np

from ... import kernels as K
from .contrastive import contrastive_loss
from .losses import cwc_goodness, cwc_goodness_backward, cwc_loss, goodness_loss


@dataclass
class LossResult:
    value: float
    rows: Optional[np.ndarray]          # rows with a non-zero error (None: every row)
    error: Callable[[], np.ndarray]     # the error at the block output, on those rows


@dataclass(frozen=True)
class GoodnessObjective:
    """FF, SymBa or DF on the goodness (mean square) of each row of a sample's positive/negative group.

    With ``sparse`` (rows independent in the backward: ``learning.bn_backward =
    fixed-stats``) only the rows with a non-zero dL/dg carry an error; under
    DF's max loss that is the positive and the hardest negative.
    """
    name: str            # "ff" | "symba" | "df"
    learning: object     # the config's Learning section (margins, lambda, theta ...)

    def evaluate(self, blk, cache, rows, tracer, sparse: bool) -> LossResult:
        gsrc = cache["gsrc"]                        # the output, or its wider copy (goodness_bits)
        g = K.goodness(gsrc, bits=blk.goodness_bits)
        tracer.goodness(blk, g)
        return self.from_goodness(blk, g, lambda r: gsrc if r is None else gsrc[r], rows, tracer, sparse)

    def from_goodness(self, blk, g, squared, rows, tracer, sparse: bool) -> LossResult:
        """The loss on the goodness ``g`` of every row of the step; ``squared(r)`` gives what goodness
        squared on rows ``r`` (None: every row), which the error needs. ``sequential`` computes ``g``
        one label variant at a time and calls this once all have passed."""
        gg = g.reshape(rows.samples, rows.reps)
        loss, dgp, dgn = goodness_loss(self.name, gg[:, 0], gg[:, 1:], self.learning)
        dg = np.empty((rows.samples, rows.reps), np.float32)
        dg[:, 0], dg[:, 1:] = dgp, dgn
        dg = dg.reshape(-1)
        tracer.loss(blk.index, dg)
        if not sparse:
            gsrc = squared(None)
            return LossResult(loss, None, lambda: K.goodness_backward(dg, gsrc))
        r = np.flatnonzero(dg)
        sq, dg_r = squared(r), dg[r]                # what the error needs, on the loss's rows only
        if len(r) < rows.n:
            tracer.goodness_rows(blk, sq)
        return LossResult(loss, r, lambda: K.goodness_backward(dg_r, sq))

    @staticmethod
    def inference_rows(net, x):
        """Each input under each of the C labels: C rows per input, label-major within an input."""
        c = net.num_classes
        return net.input_with_label(np.repeat(x, c, axis=0), np.tile(np.arange(c), len(x)))

    @staticmethod
    def block_scores(blk, cache, inputs: int):
        """(inputs, C): the goodness of each input under each label."""
        return K.goodness(cache["gsrc"], bits=blk.goodness_bits).reshape(inputs, -1)


@dataclass(frozen=True)
class CwcObjective:
    """Channel-wise competitive learning: a block's channels form one group per class; the loss is
    the cross-entropy of the groups' goodness against the true class (every row gets an error)."""
    num_classes: int

    def evaluate(self, blk, cache, rows, tracer, sparse: bool) -> LossResult:
        out = cache["gsrc"]
        G = cwc_goodness(out, self.num_classes, bits=blk.goodness_bits)
        tracer.goodness(blk, G)
        loss, dG = cwc_loss(G, rows.labels)
        tracer.loss(blk.index, dG)
        return LossResult(loss, None, lambda: cwc_goodness_backward(dG, out))

    @staticmethod
    def inference_rows(net, x):
        return net.input_with_label(x, None)       # no label: the image itself, one row

    def block_scores(self, blk, cache, inputs: int):
        return cwc_goodness(cache["gsrc"], self.num_classes, bits=blk.goodness_bits)


@dataclass(frozen=True)
class ContrastiveObjective:
    """CFF's per-layer loss: the supervised contrastive loss (the paper's Eq. 3), or with a margin the
    marginal one (Eq. 15), over the L2-normalised representations of every row of the batch -- both
    views of every sample (``rows.TwoViews``) -- a layer's token mean (``cache["gsrc"]``).

    The loss couples the whole batch (each row's error depends on every other row's representation), so
    the tracer records it as one op per step (``StepTracer.batch_loss``): a core must hold every sample's
    activations until the batch's loss is known. Every row gets an error.
    """
    temperature: float
    margins: tuple               # per block
    decodes: ClassVar[bool] = False

    def evaluate(self, blk, cache, rows, tracer, sparse: bool) -> LossResult:
        feats = cache["gsrc"]
        loss, dfeats = contrastive_loss(feats, rows.row_labels, self.temperature, self.margins[blk.index])
        tracer.batch_loss(blk, dfeats)
        return LossResult(loss, None, lambda: dfeats)
