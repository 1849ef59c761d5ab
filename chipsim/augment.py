"""Seeded data augmentation: the two random views of a batch that contrastive learning compares.

Random translation ("random crop with padding", the paper's RC): each image
is zero-padded by ``max_shift`` pixels on every side and a window of the
original size is cut at a uniformly random offset, i.e. the content moves by
(dy, dx), each uniform in ``[-max_shift, max_shift]``, and what leaves the
frame is lost while what enters is zero (background for MNIST-like images).
Offsets are drawn per image from the caller's ``numpy.random.Generator``, so a
seed fixes every view; nothing else (no flips, no colour), because a flipped
digit is another digit. The default of 2 pixels is the usual MNIST shift, a
7% move of a 28-pixel image.
"""
from __future__ import annotations

import numpy as np

from .trace.work import costed

AUGMENT_OPS = 1          # per element: one move of the shifted window (the offset's two draws are per image)


@costed("augment", count=lambda a, out: AUGMENT_OPS * out.size + 2 * out.shape[0])
def random_translate(x, max_shift: int, rng):
    """Shift each image of ``x`` (N, C, H, W) by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    x = np.asarray(x, dtype=np.float32)
    s = int(max_shift)
    if s < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift!r}")
    if s == 0:
        return x.copy()
    n, c, h, w = x.shape
    shifts = rng.integers(-s, s + 1, size=(n, 2))
    padded = np.zeros((n, c, h + 2 * s, w + 2 * s), dtype=np.float32)
    padded[:, :, s:s + h, s:s + w] = x
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(shifts):
        # output pixel (r, q) shows input pixel (r - dy, q - dx): the window starts at s - dy, s - dx
        out[i] = padded[i, :, s - dy:s - dy + h, s - dx:s - dx + w]
    return out


def two_views(x, rng, max_shift: int = 2):
    """Two independently translated views of the batch ``x``: (view1, view2), each (N, C, H, W)."""
    return random_translate(x, max_shift, rng), random_translate(x, max_shift, rng)
