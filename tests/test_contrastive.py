"""Contrastive losses (CFF, Eq. 3 and Eq. 15) against torch autograd, and the seeded augmentation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.trace import work
from chipsim.augment import random_translate, two_views
from chipsim.engine.rules.contrastive import contrastive_loss

torch.set_num_threads(2)


def _torch_loss(feats, labels, tau, margin):
    """An independent autograd reference written straight from the paper's Eq. 14/15."""
    f = torch.tensor(feats, dtype=torch.float64, requires_grad=True)
    z = F.normalize(f, dim=1)
    sim = z @ z.T
    lab = torch.tensor(labels)
    m = len(labels)
    eye = torch.eye(m, dtype=torch.bool)
    pos = (lab[:, None] == lab[None, :]) & ~eye
    q = torch.where(pos, torch.clamp(sim + margin, max=1.0), sim) if margin > 0 else sim
    logits = (q / tau).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / pos.sum(1)
    loss = per_anchor.mean()
    loss.backward()
    return loss.item(), f.grad.numpy()


def _batch(seed, b=12, e=16, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=b)
    base = rng.standard_normal((b, e)).astype(np.float32)
    views = np.concatenate([base + 0.3 * rng.standard_normal((b, e)), base + 0.3 * rng.standard_normal((b, e))])
    return (3 * views).astype(np.float32), np.concatenate([labels, labels])


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_supervised_contrastive_matches_torch(tau):
    feats, labels = _batch(int(tau * 10))
    loss, grad = contrastive_loss(feats, labels, tau)
    ref_loss, ref_grad = _torch_loss(feats, labels, tau, 0.0)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5 * np.abs(ref_grad).max())


@pytest.mark.parametrize("margin", [0.2, 0.6, 1.2])
def test_marginal_contrastive_matches_torch(margin):
    feats, labels = _batch(int(margin * 10) + 1)
    loss, grad = contrastive_loss(feats, labels, 0.2, margin=margin)
    ref_loss, ref_grad = _torch_loss(feats, labels, 0.2, margin)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5 * np.abs(ref_grad).max())


def test_margin_clips_close_positives_and_lowers_the_loss():
    """A positive pair already within the margin gets no pull; the margin makes positives look closer."""
    feats, labels = _batch(5)
    plain, _ = contrastive_loss(feats, labels, 0.2)
    marg, _ = contrastive_loss(feats, labels, 0.2, margin=0.5)
    assert marg < plain
    # two identical rows of one class, everything else another class: their Q is clipped at 1
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], np.float32)
    lab = np.array([0, 0, 1, 1])
    _, g = contrastive_loss(f, lab, 0.5, margin=0.5)
    _, g_ref = _torch_loss(f, lab, 0.5, 0.5)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-6)


def test_contrastive_needs_positives_and_valid_args():
    with pytest.raises(ValueError, match="positive"):
        contrastive_loss(np.eye(3, dtype=np.float32), np.array([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(np.eye(2, dtype=np.float32), np.array([0, 0]), 0.0)
    with pytest.raises(ValueError, match="margin"):
        contrastive_loss(np.eye(2, dtype=np.float32), np.array([0, 0]), 0.1, margin=-1)


def test_contrastive_logs_its_work():
    feats, labels = _batch(6)
    with work.open_log() as log:
        contrastive_loss(feats, labels, 0.1)
    kinds = {w.kind: w for w in log.items}
    m, e = feats.shape
    assert kinds["contrastive_similarity"].count == 2 * m * m * e
    assert kinds["contrastive_similarity"].unit == work.MAC and kinds["loss"].unit == work.VECTOR


# ----------------------------------------------------------------- augmentation
def _images(seed=0, n=6):
    return np.random.default_rng(seed).random((n, 1, 10, 12), dtype=np.float32)


def test_two_views_are_seeded():
    x = _images()
    a1, a2 = two_views(x, np.random.default_rng(7))
    b1, b2 = two_views(x, np.random.default_rng(7))
    c1, _ = two_views(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2) and not np.array_equal(a1, c1)
    assert a1.shape == x.shape and a1.dtype == np.float32


def test_translation_moves_content_and_zero_fills():
    """Each view is its image shifted by (dy, dx) within the bound: find the shift and check every pixel."""
    x = _images(1)
    s = 2
    y = random_translate(x, s, np.random.default_rng(3))
    found = set()
    for xi, yi in zip(x, y):
        hits = []
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                ref = np.zeros_like(xi)
                h, w = xi.shape[1:]
                ref[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                    xi[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
                if np.array_equal(ref, yi):
                    hits.append((dy, dx))
        assert len(hits) == 1
        found.add(hits[0])
    assert len(found) > 1                       # not every image got the same shift
    np.testing.assert_array_equal(random_translate(x, 0, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="max_shift"):
        random_translate(x, -1, np.random.default_rng(0))
