"""Whole training steps on a vision transformer through the rule composition, against torch autograd at
32 bits: CFF (two views, the contrastive objective per layer, greedy routing), FF with its label patch,
and BP with the average-pooling head. Recompute (``mapping.batch_loss``) reproduces the kept dataflow
bit for bit at 4 bits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torch_vit as TV
from chipsim.config import Learning, Precision
from chipsim.engine.rules.objectives import ContrastiveObjective, GoodnessObjective
from chipsim.engine.rules.routing import Routing
from chipsim.engine.rules.rows import LabelledRows, TwoViews
from chipsim.engine.rules.compose import LocalRule, bp_step, local_step
from chipsim.engine.training.trainer import training_state
from chipsim.engine.networks.vit import TransformerNetwork
from chipsim.engine.tracing.step import StepTracer
from chipsim.modelspec import Block, ModelSpec
from chipsim.trace import TraceRecorder

torch.set_num_threads(1)

FLOAT = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, goodness_bits=32,
                  optimizer_bits=32)
FOUR = Precision(weight_bits=4, activation_bits=4, gradient_bits=8, update_bits=16, goodness_bits=8)
HEADS, PATCH, CLASSES, B = 2, 4, 4, 6
MODEL = ModelSpec(name="vit2", blocks=(Block(type="vit", patch=PATCH, dim=16, heads=HEADS, mlp_dim=32),
                                       Block(type="vit", dim=16, heads=HEADS, mlp_dim=32)))


def _net(prec=FLOAT, perturb=True, **kw):
    kw = {"with_label": False, "with_head": False, **kw}
    net = TransformerNetwork(MODEL, (1, 8, 8), CLASSES, prec, seed=3, **kw)
    rng = np.random.default_rng(0)
    if perturb:                                       # off the init (biases 0, gains 1): every gradient is exercised
        for blk in net.blocks:
            for m in blk.masters().values():
                m.apply((0.2 * rng.standard_normal(m.value.shape)).astype(np.float32))
            blk.requantize()
    return net


def _data():
    rng = np.random.default_rng(1)
    return rng.random((B, 1, 8, 8), dtype=np.float32), np.array([0, 1, 2, 0, 1, 3])


def _step(net, run):
    opt, acc = training_state(net, net.prec)
    tracer = StepTracer(TraceRecorder(samples=B, enabled=False), net, opt, acc, rule_is_bp=net.head is not None)
    return run(tracer)


def _close(ours, ref):
    ref = np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-5 * max(1.0, float(np.abs(ref).max())))


def _check_grads(net, grads, params):
    for blk, g, p in zip(net.blocks, grads, params):
        assert set(g) == set(p), blk.index
        for name, t in p.items():
            assert t.grad is not None and float(t.grad.abs().max()) > 0, (blk.index, name)
            _close(g[name], t.grad.numpy())


@pytest.mark.parametrize("margins", [(0.0, 0.0), (0.4, 0.1)])
def test_cff_step_matches_torch(margins):
    """Each layer's (marginal) contrastive loss on the token mean of both views updates that layer only;
    its input is the layer below's output, detached."""
    net = _net()
    x, y = _data()
    rule = LocalRule(TwoViews(2), ContrastiveObjective(0.2, margins), Routing(depth=2))
    rows = rule.rows.make(net, x, y, np.random.default_rng(5))
    assert rows.n == 2 * B and np.array_equal(rows.row_labels, np.repeat(y, 2))
    assert not np.array_equal(rows.a0[0::2], rows.a0[1::2])          # two different views of each image
    res = _step(net, lambda tr: local_step(net, rule, rows, 0, np.random.default_rng(6), tr))
    params = [TV.params(b) for b in net.blocks]
    labels = torch.tensor(rows.row_labels)
    out0 = TV.layer(torch.tensor(rows.a0), params[0], HEADS, patch=PATCH)
    out1 = TV.layer(out0.detach(), params[1], HEADS)
    losses = [TV.supcon(o.mean(dim=1), labels, 0.2, m) for o, m in zip((out0, out1), margins)]
    (losses[0] + losses[1]).backward()
    assert res.loss == pytest.approx(float((losses[0] + losses[1]).detach()) / 2, rel=1e-5)
    _check_grads(net, res.grads["blocks"], params)


def test_recompute_reproduces_the_kept_step_at_4_bits():
    """Under mapping.batch_loss: recompute each half's forward runs again from what its core kept; the
    gradients equal the kept dataflow's exactly, codes and stochastic rounding included."""
    x, y = _data()
    rule = LocalRule(TwoViews(2), ContrastiveObjective(0.1, (0.3, 0.1)), Routing(depth=2))
    out = []
    for recompute in (False, True):
        net = _net(FOUR, perturb=False, recompute=recompute)
        rows = rule.rows.make(net, x, y, np.random.default_rng(5))
        res = _step(net, lambda tr: local_step(net, rule, rows, 0, np.random.default_rng(6), tr))
        out.append(res)
    assert out[0].loss == out[1].loss
    for g0, g1 in zip(out[0].grads["blocks"], out[1].grads["blocks"]):
        assert set(g0) == set(g1)
        for name in g0:
            np.testing.assert_array_equal(g0[name], g1[name], err_msg=name)


def test_ff_step_on_vit_matches_torch():
    """FF on a ViT (the CFF paper's Algorithm 1, right): the label as an extra fixed patch, goodness on the
    token mean, each later layer's input tokens L2-normalised."""
    net = _net(with_label=True, normalise_inputs=True)
    x, y = _data()
    negatives = ((y + 1) % CLASSES)[:, None]
    learning = Learning(ff_theta=0.5)
    rule = LocalRule(LabelledRows(1), GoodnessObjective("ff", learning), Routing(depth=2))
    rows = LabelledRows.with_negatives(net, x, y, negatives)
    assert rows.a0.patches.shape == (2 * B, 1, PATCH * PATCH)
    np.testing.assert_array_equal(rows.a0.patches[1::2, 0], net.label_patches[negatives[:, 0]])
    res = _step(net, lambda tr: local_step(net, rule, rows, 0, np.random.default_rng(6), tr))
    params = [TV.params(b) for b in net.blocks]
    out0 = TV.layer(torch.tensor(rows.a0.images), params[0], HEADS, patch=PATCH,
                    extra=torch.tensor(rows.a0.patches))
    out1 = TV.layer(out0.detach(), params[1], HEADS, normalise=True)
    total = 0
    for o in (out0, out1):
        g = o.mean(dim=1).pow(2).mean(dim=1).reshape(B, 2)
        total = total + TV.ff(g[:, 0], g[:, 1:], 0.5)
    total.backward()
    assert res.loss == pytest.approx(float(total.detach()) / 2, rel=1e-5)
    _check_grads(net, res.grads["blocks"], params)


def test_bp_step_on_vit_matches_torch():
    """BP on the same ViT: every layer's gradient through the layers above, the input error of each layer
    (grad_input) handed down, a linear head on the token mean, cross-entropy."""
    net = _net(with_head=True)
    x, y = _data()
    res = _step(net, lambda tr: bp_step(net, x, y, 0, np.random.default_rng(6), tr))
    params = [TV.params(b) for b in net.blocks]
    w_head = torch.tensor(net.head.master.value, requires_grad=True)
    out = TV.layer(torch.tensor(x), params[0], HEADS, patch=PATCH)
    out = TV.layer(out, params[1], HEADS)
    loss = F.cross_entropy(F.linear(out.mean(dim=1), w_head), torch.tensor(y))
    loss.backward()
    assert res.loss == pytest.approx(float(loss.detach()), rel=1e-5)
    _check_grads(net, res.grads["blocks"][:2], params)
    _close(res.grads["blocks"][2], w_head.grad.numpy())
