"""The quantizers' numba passes: each one fused loop over a tensor, bit for bit the numpy it replaced.

Why a module of their own: these are the hot loops under :mod:`chipsim.quant.codes` (which decides
scales, rounding modes, code types and fallbacks) and :mod:`chipsim.quant.stores`: the counter-based
uniforms of stochastic rounding, divide-round-clip into float32 or integer codes, the max|x| searches
and the master weights' rounded add. ``tests/test_fused_kernels.py`` and ``tests/test_update_kernels.py``
compare each with the numpy expression it replaced, on shapes with tails, ties, -0.0 and NaN.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..kernels.exact import _MOVE


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
    counter-based uniforms of :func:`_uniform`), ``q_out = clip(q + int64(dq), -qmax, qmax)``,
    and the new value ``float32(float64(q_out) * step)``. ``delta`` is finite (``check_update``)."""
    base = np.uint64(seed)
    for i in prange(q.size):
        x = np.float64(delta[i]) / step
        r = np.floor(x + _uniform(base, i)) if stochastic else np.rint(x)
        qi = q[i] + np.int64(r)
        qi = min(max(qi, -qmax), qmax)
        q_out[i] = qi
        value[i] = np.float32(np.float64(qi) * step)


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
