"""The update's elementwise arithmetic, fused: Adam's moments and step, the update's checks.

Why: a step's update (``engine.training.update``) was some forty numpy passes over every weight
tensor, each with its temporary. On the default model's dense block (256 x 1568 weights) that made
the update 8 ms of a 57 ms DF-R step and 8 of a 19 ms BP step, more than its convolutions. These
kernels (and the master weights' rounded add, ``quant.passes._fixed_point_add``) do the same
operations, element by element, in one pass each: the same IEEE float32 operation for each numpy
one, in the same order, so the same bits (``tests/test_update_kernels.py`` compares them with the
numpy expressions they replace; the golden steps check whole trainings). Measured (line timings,
DF-R, 20 steps): the update 8.2 -> 4.8 ms a step.

The callers keep the numpy expressions where these do not apply (scalars that numpy would not treat
as float32, shapes that broadcast) and log the same work either way: these kernels change no count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exact import _MOVE


# error_model="numpy": a float division by zero gives inf or nan, as numpy's does, not an exception (and
# with no zero test in the loop it vectorises)
@njit(error_model="numpy", **_MOVE)
def adam_moments(g, m_old, s_old, b1, c1, b2, c2, m, v, sqrt_v):
    """``m = b1*m_old + c1*g``, ``v = b2*s_old*s_old + c2*g*g`` and ``sqrt(v)``, in float32.

    numpy's ``opt.b1 * m_old + (1 - opt.b1) * g`` with Python floats: each scalar is cast to float32
    (NEP 50: a Python float does not widen a float32 array) and every product and sum is a float32
    operation, left to right; the caller passes the float32 scalars (``c1 = float32(1 - b1)``)."""
    for i in prange(g.size):
        gi = g[i]
        s = s_old[i]
        mi = b1 * m_old[i] + c1 * gi
        vi = (b2 * s) * s + (c2 * gi) * gi
        m[i] = mi
        v[i] = vi
        sqrt_v[i] = np.sqrt(vi)


@njit(error_model="numpy", **_MOVE)
def adam_step(m, v, d1, d2, neg_lr, eps, out):
    """``(neg_lr * (m / d1)) / (sqrt(v / d2) + eps)`` in float32: numpy's ``-lr * mhat / (np.sqrt(vhat) +
    eps)`` with ``mhat = m / d1``, ``vhat = v / d2`` (the bias corrections, cast to float32)."""
    for i in prange(m.size):
        out[i] = (neg_lr * (m[i] / d1)) / (np.sqrt(v[i] / d2) + eps)


@njit(**_MOVE)
def finite_absmax(d):
    """(every element is finite, max |d|): ``np.isfinite(d).all()`` and ``np.max(np.abs(d))`` in one pass
    over a float32 vector. On the bits: |d| is ``bits & 0x7FFFFFFF``, whose integer order is the order of
    the magnitudes, and a value is inf or NaN exactly when that is at least 0x7F800000; an integer max
    vectorises where a float one (NaN rules) does not. The max is then exact; with a non-finite element
    only the first of the pair means anything."""
    b = d.view(np.uint32)
    m = np.uint32(0)
    for i in range(b.size):
        m = max(m, b[i] & np.uint32(0x7FFFFFFF))
    big = np.array([m], dtype=np.uint32).view(np.float32)[0]
    return m < np.uint32(0x7F800000), big
