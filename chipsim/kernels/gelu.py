"""GELU, the transformer MLP's activation, in its exact erf form (torch's default).

GELU(x) = x * Phi(x) with Phi the standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2;
its derivative is Phi(x) + x * phi(x), phi the normal density. Written as
numba loops because numpy has no erf, and one fused pass beats several
temporaries on the MLP's hidden tensor (the largest of a transformer layer).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..trace.work import costed
from .exact import _MOVE, _f32

# per element, counting erf as a short polynomial (a vector unit's usual ~8-term evaluation)
GELU_OPS = 12
GELU_BACKWARD_OPS = 16

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(**_MOVE)
def _gelu(x, out):
    for i in prange(x.size):
        v = np.float64(x[i])
        out[i] = np.float32(0.5 * v * (1.0 + math.erf(v * _INV_SQRT2)))


@njit(**_MOVE)
def _gelu_grad(g, x, out):
    for i in prange(x.size):
        v = np.float64(x[i])
        cdf = 0.5 * (1.0 + math.erf(v * _INV_SQRT2))
        pdf = _INV_SQRT2PI * math.exp(-0.5 * v * v)
        out[i] = np.float32(np.float64(g[i]) * (cdf + v * pdf))


@costed("gelu", count=lambda a, out: out.size * GELU_OPS)
def gelu_forward(x):
    """x * Phi(x), float32 (evaluated in float64 per element)."""
    x = _f32(x)
    out = np.empty_like(x)
    _gelu(x.reshape(-1), out.reshape(-1))
    return out


@costed("gelu_backward", count=lambda a, out: out.size * GELU_BACKWARD_OPS)
def gelu_backward(gy, x):
    """gy * (Phi(x) + x * phi(x)), with ``x`` the GELU's input."""
    g, x = _f32(gy), _f32(x)
    out = np.empty_like(x)
    _gelu_grad(g.reshape(-1), x.reshape(-1), out.reshape(-1))
    return out
