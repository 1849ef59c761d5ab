"""Batch norm: training forward (batch statistics), eval forward, and both backward forms."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..trace.work import costed
from .exact import _MOVE, _f32

# vector operations per element, as the kernels below compute them (the chip prices each one)
# training forward, two-pass statistics (_bn_stats): add x (1); subtract the mean, square and accumulate (3);
# normalise: subtract, multiply by inv_std (2); affine: multiply by gamma, add beta (2)
BN_TRAIN_OPS = 8
BN_EVAL_OPS = 2       # one fused scale and shift per element
BN_BACKWARD_OPS = 8   # two reductions (3 ops) and the closed form (5 ops)
# per channel (batchnorm_update_running): mean += momentum * (mean_b - mean): subtract, multiply, add (3);
# var += momentum * (var_b * factor - var): multiply by the unbiased factor, subtract, multiply, add (4)
BN_RUNNING_OPS = 7


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

    Each channel is summed in a fixed order (sample by sample, then along the row): deterministic.
    Four channels are summed side by side (:func:`_bn_stats4`): each keeps its own order, so the
    result is the same as one channel at a time, but four independent chains of float64 adds run at
    once instead of waiting on one add's latency (measured 3x faster on the default model's inputs).
    """
    n, c, s = x.shape
    mean = np.empty(c, dtype=np.float64)
    var = np.empty(c, dtype=np.float64)
    for g in prange((c + 3) // 4):
        _bn_stats4(x, 4 * g, mean, var)
    return mean, var


@njit(cache=True)
def _bn_stats4(x, c0, mean, var):
    """Mean and variance of channels c0 .. c0+3; past the last channel the last one is summed again
    (a redundant chain beside the real ones costs no time) and not written."""
    n, c, s = x.shape
    m = n * s
    i0, i1, i2, i3 = c0, min(c0 + 1, c - 1), min(c0 + 2, c - 1), min(c0 + 3, c - 1)
    a0 = a1 = a2 = a3 = 0.0
    for b in range(n):
        r0, r1, r2, r3 = x[b, i0], x[b, i1], x[b, i2], x[b, i3]
        for k in range(s):
            a0 += r0[k]
            a1 += r1[k]
            a2 += r2[k]
            a3 += r3[k]
    u0, u1, u2, u3 = a0 / m, a1 / m, a2 / m, a3 / m
    a0 = a1 = a2 = a3 = 0.0
    for b in range(n):
        r0, r1, r2, r3 = x[b, i0], x[b, i1], x[b, i2], x[b, i3]
        for k in range(s):
            d0 = r0[k] - u0
            d1 = r1[k] - u1
            d2 = r2[k] - u2
            d3 = r3[k] - u3
            a0 += d0 * d0
            a1 += d1 * d1
            a2 += d2 * d2
            a3 += d3 * d3
    mean[i0], var[i0] = u0, a0 / m
    if c0 + 1 < c:
        mean[i1], var[i1] = u1, a1 / m
    if c0 + 2 < c:
        mean[i2], var[i2] = u2, a2 / m
    if c0 + 3 < c:
        mean[i3], var[i3] = u3, a3 / m


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
    gamma = np.asarray(gamma, dtype=np.float32)
    xhat, y = np.empty_like(x), np.empty_like(x)
    _bn_normalise(_as_ncs(x), mean, inv_std, gamma, np.asarray(beta, dtype=np.float32), _as_ncs(xhat), _as_ncs(y))
    return y, BNCache(xhat, inv_std, gamma, mean, var)


@njit(**_MOVE)
def _bn_normalise(x, mean, inv_std, gamma, beta, xhat, y):
    """xhat = (x - mean) * inv_std, y = xhat * gamma + beta per channel, in one pass.

    The same float32 operations in the same order as the numpy expression it replaces (no fused
    multiply-add: numba does not contract without fastmath), so the same bits, without its
    broadcast temporaries.
    """
    n, c, s = x.shape
    for b in prange(n):
        for ci in range(c):
            m, k, g, sh = mean[ci], inv_std[ci], gamma[ci], beta[ci]
            src, dh, dy = x[b, ci], xhat[b, ci], y[b, ci]
            for t in range(s):
                h = (src[t] - m) * k
                dh[t] = h
                dy[t] = h * g + sh


@costed("bn_eval", count=lambda a, out: BN_EVAL_OPS * a.x.size)
def batchnorm_eval_forward(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Normalise with stored running statistics (inference)."""
    x = _f32(x)
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    scale = np.asarray(gamma, dtype=np.float64) * inv_std
    shift = np.asarray(beta, dtype=np.float64) \
        - np.asarray(running_mean, dtype=np.float64) * scale
    return (x * _bcast(scale, x.ndim) + _bcast(shift, x.ndim)).astype(np.float32, copy=False)


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
    return (gy * _bcast(cache.gamma * cache.inv_std, gy.ndim)).astype(np.float32, copy=False)


@costed("bn_running_stats", count=lambda a, out: BN_RUNNING_OPS * a.running_mean.size)
def batchnorm_update_running(running_mean, running_var, cache, momentum, count):
    """Fold one batch's statistics into the running ones, in place (torch's rule: the running
    variance takes the *unbiased* batch variance, ``var * M / (M - 1)`` for ``M = count`` values
    per channel)."""
    running_mean += momentum * (cache.mean - running_mean)
    running_var += momentum * (cache.var * (count / max(count - 1, 1)) - running_var)
