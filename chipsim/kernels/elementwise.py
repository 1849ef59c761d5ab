"""Elementwise and pooling kernels: ReLU, max-pool, goodness."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..trace.work import costed, record
from .exact import _MOVE, _f32
from .layout import _out_size
from .sums import _row_sum_squares


@costed("relu", count=lambda a, out: out.size)
def relu_forward(x):
    """max(x, 0).  Elementwise numpy: nothing for numba to win here."""
    return np.maximum(_f32(x), np.float32(0))


@njit(**_MOVE)
def _relu_mask_mul(g, y, out):
    for i in prange(g.size):
        out[i] = g[i] if y[i] > 0 else np.float32(0)


@costed("relu_backward", count=lambda a, out: out.size)
def relu_backward(gy, y_or_mask):
    """gy where the ReLU was active (``y > 0`` or a boolean mask).

    A numba loop: this runs on the largest tensors of a training step (every
    pre-activation of the batch), where numpy's ``where`` with its
    temporaries was the single most expensive elementwise op. Serial like the
    other kernels between BLAS calls (``exact.PARALLEL``).
    """
    g = _f32(gy)
    y = np.asarray(y_or_mask)
    if y.dtype != np.float32:
        return np.where(y > 0, g, np.float32(0))
    out = np.empty_like(g)
    _relu_mask_mul(g.reshape(-1), np.ascontiguousarray(y).reshape(-1), out.reshape(-1))
    return out


@njit(inline="always", cache=True)
def _relu(v):
    """np.maximum(v, 0) bit for bit: NaN kept, -0.0 becomes +0.0."""
    return v if v > 0 or np.isnan(v) else np.float32(0)


@njit(**_MOVE)
def _maxpool_fwd(x, k, s, ho, wo, relu):
    n, c, h, w = x.shape
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    for bc in prange(n * c):
        plane = x[bc // c, bc % c]
        yp = y[bc // c, bc % c]
        ip = idx[bc // c, bc % c]
        if k == 2 and s == 2:
            if relu:
                _maxpool_plane_2x2_relu(plane, yp, ip, ho, wo, w)
            else:
                _maxpool_plane_2x2(plane, yp, ip, ho, wo, w)
            continue
        for oh in range(ho):
            yrow = yp[oh]
            irow = ip[oh]
            for ow in range(wo):
                best = plane[oh * s, ow * s]
                if relu:
                    best = _relu(best)
                bi = (oh * s) * w + ow * s
                for i in range(k):
                    row = plane[oh * s + i]
                    for j in range(k):
                        v = row[ow * s + j]
                        if relu:
                            v = _relu(v)
                        if v > best:  # strict: ties keep the first max
                            best = v
                            bi = (oh * s + i) * w + ow * s + j
                yrow[ow] = best
                irow[ow] = bi
    return y, idx


@njit(cache=True)
def _maxpool_plane_2x2(plane, yp, ip, ho, wo, w):
    """The 2x2, stride-2 window (the default models' pool), unrolled: the same row-major scan with
    strict ``>`` as the general loop, written out so that no inner loop or slice is left."""
    for oh in range(ho):
        r0 = plane[2 * oh]
        r1 = plane[2 * oh + 1]
        yrow = yp[oh]
        irow = ip[oh]
        base = 2 * oh * w
        for ow in range(wo):
            j = 2 * ow
            best, bi = _max4(r0[j], r0[j + 1], r1[j], r1[j + 1], base + j, w)
            yrow[ow] = best
            irow[ow] = bi


@njit(cache=True)
def _maxpool_plane_2x2_relu(plane, yp, ip, ho, wo, w):
    """:func:`_maxpool_plane_2x2` of ReLU(plane)."""
    for oh in range(ho):
        r0 = plane[2 * oh]
        r1 = plane[2 * oh + 1]
        yrow = yp[oh]
        irow = ip[oh]
        base = 2 * oh * w
        for ow in range(wo):
            j = 2 * ow
            best, bi = _max4(_relu(r0[j]), _relu(r0[j + 1]), _relu(r1[j]), _relu(r1[j + 1]), base + j, w)
            yrow[ow] = best
            irow[ow] = bi


@njit(inline="always", cache=True)
def _max4(a, b, c, d, i0, w):
    """Max of a 2x2 window (a b / c d) and its flat index (a at i0), ties to the first."""
    best, bi = a, i0
    if b > best:
        best, bi = b, i0 + 1
    if c > best:
        best, bi = c, i0 + w
    if d > best:
        best, bi = d, i0 + w + 1
    return best, bi


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


@costed("maxpool", count=lambda a, out: out[0].size * a.k * a.k)
def maxpool2d_forward(x, k, stride=None, relu=False):
    """k x k max-pool, no padding, floor mode.  Returns (y, argmax).

    ``argmax`` (int64, shape of y) is the flat index into each H*W plane, as
    torch's ``return_indices``; ties go to the first max in row-major order.

    ``relu=True``: the pool of ``relu_forward(x)``, the same values and indices,
    with the ReLU applied as each element is read instead of in a pass of its
    own (one read of ``x``, no ReLU output written). The ReLU still runs on every
    element, and is logged as :func:`relu_forward`'s work, so the trace is the
    same as for the two calls.
    """
    x = _f32(x)
    s = k if stride is None else int(stride)
    ho, wo = _out_size(x.shape[2], k, s, 0), _out_size(x.shape[3], k, s, 0)
    if relu:
        record("relu", "relu_forward", x.size)
    return _maxpool_fwd(x, int(k), s, ho, wo, bool(relu))


@costed("maxpool_backward", count=lambda a, out: a.gy.size)
def maxpool2d_backward(gy, argmax, x_shape):
    """Route each output gradient to its argmax (summing if windows overlap)."""
    return _maxpool_bwd(_f32(gy), np.ascontiguousarray(argmax, np.int64),
                        int(x_shape[2]), int(x_shape[3]))


@costed("goodness", count=lambda a, out: np.size(a.y), bits=lambda a, out: (a.bits, a.bits))
def goodness(y, bits=32):
    """Per-sample mean of squares over all non-batch dims -> float32 (N,).

    Summed in float64 (numpy pairwise, fixed order) then rounded once. ``bits``: the width of the
    values in ``y`` (quantized codes times a scale), for the cost record: the chip squares the codes.
    """
    y = np.asarray(y).reshape(len(y), -1)
    if y.dtype == np.float32 and y.flags.c_contiguous and y.size:
        sums = np.empty(len(y), np.float64)
        _row_sum_squares(y, sums)                 # numpy's pairwise order, without the float64 copy
    else:
        y = y.astype(np.float64)
        sums = (y * y).sum(axis=1)
    return (sums / y.shape[1]).astype(np.float32)


@costed("goodness_backward", count=lambda a, out: out.size)
def goodness_backward(gg, y):
    """d goodness / d y: gy = gg[:, None, ...] * 2 * y / D (one scaled multiply per element)."""
    y = _f32(y)
    d = y[0].size
    gg = np.asarray(gg, dtype=np.float32).reshape((-1,) + (1,) * (y.ndim - 1))
    return (gg * (np.float32(2.0 / d) * y)).astype(np.float32, copy=False)


@costed("decode", count=lambda a, out: np.size(a.scores))
def decode(scores):
    """Class decisions from per-class scores: (N, C), or (N, C, k) summed over its last axis first
    (goodness of the last k blocks); one add or compare per score."""
    scores = np.asarray(scores)
    if scores.ndim == 3:
        scores = scores.sum(axis=2)
    return scores.argmax(axis=1)


def numba_threads() -> int:
    """Number of threads numba's parallel kernels use."""
    import numba
    return numba.get_num_threads()
