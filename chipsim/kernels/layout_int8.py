"""Channels-last int8 data movement for the convolutions on the int8 unit (numba).

Why a second layout: oneDNN's int8 GEMM (``torch._int_mm``) is fast when the
long dimension (the output pixels, T) is the rows of the first operand and
the narrow one (channels) is the columns (``chipsim.kernels.int8``). So on the
int8 unit the stride-1 grid of ``layout`` is kept (pitch ``Wp``, garbage
columns, one zero gap serving both paddings) but stored channels-last:

* padded input planes ``xp (N, Hp*Wp + tail, C)`` int8;
* im2col ``cols (N*Ho*Wp, kh*kw*C)`` int8, each row one output pixel, its
  columns ordered (i, j, c): each (i, j) tap is one contiguous run of C
  bytes of ``xp``, and the weights are reordered to match;
* errors ``g (N*Ho*Wp, O)`` int8, zeros in the garbage columns.

Everything is int8 from the first pass on: the codes (int8 as the block's
quantizers make them for this unit, or float32) are read once, converted while
padding, and the im2col matrix a GEMM streams is a quarter of the float one. Pure copies and (col2im) exact int32 adds whose bound the
caller checks; nothing here rounds.

The kernels that convert float codes to int8 also return whether they met a
NaN (a diverged run: int8 has none), so the caller can hand the product to the
float path, which carries the NaN on as before. They note it without a branch
(``nan |= v != v``, a select for the value): with an ``if`` in the inner loop,
the conversion of a 64 x 32 x 14 x 14 error to the channels-last grid took
0.34 ms, without it 0.16 ms.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exact import _MOVE


def pad_planes_cl(x, ph, pw, wp, tail):
    """(N,C,H,W) integer codes (float32 or int8) -> (int8 zero-padded planes (N, Hp*Wp + tail, C), saw a NaN)."""
    if x.dtype == np.int8:
        return _pad_planes_cl_i8(x, ph, pw, wp, tail), False
    return _pad_planes_cl(x, ph, pw, wp, tail)


# From int8 codes the channels-last kernels gather each output row from a 2-D slab ``x[b, :, row, :]``
# (channels x pixels) instead of indexing the 4-D array per element: measured 2.0-2.7x faster on int8 codes
# (a 64 x 32 x 14 x 14 error to the grid 0.20 -> 0.075 ms), and 2x slower on float32 codes, whose kernels
# (which also look for a NaN) keep the per-element form.
@njit(**_MOVE)
def _pad_planes_cl_i8(x, ph, pw, wp, tail):
    n, c, h, w = x.shape
    out = np.zeros((n, (h + 2 * ph) * wp + tail, c), dtype=np.int8)
    for b in prange(n):
        dst = out[b]
        for hi in range(h):
            rows = x[b, :, hi, :]
            base = (hi + ph) * wp + pw
            for wi in range(w):
                d = dst[base + wi]
                for ci in range(c):
                    d[ci] = rows[ci, wi]
    return out


@njit(**_MOVE)
def _pad_planes_cl(x, ph, pw, wp, tail):
    n, c, h, w = x.shape
    hp = h + 2 * ph
    out = np.zeros((n, hp * wp + tail, c), dtype=np.int8)
    bad = np.zeros(n, dtype=np.bool_)
    for b in prange(n):
        dst = out[b]
        nan = False
        for hi in range(h):
            base = (hi + ph) * wp + pw
            for wi in range(w):
                d = dst[base + wi]                  # one pixel's C bytes written together (as nchw_to_grid_cl)
                for ci in range(c):
                    v = x[b, ci, hi, wi]
                    nan |= v != v
                    d[ci] = np.int8(v if v == v else 0)
        bad[b] = nan
    return out, bad.any()


@njit(**_MOVE)
def pad_planes_i8(x, ph, pw, wp, tail):
    """(N,C,H,W) integer codes -> int8 zero-padded planes (N*C, Hp*Wp + tail) at pitch ``wp``: the
    NCHW grid of ``layout._pad_planes`` in int8, for convs with few input channels (see
    ``conv._forward_int8``); and whether a NaN was seen."""
    n, c, h, w = x.shape
    hp = h + 2 * ph
    out = np.zeros((n * c, hp * wp + tail), dtype=np.int8)
    bad = np.zeros(n * c, dtype=np.bool_)
    for bc in prange(n * c):
        src = x[bc // c, bc % c]
        nan = False
        for hi in range(h):
            s = src[hi]
            d = out[bc, (hi + ph) * wp + pw:(hi + ph) * wp + pw + w]
            for wi in range(w):
                v = s[wi]
                nan |= v != v
                d[wi] = np.int8(v if v == v else 0)
        bad[bc] = nan
    return out, bad.any()


@njit(**_MOVE)
def nchw_to_grid_i8(gy, wp):
    """(N, O, Ho, Wo) integer codes -> int8 (O, N*Ho*Wp) with zeros in the garbage columns: the
    NCHW grid of ``layout._nchw_to_grid`` in int8; and whether a NaN was seen."""
    n, o, ho, wo = gy.shape
    L = ho * wp
    out = np.zeros((o, n * L), dtype=np.int8)
    bad = np.zeros(o, dtype=np.bool_)
    for oi in prange(o):
        nan = False
        for b in range(n):
            dst = out[oi, b * L:(b + 1) * L]
            splane = gy[b, oi]
            for oh in range(ho):
                s = splane[oh]
                d = dst[oh * wp:oh * wp + wo]
                for ow in range(wo):
                    v = s[ow]
                    nan |= v != v
                    d[ow] = np.int8(v if v == v else 0)
        bad[oi] = nan
    return out, bad.any()


@njit(**_MOVE)
def im2col_cl(xp, kh, kw, wp, ho):
    """Padded channels-last planes -> cols (N*Ho*Wp, kh*kw*C) int8, columns ordered (i, j, c).

    For one output pixel t and kernel row i, the kw taps (j, c) are ``kw*C`` consecutive bytes of
    the flattened plane (from ``(t + i*Wp)*C``), so each row of cols is kh contiguous copies.
    """
    n, r, c = xp.shape
    L = ho * wp
    run = kw * c
    cols = np.empty((n * L, kh * run), dtype=np.int8)
    for b in prange(n):
        src = xp[b].reshape(r * c)
        for t in range(L):
            row = cols[b * L + t]
            for i in range(kh):
                s = src[(t + i * wp) * c:(t + i * wp) * c + run]
                d = row[i * run:(i + 1) * run]
                for q in range(run):
                    d[q] = s[q]
    return cols


def nchw_to_grid_cl(gy, wp):
    """(N, O, Ho, Wo) integer codes (float32 or int8) -> (int8 (N*Ho*Wp, O), zeros in the garbage columns;
    saw a NaN)."""
    if gy.dtype == np.int8:
        return _nchw_to_grid_cl_i8(gy, wp), False
    return _nchw_to_grid_cl(gy, wp)


@njit(**_MOVE)
def _nchw_to_grid_cl_i8(gy, wp):
    n, o, ho, wo = gy.shape
    L = ho * wp
    out = np.zeros((n * L, o), dtype=np.int8)
    for b in prange(n):
        for oh in range(ho):
            rows = gy[b, :, oh, :]
            d = out[b * L + oh * wp:b * L + oh * wp + wo]
            for ow in range(wo):
                dd = d[ow]
                for oi in range(o):
                    dd[oi] = rows[oi, ow]
    return out


@njit(**_MOVE)
def _nchw_to_grid_cl(gy, wp):
    """float32 codes to the grid (:func:`nchw_to_grid_cl`).

    Walks the output in order (each pixel's O bytes written together) and gathers from the O
    planes: measured 1.3-2x faster than walking the planes, whose writes stride by O bytes.
    """
    n, o, ho, wo = gy.shape
    L = ho * wp
    out = np.zeros((n * L, o), dtype=np.int8)
    bad = np.zeros(n, dtype=np.bool_)
    for b in prange(n):
        nan = False
        for oh in range(ho):
            for ow in range(wo):
                d = out[b * L + oh * wp + ow]
                for oi in range(o):
                    v = gy[b, oi, oh, ow]
                    nan |= v != v
                    d[oi] = np.int8(v if v == v else 0)
        bad[b] = nan
    return out, bad.any()


@njit(**_MOVE)
def grid_cl_to_nchw_into(acc, out, ho, wp, wo):
    """Exact accumulator (n*Ho*Wp, O) -> ``out`` (n, O, Ho, Wo) in out's dtype, garbage dropped.

    Writes each output row contiguously, gathering down one sample's block of the accumulator
    (L2-resident): measured 1.5x faster on the large layers than scattering each pixel's O values.
    """
    n, o = out.shape[0], out.shape[1]
    L = ho * wp
    for b in prange(n):
        blk = acc[b * L:(b + 1) * L]
        for oi in range(o):
            for oh in range(ho):
                d = out[b, oi, oh]
                r0 = oh * wp
                for ow in range(wo):
                    d[ow] = blk[r0 + ow, oi]


@njit(**_MOVE)
def grid_cl_to_nchw_scaled_into(acc, scale, out, ho, wp, wo, wide):
    """:func:`grid_cl_to_nchw_into` times ``scale[o]``, into float32 ``out``.

    The product is taken in the dtype the float path's accumulator had (float32, or float64 when
    ``wide``) and rounded to float32 once, so the bits are those of
    ``layout._grid_to_nchw_scaled_into`` on the float accumulator.
    """
    n, o = out.shape[0], out.shape[1]
    L = ho * wp
    for b in prange(n):
        blk = acc[b * L:(b + 1) * L]
        for oi in range(o):
            sc = scale[oi]
            for oh in range(ho):
                d = out[b, oi, oh]
                r0 = oh * wp
                for ow in range(wo):
                    if wide:
                        d[ow] = np.float32(np.float64(blk[r0 + ow, oi]) * np.float64(sc))
                    else:
                        d[ow] = np.float32(np.float32(blk[r0 + ow, oi]) * sc)


@njit(**_MOVE)
def col2im_grid_cl(gcols, out, c, kh, kw, ph, pw, wp, ho):
    """Adjoint of pad + :func:`im2col_cl` on an int32 ``gcols (N*Ho*Wp, kh*kw*C)``, cropped into
    ``out (N, C, H, W)`` (any dtype: the exact int32 sums are converted on the way out).

    Per sample, the taps are added into one int32 channels-last accumulator in a fixed order: for
    pixel t and kernel row i, the kw taps (j, c) land on ``kw*C`` consecutive accumulator entries
    (from ``(t + i*Wp)*C``), one contiguous run, as in :func:`im2col_cl`. Exact while the caller's
    bound holds (every sum below ``2**31``).
    """
    n, _, h, w = out.shape
    hp = h + 2 * ph
    L = ho * wp
    run = kw * c
    for b in prange(n):
        acc = np.zeros((hp * wp + kw - 1) * c, dtype=np.int32)
        for t in range(L):
            row = gcols[b * L + t]
            for i in range(kh):
                a = acc[(t + i * wp) * c:(t + i * wp) * c + run]
                s = row[i * run:(i + 1) * run]
                for q in range(run):
                    a[q] += s[q]
        for ci in range(c):
            plane = out[b, ci]
            for hi in range(h):
                d = plane[hi]
                base = ((hi + ph) * wp + pw) * c + ci
                for wi in range(w):
                    d[wi] = acc[base + wi * c]
