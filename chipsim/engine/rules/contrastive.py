"""Supervised contrastive losses for Contrastive Forward-Forward (Aghagolzadeh & Ezoji), per layer.

Input: one representation per row, ``feats`` (M, E) -- a layer's token mean
for both augmented views of the batch stacked, M = 2B -- and their labels.
Rows are L2-normalised, so ``z_i . z_a`` is a cosine similarity.

* Supervised contrastive loss (the paper's Eq. 3, Khosla et al.'s L_out)::

    L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )

  P(i): the rows with i's label other than i (always including i's other view).
  The paper sums over anchors; we average, so the loss, and with plain SGD
  the step, does not grow with the batch (Adam is indifferent).
* Marginal contrastive loss (Eq. 15, ``margin`` m > 0): every *positive*
  similarity, in the numerator and in the denominator, becomes
  Q(a, b) = min(a.b + m, 1); negatives keep a.b. A positive pair already
  closer than 1 - m sits at Q = 1 and gets no gradient through its similarity
  (Eq. 18): early layers need not pull same-class rows all the way together.

Gradients are written by hand (the engine has no autograd) in float32 and
checked against torch in ``tests/test_contrastive.py``. The work is logged
for the trace: the Gram matrix and its gradient as MACs, the rest as
elementwise loss ops.
"""
from __future__ import annotations

import numpy as np

from ...trace import work

NORM_EPS = 1e-12          # F.normalize's eps: rows shorter than this are not blown up
LOSS_OPS_PER_PAIR = 8     # exp, row max/sum, log, masks, softmax minus target, scaling
NORM_OPS_PER_ELEMENT = 6  # square-sum, divide (forward); dot, multiply, subtract, divide (backward)


def _normalise(feats):
    f = np.asarray(feats, dtype=np.float32)
    norm = np.maximum(np.sqrt((f * f).sum(axis=1, keepdims=True)), np.float32(NORM_EPS))
    return f / norm, norm


def contrastive_loss(feats, labels, temperature: float, margin: float = 0.0):
    """Supervised (margin 0) or marginal (margin > 0) contrastive loss of un-normalised rows.

    Returns ``(loss, dfeats)``: the mean loss over anchors (float) and dL/dfeats (M, E) float32,
    through the L2 normalisation.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    z, norm = _normalise(feats)
    labels = np.asarray(labels)
    m, e = z.shape
    inv_t = np.float32(1.0 / temperature)
    sim = z @ z.T                                                     # (M, M) cosine similarities
    pos = (labels[:, None] == labels[None, :])
    np.fill_diagonal(pos, False)
    n_pos = pos.sum(axis=1)
    if np.any(n_pos == 0):
        raise ValueError("every row needs a positive (another row with its label): stack two views")
    if margin > 0:
        shifted = sim + np.float32(margin)
        live = pos & (shifted < 1.0)                                  # positives whose Q is not clipped at 1
        q = np.where(pos, np.minimum(shifted, np.float32(1.0)), sim)
        dq_dsim = np.where(pos, live, True).astype(np.float32)
    else:
        q, dq_dsim = sim, None
    logits = q * inv_t
    np.fill_diagonal(logits, -np.inf)                                 # A(i) excludes i
    row_max = logits.max(axis=1, keepdims=True)
    ex = np.exp(logits - row_max)
    den = ex.sum(axis=1, keepdims=True)
    log_prob = logits - row_max - np.log(den)
    pos_f = pos.astype(np.float32)
    per_anchor = -(np.where(pos, log_prob, 0.0).sum(axis=1)) / n_pos
    loss = float(per_anchor.mean())
    # dL/dlogits[i, a] = (softmax_ia - [a in P(i)] / |P(i)|) / M, and zero on the diagonal
    dlogits = (ex / den - pos_f / n_pos[:, None].astype(np.float32)) / np.float32(m)
    np.fill_diagonal(dlogits, 0.0)
    dsim = dlogits * inv_t
    if dq_dsim is not None:
        dsim = dsim * dq_dsim
    dz = (dsim + dsim.T) @ z                                          # sim is symmetric in (i, a)
    dfeats = (dz - z * (dz * z).sum(axis=1, keepdims=True)) / norm    # through z = f / |f|
    work.record("contrastive_similarity", "contrastive_loss", 2 * m * m * e)
    work.record("loss", "contrastive_loss", m * m * LOSS_OPS_PER_PAIR + m * e * NORM_OPS_PER_ELEMENT)
    return loss, dfeats.astype(np.float32)

