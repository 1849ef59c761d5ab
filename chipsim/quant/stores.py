"""Quantized state: the tensors a core keeps between calls, as classes.

Why a module of its own: a running activation scale (:class:`ClippedScale`),
fixed-point master weights (:class:`FixedPoint`) and quantized optimizer state
or gradient accumulators (:class:`QuantStore`) carry state from one step to
the next, and the memory ledger must cost exactly what they hold. They are
built on the stateless codes of :mod:`chipsim.quant.codes`; the functions they
call are imported by name, so a wrapper rebound in this module's namespace
(the cost tests' spies, ``benchmarks/step_breakdown.py``'s timers) is what
these methods call.
"""
from __future__ import annotations

import numpy as np

from ..trace.work import record
from .codes import (
    MASTER_OPS,
    ROUND_OPS,
    ROUNDINGS,
    SCALE_MODES,
    SCALE_SEARCH_OPS,
    _check_choice,
    _divide_round_clip,
    _finish_scale,
    _mean_square,
    _per_tensor,
    _pow2_ceil,
    _round,
    _rounding_seed,
    check_bits,
    signed_max,
    unsigned_max,
)
from .passes import _fixed_point_add


# Clipping thresholds (in standard deviations) that minimise the mean-square
# quantization error of a Gaussian at b bits: ACIQ, Banner et al., "Post-training
# 4-bit quantization of convolutional networks for rapid deployment", NeurIPS 2019.
ACIQ_GAUSS_ALPHA = {2: 1.71, 3: 2.15, 4: 2.55, 5: 2.94, 6: 3.29, 7: 3.61, 8: 3.92}


class ClippedScale:
    """Running per-tensor activation scale: EMA of a clipping threshold, ACIQ-optimal up to 8 bits.

    Why not the running max: a BN output has unit variance, but its max over a
    batch of thousands of values is 4-6 sigma, so at 4 bits a max-based scale
    leaves most values at 0 or +-1 code (measured: 12 points of DF-O accuracy
    on mnist5k). Clipping at ``alpha(b) * sigma`` trades a few saturated
    outliers for resolution where the mass is; for unsigned post-ReLU values
    the Gaussian's sigma is ``sqrt(2) * RMS``. Wider than 8 bits, the max is kept
    (no clipping needed). The threshold is an EMA over batches (the first batch
    initialises it), so one outlier batch moves it by only ``1 - momentum``,
    and inference does not depend on which samples share a batch -- as on a
    chip with a calibrated per-layer shift.
    """

    def __init__(self, bits, signed, momentum=0.9, scale_mode="float"):
        self.bits = check_bits(bits)
        _check_choice("scale_mode", scale_mode, SCALE_MODES)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.signed, self.momentum, self.scale_mode = bool(signed), float(momentum), scale_mode
        self.qmax = signed_max(self.bits) if signed else unsigned_max(self.bits)
        self.running = None

    def threshold(self, x) -> float:
        """The clipping threshold this batch asks for."""
        if self.bits not in ACIQ_GAUSS_ALPHA:
            return float(np.abs(x).max()) if self.signed else float(max(np.max(x), 0.0))
        rms = float(np.sqrt(_mean_square(x)))
        return ACIQ_GAUSS_ALPHA[self.bits] * (rms if self.signed else rms * np.sqrt(2.0))

    @property
    def scale(self) -> np.float32:
        return np.float32(_finish_scale(self.running or 0.0, self.qmax, self.scale_mode))

    def quantize(self, x, update: bool, times_scale: bool = False, as_int8: bool = False):
        """Optionally fold ``x`` into the threshold, then return ``(codes, scale)``; 32 bits: ``(x, 1.0)``.
        ``times_scale``: ``(codes * scale, scale)``, the values the codes stand for, made in the same pass.
        ``as_int8``: the codes as int8 where they fit and ``x`` holds no NaN (``codes._divide_round_clip``)."""
        if self.bits == 32:
            return x, np.float32(1.0)
        record("quantize", "ClippedScale.quantize", ROUND_OPS * np.size(x))
        if update:
            record("quantize_scale", "ClippedScale.threshold", SCALE_SEARCH_OPS * np.size(x))
            t = self.threshold(x)
            self.running = t if self.running is None else self.momentum * self.running + (1 - self.momentum) * t
        scale = self.scale
        lo = -self.qmax if self.signed else 0
        return _divide_round_clip(x, scale, lo, self.qmax, times_scale, as_int8), scale


class FixedPoint:
    """Master weights stored as ``bits``-bit signed fixed point.

    On chip the master copy of each weight tensor lives in ``update_bits``
    registers with one power-of-two step per tensor (so rescaling is a
    shift).  The step is chosen once, from the initial range with
    ``headroom``: ``step = 2**ceil(log2(headroom * max|w0| / qmax))``, so
    weights may grow to about ``headroom`` times their initial magnitude
    before they saturate.  An all-zero initial tensor is treated as having
    range 1.0.

    :meth:`apply` adds an update, rounds it onto the grid (nearest, or
    stochastic so that updates smaller than one step still move the weight
    in expectation) and saturates at ``+-qmax * step``.  At 32 bits it is a
    plain float32 add.
    """

    def __init__(self, w, bits, headroom=4.0):
        self.bits = check_bits(bits)
        w = np.asarray(w, dtype=np.float32)
        if self.bits == 32:
            self.step = None
            self.frac_bits = None
            self._value = w.copy()
            return
        if headroom < 1.0:
            raise ValueError(f"headroom must be >= 1, got {headroom!r}")
        self.qmax = signed_max(self.bits)
        max_abs = float(np.max(np.abs(w))) if w.size else 0.0
        max_abs = max_abs if max_abs > 0 else 1.0
        self.step = float(_pow2_ceil(headroom * max_abs / self.qmax))
        self.frac_bits = -int(np.log2(self.step))
        q = np.clip(np.rint(w.astype(np.float64) / self.step),
                    -self.qmax, self.qmax)
        self.q = q.astype(np.int64)

    @property
    def q(self) -> np.ndarray:
        """The int64 codes; setting them drops the cached float32 value."""
        return self._q

    @q.setter
    def q(self, codes) -> None:
        self._q, self._cached = codes, None

    @property
    def value(self) -> np.ndarray:
        """The weights as float32 (exact: codes times a power of two), read-only: computed once per
        change of the codes (a step reads it twice, to requantize and to report), not per read."""
        if self.bits == 32:
            return self._value
        if getattr(self, "_cached", None) is None:
            v = (self.q * self.step).astype(np.float32)
            v.flags.writeable = False
            self._cached = v
        return self._cached

    def to_state(self) -> dict:
        """Plain data for a checkpoint (``chipsim.checkpoint``): the codes and their grid, exactly."""
        if self.bits == 32:
            return {"bits": 32, "value": self._value.copy()}
        return {"bits": self.bits, "step": self.step, "q": self.q.copy()}

    @classmethod
    def from_state(cls, s: dict) -> "FixedPoint":
        """The inverse of ``to_state``: the same codes on the same grid, bit for bit."""
        fp = cls.__new__(cls)
        fp.bits = check_bits(s["bits"])
        if fp.bits == 32:
            fp.step = fp.frac_bits = None
            fp._value = np.asarray(s["value"], dtype=np.float32).copy()
            return fp
        fp.qmax = signed_max(fp.bits)
        fp.step = float(s["step"])
        fp.frac_bits = -int(np.log2(fp.step))
        fp.q = np.asarray(s["q"], dtype=np.int64).copy()
        return fp

    def apply(self, delta, rounding="nearest", rng=None):
        """``w <- sat(w + round(delta))``; returns the new float32 value."""
        delta = np.asarray(delta, dtype=np.float32)
        if self.bits == 32:
            record("update_master", "FixedPoint.apply", delta.size)
            self._value = (self._value + delta).astype(np.float32)
            return self._value
        # q is integer, so rounding delta/step equals rounding the new sum.
        record("update_master", "FixedPoint.apply", (MASTER_OPS + (2 if rounding == "stochastic" else 0)) * delta.size)
        if delta.shape == self.q.shape and delta.size:
            # the numpy below in one pass (passes._fixed_point_add), with the value it leaves
            seed = _rounding_seed(rounding, rng)                                 # as _round draws it
            q, value = np.empty(self.q.shape, np.int64), np.empty(self.q.shape, np.float32)
            _fixed_point_add(np.ascontiguousarray(self.q).reshape(-1), np.ascontiguousarray(delta).reshape(-1),
                             float(self.step), int(self.qmax), rounding == "stochastic", seed, q.reshape(-1),
                             value.reshape(-1))
            value.flags.writeable = False
            self.q, self._cached = q, value
            return value
        dq = _round(delta.astype(np.float64) / self.step, rounding, rng)
        self.q = np.clip(self.q + dq.astype(np.int64), -self.qmax, self.qmax)
        return self.value


def _code_dtype(bits: int, signed: bool):
    """The narrowest numpy type that holds ``bits``-bit codes (float32 at 32 bits: plain values)."""
    if bits == 32:
        return np.float32
    if bits <= 8:
        return np.int8 if signed else np.uint8
    return np.int16 if signed else np.uint16


class QuantStore:
    """A tensor a core keeps in SRAM at ``bits``: integer codes plus one float32 scale.

    Why a class: the optimizer's moments and the gradient accumulators are
    state the chip holds between steps, and the ledger must cost exactly what
    the engine holds. The codes live in the narrowest integer type that fits
    (``int8`` for 8 bits), so a test can see the width; ``bits == 32`` keeps
    float32 values and no scale. :meth:`store` quantizes (per tensor, with the
    rounding mode given), :meth:`load` dequantizes (one multiply per element,
    costed as ``dequantize``). ``signed=False`` for non-negative tensors.
    """

    def __init__(self, shape, bits, signed=True, rounding="nearest", scale_mode="float"):
        self.bits = check_bits(bits)
        _check_choice("rounding", rounding, ROUNDINGS)
        self.signed, self.rounding, self.scale_mode = bool(signed), rounding, scale_mode
        self.codes = np.zeros(shape, dtype=_code_dtype(self.bits, self.signed))
        self.scale = np.float32(1.0)

    @property
    def nbytes(self) -> int:
        """Bytes on chip: packed codes, plus the float32 scale when quantized."""
        return (self.codes.size * self.bits + 7) // 8 + (4 if self.bits < 32 else 0)

    def store(self, x, rng=None) -> None:
        if self.bits == 32:
            self.codes = np.asarray(x, dtype=np.float32).copy()
            return
        # the codes made in the store's integer type (a NaN, which none holds, gives float32 codes, then cast
        # as before)
        who = "quantize_signed" if self.signed else "quantize_unsigned"
        q, self.scale = _per_tensor(x, self.bits, self.rounding, rng, self.scale_mode, self.signed, who,
                                    dtype=self.codes.dtype)
        self.codes = q.astype(self.codes.dtype, copy=False)

    def load(self) -> np.ndarray:
        if self.bits == 32:
            return self.codes
        record("dequantize", "QuantStore.load", self.codes.size)
        return np.multiply(self.codes, self.scale, dtype=np.float32)     # = codes.astype(float32) * scale, one pass

    def state(self) -> dict:
        return {"codes": self.codes, "scale": float(self.scale)}

    def load_state(self, d) -> None:
        self.codes = np.asarray(d["codes"], dtype=self.codes.dtype).reshape(self.codes.shape)
        self.scale = np.float32(d["scale"])
