"""Trace totals of one real engine step equal counts written by hand.

Network: input 1x8x8 plus the label channel (2 channels), 2 samples with 3
negatives each (8 rows), 4 classes, W4/A4/G8/U16, Adam; goodness squares the
4-bit output itself (goodness_bits = 4) unless a test widens it.
  block 0: conv 2->4, k3 p1, pool 2   pre 4x8x8 = 256/row, out 4x4x4 = 64/row, K = 2*9 = 18
  block 1: conv 4->6, k3 p0           pre = out 6x2x2 = 24/row,           K = 4*9 = 36
  block 2: dense 24->5                pre = out 5/row,                    K = 24
"""
import dataclasses

import numpy as np
import pytest

from chipsim.config import Learning, Precision
from chipsim.engine.networks.network import Network
from chipsim.engine.rules.rows import LabelledRows
from chipsim.engine.rules.compose import bp_step, local_step
from chipsim.engine.tracing.step import StepTracer
from chipsim.engine.training.trainer import training_state
from chipsim.engine.training.update import apply_gradients
from chipsim.trace.work import open_log
from rule_helpers import df_rule
from chipsim.modelspec import Block, ModelSpec
from chipsim.trace import Trace, TraceRecorder, nbytes_of

P4 = Precision(weight_bits=4, activation_bits=4, gradient_bits=8, update_bits=16, goodness_bits=4)
MODEL = ModelSpec(name="t3", blocks=(Block(type="conv", channels=4, pool=2),
                                     Block(type="conv", channels=6, padding=0),
                                     Block(type="dense", units=5)))
ROWS = 8


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    labels = np.array([0, 3])
    return x, labels, (labels[:, None] + 1 + np.arange(3)) % 4


def _net(strategy, bn_backward="batch-stats", prec=P4):
    return Network(MODEL, (1, 8, 8), 4, prec, seed=0, with_label=strategy != "bp", with_head=strategy == "bp",
                   bn_backward=bn_backward)


def _step(strategy, bn_backward="batch-stats", prec=P4, feedback_stored=True):
    """The trace of one real step (forward, losses, errors, gradients, Adam update) of ``strategy``."""
    x, labels, negatives = _inputs()
    net = _net(strategy, bn_backward, prec)
    if strategy == "df-r":
        for i, b in enumerate(net.blocks[1:]):
            b.set_feedback(1 + i, stored=feedback_stored)
    rec = TraceRecorder(samples=2)
    opt, acc = training_state(net, prec, "adam")
    tracer = StepTracer(rec, net, opt, acc, strategy == "bp")
    rng = np.random.default_rng(2)
    with open_log(tracer.log):
        if strategy == "bp":
            res = bp_step(net, x, labels, 0, rng, tracer)
        else:
            rows = LabelledRows.with_negatives(net, x, labels, negatives)
            res = local_step(net, df_rule(strategy, Learning(), 3, net.depth), rows, 0, rng, tracer)
        apply_gradients(net, res.grads, 1e-3, opt, acc, prec, rng, tracer)
        tracer.close()
    return rec.trace


def test_df_o_trace_matches_hand_counts():
    t = _step("df-o")
    fwd = [8 * 256 * 18, 8 * 24 * 36, 8 * 5 * 24]                 # rows x outputs x K
    assert [t.macs("fwd", l) for l in range(3)] == fwd == [36864, 6912, 960]
    assert [t.macs("grad_w", l) for l in range(3)] == fwd          # same product, other operands
    # error into the block below from blocks 1 and 2 (true W^T), plus block 0's grad-input for the embedding
    assert t.macs("grad_x") == 6912 + 960 + 36864
    assert t.macs("feedback") == 0
    assert [t.macs("goodness", l) for l in range(3)] == [8 * 64, 8 * 24, 8 * 5]
    assert t.macs("update") == 0                                  # the optimizer runs on the vector unit
    b = t.bytes_by_category()
    assert b["weights"] == (36 + 4 * 4) + (108 + 6 * 4) + (60 + 5 * 4)      # 4-bit codes + fp32 scales
    assert b["master_weights"] == 2 * (72 + 216 + 120)                       # 16-bit
    # Adam's m and sqrt(v) at optimizer_bits = 16 (2 + 2 bytes per value), one float32 scale per stored
    # tensor, for the 3 weight tensors and the embedding
    assert b["optimizer_state"] == (2 + 2) * (72 + 216 + 120 + 4 * 64) + 2 * 4 * 4
    assert b["bn_params"] == 8 * (2 + 4 + 24)                                # running mean+var fp32/feature
    assert b["label_embedding"] == 4 * 64 * 2
    assert b["feedback_weights"] == 0
    # kept for the update: input codes (4b), ReLU mask (1b), output codes (4b), pool index (2b), goodness (fp32)
    act0 = 8 * 2 * 64 // 2 + 8 * 256 // 8 + 8 * 64 // 2 + 8 * 64 * 2 // 8 + 4 * 8
    act1 = 8 * 64 // 2 + 8 * 24 // 8 + 8 * 24 // 2 + 4 * 8
    act2 = 8 * 24 // 2 + 5 + 8 * 5 // 2 + 4 * 8
    assert (act0, act1, act2) == (1184, 408, 153)
    assert b["act_update"] == act0 + act1 + act2 and b["act_backward"] == 0
    # accumulators at accumulator_bits = 16 (2 bytes a value) with a float32 scale each, incl. the embedding
    grad_acc = 2 * (72 + 216 + 120 + 4 * 64) + 4 * 4
    errors = 2 * (8 * 64 + 8 * 24)                                # 8-bit error out + error in, 2 links
    errors += 4 * (8 * 64 + 8 * 24)       # + the float32 grad-input each sender computes, then quantises
    assert b["gradients"] == grad_acc + 3 * 4 * 8 + errors        # + dL/dgoodness per block
    assert b["noc_buffers"] == 2 * 64 + 8 * 64 // 2 + 8 * 24 // 2  # sensor 8-bit image + received inputs
    assert t.sent_bytes("activation") == 128 + 256 + 96
    # + each block's dL/dgoodness (8 rows x float32), sent from its slice 0 to its other slices (issue 23,
    # defect 5; unsplit it moves nothing on the NoC)
    assert t.sent_bytes("error") == 512 + 192 + 3 * 8 * 4


def test_wider_goodness_keeps_a_wider_copy_and_squares_it_at_that_width():
    """goodness_bits = 16: on top of the hand counts above, each block keeps a 16-bit copy of its output
    (2 bytes per output element) and its goodness op runs at 16 bits; the NoC still carries 4-bit codes."""
    t4, t16 = _step("df-o"), _step("df-o", prec=dataclasses.replace(P4, goodness_bits=16))
    outputs_per_row = (64, 24, 5)
    assert t16.bytes_by_category()["act_update"] == 1184 + 408 + 153 + sum(2 * ROWS * n for n in outputs_per_row)
    assert [o.bits for o in t16.ops if o.kind == "goodness"] == [(16, 16)] * 3
    assert [o.bits for o in t4.ops if o.kind == "goodness"] == [(4, 4)] * 3
    assert t16.macs("goodness") == t4.macs("goodness")
    assert t16.sent_bytes("activation") == t4.sent_bytes("activation")


def test_wider_goodness_squares_the_output_before_it_is_requantized():
    x, labels, _ = _inputs()
    net = _net("df-o", prec=dataclasses.replace(P4, goodness_bits=16))
    blk = net.blocks[0]
    out, cache = blk.forward(net.input_with_label(x, labels), train=True)
    relu = np.maximum(cache["y"], 0)                              # pre-activation -> ReLU -> 2x2 max-pool, in numpy
    pooled = relu.reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5))
    # the first batch sets the 16-bit range to its max, so nothing clips: error at most half a step
    assert np.abs(cache["gsrc"] - pooled).max() <= 0.5001 * blk.good_scale.scale
    assert len(np.unique(out)) <= 16 < len(np.unique(cache["gsrc"]))
    assert not np.allclose(np.mean(out.reshape(2, -1) ** 2, axis=1), np.mean(pooled.reshape(2, -1) ** 2, axis=1),
                           rtol=1e-3)


def test_df_r_uses_feedback_instead_of_true_weights():
    t = _step("df-r")
    assert t.macs("feedback") == 6912 + 960
    assert t.macs("grad_x") == 36864                              # only the embedding's grad-input remains
    # 4-bit random kernels of blocks 1 and 2, with a float32 scale per output channel
    assert t.bytes_by_category()["feedback_weights"] == 108 + 60 + 4 * (6 + 5)
    fb_ops = [o for o in t.ops if o.kind == "feedback"]
    fb_bufs = {b.id for b in t.buffers if b.category == "feedback_weights"}
    weights = {b.id for b in t.buffers if b.category == "weights"}
    assert all(set(o.reads) & fb_bufs and not set(o.reads) & weights for o in fb_ops)


def test_bp_keeps_activations_for_backward_and_has_no_goodness():
    t = _step("bp")
    b = t.bytes_by_category()
    assert b["act_update"] == 0 and b["act_backward"] > 0
    assert t.macs("goodness") == 0
    # rows are the 2 samples only (no negatives); head 24 -> 4 classes on the flattened block-2 output
    assert [t.macs("fwd", l) for l in range(4)] == [2 * 256 * 9, 2 * 24 * 36, 2 * 5 * 24, 2 * 4 * 5]
    # backward: grad-input of every layer but the first
    assert t.macs("grad_x") == 2 * 24 * 36 + 2 * 5 * 24 + 2 * 4 * 5


@pytest.mark.parametrize("strategy", ["greedy", "df-r", "bp"])
def test_trace_roundtrips_through_json(strategy):
    import json
    t = _step(strategy)
    again = Trace.from_dict(json.loads(t.dumps()))
    assert again.to_dict() == t.to_dict()


def test_roles_roundtrip_and_say_what_each_tensor_is():
    """Every buffer declares its role; the serialised trace keeps it; the forward of a DF-O block writes its
    kept input, its ReLU mask, its pool index and its output (the chip reads these roles, never names)."""
    import json
    from chipsim.trace.roles import Role
    t = _step("df-o")
    again = Trace.from_dict(json.loads(t.dumps()))
    assert again.buffers == t.buffers and all(isinstance(b.role, Role) for b in again.buffers)
    fwd = next(o for o in t.ops if o.kind == "fwd" and o.layer == 0)
    assert {t.buffers[b].role for b in fwd.writes} >= {Role.KEPT_INPUT, Role.MASK, Role.OUTPUT, Role.POOL_INDEX}
    persistent = {b.role for b in t.buffers if b.scope == "persistent"}
    assert {Role.WEIGHTS, Role.MASTER, Role.OPTIMIZER_STATE} <= persistent
    assert {b.role for b in t.buffers if b.scope == "step"} == {Role.GRADIENT_ACC}


def test_a_trace_of_another_format_version_is_a_clear_error():
    """A checkpoint written before roles existed (trace version 2) cannot be read as if it had them."""
    from chipsim.errors import ChipsimError
    d = _step("df-o").to_dict()
    d["version"] = 2
    for b in d["buffers"]:
        b.pop("role")
    with pytest.raises(ChipsimError, match=r"trace has format version 2; this chipsim reads version 3"):
        Trace.from_dict(d)


def test_per_sample_trace_divides_sample_scope_only():
    t = _step("df-o")
    one = t.per_sample()
    assert one.samples == 1
    assert one.macs("fwd") == t.macs("fwd") // 2
    assert one.macs("update") == t.macs("update")


def _rows_with_error(strategy, prec=P4):
    """Per block, the rows DF's loss gives an error, found by a separate forward pass:
    its own loss's rows, plus (df-o) the block above's."""
    from chipsim import kernels as K
    from chipsim.engine.rules.losses import goodness_loss
    x, labels, negatives = _inputs()
    net = _net(strategy, prec=prec)
    lab = np.concatenate([labels[:, None], negatives], axis=1).reshape(-1)
    a = net.input_with_label(np.repeat(x, 4, axis=0), lab)
    own = []
    for blk in net.blocks:
        a, cache = blk.forward(a, train=True)
        g = K.goodness(cache["gsrc"]).reshape(2, 4)
        _, dgp, dgn = goodness_loss("df", g[:, 0], g[:, 1:], Learning())
        own.append(set(np.flatnonzero(np.concatenate([dgp[:, None], dgn], axis=1).reshape(-1))))
    if strategy == "greedy":
        return own
    return [own[l] | (own[l + 1] if l + 1 < len(own) else set()) for l in range(len(own))]


@pytest.mark.parametrize("strategy", ["greedy", "df-o"])
def test_fixed_stats_bn_keeps_and_backpropagates_only_rows_with_an_error(strategy):
    t = _step(strategy, "fixed-stats")
    rows = _rows_with_error(strategy)
    per_row = [256 * 18, 24 * 36, 5 * 24]                         # outputs x K, as in the dense count above
    assert [t.macs("grad_w", l) for l in range(3)] == [len(r) * m for r, m in zip(rows, per_row)]
    # DF's max loss: each sample's positive and hardest negative, and under df-o the hardest of the block above
    assert all(len(r) <= 2 * (2 if strategy == "greedy" else 3) for r in rows) and any(len(r) < ROWS for r in rows)
    # the kept buffers shrink to those rows at a select op, which reads the full ones (ending their lifetime)
    for l, r in enumerate(rows):
        if len(r) == ROWS:
            continue
        sel = [o for o in t.ops if o.kind == "select" and o.layer == l]
        assert len(sel) == 1
        full = {t.buffers[b].name: t.buffers[b].nbytes for b in sel[0].reads}
        kept = {t.buffers[b].name: t.buffers[b].nbytes for b in sel[0].writes}
        pre = (256, 24, 5)[l]                                    # pre-activations per row: 1-bit mask each
        assert full["relu_mask"] == nbytes_of(ROWS * pre, 1)
        assert kept["relu_mask_kept_rows"] == nbytes_of(len(r) * pre, 1)
        later = [o for o in t.ops if o.id > sel[0].id and o.layer == l]
        assert not any(set(o.reads) & set(sel[0].reads[:len(kept)]) for o in later)


def test_wider_goodness_copy_shrinks_to_the_own_loss_rows_before_the_block_above_runs():
    """fixed-stats: only the goodness gradient reads the wider copy, so it is cut to the rows of the
    block's own loss right after that loss, while the other kept buffers wait for the block above."""
    prec = dataclasses.replace(P4, goodness_bits=16)
    t = _step("df-o", "fixed-stats", prec)
    own = _rows_with_error("greedy", prec)
    outputs_per_row = (64, 24, 5)
    assert any(len(r) < ROWS for r in own)
    for l, r in enumerate(own):
        cut = [o for o in t.ops if o.layer == l and o.name == "keep the loss's rows of the goodness copy"]
        if len(r) == ROWS:
            assert not cut
            continue
        assert len(cut) == 1
        assert t.buffers[cut[0].writes[0]].nbytes == 2 * len(r) * outputs_per_row[l]
        assert t.buffers[cut[0].reads[0]].nbytes == 2 * ROWS * outputs_per_row[l]
        above = [o.id for o in t.ops if o.kind == "fwd" and o.layer == l + 1]
        assert not above or cut[0].id < above[0]
        later = [o for o in t.ops if o.id > cut[0].id]
        assert not any(cut[0].reads[0] in o.reads for o in later)   # the full copy is dead from here


@pytest.mark.parametrize("strategy,bn_backward,goodness_bits", [
    ("df-o", "fixed-stats", 16), ("df-r", "batch-stats", 4), ("greedy", "fixed-stats", 8), ("bp", "batch-stats", 8)])
def test_every_buffer_is_written_before_it_is_read(strategy, bn_backward, goodness_bits):
    """Lifetimes come from the ops that touch a buffer, so a buffer first touched by a reader would start
    late; every non-persistent buffer must be produced by the op that first touches it."""
    t = _step(strategy, bn_backward, dataclasses.replace(P4, goodness_bits=goodness_bits))
    first = {}
    for o in t.ops:
        for b in o.reads + o.writes:
            first.setdefault(b, o)
    for b in t.buffers:
        if b.scope != "persistent" and b.id in first:
            assert b.id in first[b.id].writes, f"{b.name} (layer {b.layer}) is read by {first[b.id].name} first"
