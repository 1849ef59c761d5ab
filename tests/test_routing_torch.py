"""The torch reference for routed rules (tests/torch_reference.torch_routed_grads) reproduces the
engine's greedy, DF-O and DF-R steps, the routings of span 1 and 2, so it can check any other span,
grouping or schedule once a rule composes it."""
import numpy as np
import pytest
import torch

from chipsim.config import Learning, Precision
from chipsim.engine.networks.network import Network
from chipsim.engine.training.optim import SGD
from chipsim.engine.rules.routing import Routing
from chipsim.engine.rules.compose import local_step
from chipsim.engine.tracing.step import StepTracer
from chipsim.modelspec import Block, ModelSpec
from chipsim.trace import TraceRecorder
from chipsim.engine.rules.objectives import GoodnessObjective
from chipsim.engine.rules.rows import LabelledRows
from chipsim.engine.rules.compose import LocalRule
from rule_helpers import df_rule
from torch_reference import torch_routed_grads

FP32 = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, rounding="nearest")
MODEL = ModelSpec(name="t", blocks=(Block(type="conv", channels=4, pool=2),
                                    Block(type="conv", channels=6, kernel=3, padding=0),
                                    Block(type="dense", units=5)))


def df_loss_torch(learning, reps):
    def loss(l, out):
        g = out.reshape(out.shape[0], -1).pow(2).mean(1).reshape(-1, reps)
        hard = g[:, 1:].max(1).values
        return (torch.clamp(learning.margin + hard - g[:, 0], min=0) + learning.reg_lambda * hard).mean()
    return loss


@pytest.mark.parametrize("bn_backward", ["batch-stats", "fixed-stats"])
@pytest.mark.parametrize("strategy, span", [("greedy", 1), ("df-o", 2), ("df-r", 2)])
def test_reference_reproduces_the_engine_at_span_1_and_2(strategy, span, bn_backward):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (5, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    negatives = (labels[:, None] + 1 + np.array([[0, 1, 2]])) % 4
    net = Network(MODEL, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False, bn_backward=bn_backward)
    if strategy == "df-r":
        for i, b in enumerate(net.blocks[1:]):
            b.set_feedback(1 + i, stored=True)
    learning = Learning(margin=1.0, reg_lambda=0.1)
    tracer = StepTracer(TraceRecorder(5, enabled=False), net, SGD(), {}, False)
    rows = LabelledRows.with_negatives(net, x, labels, negatives)
    res = local_step(net, df_rule(strategy, learning, 3, net.depth), rows, 0, np.random.default_rng(0), tracer)

    plan = Routing(depth=3, span=span, link="feedback" if strategy == "df-r" else "weights").plan(0)
    ws = [torch.tensor(b.master.value, requires_grad=True) for b in net.blocks]
    emb = torch.tensor(net.embedding.value, requires_grad=True)
    lab = np.concatenate([labels[:, None], negatives], 1).reshape(-1)
    a0 = torch.cat([torch.tensor(np.repeat(x, 4, 0)), emb[torch.tensor(lab)][:, None]], 1)
    fbs = None
    if plan.uses_feedback:
        fbs = [None] + [torch.tensor(b.feedback[0] * b.feedback[1].reshape((-1,) + (1,) * (b.feedback[0].ndim - 1)))
                        for b in net.blocks[1:]]
    torch_routed_grads([b.spec for b in net.blocks], ws, a0, plan.reach, df_loss_torch(learning, 4), fbs,
                       fixed_stats=bn_backward == "fixed-stats")
    for l, (ours, w) in enumerate(zip(res.grads["blocks"], ws)):
        ref = w.grad.numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=f"block {l}")
    ref_e = emb.grad.numpy()
    np.testing.assert_allclose(res.grads["embedding"], ref_e, rtol=1e-4, atol=1e-6 * np.abs(ref_e).max())


def test_reference_stops_each_loss_at_the_bottom_of_its_group():
    """Span 3 on three blocks: every loss reaches block 0; chunked span 2: block 1's loss is unused."""
    torch.manual_seed(0)
    specs = [Block(type="dense", units=6), Block(type="dense", units=5), Block(type="dense", units=4)]
    ws = [torch.randn(6, 8, requires_grad=True), torch.randn(5, 6, requires_grad=True),
          torch.randn(4, 5, requires_grad=True)]
    a0 = torch.rand(7, 8)

    def only(target):
        return lambda l, out: out.pow(2).mean() if l == target else out.sum() * 0

    torch_routed_grads(specs, ws, a0, Routing(depth=3, span=3).plan(0).reach, only(2))
    assert all(w.grad.abs().sum() > 0 for w in ws)              # loss 2 reaches all three
    for w in ws:
        w.grad = None
    torch_routed_grads(specs, ws, a0, Routing(depth=3, span=2).plan(0).reach, only(2))
    assert ws[0].grad.abs().sum() == 0 and ws[1].grad.abs().sum() > 0   # span 2 stops at block 1
    for w in ws:
        w.grad = None
    chunked = Routing(depth=3, span=2, grouping="chunked").plan(0).reach     # [(), (0, 1), (2,)]
    torch_routed_grads(specs, ws, a0, chunked, only(2))
    assert ws[0].grad.abs().sum() == 0 and ws[1].grad.abs().sum() == 0 and ws[2].grad.abs().sum() > 0


MODEL4 = ModelSpec(name="t4", blocks=(Block(type="conv", channels=4, pool=2),
                                      Block(type="conv", channels=6, kernel=3, padding=0),
                                      Block(type="conv", channels=6, kernel=3, padding=0),
                                      Block(type="dense", units=5)))


@pytest.mark.parametrize("bn_backward", ["batch-stats", "fixed-stats"])
@pytest.mark.parametrize("routing, step", [
    (dict(span=3, link="weights"), 0), (dict(span=3, link="feedback"), 0),
    (dict(span=2, grouping="chunked"), 0), (dict(span=2, grouping="chunked", chunk_alternate=True), 1),
    (dict(span=3, grouping="chunked", link="feedback"), 0),
    (dict(span=2, schedule="alternate"), 0), (dict(span=2, schedule="alternate", link="feedback"), 1),
])
def test_engine_matches_the_routed_reference_for_spans_groupings_and_schedules(routing, step, bn_backward):
    """The composed step of span-n, chunked and alternating routings against torch autograd at 32 bits."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (5, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    negatives = (labels[:, None] + 1 + np.array([[0, 1, 2]])) % 4
    net = Network(MODEL4, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False, bn_backward=bn_backward)
    r = Routing(depth=4, **routing)
    if r.link == "feedback":
        for i, b in enumerate(net.blocks[1:]):
            b.set_feedback(1 + i, stored=True)
    learning = Learning(margin=1.0, reg_lambda=0.1)
    rule = LocalRule(LabelledRows(3), GoodnessObjective("df", learning), r)
    tracer = StepTracer(TraceRecorder(5, enabled=False), net, SGD(), {}, False)
    res = local_step(net, rule, LabelledRows.with_negatives(net, x, labels, negatives), step,
                     np.random.default_rng(0), tracer)
    plan = r.plan(step)
    f64 = dict(dtype=torch.float64)
    ws = [torch.tensor(b.master.value, requires_grad=True, **f64) for b in net.blocks]
    emb = torch.tensor(net.embedding.value, requires_grad=True, **f64)
    lab = np.concatenate([labels[:, None], negatives], 1).reshape(-1)
    a0 = torch.cat([torch.tensor(np.repeat(x, 4, 0), **f64), emb[torch.tensor(lab)][:, None]], 1)
    fbs = None
    if plan.uses_feedback:
        fbs = [None] + [torch.tensor(b.feedback[0] * b.feedback[1].reshape((-1,) + (1,) * (b.feedback[0].ndim - 1)),
                                     **f64) for b in net.blocks[1:]]
    torch_routed_grads([b.spec for b in net.blocks], ws, a0, plan.reach, df_loss_torch(learning, 4), fbs,
                       fixed_stats=bn_backward == "fixed-stats")
    assert any(not plan.reach[l] for l in range(4)) or routing.get("span") == 3
    for l, (ours, w) in enumerate(zip(res.grads["blocks"], ws)):
        ref = w.grad.numpy() if w.grad is not None else np.zeros_like(ours)
        if not plan.updated_by(l):
            assert not ours.any(), f"block {l} has no loss this step"
            continue
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=f"block {l}")
    ref_e = emb.grad.numpy() if emb.grad is not None else np.zeros_like(res.grads["embedding"])
    np.testing.assert_allclose(res.grads["embedding"], ref_e, rtol=1e-4, atol=1e-6 * max(np.abs(ref_e).max(), 1e-12))


def cwc_loss_torch(labels, groups):
    def loss(l, out):
        g = out.reshape(out.shape[0], groups, -1).pow(2).mean(2)
        return torch.nn.functional.cross_entropy(g, torch.tensor(labels))
    return loss


CWC4 = ModelSpec(name="c", blocks=(Block(type="conv", channels=8, pool=2), Block(type="conv", channels=4, padding=0),
                                   Block(type="dense", units=8)))


@pytest.mark.parametrize("bn_backward", ["batch-stats", "fixed-stats"])
@pytest.mark.parametrize("span, link", [(1, "weights"), (2, "weights"), (2, "feedback")])
def test_cwc_step_matches_torch(span, link, bn_backward):
    """CwC: one row per sample, no label channel; every block's channels in 4 class groups."""
    from chipsim.engine.rules.objectives import CwcObjective
    from chipsim.engine.rules.rows import OneRow
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (6, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    net = Network(CWC4, (1, 12, 12), 4, FP32, seed=0, with_label=False, with_head=False, bn_backward=bn_backward)
    if link == "feedback":
        for i, b in enumerate(net.blocks[1:]):
            b.set_feedback(1 + i, stored=True)
    r = Routing(depth=3, span=span, link=link)
    rule = LocalRule(OneRow(), CwcObjective(4), r)
    tracer = StepTracer(TraceRecorder(6, enabled=False), net, SGD(), {}, False)
    res = local_step(net, rule, OneRow().make(net, x, labels, None), 0, np.random.default_rng(0), tracer)
    f64 = dict(dtype=torch.float64)
    ws = [torch.tensor(b.master.value, requires_grad=True, **f64) for b in net.blocks]
    fbs = None
    if link == "feedback":
        fbs = [None] + [torch.tensor(b.feedback[0] * b.feedback[1].reshape((-1,) + (1,) * (b.feedback[0].ndim - 1)),
                                     **f64) for b in net.blocks[1:]]
    torch_routed_grads([b.spec for b in net.blocks], ws, torch.tensor(x, **f64), r.plan(0).reach,
                       cwc_loss_torch(labels, 4), fbs, fixed_stats=bn_backward == "fixed-stats")
    assert res.grads["embedding"] is None
    for l, (ours, w) in enumerate(zip(res.grads["blocks"], ws)):
        ref = w.grad.numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=f"block {l}")


@pytest.mark.parametrize("encoding", ["random", "onehot"])
def test_label_encodings_in_the_step_match_torch(encoding):
    """A fixed random label channel (no embedding gradient), or Hinton's one-hot in the first pixels."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, (5, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    negatives = (labels[:, None] + 1 + np.array([[0, 1, 2]])) % 4
    net = Network(MODEL, (1, 12, 12), 4, FP32, seed=0, with_label=True, with_head=False, label_encoding=encoding)
    learning = Learning(margin=1.0, reg_lambda=0.1)
    r = Routing(depth=3, span=2)
    rule = LocalRule(LabelledRows(3), GoodnessObjective("df", learning), r)
    tracer = StepTracer(TraceRecorder(5, enabled=False), net, SGD(), {}, False)
    rows = LabelledRows.with_negatives(net, x, labels, negatives)
    res = local_step(net, rule, rows, 0, np.random.default_rng(0), tracer)
    assert res.grads["embedding"] is None
    f64 = dict(dtype=torch.float64)
    ws = [torch.tensor(b.master.value, requires_grad=True, **f64) for b in net.blocks]
    lab = np.concatenate([labels[:, None], negatives], 1).reshape(-1)
    if encoding == "random":
        chan = torch.tensor(net.label_table, **f64)[torch.tensor(lab)][:, None]
        a0 = torch.cat([torch.tensor(np.repeat(x, 4, 0), **f64), chan], 1)
    else:                                           # one-hot written over the first 4 pixels, by hand
        a = np.repeat(x, 4, 0).reshape(20, -1).copy()
        a[:, :4] = 0
        a[np.arange(20), lab] = 1
        a0 = torch.tensor(a.reshape(20, 1, 12, 12), **f64)
    torch_routed_grads([b.spec for b in net.blocks], ws, a0, r.plan(0).reach, df_loss_torch(learning, 4),
                       fixed_stats=net.bn_backward == "fixed-stats")
    for l, (ours, w) in enumerate(zip(res.grads["blocks"], ws)):
        ref = w.grad.numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=f"block {l}")
