"""One-pass inference head: against torch autograd at 32 bits, quantized like a dense layer at 4
bits, learning a separable problem, and reading the right blocks under the neutral label."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.config import Precision
from chipsim.engine.layers.head import OnePassHead, concat_features, head_accuracy, neutral_features
from chipsim.engine.networks.network import Network
from chipsim.engine.training.optim import Adam
from chipsim.modelspec import Block, ModelSpec
from chipsim.quant import quantize_signed

FP32 = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, rounding="nearest")
Q4 = Precision(weight_bits=4, activation_bits=4, gradient_bits=8, update_bits=16, rounding="nearest")
MODEL = ModelSpec(name="t", blocks=(Block(type="conv", channels=4, pool=2), Block(type="conv", channels=6),
                                    Block(type="dense", units=5)))


def network(prec=FP32, with_label=True):
    return Network(MODEL, (1, 8, 8), 3, prec, seed=0, with_label=with_label, with_head=False)


def test_head_reads_the_last_k_blocks():
    net = network()
    head = OnePassHead(net, 2, FP32, seed=0)
    assert head.blocks == (1, 2) and head.n_features == 6 * 4 * 4 + 5
    assert head.layer.w_shape == (3, head.n_features) and head.layer.index == 3
    assert OnePassHead(net, 9, FP32, seed=0).blocks == (0, 1, 2)        # clipped to the depth
    with pytest.raises(ValueError, match="at least one block"):
        OnePassHead(net, 0, FP32, seed=0)


def test_head_gradient_matches_autograd_at_32_bits():
    net = network()
    head = OnePassHead(net, 2, FP32, seed=0)
    rng = np.random.default_rng(1)
    feats = np.maximum(rng.normal(0.3, 1, (7, head.n_features)), 0).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    step = head.train_grad(feats, labels, np.random.default_rng(0))
    w = torch.tensor(head.layer.master.value, requires_grad=True)
    logits = torch.tensor(feats) @ w.t()
    loss = F.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    assert step.loss == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(step.logits, logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step.grad, w.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_head_is_quantized_like_a_dense_layer():
    net = network(Q4)
    head = OnePassHead(net, 1, Q4, seed=0)
    layer = head.layer
    assert layer.master.bits == 16
    assert np.abs(layer.wq).max() <= 7 and np.array_equal(layer.wq, np.rint(layer.wq))   # 4-bit signed codes
    rng = np.random.default_rng(2)
    feats = np.maximum(rng.normal(0.3, 1, (6, head.n_features)), 0).astype(np.float32)
    labels = rng.integers(0, 3, 6)
    step = head.train_grad(feats, labels, np.random.default_rng(0))
    # by hand: input codes at 4 bits (from the layer's cache), error codes at gradient_bits = 8
    _, cache = layer.forward(feats, train=False)
    g = torch.softmax(torch.tensor(step.logits, dtype=torch.float64), 1).numpy()
    g[np.arange(6), labels] -= 1
    gq, gs = quantize_signed((g / 6).astype(np.float32), 8, "nearest", None, "float")
    assert np.abs(cache["zq"]).max() <= 7 and np.abs(gq).max() <= 127
    np.testing.assert_allclose(step.grad, (gq.T @ cache["zq"]) * cache["zs"] * gs, rtol=1e-5)


def test_head_learns_a_separable_problem_at_4_bits():
    rng = np.random.default_rng(3)
    net = network(Q4)
    head = OnePassHead(net, 1, Q4, seed=0)
    teacher = rng.normal(size=(head.n_features, 3))
    x_all = np.maximum(rng.normal(0.5, 1, (1200, head.n_features)), 0).astype(np.float32)
    y_all = (x_all @ teacher).argmax(axis=1)
    opt, r = Adam(), np.random.default_rng(0)
    opt.register("head", head.layer.w_shape)
    for step in range(300):
        idx = rng.integers(0, 1000, 32)
        s = head.train_grad(x_all[idx], y_all[idx], r)
        head.layer.master.apply(opt.delta("head", s.grad, 5e-3), "nearest", r)
        head.layer.requantize()
    acc = float((head.predict(x_all[1000:]) == y_all[1000:]).mean())
    assert acc > 0.85, acc


def test_neutral_features_are_one_eval_pass_under_the_mean_label():
    net = network()
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    before = [b.running_mean.copy() for b in net.blocks]
    feats = neutral_features(net, x, (1, 2), batch=2)
    a = net.input_with_label(x, None)
    outs = []
    for b in net.blocks:
        a, _ = b.forward(a, train=False)
        outs.append(a)
    want = concat_features(outs[1:])
    # batches of 2 against one batch of 5: the float32 GEMM may sum in another order, so the
    # bound is a few float32 ulps of the features' scale (not of each, possibly tiny, element)
    np.testing.assert_allclose(feats, want, rtol=1e-6, atol=8 * np.finfo(np.float32).eps * np.abs(want).max())
    assert all(np.array_equal(b0, b.running_mean) for b0, b in zip(before, net.blocks))
    head = OnePassHead(net, 2, FP32, seed=0)
    y = head.predict(feats)
    assert head_accuracy(net, head, x, y) == 1.0


def test_cwc_style_network_without_a_label_gives_features_of_the_images():
    net = network(with_label=False)
    x = np.random.default_rng(5).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    feats = neutral_features(net, x, (2,))
    a = x
    for b in net.blocks:
        a, _ = b.forward(a, train=False)
    np.testing.assert_allclose(feats, a, rtol=1e-6)
