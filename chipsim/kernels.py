"""Numeric kernels: convolution, dense, batch norm, ReLU, max-pool, goodness.

Pure mechanism, no policy: these functions know nothing about learning rules,
cores or configs.  Layout is NCHW, arrays are float32 unless stated.

Structure
---------
Data movement (im2col, col2im, layout transposes, pooling, batch-norm
reductions, the int64 GEMM) is in ``@njit(cache=True)`` numba kernels written
with ``prange`` where each iteration owns its slice of the output, so results
never depend on thread scheduling.  The int64 GEMM always runs parallel;
the kernels that sit between BLAS calls run serial unless
``CHIPSIM_NUMBA_PARALLEL=1`` (see :data:`PARALLEL` for the measured reason).
The GEMMs themselves go to BLAS through ``np.matmul`` called from thin
Python wrappers: matmul hands strided column blocks (used by the chunked
fp64 path below) straight to BLAS without copies, where a jitted ``np.dot``
would copy them and ``np.dot`` itself falls back to a slow non-BLAS loop for
some strided transposed blocks (measured 5-150x slower on grad_w chunks).
OpenBLAS sgemm with a fixed thread count partitions only the output, never
the reduction, so it is bit-reproducible run to run.

Indexing
--------
The numba loops index 0-based views (``dst = cols[r, b*L:(b+1)*L]``, then
``dst[t]`` for ``t in range(L)``) instead of offset indices into a whole
row (``cols[r, b*L + t]``).  numba supports negative indices, so an index
it cannot prove non-negative costs a wrap-around test on every access,
which keeps LLVM from vectorising the loop; a view plus ``range(len)`` lets
it prove ``t >= 0``.  Measured on the default model's layers: im2col 3-5x
and col2im 4-6x faster, the whole conv training step 1.5-2x.

Integer-exact accumulation
--------------------------
With ``int_bound=(max_abs_a, max_abs_b)`` the caller promises that both
operands hold integers (quantization codes) with ``|a| <= max_abs_a`` and
``|b| <= max_abs_b``.  Every product then is an integer of magnitude at most
``ma*mb`` and *every partial sum over any subset of the K products*, whatever
order BLAS uses, is an integer of magnitude at most ``K*ma*mb``.  A float
format with a p-bit significand represents all integers below ``2**p``
exactly, so if ``K*ma*mb < 2**p`` no rounding ever happens and the float GEMM
returns the exact integer result.  :func:`accumulation_path` picks the
cheapest format for which that proof holds:

* ``"fp32"`` (p = 24): one float32 GEMM; result returned as float32.
* ``"fp64"`` (p = 53): the reduction is split into chunks of ``kc`` terms
  with ``kc*ma*mb < 2**24``.  Each chunk is an exact float32 GEMM; the chunk
  results are summed in float64, exact because the running total stays below
  ``K*ma*mb < 2**53``.  This keeps fast sgemm for e.g. 8-bit operands.  When
  chunks would be too short to be efficient (``kc < MIN_CHUNK``, e.g. 16-bit
  operands) a single float64 GEMM is used instead (exact by the same
  argument with p = 53).  The result is returned as float64.
* ``"int64"``: explicit int64 loops (exact below ``2**63``); result int64.

The chosen path of the last call of each public function is recorded in
:data:`LAST_PATH` (``"float"`` when ``int_bound`` is None).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import malloc_tuning

malloc_tuning.apply()   # the kernels' large temporaries are reused, not page-faulted in each call

__all__ = [
    "LAST_PATH", "accumulation_path",
    "conv2d_forward", "conv2d_grad_weight", "conv2d_grad_input",
    "dense_forward", "dense_grad_weight", "dense_grad_input",
    "BNCache", "batchnorm_train_forward", "batchnorm_eval_forward",
    "batchnorm_backward", "batchnorm_backward_fixed_stats", "relu_forward", "relu_backward",
    "maxpool2d_forward", "maxpool2d_backward", "goodness", "goodness_backward",
]

LAST_PATH: dict[str, str] = {}
FP32_EXACT = 2 ** 24
FP64_EXACT = 2 ** 53
INT64_EXACT = 2 ** 63
MIN_CHUNK = 64  # shorter fp32 chunks lose to one fp64 GEMM

# Threads for the data-movement kernels that run between BLAS calls.
# They are written with prange (every iteration owns its output slice, so
# results are identical either way) but compiled serial by default: after
# each GEMM the OpenBLAS worker threads busy-wait (~0.1 s) for more work, and
# on a 2-core machine a numba/OpenMP worker then fights them for the core.
# Measured on the 2-core dev box this turned 0.5 ms copies into 8-16 ms
# stalls and made the whole conv step 3-4x slower than running the copies
# serially on the main thread.  Set CHIPSIM_NUMBA_PARALLEL=1 (before import)
# on machines with cores to spare.
PARALLEL = os.environ.get("CHIPSIM_NUMBA_PARALLEL", "0") == "1"
# numba's on-disk cache key ignores the `parallel` flag, so only the default
# (serial) flavour is cached; the parallel one is compiled per process.
_MOVE = dict(parallel=PARALLEL, cache=not PARALLEL)


# --------------------------------------------------------------------------
# exact GEMM dispatch
# --------------------------------------------------------------------------
def accumulation_path(K, max_abs_a, max_abs_b) -> str:
    """Cheapest exact accumulator for a K-term sum of products of integers.

    ``"fp32"`` if ``K*ma*mb < 2**24``, ``"fp64"`` if ``< 2**53``, else
    ``"int64"`` (see the module docstring for why these bounds are exact).
    Computed with Python ints, so the test itself cannot overflow.
    """
    total = int(K) * int(np.ceil(max_abs_a)) * int(np.ceil(max_abs_b))
    if total < FP32_EXACT:
        return "fp32"
    if total < FP64_EXACT:
        return "fp64"
    if total >= INT64_EXACT:
        raise ValueError(f"K*ma*mb = {total} overflows int64 accumulation")
    return "int64"


def _fp32_chunk(max_abs_a, max_abs_b) -> int:
    """Largest kc with kc*ma*mb < 2**24 (0 if even one product is too big)."""
    prod = int(np.ceil(max_abs_a)) * int(np.ceil(max_abs_b))
    return (FP32_EXACT - 1) // max(prod, 1)


def _matmul(a, b, int_bound, name, k_eff=None):
    """``a (M,K) @ b (K,N)`` with the accumulator chosen by ``int_bound``.

    ``k_eff`` (default K) is the most *nonzero* products that reach one
    final output element: more than K when the caller adds GEMM outputs
    afterwards (col2im), fewer when some of the K terms are known zeros
    (the garbage columns of the stride-1 grid).  The exactness bound only
    needs the nonzero count, since adding an exact zero never rounds.
    """
    if int_bound is None:
        LAST_PATH[name] = "float"
        return np.matmul(a, b)
    K = a.shape[1]
    path = accumulation_path(K if k_eff is None else k_eff, *int_bound)
    LAST_PATH[name] = path
    if path == "fp32":
        return np.matmul(a, b)
    if path == "int64":
        return _matmul_int64(np.ascontiguousarray(a, dtype=np.int64),
                             np.ascontiguousarray(b, dtype=np.int64))
    kc = _fp32_chunk(*int_bound)
    if kc < MIN_CHUNK:
        return np.matmul(a.astype(np.float64), b.astype(np.float64))
    return _chunked_fp64(a, b, kc)


def _chunked_fp64(a, b, kc):
    """Sum of exact float32 GEMMs over K-chunks of at most ``kc`` terms.

    Chunks are equal-sized (``ceil(K / n_chunks)``) so no tiny tail GEMM.
    The slices are strided views; ``np.matmul`` passes them to BLAS without
    copying (``np.dot`` does not always: see the module docstring).
    """
    K = a.shape[1]
    n_chunks = -(-K // kc)
    size = -(-K // n_chunks)
    acc = np.matmul(a[:, :size], b[:size]).astype(np.float64)
    for k0 in range(size, K, size):
        acc += np.matmul(a[:, k0:k0 + size], b[k0:k0 + size])
    return acc


@njit(parallel=True, cache=True)
def _matmul_int64(a, b):
    """Exact int64 GEMM; rows in parallel, each row owned by one thread."""
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n), dtype=np.int64)
    for i in prange(m):
        for kk in range(k):
            av = a[i, kk]
            if av != 0:
                for j in range(n):
                    c[i, j] += av * b[kk, j]
    return c


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


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
def conv2d_forward(x, w, stride=1, padding=0, int_bound=None, keep_cols=False):
    """Cross-correlation ``y = conv(x, w)``: x (N,C,H,W), w (O,C,kh,kw).

    im2col then one GEMM ``w (O, C*kh*kw) @ cols`` over the whole batch.
    Exact path (``int_bound`` on (x, w)) reduces over K = C*kh*kw.
    ``keep_cols=True`` returns ``(y, cols)``: the column matrix is exactly what
    :func:`conv2d_grad_weight` needs for the same ``x``, so a caller that will
    take the weight gradient can pass it back and skip a second im2col.
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
        y = _matmul(w2, cols, int_bound, "conv2d_forward")
        y = _grid_to_nchw(np.ascontiguousarray(y), n, ho, wp, wo)
        return (y, cols) if keep_cols else y
    cols = _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo)
    y = _matmul(w2, cols, int_bound, "conv2d_forward")
    y = _onp_to_nop(np.ascontiguousarray(y), n).reshape(n, o, ho, wo)
    return (y, cols) if keep_cols else y


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


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
def dense_forward(x, w, int_bound=None):
    """y (N,O) = x (N,K) @ w (O,K)^T; ``int_bound`` on (x, w)."""
    return _matmul(_f32(x), _f32(w).T, int_bound, "dense_forward")


def dense_grad_weight(x, gy, int_bound=None):
    """dL/dw (O,K) = gy^T @ x, reduction over the batch; bound on (x, gy)."""
    return _matmul(_f32(gy).T, _f32(x), int_bound, "dense_grad_weight")


def dense_grad_input(gy, w, int_bound=None):
    """dL/dx (N,K) = gy (N,O) @ w (O,K); ``int_bound`` on (gy, w)."""
    return _matmul(_f32(gy), _f32(w), int_bound, "dense_grad_input")


# --------------------------------------------------------------------------
# batch norm
# --------------------------------------------------------------------------
class BNCache(NamedTuple):
    """What :func:`batchnorm_backward` needs, plus the batch statistics
    (``mean``, biased ``var``) for the caller's running-stat update."""
    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def _as_ncs(x):
    """View (N,C,...) as (N,C,S) with S = prod(spatial) (1 for (N,C))."""
    return x.reshape(x.shape[0], x.shape[1], -1)


@njit(**_MOVE)
def _bn_stats(x):
    """Per-channel mean and biased variance, two-pass in float64.

    One channel per iteration, summed in a fixed order: deterministic.
    """
    n, c, s = x.shape
    m = n * s
    mean = np.empty(c, dtype=np.float64)
    var = np.empty(c, dtype=np.float64)
    for ci in prange(c):
        acc = 0.0
        for b in range(n):
            row = x[b, ci]
            for k in range(s):
                acc += row[k]
        mu = acc / m
        acc = 0.0
        for b in range(n):
            row = x[b, ci]
            for k in range(s):
                d = row[k] - mu
                acc += d * d
        mean[ci] = mu
        var[ci] = acc / m
    return mean, var


@njit(**_MOVE)
def _bn_sums(gy, xhat):
    """Per-channel sum(gy) and sum(gy * xhat) in float64 (deterministic)."""
    n, c, s = gy.shape
    sg = np.empty(c, dtype=np.float64)
    sgx = np.empty(c, dtype=np.float64)
    for ci in prange(c):
        a = 0.0
        bsum = 0.0
        for b in range(n):
            grow = gy[b, ci]
            xrow = xhat[b, ci]
            for k in range(s):
                g = grow[k]
                a += g
                bsum += g * xrow[k]
        sg[ci] = a
        sgx[ci] = bsum
    return sg, sgx


def _bcast(v, ndim):
    return np.asarray(v, dtype=np.float32).reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_train_forward(x, gamma, beta, eps=1e-5):
    """Normalise with per-channel batch statistics; returns (y, BNCache).

    Works for (N,C,H,W) and (N,C).  ``cache.mean``/``cache.var`` are the
    batch mean and *biased* variance (what normalisation used); convert to
    unbiased with ``var * M / (M - 1)`` if mimicking torch's running_var.
    """
    x = _f32(x)
    mean, var = _bn_stats(_as_ncs(x))
    inv_std = (1.0 / np.sqrt(var + eps)).astype(np.float32)
    mean, var = mean.astype(np.float32), var.astype(np.float32)
    xhat = (x - _bcast(mean, x.ndim)) * _bcast(inv_std, x.ndim)
    y = xhat * _bcast(gamma, x.ndim) + _bcast(beta, x.ndim)
    gamma = np.asarray(gamma, dtype=np.float32)
    return y.astype(np.float32), BNCache(xhat, inv_std, gamma, mean, var)


def batchnorm_eval_forward(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Normalise with stored running statistics (inference)."""
    x = _f32(x)
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    scale = np.asarray(gamma, dtype=np.float64) * inv_std
    shift = np.asarray(beta, dtype=np.float64) \
        - np.asarray(running_mean, dtype=np.float64) * scale
    return (x * _bcast(scale, x.ndim) + _bcast(shift, x.ndim)).astype(np.float32)


def batchnorm_backward(gy, cache):
    """Returns (gx, ggamma, gbeta) for :func:`batchnorm_train_forward`.

    gx = gamma*inv_std/M * (M*gy - sum(gy) - xhat*sum(gy*xhat)), the usual
    closed form that accounts for gradients through the batch statistics.
    """
    gy = _f32(gy)
    xhat = cache.xhat
    m = gy.size // gy.shape[1]
    sg, sgx = _bn_sums(_as_ncs(gy), _as_ncs(xhat))
    k = (cache.gamma * cache.inv_std / m).astype(np.float32)
    nd = gy.ndim
    gx = _bcast(k, nd) * (m * gy - _bcast(sg, nd) - xhat * _bcast(sgx, nd))
    return gx.astype(np.float32), sgx.astype(np.float32), sg.astype(np.float32)


def batchnorm_backward_fixed_stats(gy, cache):
    """gx = gamma * inv_std * gy: the gradient with the batch statistics held
    constant. No reduction over the batch, so each row's error is its own."""
    gy = _f32(gy)
    return (gy * _bcast(cache.gamma * cache.inv_std, gy.ndim)).astype(np.float32)


# --------------------------------------------------------------------------
# elementwise, pooling, goodness
# --------------------------------------------------------------------------
def relu_forward(x):
    """max(x, 0).  Elementwise numpy: nothing for numba to win here."""
    return np.maximum(_f32(x), np.float32(0))


@njit(parallel=True, cache=True)
def _relu_mask_mul(g, y, out):
    for i in prange(g.size):
        out[i] = g[i] if y[i] > 0 else np.float32(0)


def relu_backward(gy, y_or_mask):
    """gy where the ReLU was active (``y > 0`` or a boolean mask).

    A parallel numba loop: this runs on the largest tensors of a training
    step (every pre-activation of the batch), where numpy's ``where`` with
    its temporaries was the single most expensive elementwise op.
    """
    g = _f32(gy)
    y = np.asarray(y_or_mask)
    if y.dtype != np.float32:
        return np.where(y > 0, g, np.float32(0))
    out = np.empty_like(g)
    _relu_mask_mul(g.reshape(-1), np.ascontiguousarray(y).reshape(-1), out.reshape(-1))
    return out


@njit(**_MOVE)
def _maxpool_fwd(x, k, s, ho, wo):
    n, c, h, w = x.shape
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    for bc in prange(n * c):
        plane = x[bc // c, bc % c]
        yp = y[bc // c, bc % c]
        ip = idx[bc // c, bc % c]
        for oh in range(ho):
            yrow = yp[oh]
            irow = ip[oh]
            for ow in range(wo):
                best = plane[oh * s, ow * s]
                bi = (oh * s) * w + ow * s
                for i in range(k):
                    row = plane[oh * s + i, ow * s:ow * s + k]
                    for j in range(k):
                        v = row[j]
                        if v > best:  # strict: ties keep the first max
                            best = v
                            bi = (oh * s + i) * w + ow * s + j
                yrow[ow] = best
                irow[ow] = bi
    return y, idx


@njit(**_MOVE)
def _maxpool_bwd(gy, idx, h, w):
    n, c, ho, wo = gy.shape
    gx = np.zeros((n * c, h * w), dtype=gy.dtype)
    gflat = gy.reshape(n * c, ho * wo)
    iflat = idx.reshape(n * c, ho * wo)
    for bc in prange(n * c):  # one plane per thread: deterministic adds
        dst = gx[bc]
        g = gflat[bc]
        ii = iflat[bc]
        for t in range(ho * wo):
            dst[ii[t]] += g[t]
    return gx.reshape(n, c, h, w)


def maxpool2d_forward(x, k, stride=None):
    """k x k max-pool, no padding, floor mode.  Returns (y, argmax).

    ``argmax`` (int64, shape of y) is the flat index into each H*W plane, as
    torch's ``return_indices``; ties go to the first max in row-major order.
    """
    x = _f32(x)
    s = k if stride is None else int(stride)
    ho, wo = _out_size(x.shape[2], k, s, 0), _out_size(x.shape[3], k, s, 0)
    return _maxpool_fwd(x, int(k), s, ho, wo)


def maxpool2d_backward(gy, argmax, x_shape):
    """Route each output gradient to its argmax (summing if windows overlap)."""
    return _maxpool_bwd(_f32(gy), np.ascontiguousarray(argmax, np.int64),
                        int(x_shape[2]), int(x_shape[3]))


def goodness(y):
    """Per-sample mean of squares over all non-batch dims -> float32 (N,).

    Summed in float64 (numpy pairwise, fixed order) then rounded once.
    """
    y = np.asarray(y).reshape(len(y), -1).astype(np.float64)
    return ((y * y).sum(axis=1) / y.shape[1]).astype(np.float32)


def goodness_backward(gg, y):
    """d goodness / d y: gy = gg[:, None, ...] * 2 * y / D."""
    y = _f32(y)
    d = y[0].size
    gg = np.asarray(gg, dtype=np.float32).reshape((-1,) + (1,) * (y.ndim - 1))
    return (gg * (np.float32(2.0 / d) * y)).astype(np.float32)


def numba_threads() -> int:
    """Number of threads numba's parallel kernels use."""
    import numba
    return numba.get_num_threads()
