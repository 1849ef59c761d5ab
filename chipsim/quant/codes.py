"""Quantization codes: the stateless functions that turn float tensors into integer codes and back.

Why a module of its own: these are pure functions of their arguments (and of a
caller's seeded generator for stochastic rounding) -- bit checks, code ranges,
scale search, rounding, the choice of code type and its fallbacks -- so they
can be tested against numpy one by one; their fused loops are in
:mod:`chipsim.quant.passes`. The state a core keeps between steps (running
activation scales, fixed-point master weights, quantized optimizer state)
lives in :mod:`chipsim.quant.stores`, built on these. The conventions (ranges,
``bits == 32``, ``pow2`` scales, rounding modes) are stated in
:mod:`chipsim.quant`.
"""
from __future__ import annotations

import numpy as np

from ..kernels.int8 import INT8_MAX
from ..kernels.sums import _pairwise_sum_squares
from ..trace.work import costed, record
from .passes import (_absmax, _divide_round_clip_flat, _divide_round_clip_i8, _floor_plus_uniform, _quantize_flat,
                     _quantize_flat_int, _rows_absmax, _rows_divide_round_clip)

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
SCALE_MODES = ("float", "pow2")
ROUNDINGS = ("nearest", "stochastic")

# vector operations per element, as the functions below compute them (see chipsim.trace.work)
SCALE_SEARCH_OPS = 2     # clipping threshold: square and accumulate (or max: compare; counted alike)
ROUND_OPS = 3            # multiply by 1/scale, round to nearest, clip
STOCHASTIC_OPS = 5       # multiply, one PRNG draw (counter-based: 2 ops), add-and-floor, clip
MASTER_OPS = 4           # divide by the power-of-two step (a shift), round, add, saturate


def _round_kind(rounding: str) -> str:
    return "quantize_stochastic" if rounding == "stochastic" else "quantize"


def _round_ops(rounding: str) -> int:
    return STOCHASTIC_OPS if rounding == "stochastic" else ROUND_OPS


def check_bits(bits) -> int:
    """Return ``bits`` as int, or raise ValueError naming the allowed set."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or int(bits) not in ALLOWED_BITS:
        raise ValueError(f"bits must be one of {ALLOWED_BITS}, got {bits!r}")
    return int(bits)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def signed_max(bits: int) -> int:
    """Largest code of the symmetric signed ``bits``-bit range."""
    return 2 ** (check_bits(bits) - 1) - 1


def unsigned_max(bits: int) -> int:
    """Largest code of the unsigned ``bits``-bit range."""
    return 2 ** check_bits(bits) - 1


def _pow2_ceil(scale):
    """Round positive scales up to the next power of two (exact, via frexp).

    ``frexp`` gives ``s = m * 2**e`` with ``m`` in [0.5, 1); ``s`` is already
    a power of two iff ``m == 0.5``.  Working on the exponent avoids the
    off-by-one errors of ``2**ceil(log2(s))`` at exact powers of two.
    """
    s = np.asarray(scale, dtype=np.float64)
    m, e = np.frexp(s)
    e = np.where(m == 0.5, e - 1, e)
    return np.ldexp(1.0, e)


def _finish_scale(max_abs, qmax, scale_mode):
    """Scale mapping ``max_abs`` onto ``qmax``; all-zero tensors get scale 1.

    Any positive scale quantizes zeros exactly, and 1.0 is also a power of
    two, so the fallback is valid in both modes.
    """
    _check_choice("scale_mode", scale_mode, SCALE_MODES)
    max_abs = np.asarray(max_abs, dtype=np.float64)
    scale = np.where(max_abs > 0, max_abs / qmax, 1.0)
    if scale_mode == "pow2":
        scale = _pow2_ceil(scale)
    return scale.astype(np.float32)


def _rounding_seed(rounding, rng) -> int:
    """The seed of one rounding call: 0 for ``nearest``; for ``stochastic`` one 63-bit draw from the
    caller's seeded ``rng`` (which must be given), from which every uniform of the call derives
    (:func:`_uniform`). One draw per call, whatever the tensor's size, so the caller's stream advances
    the same way on every path."""
    _check_choice("rounding", rounding, ROUNDINGS)
    if rounding != "stochastic":
        return 0
    if rng is None:
        raise ValueError("stochastic rounding needs a numpy Generator `rng`")
    return int(rng.integers(0, 2 ** 63))


def _round(v, rounding, rng):
    """Round ``v`` to integers (nearest-even or unbiased stochastic).

    Stochastic rounding takes one 63-bit seed from the caller's seeded
    ``rng`` per call and derives every uniform from it (see
    :func:`_floor_plus_uniform`), so results are reproducible given ``rng``.
    """
    _check_choice("rounding", rounding, ROUNDINGS)
    if rounding == "nearest":
        return np.rint(v)
    seed = _rounding_seed(rounding, rng)
    v = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty(v.shape, dtype=np.float64)
    _floor_plus_uniform(v.reshape(-1), seed, out.reshape(-1))
    return out


@costed("quantize_weights", count=lambda a, out: 0 if a.bits == 32 else (SCALE_SEARCH_OPS + ROUND_OPS) * np.size(a.w))
def quantize_weights(w, bits, scale_mode="float"):
    """Symmetric signed quantization with one scale per output channel.

    Returns ``(w_int, scale)``: ``w_int`` float32 codes in
    ``[-(2**(b-1)-1), 2**(b-1)-1]`` and ``scale`` float32 of shape
    ``(w.shape[0],)`` such that ``w ~= w_int * scale[:, None, ...]``.
    Per-output-channel scales (axis 0) let each neuron/filter use its full
    code range even when filter norms differ a lot.
    ``bits == 32`` returns ``(w as float32, ones)``.
    """
    bits = check_bits(bits)
    w = np.asarray(w, dtype=np.float32)
    n_out = w.shape[0]
    if bits == 32:
        _check_choice("scale_mode", scale_mode, SCALE_MODES)
        return w.copy(), np.ones(n_out, dtype=np.float32)
    qmax = signed_max(bits)
    if not w.size or not w.flags.c_contiguous:
        max_abs = np.abs(w.reshape(n_out, -1)).max(axis=1) if w.size else np.zeros(n_out)
        scale = _finish_scale(max_abs, qmax, scale_mode)
        bshape = (n_out,) + (1,) * (w.ndim - 1)
        w_int = np.clip(np.rint(w / scale.reshape(bshape)), -qmax, qmax)
        return w_int.astype(np.float32), scale
    # the expressions above in two passes (they took five): the rows' max|w| and the codes
    rows = w.reshape(n_out, -1)
    scale = _finish_scale(_rows_absmax(rows), qmax, scale_mode)
    w_int = np.empty(w.shape, np.float32)
    _rows_divide_round_clip(rows, scale, np.float32(qmax), w_int.reshape(n_out, -1))
    return w_int, scale


def quantize_activations(x, bits, scale):
    """Unsigned codes ``clip(round(x / scale), 0, 2**b - 1)`` as float32.

    Activations are non-negative after ReLU, so an unsigned range buys one
    extra bit of resolution over a symmetric one.  Values above
    ``scale * (2**b - 1)`` saturate.  ``bits == 32`` returns ``x`` unchanged
    (as float32).
    """
    bits = check_bits(bits)
    x = np.asarray(x, dtype=np.float32)
    if bits == 32:
        return x
    if not scale > 0:
        raise ValueError(f"activation scale must be > 0, got {scale!r}")
    x_int = np.clip(np.rint(x / np.float32(scale)), 0, unsigned_max(bits))
    return x_int.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ClippedScale's two passes over an activation, fused (one read of x each, no temporaries), and
# bit for bit the numpy expressions they replace -- the tests compare them on many shapes.
def _mean_square(x) -> float:
    """``np.mean(np.square(x, dtype=np.float64))``, fused for a contiguous float32 ``x``."""
    x = np.asarray(x)
    if x.dtype != np.float32 or not x.flags.c_contiguous or x.size == 0:
        return float(np.mean(np.square(x, dtype=np.float64)))
    return _pairwise_sum_squares(x.reshape(-1), 0, x.size) / x.size


def _divide_round_clip(x, scale, lo, hi, times_scale: bool = False, as_int8: bool = False):
    """``np.clip(np.rint(x / scale), lo, hi).astype(np.float32)``: one pass for a float32 ``x``.
    ``times_scale``: those codes times ``scale`` instead (``codes * np.float32(scale)``, float32), for a
    caller that keeps only the values the codes stand for; still one pass. ``as_int8``: the codes as int8
    where they fit (``-127 <= lo``, ``hi <= 127``) and ``x`` holds no NaN."""
    x = np.asarray(x)
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        codes = np.clip(np.rint(x / scale), lo, hi).astype(np.float32)
        return codes * np.float32(scale) if times_scale else codes
    if as_int8 and not times_scale and -INT8_MAX <= lo and hi <= INT8_MAX:
        out = np.empty(x.shape, np.int8)
        if not _divide_round_clip_i8(x.reshape(-1), np.float32(scale), np.float32(lo), np.float32(hi),
                                     out.reshape(-1)):
            return out
    out = np.empty(x.shape, np.float32)
    _divide_round_clip_flat(x.reshape(-1), np.float32(scale), np.float32(lo), np.float32(hi), bool(times_scale),
                            out.reshape(-1))
    return out


def quantize_signed(x, bits, rounding="nearest", rng=None, scale_mode="float", as_int8: bool = False):
    """Per-tensor symmetric signed quantization for gradients and errors.

    Returns ``(x_int, scale)`` with float32 codes in
    ``[-(2**(b-1)-1), 2**(b-1)-1]`` and a float32 scalar scale mapping
    ``max|x|`` to the top code.  Stochastic rounding keeps small errors alive
    in expectation instead of flushing them to zero, which matters for
    learning with few bits.  ``bits == 32`` returns ``(x as float32, 1.0)``. ``as_int8``: int8 codes
    where they fit (up to 8 bits) and ``x`` holds no NaN (see ``passes.INT_CHUNK``).
    """
    return _per_tensor(x, bits, rounding, rng, scale_mode, signed=True, who="quantize_signed", as_int8=as_int8)


def quantize_unsigned(x, bits, rounding="nearest", rng=None, scale_mode="float"):
    """Per-tensor unsigned quantization of a non-negative tensor: codes in ``[0, 2**b - 1]``,
    ``max(x)`` on the top code (the counterpart of :func:`quantize_signed`, one bit finer)."""
    return _per_tensor(x, bits, rounding, rng, scale_mode, signed=False, who="quantize_unsigned")


def _per_tensor(x, bits, rounding, rng, scale_mode, signed: bool, who: str, as_int8: bool = False, dtype=None):
    """The two per-tensor quantizers: one scale from max|x| (one compare per element, logged as
    ``quantize_scale``), then divide-round-clip into the signed or unsigned code range."""
    bits = check_bits(bits)
    _check_choice("rounding", rounding, ROUNDINGS)
    x = np.asarray(x, dtype=np.float32)
    if bits == 32:
        _check_choice("scale_mode", scale_mode, SCALE_MODES)
        return x.copy(), np.float32(1.0)
    qmax = signed_max(bits) if signed else unsigned_max(bits)
    flat = np.ascontiguousarray(x).reshape(-1)
    record("quantize_scale", who, x.size)                          # max |x|: one compare per element
    record(_round_kind(rounding), who, _round_ops(rounding) * x.size)
    scale = np.float32(_finish_scale(float(_absmax(flat)) if x.size else 0.0, qmax, scale_mode))
    seed = _rounding_seed(rounding, rng)
    return quantize_flat(flat, x.shape, 1.0 / np.float64(scale), -float(qmax) if signed else 0.0, float(qmax),
                         rounding == "stochastic", seed, as_int8, dtype), scale


def quantize_flat(flat, shape, inv_scale, lo, hi, stochastic: bool, seed: int, as_int8: bool = False,
                  dtype=None):
    """:func:`_quantize_flat` into new codes of ``shape``: int8 when asked (``as_int8``) and they fit, or
    ``dtype``, an integer type the caller has sized to hold ``[lo, hi]`` (a ``QuantStore``'s); float32
    when neither, or when ``flat`` holds a NaN (which no integer holds)."""
    if dtype is None and as_int8 and -INT8_MAX <= lo and hi <= INT8_MAX:
        dtype = np.int8
    if dtype is not None:
        out = np.empty(shape, dtype)
        if not _quantize_flat_int(flat, inv_scale, lo, hi, stochastic, np.uint64(seed), out.reshape(-1)):
            return out
    out = np.empty(shape, dtype=np.float32)
    _quantize_flat(flat, inv_scale, lo, hi, stochastic, seed, out.reshape(-1))
    return out


def to_fixed_point(w, bits, frac_bits, rounding="nearest", rng=None):
    """Round ``w`` onto the signed fixed-point grid of step ``2**-frac_bits``.

    The result (float32 values, exact multiples of the step) saturates at
    ``+-(2**(b-1)-1) * step``.  ``bits == 32`` returns ``w`` as float32.
    """
    bits = check_bits(bits)
    w = np.asarray(w, dtype=np.float32)
    if bits == 32:
        return w.copy()
    qmax = signed_max(bits)
    step = np.ldexp(1.0, -int(frac_bits))
    q = np.clip(_round(w.astype(np.float64) / step, rounding, rng), -qmax, qmax)
    return (q * step).astype(np.float32)
