"""DF-R's fixed random feedback kernels B, generated from a seed by a counter-based PRNG.

Why a counter-based generator: a chip that does not keep B in SRAM
(``mapping.feedback_storage: seeded``) regenerates it from its seed every time
an error goes down through it, so B must be a pure function of (seed, index).
The engine uses the very same function in both storage modes: ``stored``
generates B once and keeps it, ``seeded`` calls it at every use, and each of
those calls is costed (``feedback_regenerate``, PRNG draws paid once per use on
the chip, i.e. per micro-batch instance) -- so both modes train identically and
differ only in what the chip holds and computes.

B has the block's weight shape, He-uniform magnitude ``sqrt(6 / fan_in)`` like
the forward weights, and is stored as ``weight_bits`` signed codes, uniform
over the code range, with one scale for every output channel (32 bits: float
values).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ...kernels.exact import _MOVE
from ...quant import _uniform, signed_max
from ...trace.work import costed

REGENERATE_OPS = 3     # one counter-based PRNG draw (2 ops) and the map onto the code range


@njit(**_MOVE)
def _uniform_codes(seed, n, qmax, out):
    base = np.uint64(seed)
    span = 2.0 * qmax + 1.0
    for i in prange(n):
        out[i] = np.float32(min(np.floor(_uniform(base, i) * span), span - 1.0) - qmax)


@njit(**_MOVE)
def _uniform_values(seed, n, bound, out):
    base = np.uint64(seed)
    for i in prange(n):
        out[i] = np.float32((2.0 * _uniform(base, i) - 1.0) * bound)


def _generate(seed: int, shape: tuple, bits: int):
    n = int(np.prod(shape))
    fan_in = int(np.prod(shape[1:]))
    bound = math.sqrt(6.0 / fan_in)
    out = np.empty(n, dtype=np.float32)
    seed = int(seed) % (2 ** 63)
    if bits == 32:
        _uniform_values(seed, n, bound, out)
        return out.reshape(shape), np.ones(shape[0], dtype=np.float32)
    qmax = signed_max(bits)
    _uniform_codes(seed, n, float(qmax), out)
    return out.reshape(shape), np.full(shape[0], bound / qmax, dtype=np.float32)


@costed("feedback_regenerate", count=lambda a, out: REGENERATE_OPS * int(np.prod(a.shape)), per_instance=True)
def _regenerate(seed: int, shape: tuple, bits: int):
    return _generate(seed, shape, bits)


def feedback_weights(seed: int, shape: tuple, bits: int, regenerate: bool = False):
    """(codes, per-output-channel scales) of B for ``seed``. ``regenerate=True`` marks a use-time
    regeneration (costed on the chip); the generation at setup (stored mode) is not a step's work."""
    return _regenerate(seed, tuple(shape), int(bits)) if regenerate else _generate(seed, tuple(shape), int(bits))
