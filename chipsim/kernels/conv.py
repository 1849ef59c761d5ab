"""Convolution: exact GEMMs between the data movement of ``layout`` (im2col, col2im, grid layout).

The three products of a conv layer (forward, weight gradient, input gradient), each costed with
the multiply-accumulates its math does (``chipsim.trace.work``), never the GEMM's padding.

Two units compute them, with the same exact result (``chipsim.kernels.exact``): a stride-1 conv
whose codes fit int8 runs on the int8 unit when the process uses it (:func:`kernel_path`), with
its data movement in int8 channels-last (``layout_int8``); everything else takes the float path
through ``layout``'s NCHW grid.
"""
from __future__ import annotations

import numpy as np

from ..trace.work import bits_of_bound, costed
from .exact import _RESULT_DTYPE, _codes, _f32, _matmul, accumulation_path, blas_threads, int8_unit
from . import conv_direct
from .int8 import _device, has_nan, int8_gemm, int32_chunk, to_int8
from .layout_int8 import (col2im_grid_cl, grid_cl_to_nchw_into, grid_cl_to_nchw_scaled_into, im2col_cl,
                          nchw_to_grid_cl, nchw_to_grid_i8, pad_planes_cl, pad_planes_i8)

# Below this many input channels the int8 products keep the NCHW grid (im2col rows of whole
# memcpy runs, GEMMs with the pixels as the long inner dimension): channels-last runs of kw*C
# bytes are too short to copy well. Measured at the engine's 320 rows, forward: conv 2->16 @28x28
# 10.9 -> 5.4 ms; at 16 and 32 channels channels-last was as fast or faster (6.5 vs 6.3 ms, 2.3 vs
# 2.9 ms).
CL_MIN_CHANNELS = 8
# oneDNN's direct int8 conv (``conv_direct``) runs the forward and the input gradient from this many input
# channels of the product on (the error's channels, for the input gradient). Below it the GEMM path is
# faster: measured forward + both gradients of the 2->16 conv at 28x28, 64 samples, 1 thread: 3.37 ms
# direct against 2.69 ms (the direct conv's channels-last output, 16 channels for 2 in, costs more to
# copy back to NCHW than its im2col saves); 16->32 at 14x14: 2.80 against 4.24 ms.
DIRECT_MIN_CHANNELS = 8
from .layout import (_col2im, _col2im_grid, _grid_pitch, _grid_to_nchw_into, _grid_to_nchw_scaled_into,  # noqa: F401
                     _im2col, _im2col_grid, _im2col_grid_into, _nchw_to_grid, _nop_to_onp, _onp_to_nop,
                     _out_size, _pad_planes, _pair)


def _conv_macs(n, o, ho, wo, c, kh, kw) -> int:
    """Multiply-accumulates of one conv product (forward, grad-weight or grad-input alike)."""
    return int(n) * int(o) * int(ho) * int(wo) * int(c) * int(kh) * int(kw)


# With a single-threaded BLAS the forward runs im2col and its GEMM one chunk of samples at a time,
# each chunk's columns about this many bytes: the GEMM then reads what im2col just wrote from L2
# instead of from memory. Measured at the engine's 320 training rows (1 thread): conv 2->16 @28x28
# 4.5 -> 2.3 ms, 16->32 @14x14 9.8 -> 7.3 ms, 32->32 @7x7 5.1 -> 4.2 ms; 1 MiB was best of
# 128 KiB .. 2 MiB. Not with a multi-threaded BLAS: each call then wakes and joins its threads, and
# on a loaded machine every join can wait for a descheduled thread -- measured on the 2-core VM
# under load, a DF-R step took 2.7 s chunked against 0.45 s in one GEMM per layer.
FORWARD_CHUNK_BYTES = 1 << 20


def _chunk_samples(k: int, length: int, n: int) -> int:
    if blas_threads() != 1:
        return n
    return max(1, min(n, FORWARD_CHUNK_BYTES // (4 * k * length)))


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
    x, w = _codes(x), _f32(w)
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    if c2 != c:
        raise ValueError(f"channel mismatch: x has {c}, w has {c2}")
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = _out_size(h, kh, sh, ph), _out_size(wd, kw, sw, pw)
    if sh == sw == 1 and not keep_cols and int8_unit(int_bound):
        y = _forward_int8(x, w, ph, pw, ho, wo, int_bound, out_scale)
        if y is not None:
            return y
    x = _f32(x)
    w2 = w.reshape(o, c * kh * kw)
    if sh == sw == 1:
        wp = _grid_pitch(wd, kw, pw)
        xp = _pad_planes(x, ph, pw, wp, kw - 1)
        L = ho * wp
        cols = np.empty((c * kh * kw, n * L), np.float32) if keep_cols else None
        scale = None if out_scale is None else np.ascontiguousarray(out_scale, np.float32).reshape(o)
        y = None
        # exact paths only: each output is then the same exact integer, chunked or not (a float
        # GEMM's rounding may depend on the operand's width)
        g = n if int_bound is None else _chunk_samples(c * kh * kw, L, n)
        for s0 in range(0, n, g):
            s1 = min(n, s0 + g)
            if keep_cols:
                _im2col_grid_into(xp[s0 * c:s1 * c], s1 - s0, c, kh, kw, wp, ho, cols, s0 * L)
                chunk = cols[:, s0 * L:s1 * L]
            else:
                chunk = _im2col_grid(xp[s0 * c:s1 * c], s1 - s0, c, kh, kw, wp, ho)
            acc = np.ascontiguousarray(_matmul(w2, chunk, int_bound, "conv2d_forward"))
            if y is None:
                y = np.empty((n, o, ho, wo), np.float32 if scale is not None else acc.dtype)
            if scale is None:
                _grid_to_nchw_into(acc, y[s0:s1], ho, wp, wo)
            else:
                _grid_to_nchw_scaled_into(acc, scale, y[s0:s1], ho, wp, wo)
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
    x, gy = _codes(x), _codes(gy)
    n, c, h, wd = x.shape
    o, ho, wo = gy.shape[1:]
    kh, kw = _pair(kernel_hw)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    if (ho, wo) != (_out_size(h, kh, sh, ph), _out_size(wd, kw, sw, pw)):
        raise ValueError("gy spatial shape does not match x/kernel/stride")
    if sh == sw == 1 and cols is None and int8_unit(int_bound):
        gw = _grad_weight_int8(x, gy, kh, kw, ph, pw, int_bound)
        if gw is not None:
            return gw
    x, gy = _f32(x), _f32(gy)
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
    gy, w = _codes(gy), _f32(w)
    n, c, h, wd = (int(v) for v in x_shape)
    o, _, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    k_eff = o * (-(-kh // sh)) * (-(-kw // sw))
    if sh == sw == 1 and int8_unit(int_bound) and k_eff <= int32_chunk(int_bound):
        gx = _grad_input_int8(gy, w, (n, c, h, wd), ph, pw, int_bound, k_eff)
        if gx is not None:
            return gx
    gy = _f32(gy)
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


# --------------------------------------------------------------------------
# the int8 unit (stride 1): channels-last grid, exact int32 sums
# --------------------------------------------------------------------------
def _record(name, K, int_bound, unit="int8"):
    """LAST_PATH keeps naming the float path's accumulator (the result's dtype), LAST_UNIT the unit
    (``int8``, or ``int8-direct`` for oneDNN's direct conv, whose bound implies the ``fp32`` path)."""
    from .exact import LAST_PATH, LAST_UNIT
    path = accumulation_path(K, *int_bound)
    LAST_PATH[name], LAST_UNIT[name] = path, unit
    return path


# Each int8 product returns None when an operand holds a NaN (a diverged run; int8 has no NaN): the
# public function then runs the float path, which carries the NaN on exactly as before. Weights
# are checked with ``has_nan`` (small); activations and errors while they are converted.

def _weights_int8(w2d):
    return None if has_nan(w2d) else to_int8(w2d)


def _direct(k, int_bound, c):
    """Whether this product runs as oneDNN's direct int8 conv (``conv_direct``): exact at its bound, on the
    CPU, with at least DIRECT_MIN_CHANNELS input channels."""
    return c >= DIRECT_MIN_CHANNELS and _device() == "cpu" and conv_direct.applies(int_bound, k)


def _forward_int8(x, w, ph, pw, ho, wo, int_bound, out_scale):
    """Forward on the int8 unit: oneDNN's direct conv where it applies (``conv_direct``); else pad +
    im2col straight to int8 channels-last, one GEMM ``cols (N*Ho*Wp, kh*kw*C) @ w (kh*kw*C, O)``, then
    back to NCHW (rescaled if asked)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    if _direct(c * kh * kw, int_bound, c):
        y = conv_direct.forward(x, w, ph, pw, out_scale)
        if y is not None:
            _record("conv2d_forward", c * kh * kw, int_bound, "int8-direct")
            return y
    wp = _grid_pitch(wd, kw, pw)
    if c < CL_MIN_CHANNELS:
        return _forward_int8_nchw(x, w, ph, pw, ho, wo, wp, int_bound, out_scale)
    w8 = _weights_int8(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o))      # rows ordered (i, j, c)
    xp, bad = pad_planes_cl(x, ph, pw, wp, kw - 1)
    if w8 is None or bad:
        return None
    acc = int8_gemm(im2col_cl(xp, kh, kw, wp, ho), w8, int_bound)
    path = _record("conv2d_forward", c * kh * kw, int_bound)
    if out_scale is None:
        y = np.empty((n, o, ho, wo), _RESULT_DTYPE[path])
        grid_cl_to_nchw_into(acc, y, ho, wp, wo)
    else:
        y = np.empty((n, o, ho, wo), np.float32)
        grid_cl_to_nchw_scaled_into(acc, np.ascontiguousarray(out_scale, np.float32).reshape(o), y,
                                    ho, wp, wo, path != "fp32")
    return y


def _forward_int8_nchw(x, w, ph, pw, ho, wo, wp, int_bound, out_scale):
    """The int8 forward on the NCHW grid: int8 pad + memcpy im2col, ``w (O, K) @ cols (K, T)``, the
    float path's copy back to NCHW (its float32 product of an exact integer below 2**24 and a
    float32 scale rounds as the float path's does)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    w8 = _weights_int8(w.reshape(o, c * kh * kw))
    xp, bad = pad_planes_i8(x, ph, pw, wp, kw - 1)
    if w8 is None or bad:
        return None
    acc = int8_gemm(w8, _im2col_grid(xp, n, c, kh, kw, wp, ho), int_bound)
    path = _record("conv2d_forward", c * kh * kw, int_bound)
    if out_scale is None:
        y = np.empty((n, o, ho, wo), _RESULT_DTYPE[path])
        _grid_to_nchw_into(acc, y, ho, wp, wo)
    else:
        y = np.empty((n, o, ho, wo), np.float32)
        _grid_to_nchw_scaled_into(acc, np.ascontiguousarray(out_scale, np.float32).reshape(o), y, ho, wp, wo)
    return y


# The weight gradient reads the input's im2col in the NCHW grid, ``cols (C*kh*kw, T)``, when a grid row
# (one channel's Ho*Wp pixels) is at least this many bytes: each row of cols is then one long copy. On
# shorter rows the channels-last im2col copies better. Measured at 64 samples, 1 thread, 8-bit errors:
# 16->32 at 14x14 (rows of 210 bytes) 0.90 -> 0.56 ms with the grid; 32->32 at 7x7 (56 bytes) 0.29 ms
# channels-last against 0.34 ms with the grid.
GRID_MIN_ROW = 128


def _grad_weight_int8(x, gy, kh, kw, ph, pw, int_bound):
    """dL/dw on the int8 unit, a reduction over every output pixel T = N*Ho*Wp of the grid (chunked into
    int32-safe pieces, summed in int64, when the bound needs it), in one of three layouts:

    * below CL_MIN_CHANNELS: ``g (O, T) @ cols^T``, both in the NCHW grid, cols (C*kh*kw, T) read
      transposed;
    * from CL_MIN_CHANNELS, on grid rows of GRID_MIN_ROW bytes or more: ``cols (C*kh*kw, T) @ g (T, O)``,
      the error channels-last (the GEMM is faster with the long operand first);
    * else ``g^T (O, T) @ cols (T, kh*kw*C)``, both channels-last."""
    n, c, h, wd = x.shape
    o, ho, wo = gy.shape[1:]
    k_eff = n * ho * wo
    wp = _grid_pitch(wd, kw, pw)
    if c < CL_MIN_CHANNELS or ho * wp >= GRID_MIN_ROW:
        xp, bad_x = pad_planes_i8(x, ph, pw, wp, kw - 1)
        g8, bad_g = (nchw_to_grid_i8 if c < CL_MIN_CHANNELS else nchw_to_grid_cl)(gy, wp)
        if bad_x or bad_g:
            return None
        cols = _im2col_grid(xp, n, c, kh, kw, wp, ho)
        if c < CL_MIN_CHANNELS:
            acc = int8_gemm(g8, cols.T, int_bound, k_eff=k_eff)                       # (O, C*kh*kw)
        else:
            acc = int8_gemm(cols, g8, int_bound, k_eff=k_eff).T                       # (C*kh*kw, O)^T
        path = _record("conv2d_grad_weight", k_eff, int_bound)
        return np.ascontiguousarray(acc.reshape(o, c, kh, kw), dtype=_RESULT_DTYPE[path])
    xp, bad_x = pad_planes_cl(x, ph, pw, wp, kw - 1)
    g8, bad_g = nchw_to_grid_cl(gy, wp)
    if bad_x or bad_g:
        return None
    acc = int8_gemm(g8.T, im2col_cl(xp, kh, kw, wp, ho), int_bound, k_eff=k_eff)    # (O, kh*kw*C)
    path = _record("conv2d_grad_weight", k_eff, int_bound)
    gw = acc.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(gw, dtype=_RESULT_DTYPE[path])


def _grad_input_int8(gy, w, x_shape, ph, pw, int_bound, k_eff):
    """dL/dx on the int8 unit: ``g (N*Ho*Wp, O) @ w (O, kh*kw*C)``, then an int32 col2im (exact:
    the caller checked ``k_eff*ma*mb < 2**31``)."""
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    ho = gy.shape[2]
    if _direct(k_eff, int_bound, o):
        gx = conv_direct.grad_input(gy, w, x_shape, ph, pw)
        if gx is not None:
            _record("conv2d_grad_input", k_eff, int_bound, "int8-direct")
            return gx
    wp = _grid_pitch(wd, kw, pw)
    if c < CL_MIN_CHANNELS:            # NCHW grid: w^T (K, O) @ g (O, T), the float path's col2im in int32
        w8 = _weights_int8(w.reshape(o, c * kh * kw).T)
        g8, bad = nchw_to_grid_i8(gy, wp)
        if w8 is None or bad:
            return None
        gcols = int8_gemm(w8, g8, int_bound)
        path = _record("conv2d_grad_input", k_eff, int_bound)
        dx = _col2im_grid(gcols, n, c, h, wd, kh, kw, ph, pw, wp, ho)
        return dx.astype(_RESULT_DTYPE[path])
    w8 = _weights_int8(w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c))      # columns ordered (i, j, c)
    g8, bad = nchw_to_grid_cl(gy, wp)
    if w8 is None or bad:
        return None
    gcols = int8_gemm(g8, w8, int_bound)
    path = _record("conv2d_grad_input", k_eff, int_bound)
    out = np.empty((n, c, h, wd), _RESULT_DTYPE[path])
    col2im_grid_cl(gcols, out, c, kh, kw, ph, pw, wp, ho)
    return out
