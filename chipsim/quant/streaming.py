"""Quantisation scales a streaming chip can use: latched for the step, updated as samples stream.

Why: under ``mapping.statistics: batch`` an activation's scale (``ClippedScale``, folding the batch's
clipping threshold in before quantizing) and an error's scale (``quantize_signed``: the batch's max|x|)
are known only once every sample of the step has reached the layer -- a barrier. Here a step's rows share
the scale the running estimate had when the step began (so a core's integer products over the step's
rows still share one scale, as its accumulators need), and the estimate is then updated in stream order:
row by row (``running``) or once per group of rows a core processes together (``micro-batch``); the new
value takes effect from the next step. Nothing a row is quantized with depends on a later row. The very
first use, with no estimate yet, starts it from the first group alone (the first group is first anyway).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..trace.work import record
from .codes import (ROUND_OPS, SCALE_SEARCH_OPS, _finish_scale, _round_kind, _round_ops, _rounding_seed,
                    check_bits, quantize_flat, signed_max)
from .passes import _rows_absmax
from ..kernels.sums import _row_sum_squares
from .stores import ACIQ_GAUSS_ALPHA, ClippedScale, _divide_round_clip


def _groups(n: int, group: int):
    g = max(1, int(group))
    return [(r0, min(n, r0 + g)) for r0 in range(0, n, g)]


def _fold(running, values, momentum_per_batch: float):
    """EMA of ``values`` in order, each weighted so that a whole batch moves the estimate as one batch
    update with ``momentum_per_batch`` would (``m ** (1 / len(values))`` per value)."""
    mu = momentum_per_batch ** (1.0 / max(len(values), 1))
    if type(running) in (float, np.float64) and len(values):
        # the loop below compiled (a step folds some 4,000 values): the same float64 operations in the
        # same order, and the estimate keeps its type (a checkpoint saves it)
        return type(running)(_ema(float(running), np.asarray(values, np.float64), mu))
    for v in values:
        running = float(v) if running is None else mu * running + (1 - mu) * float(v)
    return running


@njit(cache=True)
def _ema(running, values, mu):
    """:func:`_fold`'s loop: ``running = mu * running + (1 - mu) * v`` for each value in order."""
    c = 1 - mu
    for i in range(values.shape[0]):
        running = mu * running + c * values[i]
    return running


def _hold_peak(running, values, decay_per_batch: float):
    """A decaying peak hold over ``values`` in order: each value first lets the held peak decay by
    ``decay_per_batch ** (1 / len(values))`` (a whole batch's values decay it by ``decay_per_batch``), then
    raises it to the value if larger. One multiply and one compare per value: what a streaming core's
    error path can keep. It tracks the largest recent value, as the batch's max|x| does, where an average
    of per-row maxima sits below the rows with the largest errors and saturates them."""
    mu = decay_per_batch ** (1.0 / max(len(values), 1))
    for v in values:
        running = float(v) if running is None else max(mu * running, float(v))
    return running


class StreamScale(ClippedScale):
    """A ``ClippedScale`` whose step uses the latched estimate; ``group`` rows fold in at a time."""

    def __init__(self, bits, signed, momentum=0.9, scale_mode="float", group: int = 1):
        super().__init__(bits, signed, momentum, scale_mode)
        self.group = max(1, int(group))

    def quantize(self, x, update: bool, times_scale: bool = False, as_int8: bool = False):
        if self.bits == 32:
            return x, np.float32(1.0)
        record("quantize", "StreamScale.quantize", ROUND_OPS * np.size(x))
        if update:
            record("quantize_scale", "StreamScale.threshold", SCALE_SEARCH_OPS * np.size(x))
            ts = self._thresholds(x, self.group)
            if self.running is None:                  # first use: the first group's own threshold
                self.running = ts[0]
            scale = self.scale                         # latched before the step's rows update it
            self.running = _fold(self.running, ts, self.momentum)
        else:
            scale = self.scale
        lo = -self.qmax if self.signed else 0
        return _divide_round_clip(x, scale, lo, self.qmax, times_scale, as_int8), scale

    def _thresholds(self, x, group: int) -> list:
        """``[self.threshold(x[r0:r1]) for r0, r1 in _groups(len(x), group)]``, in one pass over ``x`` when
        every group has the same number of rows (``running``: one row each): a Python call per row was 4,000
        calls a step. Bit for bit the same values: each group's float64 sum of squares is added in the same
        pairwise order (``_row_sum_squares``, as ``_mean_square``), and the square root and products are the
        same IEEE operations elementwise (``tests/test_statistics.py`` compares the two)."""
        n = x.shape[0]
        g = min(max(1, int(group)), max(n, 1))
        if (self.bits not in ACIQ_GAUSS_ALPHA or n % g or x.size == 0 or x.dtype != np.float32
                or not x.flags.c_contiguous):
            return [self.threshold(x[r0:r1]) for r0, r1 in _groups(n, group)]
        rows = x.reshape(n // g, -1)
        sums = np.empty(rows.shape[0], np.float64)
        _row_sum_squares(rows, sums)
        rms = np.sqrt(sums / rows.shape[1])
        t = ACIQ_GAUSS_ALPHA[self.bits] * (rms if self.signed else rms * np.sqrt(2.0))
        # of the same types too (``threshold`` gives a float when signed, a numpy float64 when not): the
        # first one becomes the saved running estimate, and a checkpoint keeps its type
        return t.tolist() if self.signed else list(t)


class StreamErrorScale:
    """The error counterpart of ``quantize_signed``: symmetric signed codes at a latched scale, rounding as
    ``quantize_signed``; values beyond the scale saturate.

    The scale is a decaying peak hold of each group's max|x| (:func:`_hold_peak`), not their running mean:
    a local rule's per-sample errors differ by orders of magnitude (SymBa's and FF's are a sigmoid of each
    sample's margin), and a mean of per-row maxima saturated exactly the few rows that carry the gradient.
    Measured on SymBa (2,000 images, 2 epochs, seed 0): 54.4/59.7% per epoch with the mean against
    87.4/89.9% on the batch's scales; ``docs/defaults.md`` has the table with the peak hold."""

    def __init__(self, bits, rounding="nearest", scale_mode="float", momentum=0.9, group: int = 1):
        self.bits = check_bits(bits)
        self.rounding, self.scale_mode, self.momentum = rounding, scale_mode, float(momentum)
        self.group = max(1, int(group))
        self.running = None

    def quantize(self, x, rng, as_int8: bool = False):
        """``(codes, scale)`` at the latched scale, then the estimate updated; ``as_int8`` as
        ``quantize_signed``'s."""
        x = np.asarray(x, dtype=np.float32)
        if self.bits == 32:
            return x.copy(), np.float32(1.0)
        qmax = signed_max(self.bits)
        flat = np.ascontiguousarray(x).reshape(-1)
        record("quantize_scale", "StreamErrorScale", x.size)            # each group's max |x|
        record(_round_kind(self.rounding), "StreamErrorScale", _round_ops(self.rounding) * x.size)
        rows = x.reshape(x.shape[0], -1) if x.ndim else flat.reshape(1, -1)
        if rows.shape[1] and rows.shape[0] and rows.shape[0] % self.group == 0:   # one pass; max is exact
            groups = rows.reshape(rows.shape[0] // self.group, -1)
            maxes = [float(v) for v in (_rows_absmax(groups) if groups.flags.c_contiguous
                                        else np.abs(groups).max(axis=1))]
        else:
            maxes = [float(np.abs(rows[r0:r1]).max()) if r1 > r0 and rows.shape[1] else 0.0
                     for r0, r1 in _groups(rows.shape[0], self.group)]
        if self.running is None or self.running <= 0:
            self.running = maxes[0] if maxes else 0.0
        scale = np.float32(_finish_scale(self.running, qmax, self.scale_mode))
        self.running = _hold_peak(self.running, maxes, self.momentum)
        seed = _rounding_seed(self.rounding, rng)
        return quantize_flat(flat, x.shape, 1.0 / np.float64(scale), -float(qmax), float(qmax),
                             self.rounding == "stochastic", seed, as_int8), scale
