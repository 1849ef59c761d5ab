"""Batch norm without the whole batch: running statistics updated row by row, or statistics per micro-batch.

Why a module of its own: ``norm`` is the batch-statistics BN (``mapping.statistics: batch``), which a
streaming chip can run only behind a barrier (every sample of the step must reach the layer before any is
normalised). These two forms need no such barrier:

* :func:`batchnorm_stream_forward` (``running``): the rows arrive one at a time in batch order (a sample's
  label variants are consecutive rows); each row first folds its own per-channel mean and spread into the
  running estimates, then is normalised with them. Row ``i``'s output therefore depends on rows ``<= i``
  only. The estimate is an exponentially weighted mean and variance (the mixture variance: the row's own
  spread over its spatial positions plus its mean's distance from the estimate) with weight
  ``max(1 / (t + 1), momentum)`` for the ``t``-th row ever seen: a cumulative average that counts the
  starting estimate (mean 0, variance 1) as one row while few rows have been seen, then an EMA whose
  horizon is ``1 / momentum`` rows. (Counting the start keeps the first rows' variance away from 0: a
  dense layer's first row alone has none, and dividing by ``sqrt(eps)`` made training diverge.)
* :func:`batchnorm_micro_forward` (``micro-batch``): statistics over each group of ``group`` consecutive
  rows (the samples a core processes together), as ``norm.batchnorm_train_forward`` computes them over a
  batch.

Both return per-row statistics (``mean``, ``inv_std`` of shape (N, C)) in a :class:`RowBNCache`, and the
backward with the statistics held fixed (:func:`batchnorm_backward_rows`) scales each row by its own.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..trace.work import costed
from .exact import _f32
from .norm import BN_RUNNING_OPS, BN_TRAIN_OPS, _as_ncs, _bn_normalise, _bn_stats


class RowBNCache(NamedTuple):
    """Per-row statistics a streaming BN normalised with: ``mean``/``var``/``inv_std`` are (N, C)."""
    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    mean: np.ndarray
    var: np.ndarray


@njit(cache=True, error_model="numpy")
def _stream_rows(x, gamma, beta, rmean, rvar, seen, momentum, eps, y, mean_rows, var_rows, inv_rows):
    """Row by row: fold the row into (rmean, rvar), then normalise it with them. float64 estimates; each
    row's statistics go out as float32 (``mean_rows``, ``var_rows``, ``inv_rows = 1 / sqrt(var + eps)``)."""
    n, c, s = x.shape
    if s == 1:                                     # a dense layer's input: see _stream_rows_1
        return _stream_rows_1(x[:, :, 0], gamma, beta, rmean, rvar, seen, momentum, eps, y[:, :, 0],
                              mean_rows, var_rows, inv_rows)
    for b in range(n):
        seen += 1
        a = max(1.0 / (seen + 1), momentum)
        for ci in range(c):
            row = x[b, ci]
            mu = 0.0
            for k in range(s):
                mu += row[k]
            mu /= s
            v = 0.0
            for k in range(s):
                d = row[k] - mu
                v += d * d
            v /= s
            d = mu - rmean[ci]
            rmean[ci] += a * d
            rvar[ci] = (1.0 - a) * (rvar[ci] + a * d * d) + a * v
            m, var = rmean[ci], rvar[ci]
            inv = 1.0 / np.sqrt(var + eps)
            mean_rows[b, ci], var_rows[b, ci], inv_rows[b, ci] = np.float32(m), np.float32(var), np.float32(inv)
            g, sh = gamma[ci], beta[ci]
            m32, inv32 = np.float32(m), np.float32(inv)
            for k in range(s):
                y[b, ci, k] = ((row[k] - m32) * inv32) * g + sh
    return seen


@njit(cache=True, error_model="numpy")
def _stream_rows_1(x, gamma, beta, rmean, rvar, seen, momentum, eps, y, mean_rows, var_rows, inv_rows):
    """:func:`_stream_rows` for one value per channel (s = 1: a dense layer's N x features): the same
    operations written without the loops over the row's values, so that the loop over the channels,
    whose iterations are independent, vectorises (its square root and division dominated the dense
    block's BN: 1568 channels x 320 rows a DF-R step; 4.5 -> 1.7 ms). ``mu`` and ``v`` are still formed
    as ``0 + x``, ``/ 1`` and ``0 + d * d``: the same IEEE operations, signed zeros included
    (``tests/test_statistics.py`` checks it against a plain loop)."""
    n, c = x.shape
    for b in range(n):
        seen += 1
        a = max(1.0 / (seen + 1), momentum)
        xb, yb = x[b], y[b]
        mb, vb, ib = mean_rows[b], var_rows[b], inv_rows[b]
        for ci in range(c):
            xv = xb[ci]
            mu = (0.0 + xv) / 1.0
            d0 = xv - mu
            v = (0.0 + d0 * d0) / 1.0
            d = mu - rmean[ci]
            m = rmean[ci] + a * d
            var = (1.0 - a) * (rvar[ci] + a * d * d) + a * v
            rmean[ci], rvar[ci] = m, var
            inv = 1.0 / np.sqrt(var + eps)
            mb[ci], vb[ci], ib[ci] = np.float32(m), np.float32(var), np.float32(inv)
            yb[ci] = ((xv - np.float32(m)) * np.float32(inv)) * gamma[ci] + beta[ci]
    return seen


@costed("bn_forward", count=lambda a, out: BN_TRAIN_OPS * a.x.size + BN_RUNNING_OPS * a.x.shape[0] * a.x.shape[1])
def batchnorm_stream_forward(x, gamma, beta, running_mean, running_var, seen, momentum, eps=1e-5):
    """Normalise each row with running statistics that it has just updated (see the module doc).

    ``running_mean``/``running_var`` (float32, (C,)) are updated in place; returns ``(y, cache, seen)`` with
    ``seen`` the rows folded in so far. The cache's ``xhat`` is None: the fixed-statistics backward needs
    only ``inv_std``."""
    x = _f32(x)
    n, c = x.shape[0], x.shape[1]
    rm, rv = running_mean.astype(np.float64), running_var.astype(np.float64)
    y = np.empty_like(x)
    mean_rows, var_rows, inv = (np.empty((n, c), np.float32) for _ in range(3))
    seen = _stream_rows(_as_ncs(x), np.asarray(gamma, np.float32), np.asarray(beta, np.float32), rm, rv,
                        int(seen), float(momentum), float(eps), _as_ncs(y), mean_rows, var_rows, inv)
    running_mean[...] = rm
    running_var[...] = rv
    return y, RowBNCache(None, inv, np.asarray(gamma, np.float32), mean_rows, var_rows), seen


@costed("bn_forward", count=lambda a, out: BN_TRAIN_OPS * a.x.size)
def batchnorm_micro_forward(x, gamma, beta, group, eps=1e-5):
    """Normalise each group of ``group`` consecutive rows with that group's own statistics (mean and biased
    variance, as ``norm.batchnorm_train_forward``); returns ``(y, cache)`` with per-row statistics."""
    x = _f32(x)
    n, c = x.shape[0], x.shape[1]
    gamma, beta = np.asarray(gamma, np.float32), np.asarray(beta, np.float32)
    y, xhat = np.empty_like(x), np.empty_like(x)
    mean_rows, var_rows = np.empty((n, c), np.float32), np.empty((n, c), np.float32)
    inv_rows = np.empty((n, c), np.float32)
    for r0 in range(0, n, max(1, int(group))):
        r1 = min(n, r0 + max(1, int(group)))
        xs = np.ascontiguousarray(x[r0:r1])
        mean, var = _bn_stats(_as_ncs(xs))
        inv = (1.0 / np.sqrt(var + eps)).astype(np.float32)
        mean, var = mean.astype(np.float32), var.astype(np.float32)
        ys, hs = np.empty_like(xs), np.empty_like(xs)
        _bn_normalise(_as_ncs(xs), mean, inv, gamma, beta, _as_ncs(hs), _as_ncs(ys))
        y[r0:r1], xhat[r0:r1] = ys, hs
        mean_rows[r0:r1], var_rows[r0:r1], inv_rows[r0:r1] = mean, var, inv
    return y, RowBNCache(xhat, inv_rows, gamma, mean_rows, var_rows)


@costed("bn_backward", count=lambda a, out: a.gy.size)
def batchnorm_backward_rows(gy, cache):
    """gx = gamma * inv_std[row] * gy: the fixed-statistics gradient with each row's own statistics."""
    gy = _f32(gy)
    k = (cache.inv_std * cache.gamma[None, :]).reshape(cache.inv_std.shape + (1,) * (gy.ndim - 2))
    return (gy * k).astype(np.float32, copy=False)


def select_rows(cache: RowBNCache, rows) -> RowBNCache:
    """The per-row statistics of ``rows`` (what a core keeps for the rows that get an error)."""
    return RowBNCache(None, cache.inv_std[rows], cache.gamma, cache.mean[rows], cache.var[rows])
