"""Sums of squares in numpy's own order, fused: no float64 temporary, the same bits.

Why the order matters: the activation scales (``quant.ClippedScale``) and the goodness are float
statistics that everything downstream depends on, so a faster kernel must give exactly what the
numpy expression it replaces gave -- ``np.mean(np.square(x, dtype=np.float64))`` and
``(y.astype(np.float64) ** 2).sum(axis=1)`` -- and numpy adds float64 pairwise (see
:func:`_pairwise_sum_squares`). The tests compare both on many sizes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exact import _MOVE


@njit(cache=True)
def _sum_squares_leaf(x, lo, n):
    """numpy's pairwise-sum leaf (n <= 128): in a row below 8 terms, else 8 interleaved partial sums."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            v = np.float64(x[i])
            res += v * v
        return res
    v0, v1, v2, v3 = np.float64(x[lo]), np.float64(x[lo + 1]), np.float64(x[lo + 2]), np.float64(x[lo + 3])
    v4, v5, v6, v7 = np.float64(x[lo + 4]), np.float64(x[lo + 5]), np.float64(x[lo + 6]), np.float64(x[lo + 7])
    r0, r1, r2, r3, r4, r5, r6, r7 = v0 * v0, v1 * v1, v2 * v2, v3 * v3, v4 * v4, v5 * v5, v6 * v6, v7 * v7
    i = 8
    while i < n - (n % 8):
        v0, v1, v2, v3 = np.float64(x[lo + i]), np.float64(x[lo + i + 1]), np.float64(x[lo + i + 2]), \
            np.float64(x[lo + i + 3])
        v4, v5, v6, v7 = np.float64(x[lo + i + 4]), np.float64(x[lo + i + 5]), np.float64(x[lo + i + 6]), \
            np.float64(x[lo + i + 7])
        r0 += v0 * v0
        r1 += v1 * v1
        r2 += v2 * v2
        r3 += v3 * v3
        r4 += v4 * v4
        r5 += v5 * v5
        r6 += v6 * v6
        r7 += v7 * v7
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        v = np.float64(x[lo + i])
        res += v * v
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum_squares(x, lo, n):
    """Sum of ``float64(x[i])**2`` over ``x[lo:lo + n]``, added in numpy's pairwise order.

    numpy's float64 ``add.reduce`` over a contiguous run sums it pairwise (``pairwise_sum`` in
    numpy's ``loops_utils.h.src``): up to 128 terms as :func:`_sum_squares_leaf`, else the two
    halves (split at a multiple of 8), each summed the same way, then added. Following the same
    tree gives the same float64 result as ``np.square(x, dtype=np.float64).sum()`` without its
    8-byte temporary. The tree is walked with an explicit stack (numba's recursion does not
    survive being called from other jitted kernels).
    """
    if n <= 128:
        return _sum_squares_leaf(x, lo, n)
    los = np.empty(128, np.int64)
    ns = np.empty(128, np.int64)
    done = np.empty(128, np.bool_)
    vals = np.empty(128, np.float64)
    top, nv = 0, 0
    los[0], ns[0], done[0] = lo, n, False
    while top >= 0:
        a, m, d = los[top], ns[top], done[top]
        top -= 1
        if m <= 128:
            vals[nv] = _sum_squares_leaf(x, a, m)
            nv += 1
        elif d:                                   # both halves summed: left + right
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        else:
            m2 = m // 2
            m2 -= m2 % 8
            los[top + 1], ns[top + 1], done[top + 1] = a, m, True
            los[top + 2], ns[top + 2], done[top + 2] = a + m2, m - m2, False
            los[top + 3], ns[top + 3], done[top + 3] = a, m2, False
            top += 3
    return vals[0]


@njit(**_MOVE)
def _row_sum_squares(y, out):
    """out[i] = the pairwise float64 sum of squares of row i (numpy's ``(y * y).sum(axis=1)``)."""
    for i in prange(y.shape[0]):
        out[i] = _pairwise_sum_squares(y[i], 0, y.shape[1])
