"""Label encodings (learning.label_encoding) against torch: the rows the first block sees, and the
learned table's gradient from the error at that input (autograd through the overlay)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.config import Precision
from chipsim.engine.networks.network import Network
from chipsim.modelspec import Block, ModelSpec
from chipsim.trace.work import open_log

FP32 = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, rounding="nearest")
CONV = ModelSpec(name="c", blocks=(Block(type="conv", channels=4, pool=2), Block(type="dense", units=5)))
DENSE = ModelSpec(name="d", blocks=(Block(type="dense", units=8), Block(type="dense", units=6)))


def net(encoding, model=CONV, with_label=True, prec=FP32):
    return Network(model, (1, 6, 6), 4, prec, seed=0, with_label=with_label, with_head=False,
                   label_encoding=encoding)


def data(m=5):
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1, (m, 1, 6, 6)).astype(np.float32), rng.integers(0, 4, m)


def test_learned_channel_and_its_gradient_match_autograd():
    n = net("learned")
    x, y = data()
    a = n.input_with_label(x, y)
    emb = torch.tensor(n.embedding.value, requires_grad=True)
    ta = torch.cat([torch.tensor(x), emb[torch.tensor(y)][:, None]], dim=1)
    np.testing.assert_array_equal(a, ta.detach().numpy())
    g = np.random.default_rng(2).normal(size=a.shape).astype(np.float32)   # any error at the block input
    (ta * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(n.label_grad(g, y), emb.grad.numpy(), rtol=1e-6)
    assert n.label_trainable and n.blocks[0].in_shape == (2, 6, 6)


def test_neutral_label_is_the_mean_encoding_and_its_gradient_matches_autograd():
    n = net("learned")
    x, _ = data(3)
    a = n.input_with_label(x, None)
    emb = torch.tensor(n.embedding.value, requires_grad=True)
    ta = torch.cat([torch.tensor(x), emb.mean(dim=0).expand(3, 6, 6)[:, None]], dim=1)
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=1e-6)
    g = np.random.default_rng(3).normal(size=a.shape).astype(np.float32)
    (ta * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(n.label_grad(g, None), emb.grad.numpy(), rtol=1e-5)


def test_random_channel_is_the_learned_start_and_is_never_trained():
    learned, fixed = net("learned"), net("random")
    x, y = data()
    np.testing.assert_array_equal(fixed.input_with_label(x, y), learned.input_with_label(x, y))
    assert fixed.embedding is None and not fixed.label_trainable
    assert fixed.label_grad(np.ones((5, 2, 6, 6), np.float32), y) is None
    for b1, b2 in zip(learned.blocks, fixed.blocks):         # same draws, same weights
        np.testing.assert_array_equal(b1.master.value, b2.master.value)
    state = fixed.state()
    other = net("random")
    other.label_table = np.zeros_like(other.label_table)
    other.load(state)
    np.testing.assert_array_equal(other.label_table, fixed.label_table)


def test_onehot_writes_hintons_overlay_into_the_first_pixels():
    n = net("onehot", DENSE)
    x, y = data()
    a = n.input_with_label(x, y)
    ref = torch.tensor(x).reshape(5, -1).clone()
    ref[:, :4] = F.one_hot(torch.tensor(y), 4).float()
    np.testing.assert_array_equal(a.reshape(5, -1), ref.numpy())
    assert a.shape == x.shape and n.blocks[0].in_shape == (36,)       # no extra channel
    np.testing.assert_array_equal(a.reshape(5, -1)[:, 4:], x.reshape(5, -1)[:, 4:])
    assert not (x == a).all() and (x == data()[0]).all()              # the caller's images are untouched
    neutral = n.input_with_label(x, None).reshape(5, -1)
    np.testing.assert_allclose(neutral[:, :4], 0.25)
    assert n.label_grad(a, y) is None and n.embedding is None and n.label_table is None


def test_onehot_needs_room_for_the_classes():
    with pytest.raises(ValueError, match="at least 4 input values"):
        Network(DENSE, (1, 1, 3), 4, FP32, seed=0, with_label=True, with_head=False, label_encoding="onehot")


def test_no_label_network_passes_images_through():
    n = net("onehot", with_label=False)
    x, y = data()
    assert n.input_with_label(x, y) is x and n.input_with_label(x, None) is x
    assert n.label_encoding is None and n.blocks[0].in_shape == (1, 6, 6)


def test_label_gradient_reports_its_scatter():
    n = net("learned")
    x, y = data()
    with open_log() as log:
        n.label_grad(np.ones((5, 2, 6, 6), np.float32), y)
    assert [(w.kind, w.count) for w in log.items] == [("embedding_grad_scatter", 5 * 36)]


def test_bad_encoding_is_refused():
    with pytest.raises(ValueError, match="label_encoding must be one of learned, random, onehot"):
        net("fourier")
