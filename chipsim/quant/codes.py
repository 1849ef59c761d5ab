"""Quantization codes: the stateless functions that turn float tensors into integer codes and back.

Why a module of its own: these are pure functions of their arguments (and of a
caller's seeded generator for stochastic rounding) -- bit checks, code ranges,
scale search, rounding, the fused numba passes -- so they can be tested
against numpy one by one. The state a core keeps between steps (running
activation scales, fixed-point master weights, quantized optimizer state)
lives in :mod:`chipsim.quant.stores`, built on these. The conventions (ranges,
``bits == 32``, ``pow2`` scales, rounding modes) are stated in
:mod:`chipsim.quant`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..kernels.exact import _MOVE
from ..kernels.int8 import INT8_MAX
from ..kernels.sums import _pairwise_sum_squares
from ..trace.work import costed, record

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


@njit(inline="always", cache=True)
def _uniform(base, i):
    """u_i = splitmix64(seed + (i+1) * golden) / 2**24 in [0, 1): a counter-based generator.

    u_i depends only on (seed, i), never on which thread computed it, so
    stochastic rounding is bit-identical under any number of numba threads --
    and 10x+ faster than drawing a numpy array of uniforms for tensors of
    millions of errors.
    """
    z = base + np.uint64(i + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)


@njit(**_MOVE)
def _floor_plus_uniform(v, seed, out):
    """out[i] = floor(v[i] + u_i), with u_i from :func:`_uniform`."""
    base = np.uint64(seed)
    for i in prange(v.size):
        out[i] = np.floor(v[i] + _uniform(base, i))


@njit(**_MOVE)
def _fixed_point_add(q, delta, step, qmax, stochastic, seed, q_out, value):
    """The master weights' rounded add in one pass (``FixedPoint.apply``), as it was written in numpy:
    ``dq = round(float64(delta) / step)`` (nearest even, or stochastic: ``floor(x + u_i)`` with the
    counter-based uniforms of ``quant.codes._uniform``), ``q_out = clip(q + int64(dq), -qmax, qmax)``,
    and the new value ``float32(float64(q_out) * step)``. ``delta`` is finite (``check_update``)."""
    base = np.uint64(seed)
    for i in prange(q.size):
        x = np.float64(delta[i]) / step
        r = np.floor(x + _uniform(base, i)) if stochastic else np.rint(x)
        qi = q[i] + np.int64(r)
        qi = min(max(qi, -qmax), qmax)
        q_out[i] = qi
        value[i] = np.float32(np.float64(qi) * step)


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


@njit(**_MOVE)
def _rows_absmax(rows):
    """``np.abs(rows).max(axis=1)`` (float32): compared as integers, as :func:`_absmax`, but a NaN wins, as
    in numpy's max (its bit pattern is above every finite value's and inf's once the sign is cleared)."""
    out = np.empty(rows.shape[0], np.float32)
    for r in range(rows.shape[0]):
        b = rows[r].view(np.uint32)
        m = np.uint32(0)
        for i in range(b.size):
            m = max(m, b[i] & np.uint32(0x7FFFFFFF))
        out[r:r + 1].view(np.uint32)[0] = m
    return out


@njit(**_MOVE)
def _rows_divide_round_clip(rows, scale, qmax, out):
    """``np.clip(np.rint(rows / scale[:, None]), -qmax, qmax)`` in float32, row by row (NaN kept, as
    np.clip keeps it)."""
    for r in range(rows.shape[0]):
        s = scale[r]
        src, dst = rows[r], out[r]
        for i in range(src.size):
            q = np.rint(src[i] / s)
            if not np.isnan(q):
                q = q if q >= -qmax else -qmax
                q = q if q <= qmax else qmax
            dst[i] = q


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


@njit(**_MOVE)
def _divide_round_clip_flat(x, scale, lo, hi, times_scale, out):
    """``clip(rint(x / scale), lo, hi)`` per element, or (``times_scale``) that code times ``scale``, a
    float32 product: the value the code stands for, made in the same pass."""
    for i in prange(x.size):
        q = np.rint(x[i] / scale)                 # float32 / float32, as numpy's x / scale
        if not np.isnan(q):                       # as np.clip: NaN kept, and -0.0 kept above lo = 0
            q = q if q >= lo else lo
            q = q if q <= hi else hi
        out[i] = q * scale if times_scale else q


# Codes that fit int8 (signed, at most 8 bits) can leave the quantizer as int8 (``as_int8``), for the int8
# unit, which reads them as they are: from float32 codes every product first converts them (a pass reading
# 4 bytes a code; a 64 x 32 x 14 x 14 error to uint8 channels-last took 0.31 ms from float32, 0.08 ms from
# int8). The same values as the float32 codes, in a narrower type; the kernels below make them with the
# float kernels' operations and also say whether they met a NaN, which int8 cannot hold: the caller then
# makes float32 codes instead, which carry it on as before. The flag is kept per chunk of elements, so a
# parallel build (``exact.PARALLEL``) needs no reduction across threads.
INT_CHUNK = 4096


@njit(**_MOVE)
def _divide_round_clip_i8(x, scale, lo, hi, out):
    """:func:`_divide_round_clip_flat`'s codes into int8 ``out``; whether a NaN was met. (Each chunk a
    slice, and the code stored through int32: so the loop vectorises, 4x faster than indexing the whole
    array with a direct float-to-int8 conversion.)"""
    n = x.size
    chunks = (n + INT_CHUNK - 1) // INT_CHUNK
    bad = np.zeros(chunks, np.bool_)
    for c in prange(chunks):
        xs, os = x[c * INT_CHUNK:min(n, (c + 1) * INT_CHUNK)], out[c * INT_CHUNK:min(n, (c + 1) * INT_CHUNK)]
        nan = False
        for i in range(xs.size):
            q = np.rint(xs[i] / scale)
            nan |= q != q
            q = q if q >= lo else lo              # a NaN ends at lo here; the caller discards the codes
            q = q if q <= hi else hi
            os[i] = np.int32(q)
        bad[c] = nan
    return bad.any()


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
    where they fit (up to 8 bits) and ``x`` holds no NaN (see :data:`INT_CHUNK`).
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


@njit(cache=True)
def _absmax(x):
    """max|x| over a float32 vector, NaNs ignored (as ``a > m`` comparisons would): exact and order-free.

    Compared as integers: for non-negative finite floats (and inf) the IEEE bit pattern orders like
    the value, so the sign bit is cleared and NaN patterns (above inf's) are mapped to 0. An
    integer max reduction vectorises, a float compare-and-branch does not: about 10x faster than the
    float loop, and serial (this runs between BLAS calls; see ``kernels.exact.PARALLEL``).
    """
    b = x.view(np.uint32)
    m = np.uint32(0)
    for i in range(b.size):
        v = b[i] & np.uint32(0x7FFFFFFF)
        if v > np.uint32(0x7F800000):       # NaN
            v = np.uint32(0)
        m = max(m, v)
    return np.array([m], dtype=np.uint32).view(np.float32)[0]


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


def _quantize_flat(x, inv_scale, lo, hi, stochastic, seed, out):
    """One fused pass: scale, round (nearest-even or stochastic), clip, store float32 codes.

    Stochastic uniforms come from :func:`_uniform`, so the result does not depend on threading.
    Two loops, not one with a branch inside, so that the nearest-rounding loop vectorises.
    """
    if stochastic:
        _quantize_flat_stochastic(x, inv_scale, lo, hi, np.uint64(seed), out)
    else:
        _quantize_flat_nearest(x, inv_scale, lo, hi, out)


@njit(**_MOVE)
def _quantize_flat_nearest(x, inv_scale, lo, hi, out):
    for i in prange(x.size):
        q = np.rint(np.float64(x[i]) * inv_scale)
        if q > hi:
            q = hi
        elif q < lo:
            q = lo
        out[i] = np.float32(q)


@njit(**_MOVE)
def _quantize_flat_stochastic(x, inv_scale, lo, hi, base, out):
    for i in prange(x.size):
        q = np.floor(np.float64(x[i]) * inv_scale + _uniform(base, i))
        if q > hi:
            q = hi
        elif q < lo:
            q = lo
        out[i] = np.float32(q)


@njit(**_MOVE)
def _quantize_flat_int(x, inv_scale, lo, hi, stochastic, base, out):
    """:func:`_quantize_flat`'s codes, by the same operations, into integer ``out`` (int8, int16, uint8,
    uint16: stored through int32, exact for codes in ``[lo, hi]``); whether a NaN was met (chunks as
    :func:`_divide_round_clip_i8`'s)."""
    n = x.size
    chunks = (n + INT_CHUNK - 1) // INT_CHUNK
    bad = np.zeros(chunks, np.bool_)
    for c in prange(chunks):
        i0 = c * INT_CHUNK
        xs, os = x[i0:min(n, i0 + INT_CHUNK)], out[i0:min(n, i0 + INT_CHUNK)]
        nan = False
        if stochastic:
            for i in range(xs.size):
                q = np.floor(np.float64(xs[i]) * inv_scale + _uniform(base, i0 + i))
                nan |= q != q
                q = q if q <= hi else hi
                q = q if q >= lo else lo          # a NaN ends at lo; the caller discards the codes
                os[i] = np.int32(q)
        else:
            for i in range(xs.size):
                q = np.rint(np.float64(xs[i]) * inv_scale)
                nan |= q != q
                q = q if q <= hi else hi
                q = q if q >= lo else lo
                os[i] = np.int32(q)
        bad[c] = nan
    return bad.any()


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
