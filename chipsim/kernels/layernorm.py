"""Layer norm over the last axis (each token normalised over its features), forward and backward.

Unlike batch norm, every row has its own statistics, so rows never couple:
a core can normalise, keep and back-propagate any subset of tokens or
samples on its own. Statistics are accumulated in float64 and rounded to
float32, as ``norm.py`` does for batch norm, so the result does not depend
on summation order.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..trace.work import costed
from .exact import _f32

LAYERNORM_OPS = 8            # per element: sum, subtract, square, sum, subtract, multiply, scale, shift
LAYERNORM_BACKWARD_OPS = 11  # per element: dgamma (2), dbeta (1), g*gamma, two row sums (3), the closed form (4)
LAYERNORM_PARAM_GRAD_OPS = 3  # per element, without the input gradient: dgamma (multiply, add), dbeta (add)


class LNCache(NamedTuple):
    """What :func:`layernorm_backward` needs: normalised input, per-row 1/std, the gain used."""
    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray


@costed("layernorm", count=lambda a, out: out[0].size * LAYERNORM_OPS)
def layernorm_forward(x, gamma, beta, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis; returns (y, LNCache).

    ``var`` is the biased variance, as torch's ``layer_norm``.
    """
    x = _f32(x)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = np.square(x64 - mean).mean(axis=-1, keepdims=True)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(np.float32)
    xhat = ((x - mean.astype(np.float32)) * inv_std).astype(np.float32)
    gamma = _f32(gamma)
    y = xhat * gamma + _f32(beta)
    return y.astype(np.float32), LNCache(xhat, inv_std, gamma)


def _backward_ops(a, out):
    return np.asarray(a.gy).size * (LAYERNORM_BACKWARD_OPS if a.input_grad else LAYERNORM_PARAM_GRAD_OPS)


@costed("layernorm_backward", count=_backward_ops)
def layernorm_backward(gy, cache, input_grad: bool = True):
    """Returns (gx, ggamma, gbeta); ggamma/gbeta are summed over every leading axis.

    gx = inv_std * (gh - mean(gh) - xhat * mean(gh * xhat)) with gh = gy * gamma:
    the gradient through the row's mean and variance. ``input_grad=False``
    (a layer-local rule, whose input is detached) skips gx and returns None for it.
    """
    gy = _f32(gy)
    xhat = cache.xhat
    lead = tuple(range(gy.ndim - 1))
    g64 = gy.astype(np.float64)
    ggamma = (g64 * xhat).sum(axis=lead).astype(np.float32)
    gbeta = g64.sum(axis=lead).astype(np.float32)
    if not input_grad:
        return None, ggamma, gbeta
    gh = g64 * cache.gamma
    m1 = gh.mean(axis=-1, keepdims=True)
    m2 = (gh * xhat).mean(axis=-1, keepdims=True)
    gx = cache.inv_std * (gh - m1 - xhat * m2)
    return gx.astype(np.float32), ggamma, gbeta
