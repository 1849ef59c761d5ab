"""Convolution: im2col / col2im data movement (numba) around exact GEMMs.

Indexing
--------
The numba loops index 0-based views (``dst = cols[r, b*L:(b+1)*L]``, then
``dst[t]`` for ``t in range(L)``) instead of offset indices into a whole
row (``cols[r, b*L + t]``).  numba supports negative indices, so an index
it cannot prove non-negative costs a wrap-around test on every access,
which keeps LLVM from vectorising the loop; a view plus ``range(len)`` lets
it prove ``t >= 0``.  Measured on the default model's layers: im2col 3-5x
and col2im 4-6x faster, the whole conv training step 1.5-2x.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..work import bits_of_bound, costed
from .exact import _MOVE, _f32, _matmul


def _conv_macs(n, o, ho, wo, c, kh, kw) -> int:
    """Multiply-accumulates of one conv product (forward, grad-weight or grad-input alike)."""
    return int(n) * int(o) * int(ho) * int(wo) * int(c) * int(kh) * int(kw)


# --------------------------------------------------------------------------
# layout helpers (numba)
# --------------------------------------------------------------------------
def _pair(v):
    if np.ndim(v) == 0:
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _out_size(size, k, s, p):
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ValueError("kernel larger than padded input")
    return out


@njit(cache=True)
def _valid_range(k_off, stride, pad, size, n_out):
    """Output indices o with 0 <= o*stride - pad + k_off < size."""
    lo = pad - k_off
    lo = 0 if lo <= 0 else (lo + stride - 1) // stride
    hi = (size - 1 + pad - k_off) // stride + 1 if size - 1 + pad - k_off >= 0 \
        else 0
    if hi > n_out:
        hi = n_out
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True)
def _im2col_row(x, cols, r, kh, kw, sh, sw, ph, pw, ho, wo):
    """Fill row r = (c, i, j) of cols for every sample (zeros where padded).

    Each output row's segment is written through 0-based views (see
    "Indexing" in the module docstring): zeros left of the valid range, the
    strided source run, zeros right of it.
    """
    n, c, h, w = x.shape
    p = ho * wo
    kk = kh * kw
    ci = r // kk
    i = (r // kw) % kh
    j = r % kw
    oh0, oh1 = _valid_range(i, sh, ph, h, ho)
    ow0, ow1 = _valid_range(j, sw, pw, w, wo)
    nv = ow1 - ow0
    for b in range(n):
        dst = cols[r, b * p:(b + 1) * p]
        src = x[b, ci]
        for t in range(oh0 * wo):
            dst[t] = 0
        for t in range(oh1 * wo, p):
            dst[t] = 0
        for oh in range(oh0, oh1):
            drow = dst[oh * wo:(oh + 1) * wo]
            srow = src[oh * sh - ph + i]
            for ow in range(ow0):
                drow[ow] = 0
            for ow in range(ow1, wo):
                drow[ow] = 0
            d = drow[ow0:ow1]
            s0 = ow0 * sw - pw + j
            for t in range(nv):
                d[t] = srow[s0 + t * sw]


@njit(**_MOVE)
def _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo):
    """(N,C,H,W) -> cols (C*kh*kw, N*Ho*Wo); row r = (c, i, j).

    Row-parallel: each iteration writes whole contiguous rows it owns.
    """
    n, c, h, w = x.shape
    cols = np.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    for r in prange(c * kh * kw):
        _im2col_row(x, cols, r, kh, kw, sh, sw, ph, pw, ho, wo)
    return cols


@njit(**_MOVE)
def _col2im(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo):
    """Adjoint of :func:`_im2col`: scatter-add cols back to (N,C,H,W).

    Parallel over (n, c) planes; each plane is owned by one iteration and
    summed in a fixed order, so the result is deterministic.
    """
    p = ho * wo
    kk = kh * kw
    out = np.zeros((n * c, h, w), dtype=cols.dtype)
    for bc in prange(n * c):
        b = bc // c
        ci = bc % c
        dst = out[bc]
        for i in range(kh):
            oh0, oh1 = _valid_range(i, sh, ph, h, ho)
            for j in range(kw):
                ow0, ow1 = _valid_range(j, sw, pw, w, wo)
                nv = ow1 - ow0
                src = cols[ci * kk + i * kw + j, b * p:(b + 1) * p]
                d0 = ow0 * sw - pw + j
                for oh in range(oh0, oh1):
                    drow = dst[oh * sh - ph + i]
                    s = src[oh * wo + ow0:oh * wo + ow1]
                    for t in range(nv):
                        drow[d0 + t * sw] += s[t]
    return out.reshape(n, c, h, w)


@njit(**_MOVE)
def _nop_to_onp(a):
    """(N, O, P) -> (O, N*P), parallel over O."""
    n, o, p = a.shape
    out = np.empty((o, n * p), dtype=a.dtype)
    for oi in prange(o):
        for b in range(n):
            d = out[oi, b * p:(b + 1) * p]
            s = a[b, oi]
            for k in range(p):
                d[k] = s[k]
    return out


@njit(**_MOVE)
def _onp_to_nop(a, n):
    """(O, N*P) -> (N, O, P), parallel over N."""
    o = a.shape[0]
    p = a.shape[1] // n
    out = np.empty((n, o, p), dtype=a.dtype)
    for b in prange(n):
        for oi in range(o):
            d = out[b, oi]
            s = a[oi, b * p:(b + 1) * p]
            for k in range(p):
                d[k] = s[k]
    return out


# Stride-1 "grid" layout.  For stride 1 the conv is computed on a grid of
# pitch Wp (see _grid_pitch): output pixel (oh, ow) sits at oh*Wp + ow, and the
# last Wp - Wo columns of each grid row are garbage and dropped.  Each padded
# input plane is stored row by row at the same pitch, with the ph top/bottom
# rows and the pw left columns zero; a row's right padding is the next row's
# left padding, so one zero gap of pw columns serves both.  In exchange every
# im2col row segment becomes ONE contiguous run of the padded plane (a
# memcpy) and col2im becomes contiguous adds, which is what makes the data
# movement cheap next to the GEMM.  The GEMM grows by Wp/Wo (3x3, pad 1:
# (W+1)/W, 4-14% on the default model).  The garbage columns of gy are set to
# zero, so they add exact zeros to grad_w and grad_input.
def _grid_pitch(w, kw, pw):
    """Row pitch of the stride-1 grid: W + pw, or Wo if that is wider.

    Why it is safe: tap j of output column ow reads padded column ow + j,
    i.e. input column ow + j - pw.  Past the row's end (ow + j >= Wp) the
    read lands at column ow + j - Wp <= Wo + kw - 2 - Wp < pw of the next
    row, inside its zero left padding, so it reads the zero that the right
    padding would have held.
    """
    return max(w + pw, w + 2 * pw - kw + 1)


@njit(**_MOVE)
def _pad_planes(x, ph, pw, wp, tail):
    """(N,C,H,W) -> zero-padded planes (N*C, Hp*Wp + tail) at pitch ``wp``."""
    n, c, h, w = x.shape
    hp = h + 2 * ph
    out = np.zeros((n * c, hp * wp + tail), dtype=x.dtype)
    for bc in prange(n * c):
        src = x[bc // c, bc % c]
        for hi in range(h):
            s = src[hi]
            d = out[bc, (hi + ph) * wp + pw:(hi + ph) * wp + pw + w]
            for wi in range(w):
                d[wi] = s[wi]
    return out


@njit(**_MOVE)
def _im2col_grid(xp, n, c, kh, kw, wp, ho):
    """Padded planes -> cols (C*kh*kw, N*Ho*Wp); each segment is a memcpy."""
    L = ho * wp
    kk = kh * kw
    cols = np.empty((c * kk, n * L), dtype=xp.dtype)
    for r in prange(c * kk):
        ci = r // kk
        off = ((r // kw) % kh) * wp + r % kw
        for b in range(n):
            src = xp[b * c + ci, off:off + L]
            dst = cols[r, b * L:(b + 1) * L]
            for t in range(L):
                dst[t] = src[t]
    return cols


@njit(**_MOVE)
def _col2im_grid(cols, n, c, h, w, kh, kw, ph, pw, wp, ho):
    """Adjoint of pad + :func:`_im2col_grid`, cropped to (N,C,H,W).

    For each (sample, channel) plane, its kh*kw shifted column segments are
    added into one small padded accumulator that stays in L1, then the
    interior is copied out.  Parallel over channels; each plane is summed in
    a fixed (i, j) order, so the result is deterministic.
    """
    hp = h + 2 * ph
    L = ho * wp
    kk = kh * kw
    out = np.empty((n, c, h, w), dtype=cols.dtype)
    for ci in prange(c):
        acc = np.empty(hp * wp + kw - 1, dtype=cols.dtype)
        for b in range(n):
            acc[:] = 0
            for r in range(ci * kk, (ci + 1) * kk):
                off = ((r // kw) % kh) * wp + r % kw
                dst = acc[off:off + L]
                src = cols[r, b * L:(b + 1) * L]
                for t in range(L):
                    dst[t] += src[t]
            dplane = out[b, ci]
            for hi in range(h):
                s = acc[(hi + ph) * wp + pw:(hi + ph) * wp + pw + w]
                d = dplane[hi]
                for wi in range(w):
                    d[wi] = s[wi]
    return out


@njit(**_MOVE)
def _grid_to_nchw(a, n, ho, wp, wo):
    """(O, N*Ho*Wp) grid GEMM output -> (N, O, Ho, Wo), dropping garbage."""
    o = a.shape[0]
    L = ho * wp
    out = np.empty((n, o, ho, wo), dtype=a.dtype)
    for b in prange(n):
        for oi in range(o):
            src = a[oi, b * L:(b + 1) * L]
            dplane = out[b, oi]
            for oh in range(ho):
                s = src[oh * wp:oh * wp + wo]
                d = dplane[oh]
                for ow in range(wo):
                    d[ow] = s[ow]
    return out


@njit(**_MOVE)
def _grid_to_nchw_scaled(a, scale, n, ho, wp, wo):
    """:func:`_grid_to_nchw` with each output channel ``o`` multiplied by ``scale[o]``, as float32.

    The product is taken in the accumulator's type (float32 times float32, or float64 for the
    wider paths) and rounded to float32 once, as numpy's ``(acc * scale).astype(np.float32)`` does.
    """
    o = a.shape[0]
    L = ho * wp
    out = np.empty((n, o, ho, wo), dtype=np.float32)
    for b in prange(n):
        for oi in range(o):
            src = a[oi, b * L:(b + 1) * L]
            sc = scale[oi]
            dplane = out[b, oi]
            for oh in range(ho):
                s = src[oh * wp:oh * wp + wo]
                d = dplane[oh]
                for ow in range(wo):
                    d[ow] = np.float32(s[ow] * sc)
    return out


@njit(**_MOVE)
def _nchw_to_grid(gy, wp):
    """(N, O, Ho, Wo) -> (O, N*Ho*Wp) with zeros in the garbage columns."""
    n, o, ho, wo = gy.shape
    L = ho * wp
    out = np.empty((o, n * L), dtype=gy.dtype)
    for oi in prange(o):
        for b in range(n):
            dst = out[oi, b * L:(b + 1) * L]
            splane = gy[b, oi]
            for oh in range(ho):
                s = splane[oh]
                d = dst[oh * wp:(oh + 1) * wp]
                for ow in range(wo):
                    d[ow] = s[ow]
                for ow in range(wo, wp):
                    d[ow] = 0
    return out


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
@costed("conv_forward", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: _conv_macs(*(out[0] if a.keep_cols else out).shape, *a.w.shape[1:]))
def conv2d_forward(x, w, stride=1, padding=0, int_bound=None, keep_cols=False, out_scale=None):
    """Cross-correlation ``y = conv(x, w)``: x (N,C,H,W), w (O,C,kh,kw).

    im2col then one GEMM ``w (O, C*kh*kw) @ cols`` over the whole batch.
    Exact path (``int_bound`` on (x, w)) reduces over K = C*kh*kw.
    ``keep_cols=True`` returns ``(y, cols)``: the column matrix is exactly what
    :func:`conv2d_grad_weight` needs for the same ``x``, so a caller that will
    take the weight gradient can pass it back and skip a second im2col.
    ``out_scale`` (O,): returns ``(acc * out_scale[o]).astype(float32)`` per
    output channel instead of the accumulator ``acc``, the multiply done while
    the GEMM's output is copied into NCHW (one pass fewer over the output). It
    is the caller's dequantisation, and the caller records it as such: this
    kernel's work is the convolution's MACs either way.
    """
    x, w = _f32(x), _f32(w)
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    if c2 != c:
        raise ValueError(f"channel mismatch: x has {c}, w has {c2}")
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = _out_size(h, kh, sh, ph), _out_size(wd, kw, sw, pw)
    w2 = w.reshape(o, c * kh * kw)
    if sh == sw == 1:
        wp = _grid_pitch(wd, kw, pw)
        cols = _im2col_grid(_pad_planes(x, ph, pw, wp, kw - 1), n, c, kh, kw,
                            wp, ho)
        y = np.ascontiguousarray(_matmul(w2, cols, int_bound, "conv2d_forward"))
        if out_scale is None:
            y = _grid_to_nchw(y, n, ho, wp, wo)
        else:
            y = _grid_to_nchw_scaled(y, np.ascontiguousarray(out_scale, np.float32).reshape(o), n, ho, wp, wo)
        return (y, cols) if keep_cols else y
    cols = _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo)
    y = _matmul(w2, cols, int_bound, "conv2d_forward")
    y = _onp_to_nop(np.ascontiguousarray(y), n).reshape(n, o, ho, wo)
    if out_scale is not None:
        y = (y * np.asarray(out_scale, np.float32).reshape(1, o, 1, 1)).astype(np.float32)
    return (y, cols) if keep_cols else y


@costed("conv_grad_weight", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: _conv_macs(*a.gy.shape, *out.shape[1:]))
def conv2d_grad_weight(x, gy, kernel_hw, stride=1, padding=0, int_bound=None, cols=None):
    """dL/dw (O,C,kh,kw) = gy (O, N*P) @ cols^T; ``int_bound`` on (x, gy).

    The reduction runs over K = N*Ho*Wo (every output pixel of the batch).
    ``cols``: the column matrix from ``conv2d_forward(x, ..., keep_cols=True)``
    on this same ``x`` (not re-checked: the caller owns that promise).
    """
    x, gy = _f32(x), _f32(gy)
    n, c, h, wd = x.shape
    o, ho, wo = gy.shape[1:]
    kh, kw = _pair(kernel_hw)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    if (ho, wo) != (_out_size(h, kh, sh, ph), _out_size(wd, kw, sw, pw)):
        raise ValueError("gy spatial shape does not match x/kernel/stride")
    if sh == sw == 1:
        wp = _grid_pitch(wd, kw, pw)
        if cols is None:
            cols = _im2col_grid(_pad_planes(x, ph, pw, wp, kw - 1), n, c, kh, kw, wp, ho)
        g = _nchw_to_grid(gy, wp)
    else:
        if cols is None:
            cols = _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo)
        g = _nop_to_onp(gy.reshape(n, o, ho * wo))
    # Computed transposed, cols (K, T) @ g^T -> (K, O): OpenBLAS splits the
    # larger output dimension K across its threads and reads both operands
    # along their contiguous rows (measured 10-25% faster than g @ cols^T on
    # the default model's layers).  Garbage grid columns hold exact zeros,
    # so the exactness bound uses the true reduction length.
    gw_t = _matmul(cols, g.T, int_bound, "conv2d_grad_weight",
                   k_eff=n * ho * wo)
    return np.ascontiguousarray(gw_t.T).reshape(o, c, kh, kw)


@costed("conv_grad_input", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: _conv_macs(*a.gy.shape, *a.w.shape[1:]))
def conv2d_grad_input(gy, w, x_shape, stride=1, padding=0, int_bound=None):
    """dL/dx (N,C,H,W) = col2im(w^T @ gy); ``int_bound`` on (gy, w).

    The GEMM reduces over O, but col2im then adds up to
    ``ceil(kh/sh)*ceil(kw/sw)`` GEMM outputs into one input pixel, so the
    exactness bound uses K = O*ceil(kh/sh)*ceil(kw/sw) (the most products
    that reach one element of dx).
    """
    gy, w = _f32(gy), _f32(w)
    n, c, h, wd = (int(v) for v in x_shape)
    o, _, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    k_eff = o * (-(-kh // sh)) * (-(-kw // sw))
    wt = w.reshape(o, c * kh * kw).T
    if sh == sw == 1:
        wp = _grid_pitch(wd, kw, pw)
        g = _nchw_to_grid(gy, wp)
        gcols = _matmul(wt, g, int_bound, "conv2d_grad_input", k_eff=k_eff)
        return _col2im_grid(np.ascontiguousarray(gcols), n, c, h, wd, kh, kw,
                            ph, pw, wp, ho)
    g = _nop_to_onp(gy.reshape(n, o, ho * wo))
    gcols = _matmul(wt, g, int_bound, "conv2d_grad_input", k_eff=k_eff)
    return _col2im(np.ascontiguousarray(gcols), n, c, h, wd, kh, kw,
                   sh, sw, ph, pw, ho, wo)
