"""Issue 23, defect 7: the width the trace states for an error sent down is the width the engine sent.

A conv/dense block quantises the error at its input to ``gradient_bits`` before it sends it (its codes
and one scale are what the block below computes with); the grad-input it computed first is float32, a
32-bit partial per slice summed onto slice 0, and the quantisation is an op of its own on that sum. A
transformer layer sends the float32 it holds, and its backward partials are float32 like its forward's.
The codes are checked against plain numpy (a per-tensor scale max|x| / qmax, every code an integer in
range, within one step of the value), the byte counts against hand counts."""
from __future__ import annotations

import os

import numpy as np
import pytest

from chipsim.config import load_config
from chipsim.engine.layers.block import QuantBlock
from chipsim.engine.layers.vit.block import TransformerBlock
from chipsim.engine.tracing.step import StepTracer
from chipsim.engine.training.trainer import Trainer
from chipsim.runner import _Synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "hwconfigs", "44core_4bit.yaml")
DENSE = os.path.join(REPO, "models", "dense3.yaml")
VIT = os.path.join(REPO, "models", "vit_tiny.yaml")


def _step(monkeypatch, *overrides, batch=4, shape=(1, 28, 28, 10)):
    """One traced step; returns (trace, [(layer, below, gx given to send_error, what error_down got)])."""
    seen, given = [], {}

    def send_error(self, gx, rng):
        given[id(self)] = np.array(gx, copy=True)
        return orig_q(self, gx, rng) if isinstance(self, QuantBlock) else orig_t(self, gx, rng)

    orig_q, orig_t = QuantBlock.send_error, TransformerBlock.send_error
    orig_down = StepTracer.error_down

    def error_down(self, blk, below, rows, use_feedback, loss, sent=None):
        seen.append((blk, below, given.pop(id(blk)), sent))
        return orig_down(self, blk, below, rows, use_feedback, loss, sent=sent)

    monkeypatch.setattr(QuantBlock, "send_error", send_error)
    monkeypatch.setattr(TransformerBlock, "send_error", send_error)
    monkeypatch.setattr(StepTracer, "error_down", error_down)
    cfg = load_config(CONFIG, (f"training.batch_size={batch}",) + overrides)
    data = _Synthetic(cfg.hw.workload.dataset, shape, batch, 0)
    tr = Trainer(cfg.hw, cfg.model, data)
    tr.train_step(data.x_train, data.y_train, record=True)
    return tr.trace, seen


def _sends(trace):
    """The errors sent down to another layer (a loss gradient multicast to its own layer's slices is not)."""
    return [o for o in trace.ops if o.kind == "send" and o.tag == "error" and o.dst_layer != o.layer]


@pytest.mark.parametrize("rule", ["df-o", "bp"])
def test_a_dense_block_sends_gradient_bits_codes_and_the_trace_sizes_them(monkeypatch, rule):
    # the batch's statistics: the scale is max|gx| / 7 over the step's error (running latches an estimate)
    trace, seen = _step(monkeypatch, f"workload.model={DENSE}", f"workload.rule={rule}",
                        "precision.gradient_bits=4", "mapping.statistics=batch")
    assert seen and len(seen) == len(_sends(trace))
    for (blk, below, gx, sent), send in zip(seen, _sends(trace)):
        # what the engine hands to the send: 4-bit signed codes (integers in [-7, 7]) and one scale
        assert sent.bits == 4
        codes = np.asarray(sent.codes)
        assert np.array_equal(codes, np.round(codes)) and np.abs(codes).max() <= 7
        assert np.abs(codes).max() == 7                     # max|gx| lands on the top code
        assert np.float32(sent.scale) == np.float32(np.abs(gx).max() / np.float32(7))
        assert np.all(np.abs(codes * sent.scale - gx) <= sent.scale * (1 + 1e-6))   # within one step
        # the receiver computes with exactly those codes times their scale
        assert np.array_equal(sent(), (codes * np.float32(sent.scale)).astype(np.float32))
        # the trace: 4 bits a value on the wire (two a byte), one value per element of the block below's output
        n = codes.size
        assert n == len(gx) * int(np.prod(below.out_shape))
        assert send.nbytes == (4 * n + 7) // 8
        src = trace.buffers[send.reads[0]]
        assert src.nbytes == (4 * n + 7) // 8 and src.elements == n
        # ... quantised by an op of its own, from the float32 grad-input (a 32-bit partial per slice)
        q = next(o for o in trace.ops if src.id in o.writes)
        assert q.name == "quantize error" and q.layer == blk.index
        assert {w.kind for w in q.work} >= {"quantize_scale"}
        part = trace.buffers[q.reads[0]]
        assert part.split == "reduce" and part.nbytes == 4 * n and part.elements == n
        gxop = next(o for o in trace.ops if part.id in o.writes)
        assert gxop.kind in ("grad_x", "feedback") and gxop.macs > 0


def test_a_transformer_layer_sends_and_sizes_float32(monkeypatch):
    trace, seen = _step(monkeypatch, f"workload.model={VIT}", "workload.rule=bp")
    vit_sends = [(s, o) for s, o in zip(seen, _sends(trace)) if isinstance(s[0], TransformerBlock)]
    assert len(vit_sends) == 3                               # layers 3 -> 2 -> 1 -> 0 of four
    for (blk, below, gx, sent), send in vit_sends:
        assert sent.bits == 32 and sent.codes.dtype == np.float32
        assert np.array_equal(sent(), gx)                    # sent as held: not quantised
        n = gx.size
        assert send.nbytes == 4 * n and trace.buffers[send.reads[0]].nbytes == 4 * n
    # the backward partials of every transformer sub-layer: float32, as its forward partials
    backs = [o for o in trace.ops if o.kind == "grad_w" and "backward" in o.name]
    partials = [trace.buffers[b] for o in backs for b in o.writes
                if trace.buffers[b].split == "reduce" and trace.buffers[b].category == "gradients"]
    assert len(partials) == 2 * 4
    assert all(b.nbytes == 4 * b.elements for b in partials)
    fwd = [trace.buffers[b] for o in trace.ops if o.kind == "fwd" for b in o.writes
           if trace.buffers[b].split == "reduce"]
    assert fwd and all(b.nbytes == 4 * b.elements for b in fwd)
    # the head (a dense block) still quantises what it sends into the last transformer layer
    head = [s for s in seen if not isinstance(s[0], TransformerBlock)]
    assert len(head) == 1 and head[0][3].bits == 8
