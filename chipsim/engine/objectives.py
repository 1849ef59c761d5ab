"""Per-block losses: what a block's own loss computes from its output.

The second of a local rule's three parts (``rules.LocalRule``). An objective
runs its kernels on the block's output, records them with the tracer right
where they run, and returns a :class:`LossResult`: the loss value, the rows
it gives an error, and a function that computes that error at the block's
output when the backward needs it. The error is recomputed on each call
rather than kept: a core keeps the narrow inputs it is made of (the goodness
copy on the loss's rows and dL/dg), which are smaller than the error itself,
and the few operations per element are costed each time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .. import kernels as K
from .losses import goodness_loss


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
        tracer.goodness(blk)
        gg = g.reshape(rows.samples, rows.reps)
        loss, dgp, dgn = goodness_loss(self.name, gg[:, 0], gg[:, 1:], self.learning)
        tracer.loss(blk.index, rows.n)
        dg = np.empty((rows.samples, rows.reps), np.float32)
        dg[:, 0], dg[:, 1:] = dgp, dgn
        dg = dg.reshape(-1)
        if not sparse:
            return LossResult(loss, None, lambda: K.goodness_backward(dg, gsrc))
        r = np.flatnonzero(dg)
        squared, dg_r = gsrc[r], dg[r]              # what the error needs, on the loss's rows only
        if len(r) < rows.n:
            tracer.goodness_rows(blk, squared)
        return LossResult(loss, r, lambda: K.goodness_backward(dg_r, squared))
