"""Batch norm: training forward (batch statistics), eval forward, and both backward forms."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..work import costed
from .exact import _MOVE, _f32

# vector operations per element, as the kernels below compute them (the chip prices each one)
BN_TRAIN_OPS = 6      # statistics: sum, sum of squares; normalise: subtract, scale; affine: scale, shift
BN_EVAL_OPS = 2       # one fused scale and shift per element
BN_BACKWARD_OPS = 8   # two reductions (3 ops) and the closed form (5 ops)
BN_RUNNING_OPS = 6    # per channel: two EMAs of (old, new) and the unbiased-variance factor


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


@costed("bn_forward", count=lambda a, out: BN_TRAIN_OPS * a.x.size)
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


@costed("bn_eval", count=lambda a, out: BN_EVAL_OPS * a.x.size)
def batchnorm_eval_forward(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Normalise with stored running statistics (inference)."""
    x = _f32(x)
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    scale = np.asarray(gamma, dtype=np.float64) * inv_std
    shift = np.asarray(beta, dtype=np.float64) \
        - np.asarray(running_mean, dtype=np.float64) * scale
    return (x * _bcast(scale, x.ndim) + _bcast(shift, x.ndim)).astype(np.float32)


@costed("bn_backward", count=lambda a, out: BN_BACKWARD_OPS * a.gy.size)
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


@costed("bn_backward", count=lambda a, out: a.gy.size)
def batchnorm_backward_fixed_stats(gy, cache):
    """gx = gamma * inv_std * gy: the gradient with the batch statistics held
    constant. No reduction over the batch, so each row's error is its own."""
    gy = _f32(gy)
    return (gy * _bcast(cache.gamma * cache.inv_std, gy.ndim)).astype(np.float32)


@costed("bn_running_stats", count=lambda a, out: BN_RUNNING_OPS * a.running_mean.size)
def batchnorm_update_running(running_mean, running_var, cache, momentum, count):
    """Fold one batch's statistics into the running ones, in place (torch's rule: the running
    variance takes the *unbiased* batch variance, ``var * M / (M - 1)`` for ``M = count`` values
    per channel)."""
    running_mean += momentum * (cache.mean - running_mean)
    running_var += momentum * (cache.var * (count / max(count - 1, 1)) - running_var)
