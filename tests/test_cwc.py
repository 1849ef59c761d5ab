"""CwC (channel-wise competitive) loss against torch autograd, written from Eq. 2-3 of the
Advancements paper: G[n, j] = mean over group j's S channels and H x W pixels of Y^2, and the loss
is the softmax cross-entropy of G against the true class."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.engine.rules import losses as L
from chipsim.errors import ConfigError
from chipsim.modelspec import Block
from chipsim.trace.work import open_log


def cwc_block_loss(out, labels, j):
    """The three kernels as the CwC objective (``objectives.CwcObjective``) chains them: (loss, dL/d out, G)."""
    G = L.cwc_goodness(out, j)
    loss, dG = L.cwc_loss(G, labels)
    return loss, L.cwc_goodness_backward(dG, out), G


def torch_cwc(y, labels, j):
    """Eq. 2: the (N, C, ...) output viewed as (N, J, S, ...), mean of squares per group; Eq. 3: CE."""
    G = y.reshape(y.shape[0], j, -1).pow(2).mean(dim=2)
    return F.cross_entropy(G, labels), G


@pytest.mark.parametrize("shape", [(6, 20, 5, 4), (7, 30), (3, 10, 1, 1)])
def test_cwc_loss_and_gradient_match_autograd(shape):
    rng = np.random.default_rng(0)
    j = 10
    y = np.maximum(rng.normal(0.5, 1.0, shape), 0).astype(np.float32)
    labels = rng.integers(0, j, shape[0])
    loss, dy, G = cwc_block_loss(y, labels, j)
    ty = torch.tensor(y, requires_grad=True)
    tl, tG = torch_cwc(ty, torch.tensor(labels), j)
    tl.backward()
    assert dy.dtype == np.float32 and dy.shape == y.shape and G.shape == (shape[0], j)
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    np.testing.assert_allclose(G, tG.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(dy, ty.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_cwc_groups_are_consecutive_channels():
    """Only group j's channels carry the goodness of class j: energy in channels 4-5 of 10 is class 2."""
    y = np.zeros((1, 10, 2, 2), np.float32)
    y[0, 4:6] = 3.0
    G = L.cwc_goodness(y, 5)
    np.testing.assert_allclose(G[0], [0, 0, 9.0, 0, 0])


def test_cwc_gradient_raises_the_true_group_and_lowers_the_others():
    y = np.ones((1, 4, 1, 1), np.float32)
    _, dy, _ = cwc_block_loss(y, np.array([1]), 2)
    assert (dy[0, 2:] < 0).all() and (dy[0, :2] > 0).all()      # descent raises group 1, lowers group 0


def test_cwc_decision_sums_the_last_k_blocks():
    """The decoding ``inference.evaluate`` and the inference trace run (``inference.decide``)."""
    from chipsim.engine.tracing.inference import decide
    g1 = np.array([[5.0, 0.0, 0.0]])
    g2 = np.array([[0.0, 1.0, 0.0]])
    g3 = np.array([[0.0, 0.0, 2.0]])
    g = np.stack([g1, g2, g3], axis=2)                           # (N, classes, blocks), input to output
    assert decide(g, 1)[0] == 2
    assert decide(g, 2)[0] == 2                                  # 0+0, 1+0, 0+2
    assert decide(g, 3)[0] == 0                                  # 5, 1, 2
    assert decide(g, 9)[0] == 0                                  # k is clipped to the depth


def test_cwc_divisibility_error_names_block_channels_and_classes():
    blocks = (Block(type="conv", channels=20), Block(type="conv", channels=32), Block(type="dense", units=10))
    with pytest.raises(ConfigError) as e:
        L.check_cwc_divisible(blocks, 10, origin="models/x.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert "models/x.yaml" in msg and "blocks[1].channels" in msg and "32" in msg and "10 class" in msg
    assert "30 or 40" in msg
    L.check_cwc_divisible(blocks[:1] + blocks[2:], 10)           # 20 and 10 split: no error
    with pytest.raises(ConfigError, match=r"blocks\[0\]\.units: 7 units"):
        L.check_cwc_divisible((Block(type="dense", units=7),), 10)


def test_cwc_steps_report_their_work():
    y = np.ones((4, 20, 3, 3), np.float32)
    with open_log() as log:
        cwc_block_loss(y, np.zeros(4, np.int64), 10)
    kinds = [(w.kind, w.count) for w in log.items]
    assert kinds == [("goodness", y.size), ("loss", L.CE_OPS * 4 * 10), ("goodness_backward", 2 * y.size)]
