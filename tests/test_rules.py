"""Learning rules at 32 bits against an independent torch autograd implementation.

The torch side is written from the papers, not from the engine: blocks
BN(no affine) -> conv -> ReLU -> max-pool, goodness = mean of squares, DF loss
(Eq. 7); OLU is expressed by building each block's loss on a two-block chain
whose input is detached; DF-R swaps W_l^T for a fixed B_l in the backward of
block l's weighted sum via a custom autograd Function.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.config import Learning, Precision
from chipsim.engine.rules import losses as L
from chipsim.engine.networks.network import Network
from chipsim.engine.rules.rows import LabelledRows
from chipsim.engine.rules.compose import bp_step, local_step
from chipsim.engine.tracing.step import StepTracer
from chipsim.engine.training.optim import SGD
from chipsim.engine.training.trainer import training_state
from chipsim.modelspec import Block, ModelSpec
from chipsim.trace import TraceRecorder
from rule_helpers import df_rule
from torch_reference import torch_block

FP32 = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, rounding="nearest")
def df_step(net, x, labels, negatives, strategy, learning, tracer=None):
    """One DF step of ``strategy`` on given negatives (rounding seed 0)."""
    tracer = tracer or StepTracer(TraceRecorder(len(x), enabled=False), net, SGD(), {}, False)
    rule = df_rule(strategy, learning, negatives.shape[1], net.depth)
    return local_step(net, rule, LabelledRows.with_negatives(net, x, labels, negatives), 0,
                      np.random.default_rng(0), tracer)


def set_feedback(net, seed=1):
    for i, b in enumerate(net.blocks[1:]):
        b.set_feedback(seed + i, stored=True)


MODEL = ModelSpec(name="t", blocks=(Block(type="conv", channels=4, pool=2),
                                    Block(type="conv", channels=6, kernel=3, padding=0),
                                    Block(type="dense", units=5)))
# dense from the first block: the label channel reaches block 0 flattened into its input (models/dense3.yaml)
DENSE = ModelSpec(name="d", blocks=(Block(type="dense", units=7), Block(type="dense", units=5)))


# ----------------------------------------------------------------- losses
@pytest.mark.parametrize("name", ["df", "df-avg", "ff", "symba"])
def test_loss_gradients_match_autograd(name):
    rng = np.random.default_rng(0)
    gp = rng.uniform(0, 3, 7).astype(np.float32)
    gn = rng.uniform(0, 3, (7, 3)).astype(np.float32)
    tp = torch.tensor(gp, dtype=torch.float64, requires_grad=True)
    tn = torch.tensor(gn, dtype=torch.float64, requires_grad=True)
    if name.startswith("df"):
        red = "avg" if name == "df-avg" else "max"
        loss, dgp, dgn = L.df_loss(gp, gn, 1.0, 0.1, red)
        hard = tn.max(dim=1).values if red == "max" else tn.mean(dim=1)
        tl = (torch.clamp(1.0 + hard - tp, min=0) + 0.1 * hard).mean()
    elif name == "ff":
        loss, dgp, dgn = L.ff_loss(gp, gn, 2.0)
        tl = (F.softplus(2.0 - tp) + F.softplus(tn - 2.0).mean(dim=1)).mean()
    else:
        loss, dgp, dgn = L.symba_loss(gp, gn, 4.0)
        tl = F.softplus(-4.0 * (tp[:, None] - tn)).mean(dim=1).mean()
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-6)
    np.testing.assert_allclose(dgp, tp.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgn, tn.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    loss, g = L.cross_entropy(z, y)
    tz = torch.tensor(z, requires_grad=True)
    tl = F.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------- torch reference
def torch_df_grads(net, x, labels, negatives, strategy, learning, fixed_stats=False):
    """The reference in float64, so that the comparison measures the engine's float32 error only."""
    f64 = dict(dtype=torch.float64)
    ws = [torch.tensor(b.master.value, requires_grad=True, **f64) for b in net.blocks]
    emb = torch.tensor(net.embedding.value, requires_grad=True, **f64)
    fbs = [None] + [torch.tensor(b.feedback[0] * b.feedback[1].reshape((-1,) + (1,) * (b.feedback[0].ndim - 1)),
                                 **f64) if b.feedback is not None else None for b in net.blocks[1:]]
    reps = negatives.shape[1] + 1
    lab = np.concatenate([labels[:, None], negatives], 1).reshape(-1)
    a0 = torch.cat([torch.tensor(np.repeat(x, reps, 0), **f64), emb[torch.tensor(lab)][:, None]], 1)
    specs = [b.spec for b in net.blocks]
    outs_detached = []
    total = 0
    prev_in = a0
    for l in range(len(specs)):
        if strategy == "greedy" or l == 0:
            out = torch_block(prev_in if l == 0 else outs_detached[l - 1], ws[l], specs[l], fixed_stats=fixed_stats)
        else:
            src = a0 if l == 1 else outs_detached[l - 2]
            mid = torch_block(src, ws[l - 1], specs[l - 1], fixed_stats=fixed_stats)
            out = torch_block(mid, ws[l], specs[l], feedback=fbs[l] if strategy == "df-r" else None,
                              fixed_stats=fixed_stats)
        g = out.reshape(out.shape[0], -1).pow(2).mean(1).reshape(-1, reps)
        hard = g[:, 1:].max(1).values
        total = total + (torch.clamp(learning.margin + hard - g[:, 0], min=0) + learning.reg_lambda * hard).mean()
        outs_detached.append(out.detach())
    total.backward()
    return [w.grad.numpy() for w in ws], emb.grad.numpy()


@pytest.mark.parametrize("model", [MODEL, DENSE], ids=["conv-first", "dense-first"])
@pytest.mark.parametrize("bn_backward", ["batch-stats", "fixed-stats"])
@pytest.mark.parametrize("strategy", ["greedy", "df-o", "df-r"])
def test_local_step_matches_torch(strategy, bn_backward, model):
    """With fixed-stats the engine back-propagates only the rows with an error; torch runs them all.
    The label embedding's gradient is checked too, also where block 0 is dense and sees it flattened."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (5, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    negatives = (labels[:, None] + 1 + np.array([[0, 1, 2]])) % 4
    net = Network(model, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False, bn_backward=bn_backward)
    if strategy == "df-r":
        set_feedback(net)
    learning = Learning(margin=1.0, reg_lambda=0.1)
    res = df_step(net, x, labels, negatives, strategy, learning)
    ref_w, ref_e = torch_df_grads(net, x, labels, negatives, strategy, learning,
                                  fixed_stats=bn_backward == "fixed-stats")
    for l, (ours, ref) in enumerate(zip(res.grads["blocks"], ref_w)):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=f"block {l}")
    np.testing.assert_allclose(res.grads["embedding"], ref_e, rtol=1e-4, atol=1e-6 * np.abs(ref_e).max())


def test_dfr_differs_from_dfo_only_below_the_top():
    """DF-R's random feedback changes the lower blocks' gradients, never the top block's own."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (4, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 4)
    negatives = (labels[:, None] + 1 + np.array([[0, 1, 2]])) % 4
    grads = {}
    for s in ("df-o", "df-r"):
        net = Network(MODEL, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False)
        if s == "df-r":
            set_feedback(net)
        grads[s] = df_step(net, x, labels, negatives, s, Learning()).grads["blocks"]
    np.testing.assert_allclose(grads["df-o"][-1], grads["df-r"][-1], rtol=1e-6)
    assert not np.allclose(grads["df-o"][0], grads["df-r"][0], rtol=1e-3)


@pytest.mark.parametrize("bn_backward", ["batch-stats", "fixed-stats"])
def test_bp_step_matches_torch(bn_backward):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (6, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    net = Network(MODEL, (1, 12, 12), 4, FP32, seed=0, with_label=False, with_head=True, bn_backward=bn_backward)
    tracer = StepTracer(TraceRecorder(6, enabled=False), net, SGD(), {}, True)
    res = bp_step(net, x, labels, 0, np.random.default_rng(0), tracer)
    ws = [torch.tensor(b.master.value, requires_grad=True) for b in net.layers()]
    a = torch.tensor(x)
    for w, b in zip(ws[:-1], net.blocks):
        a = torch_block(a, w, b.spec, fixed_stats=bn_backward == "fixed-stats")
    logits = a.reshape(a.shape[0], -1) @ ws[-1].t()
    F.cross_entropy(logits, torch.tensor(labels)).backward()
    for ours, w in zip(res.grads["blocks"], ws):
        ref = w.grad.numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("strategy", ["greedy", "df-o", "df-r"])
def test_step_where_no_row_gets_an_error_yields_zero_gradients(strategy, monkeypatch):
    """DF with every margin met and lambda = 0: no row is kept, nothing is back-propagated, no crash."""
    from chipsim.engine.rules import objectives

    def satisfied(name, gp, gn, learning):
        return 0.0, np.zeros_like(gp), np.zeros_like(gn)
    monkeypatch.setattr(objectives, "goodness_loss", satisfied)
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, (3, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 3)
    negatives = (labels[:, None] + 1 + np.array([[0, 1]])) % 4
    net = Network(MODEL, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False, bn_backward="fixed-stats")
    if strategy == "df-r":
        set_feedback(net)
    rec = TraceRecorder(3)
    opt, acc = training_state(net, FP32, "sgd", 0.0)
    res = df_step(net, x, labels, negatives, strategy, Learning(), StepTracer(rec, net, opt, acc, False))
    assert all(not g.any() for g in res.grads["blocks"]) and not res.grads["embedding"].any()
    assert rec.trace.macs("grad_w") == 0 and rec.trace.macs("grad_x") == 0
