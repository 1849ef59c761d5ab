"""Tests for chipsim.chip: every figure of a tiny hand-built trace checked against hand arithmetic.

The traces are recorded with ``TraceRecorder`` exactly as the engine would, so
the chip model is tested through its contract (the trace), never through the
model description.
"""
from __future__ import annotations

import heapq
import os
import random

import numpy as np
import pytest

from chipsim.chip import ChipSpec, simulate, split_units, whole_batch
from chipsim.chip.eventloop import heap_pop, heap_push
from chipsim.chip.mapping import map_trace
from chipsim.chip.noc import Links, route_ids
from chipsim.config import HwConfig
from chipsim.config.files import apply_override
from chipsim.errors import MappingError
from chipsim.schema import Where, build
from chipsim.trace import TraceRecorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hwconfig(rows=2, cols=2, sram_kib=1.0, memory_mode="streaming", strategy="fit", micro_batch=1, sets=()):
    """A toy chip with round numbers: 4-bit MACs 4/cycle, 2 B/cycle links, 1 cycle per hop; ``sets``:
    ``--set`` assignments applied as the CLI applies them."""
    data = {
        "chip": {"name": "toy", "mesh": {"rows": rows, "cols": cols}, "clock_mhz": 100,
                 "core": {"sram_kib": sram_kib, "macs_per_cycle": {4: 4, 8: 2, 16: 1},
                          "vector_ops_per_cycle": {32: 8},
                          "energy_pj": {"mac": {4: 1.0, 8: 2.0, 16: 4.0}, "vector_op": {32: 0.5},
                                        "sram_read_byte": 0.5, "sram_write_byte": 1.0}},
                 "noc": {"link_bytes_per_cycle": 2, "hop_latency_cycles": 1, "energy_pj": {"byte_hop": 0.25}}},
        "workload": {"model": os.path.join(ROOT, "models", "dense3.yaml")},
        "mapping": {"strategy": strategy, "memory_mode": memory_mode, "micro_batch": micro_batch},
    }
    for a in sets:
        apply_override(data, a)
    return build(HwConfig, data, "", Where("test"))


def dense3_trace():
    """3 dense layers, 2 samples. Per-step bytes / MACs (per sample = half)."""
    r = TraceRecorder(samples=2)
    r.layer(0, "d0", 4, "dense")
    r.layer(1, "d1", 4, "dense")
    r.layer(2, "d2", 2, "dense")
    w0 = r.buffer(0, "w0", "weights", 16, "persistent", "units")
    x0 = r.buffer(0, "x0", "act_update", 16, "sample", "replicated")    # input image, no writer
    y0 = r.buffer(0, "y0", "act_update", 8, "sample", "units")
    w1 = r.buffer(1, "w1", "weights", 16, "persistent", "units")
    x1 = r.buffer(1, "x1", "act_update", 8, "sample", "replicated")
    y1 = r.buffer(1, "y1", "act_update", 8, "sample", "units")
    a1 = r.buffer(1, "acc1", "gradients", 16, "step", "units")
    w2 = r.buffer(2, "w2", "weights", 8, "persistent", "units")
    x2 = r.buffer(2, "x2", "act_update", 8, "sample", "replicated")
    y2 = r.buffer(2, "y2", "act_update", 4, "sample", "units")
    r.op(0, "fwd", "fwd0", 64, (4, 4), reads=(x0, w0), writes=(y0,))                # op 0
    r.send(0, 1, "send0", y0, x1, 8, "activation")                                  # op 1
    r.op(1, "fwd", "fwd1", 64, (4, 4), reads=(x1, w1), writes=(y1,))                # op 2
    r.send(1, 2, "send1", y1, x2, 8, "activation")                                  # op 3
    r.op(1, "grad_w", "grad_w1", 32, (8, 4), reads=(y1, x1, a1), writes=(a1,))      # op 4
    r.op(1, "update", "update1", 16, (16, 16), "step", reads=(a1,), writes=(w1,))   # op 5
    r.op(2, "fwd", "fwd2", 32, (4, 4), reads=(x2, w2), writes=(y2,))                # op 6
    return r.trace


# ----------------------------------------------------------------------------- hand-checked figures
def test_dense3_by_hand():
    rep = simulate(dense3_trace(), hwconfig())
    # mapping: one slice per layer along the snake 0 -> 1 -> 3 (row 1 runs right to left)
    assert [[s.core for s in rep.mapping.slices_of(l)] for l in range(3)] == [[0], [1], [3]]
    assert rep.mapping.slices_of(2)[0].coord == (1, 1)
    assert rep.activation_hops() == 2                       # 0->1 and 1->3: one hop each

    # timing (cycles = macs per sample / macs_per_cycle; send = 4 B / 2 B/cycle + 1 hop * 1):
    #   fwd0: 32/4 = 8; send: 2 + 1 = 3; fwd1: 32/4 = 8; grad_w1: 16/2 = 8 (8-bit); update1: 16/1 = 16;
    #   fwd2: 16/4 = 4. Flow control: fwd0(1) waits for fwd1(0) to start, fwd1(1) for fwd2(0).
    #   fwd0(0) [0,8]  send0(0) [8,11]  fwd1(0) [11,19]  fwd0(1) [11,19]  send1(0) [19,22]
    #   grad_w1(0) [19,27]  send0(1) [19,22]  fwd2(0) [22,26]  fwd1(1) [27,35] (core busy till 27)
    #   send1(1) [35,38]  grad_w1(1) [35,43]  fwd2(1) [38,42]  update1 [43,59]
    st, en = rep.schedule.start, rep.schedule.end
    assert st[0].tolist() == [0, 11] and en[0].tolist() == [8, 19]
    assert st[2].tolist() == [11, 27] and en[2].tolist() == [19, 35]
    assert st[4].tolist() == [19, 35] and en[4].tolist() == [27, 43]
    assert en[1].tolist() == [11, 22] and en[3].tolist() == [22, 38]
    assert st[6].tolist() == [22, 38] and en[6].tolist() == [26, 42]
    assert st[5, 0] == 43 and en[5, 0] == 59
    assert rep.latency_cycles == 59
    assert rep.latency_us == pytest.approx(0.59)                  # 59 cycles at 100 MHz
    assert rep.throughput == pytest.approx(2 / 0.59e-6)
    # busy: core0 2*8 = 16; core1 2*8 + 2*8 + 16 = 48; core3 2*4 = 8
    assert rep.busy() == {0: 16, 1: 48, 3: 8}
    assert rep.idle() == {0: 43, 1: 11, 3: 51}
    path = [(p["op"], p["instance"]) for p in rep.critical_path()]
    assert path == [("fwd0", 0), ("send0", 0), ("fwd1", 0), ("grad_w1", 0), ("fwd1", 1), ("grad_w1", 1),
                    ("update1", None)]
    assert rep.critical_path()[4]["gated_by"] == "core"
    gantt = [g for g in rep.gantt_rows() if g["core"] == 1]
    assert [(g["op"], g["start"], g["end"]) for g in gantt] == [
        ("fwd1", 11, 19), ("grad_w1", 19, 27), ("fwd1", 27, 35), ("grad_w1", 35, 43), ("update1", 43, 59)]

    # ledger, streaming (per sample: x0 8, y0 4, x1 4, y1 4, x2 4, y2 2 bytes):
    #   core0: w0 16 + x0(0) 8 + y0(0) 4 = 28 during fwd0(0) (y0 lives until send0 ends)
    #   core1: at t=19: w1 16 + x1(0) [8,27] 4 + y1(0) [11,27] 4 + x1(1) [19,43] 4 + acc1 [19,59] 16 = 44
    #   core3: w2 8 + x2(0) [19,26] 4 + y2(0) [22,26] 2 = 14
    led = rep.ledger
    assert {c: m.peak_bytes for c, m in led.cores.items()} == {0: 28, 1: 44, 3: 14}
    m1 = led.cores[1]
    assert m1.peak_time == 19
    assert (m1.at_peak["weights"], m1.at_peak["act_update"], m1.at_peak["gradients"]) == (16, 12, 16)
    assert m1.max_by_category["act_update"] == 12
    assert led.peak_core == 1 and led.capacity == 1024
    assert led.totals()["weights"] == 16 + 16 + 8

    # NoC: link 0->1 carries send0 (2 x 4 B), link 1->3 carries send1 (2 x 4 B)
    assert rep.schedule.links.bytes == {(0, 1): 8, (1, 3): 8}
    assert rep.link_bytes() == {"(0, 0)->(0, 1)": 8, "(0, 1)->(1, 1)": 8}
    assert rep.tag_bytes() == {"activation": 16}
    assert rep.byte_hops == 16

    # energy: MACs 64*1 + 64*1 + 32*2 + 16*4 + 32*1 = 288 pJ
    #   reads: fwd0 x0 16 + w0 16*2 inst | send0 y0 8 | fwd1 x1 8 + w1 32 | send1 y1 8
    #          | grad_w1 y1 8 + x1 8 + acc1 16*2 | update1 acc1 16 | fwd2 x2 8 + w2 8*2  = 192 B * 0.5 = 96 pJ
    #   writes: y0 8 + x1 8 + y1 8 + x2 8 + acc1 16*2 + w1 16 + y2 4 = 84 B * 1.0 = 84 pJ
    #   NoC: 16 byte-hops * 0.25 = 4 pJ
    e = rep.energy
    assert (e.mac_pj, e.sram_read_bytes, e.sram_write_bytes) == (288, 192, 84)
    assert (e.sram_pj, e.noc_pj, e.total_pj) == (180, 4, 472)
    assert e.per_sample()["total_pj"] == 236

    d = rep.to_dict()
    assert d["timing"]["latency_cycles"] == 59 and d["ledger"]["peak_core"] == 1
    assert [r["cores"] for r in rep.mapping_table()] == ["0", "1", "3"]


def test_dense3_whole_batch_pool_by_hand():
    # program order: fwd0 0, send0 1, fwd1 2, send1 3, grad_w1 4, update1 5, fwd2 6; each tensor once, whole
    # batch, live from its first to its last toucher: x0 [0,0] 16, y0 [0,1] 8, x1 [1,4] 8, y1 [2,4] 8,
    # x2 [3,6] 8, acc1 [4,5] 16, y2 [6,6] 4; persistent w0 16 + w1 16 + w2 8 = 40.
    # live per op: 24, 16, 16, 24, 40 (x1 y1 x2 acc1), 24, 12 -> peak 40 + 40 at op 4
    pool = whole_batch(dense3_trace())
    assert (pool.peak_bytes, pool.peak_op, pool.persistent_bytes) == (80, 4, 40)
    assert {c: v for c, v in pool.at_peak.items() if v} == {"weights": 40, "act_update": 24, "gradients": 16}
    rep = simulate(dense3_trace(), hwconfig())
    assert rep.pool == pool and rep.to_dict()["pool"]["whole_batch"]["peak_bytes"] == 80


def test_whole_batch_pool_of_an_engine_step_by_hand():
    """The pool of a step the real engine executed and traced: BP on one dense block of 4 units (784
    inputs) and its 10-unit head, batch 2, on 44core_4bit (W4/A4/G8/U16, optimizer and accumulator 16 bits,
    float32 scales). Each size below is derived from the model and the widths; the pool counts what the
    trace declares (scope, category, bytes), never a buffer's name -- renaming every buffer changes nothing."""
    import dataclasses
    from chipsim.config import load_config
    from chipsim.modelspec import Block, ModelSpec
    from chipsim.runner import trace_one_step
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "hwconfigs", "44core_4bit.yaml"),
                      ("workload.rule=bp", "training.batch_size=2"))
    cfg = dataclasses.replace(cfg, model=ModelSpec(name="one", blocks=(Block(type="dense", units=4),)))
    trace = trace_one_step(cfg)
    pool = whole_batch(trace)
    # persistent: block 0 (784 x 4 = 3136 weights): 4-bit codes 1568 + one float32 scale per unit 4 x 4 = 1584;
    #   16-bit master 6272; Adam's two 16-bit moments 12544 + a float32 scale each 8 = 12552; BN running mean
    #   and variance of its 784 inputs in float32 2 x 784 x 4 = 6272.
    #   head (4 x 10 = 40 weights): 20 + 10 x 4 = 60; master 80; moments 160 + 8 = 168.
    #   1584 + 6272 + 12552 + 6272 + 60 + 80 + 168 = 26988
    # per step, whole batch, live from first to last toucher (ops: 0 sensor send, 1 fwd0, 2 send, 3 fwd1,
    #   4 loss, 5 the loss gradient to the head's own slices, 6 grad_w1, 7 grad_x1, 8 quantize error, 9 error
    #   send, 10 grad_w0, 11 update0, 12 update1):
    #   sensor input 2 x 784 x 8 bit = 1568 [0,1]; block 0 keeps its input 2 x 784 x 4 bit = 784 [1,10] and its
    #   ReLU mask 2 x 4 x 1 bit = 1 [1,10]; its output 2 x 4 x 4 bit = 4 [1,2], the head's copy 4 [2,3] and kept
    #   input 4 [3,7]; the head's float32 logits 2 x 10 x 4 = 80 [3,4] and loss gradient 80 [4,7]; the head's
    #   16-bit gradient accumulator 80 + 4 = 84 [6,12]; the error's float32 partial 2 x 4 x 4 = 32 [7,8], its
    #   8-bit codes 2 x 4 x 8 bit = 8 sent [8,9] and received [9,10]; block 0's accumulator 6272 + 4 = 6276
    #   [10,11].
    #   live at op 10 (BP's last backward op): 784 + 1 + 84 + 8 + 6276 = 7153, the largest (op 1: 2357, op 11:
    #   6360)
    assert (pool.peak_bytes, pool.peak_op, pool.persistent_bytes) == (26988 + 7153, 10, 26988)
    assert {c: v for c, v in pool.at_peak.items() if v} == {
        "weights": 1584 + 60, "master_weights": 6272 + 80, "optimizer_state": 12552 + 168, "bn_params": 6272,
        "act_backward": 784 + 1, "gradients": 84 + 8 + 6276}
    renamed = dataclasses.replace(trace, buffers=[dataclasses.replace(b, name=f"b{b.id}") for b in trace.buffers])
    assert whole_batch(renamed) == pool


# ----------------------------------------------------------------------------- liveness: deferred vs immediate readers
def chain_trace(depth, samples, backprop):
    """``depth`` dense blocks with the same ops and buffers in two dataflows: ``backprop=True`` reads each
    block's activations again in a backward chain from the top; ``False`` reads them right after the block's
    own loss. A synthetic trace for the ledger's liveness, not a model of either rule's memory (the real
    engine's traces are compared below: there DF holds *more* than BP at N = 9)."""
    r = TraceRecorder(samples)
    cat = "act_backward" if backprop else "act_update"
    S, B = samples, []
    for l in range(depth):
        r.layer(l, f"b{l}", 16, "dense")
        B.append(dict(w=r.buffer(l, "w", "weights", 256, "persistent", "units"),
                      x=r.buffer(l, "x", cat, S * 16, "sample", "replicated"),
                      y=r.buffer(l, "y", cat, S * 16, "sample", "units"),
                      dy=r.buffer(l, "dy", "gradients", S * 16, "sample", "units"),
                      acc=r.buffer(l, "acc", "gradients", 256, "step", "units")))

    def fwd(l):
        if l:
            r.send(l - 1, l, f"a{l}", B[l - 1]["y"], B[l]["x"], S * 16, "activation")
        r.op(l, "fwd", f"fwd{l}", S * 256, (4, 4), reads=(B[l]["x"], B[l]["w"]), writes=(B[l]["y"],))

    def learn(l, reads_dy_from):
        r.op(l, "grad_w", f"gw{l}", S * 256, (8, 4), reads=(B[l]["dy"], B[l]["x"], B[l]["acc"]),
             writes=(B[l]["acc"],))
        r.op(l, "update", f"up{l}", 256, (16, 16), "step", reads=(B[l]["acc"],), writes=(B[l]["w"],))

    if backprop:
        for l in range(depth):
            fwd(l)
        r.op(depth - 1, "loss", "loss", S * 16, (8, 8), reads=(B[-1]["y"],), writes=(B[-1]["dy"],))
        for l in reversed(range(depth)):
            if l:
                ex = r.buffer(l, "ex", "gradients", S * 16, "sample", "reduce")
                r.op(l, "grad_x", f"gx{l}", S * 256, (8, 4), reads=(B[l]["dy"], B[l]["w"], B[l]["y"]), writes=(ex,))
                r.send(l, l - 1, f"e{l}", ex, B[l - 1]["dy"], S * 16, "error")
            learn(l, None)
    else:
        for l in range(depth):
            fwd(l)
            r.op(l, "loss", f"loss{l}", S * 16, (8, 8), reads=(B[l]["y"],), writes=(B[l]["dy"],))
            learn(l, None)
    return r.trace


def test_activations_read_by_a_later_backward_chain_are_held_longer():
    """Ledger mechanics: a buffer lives until its last reader, so deferring the readers raises the peak."""
    gaps = []
    for depth in (3, 6, 9):
        hw = hwconfig(rows=3, cols=4, sram_kib=64)
        bp = simulate(chain_trace(depth, 16, True), hw).ledger
        lo = simulate(chain_trace(depth, 16, False), hw).ledger
        assert bp.peak_bytes > lo.peak_bytes
        assert bp.total_peak_bytes() > lo.total_peak_bytes()
        gaps.append(bp.total_peak_bytes() - lo.total_peak_bytes())
        # BP's activations are the backward-pass category, the local rule's the update category
        assert bp.totals()["act_backward"] > 0 and bp.totals()["act_update"] == 0
    assert gaps[0] < gaps[1] < gaps[2]


def test_whole_batch_pool_does_not_depend_on_the_chip():
    """The pool counts each tensor once, whatever the mapping replicates or however samples stream, and
    exists even where the chip cannot hold the model."""
    t = chain_trace(3, 16, False)
    roomy = simulate(t, hwconfig(rows=3, cols=4, sram_kib=64))
    split = simulate(t, hwconfig(rows=3, cols=4, sram_kib=0.35))          # layers split over several cores
    assert split.mapping.counts != roomy.mapping.counts
    assert roomy.pool == split.pool == whole_batch(t)
    with pytest.raises(MappingError):
        simulate(t, hwconfig(rows=1, cols=2, sram_kib=64))               # 3 layers, 2 cores
    # the local rule's block 1 at its grad_w: w 256 + x 256 + y 256 + dy 256 + acc 256, plus the other
    # blocks' weights (2 x 256) and block 2's input arriving (256): at least 1280 live
    assert whole_batch(t).peak_bytes >= 1280


def _engine_ledger(rule, depth, negatives, statistics="running"):
    import dataclasses
    from chipsim.config import load_config
    from chipsim.modelspec import cnn_family
    from chipsim.runner import trace_one_step
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "hwconfigs", "176core_512k.yaml"),
                      (f"workload.rule={rule}", f"learning.negatives={negatives}", "training.batch_size=8",
                       f"mapping.statistics={statistics}"))
    cfg = dataclasses.replace(cfg, model=cnn_family(depth, width=8))
    return simulate(trace_one_step(cfg), cfg.hw).ledger


def test_bp_and_df_r_memory_as_the_real_engine_executes_them():
    """From the engine's own traces: BP's activations wait for its backward pass; with N = 9 every sample is
    10 rows in DF-R's blocks, so DF-R holds more SRAM than BP (reports/README.md, section 2); at N = 1 BP's
    activations grow with depth faster than DF-R's, so the ratio falls as depth grows. All of this on a chip
    that streams (mapping.statistics: running); under batch statistics every block holds the whole batch at
    its barrier, and DF-R's kept activations grow with depth faster than BP's (measured: 2.26x vs 1.82x from
    3 to 9 blocks)."""
    depths = (3, 6, 9)
    led = {("df-r", n, d): _engine_ledger("df-r", d, n) for n in ("null", 1) for d in depths}
    for d in depths:                                   # BP has no negatives: one trace serves both
        led[("bp", "null", d)] = led[("bp", 1, d)] = _engine_ledger("bp", d, "null")
    for d in depths:
        bp, dfr = led[("bp", "null", d)].totals(), led[("df-r", "null", d)].totals()
        assert bp["act_backward"] > 0 and bp["act_update"] == 0
        assert dfr["act_update"] > 0 and dfr["act_backward"] == 0
        assert led[("df-r", "null", d)].total_peak_bytes() > led[("bp", "null", d)].total_peak_bytes()
    growth = {r: led[(r, 1, 9)].totals()[c] / led[(r, 1, 3)].totals()[c]
              for r, c in (("bp", "act_backward"), ("df-r", "act_update"))}
    assert growth["bp"] > growth["df-r"], growth
    ratio_n1 = [led[("df-r", 1, d)].total_peak_bytes() / led[("bp", 1, d)].total_peak_bytes() for d in depths]
    assert ratio_n1[0] > ratio_n1[1] > ratio_n1[2] > 1.0


# ----------------------------------------------------------------------------- mapping
def big_layer_trace(weight_bytes, units=4):
    r = TraceRecorder(samples=2)
    r.layer(0, "big", units, "dense")
    r.layer(1, "small", 2, "dense")
    w0 = r.buffer(0, "w0", "weights", weight_bytes, "persistent", "units")
    x0 = r.buffer(0, "x0", "act_update", 8, "sample", "replicated")
    y0 = r.buffer(0, "y0", "act_update", 8, "sample", "units")
    g0 = r.buffer(0, "g0", "gradients", 8, "sample", "reduce")
    w1 = r.buffer(1, "w1", "weights", 8, "persistent", "units")
    x1 = r.buffer(1, "x1", "act_update", 8, "sample", "replicated")
    r.op(0, "fwd", "fwd0", 64, (4, 4), reads=(x0, w0), writes=(y0,))
    r.op(0, "goodness", "good0", 8, (4, 4), reads=(y0,), writes=(g0,))
    r.op(0, "loss", "loss0", 0, reads=(g0,), writes=())
    r.send(0, 1, "send0", y0, x1, 8, "activation")
    r.op(1, "fwd", "fwd1", 16, (4, 4), reads=(x1, w1))
    return r.trace


def test_split_layer_that_does_not_fit_one_core():
    # 64 B SRAM; w0 = 96 B needs two slices of 2 units (48 B each) + x0 4 + y0 2 + g0 4 per sample
    tr = big_layer_trace(96)
    hw = hwconfig(sram_kib=64 / 1024)
    rep = simulate(tr, hw)
    sl = rep.mapping.slices_of(0)
    assert [(s.lo, s.hi, s.core) for s in sl] == [(0, 2, 0), (2, 4, 1)]
    assert rep.mapping.slices_of(1)[0].core == 3
    assert all(m.peak_bytes <= 64 for m in rep.ledger.cores.values())
    # slice 0 at its peak (during goodness): w 48 + x0 4 (replicated) + y0 2 + g0 4 (reduce partial) = 58
    assert rep.ledger.cores[0].peak_bytes == 58
    # multicast of the activation (units source, replicated destination): each slice sends its 2 B
    # per sample to core 3; partial goodness reduced 1 -> 0 (4 B per sample)
    assert rep.tag_bytes() == {"activation": 8, "reduce": 8}
    assert split_units(10, 3) == [(0, 4), (4, 7), (7, 10)]


def test_unmappable_model_names_core_layer_categories_and_remedy():
    tr = big_layer_trace(200, units=8)      # needs 4 slices (200 * 2/8 = 50 B) + 1 for layer 1 > 4 cores
    with pytest.raises(MappingError) as exc:
        map_trace(tr, hwconfig(sram_kib=64 / 1024))
    msg = str(exc.value)
    for part in ("'big'", "core 0", "weights 0.", "act_update", "KiB SRAM", "cores", "re-mapping"):
        assert part in msg, (part, msg)
    # the advice names only changes that fit: each is applied as `--set` and the same trace re-mapped
    fixes = exc.value.fixes
    advised = {k for _, o in fixes for k in o}
    assert {"chip.core.sram_kib", "chip.mesh.cols"} <= advised, msg
    for text, o in fixes:
        assert text in msg
        map_trace(tr, hwconfig(sram_kib=64 / 1024, sets=[f"{k}={v}" for k, v in o.items()]))   # fits
    # the advised SRAM is the least on its grain (1/8 of the 64 B SRAM = 8 B): 8 B less does not fit
    kib = dict(o for _, f in fixes for o in f.items())["chip.core.sram_kib"]
    with pytest.raises(MappingError):
        map_trace(tr, hwconfig(sram_kib=kib - 8 / 1024))
    # workload changes (batch, bits) change the trace; unchecked, they are not advised
    assert "batch_size" not in msg and "weight_bits" not in msg
    with pytest.raises(MappingError, match="splitting cannot help"):
        map_trace(big_layer_trace(1000, units=2), hwconfig(rows=4, cols=4, sram_kib=64 / 1024))


def test_balanced_uses_idle_cores_for_the_heaviest_layer():
    rep = simulate(dense3_trace(), hwconfig(strategy="balanced"))
    # 4 cores, 3 layers: the idle core goes to layer 1 (most MACs: 64 + 32 + 16)
    assert rep.mapping.counts == [1, 2, 1]
    assert rep.latency_cycles < 59


# ----------------------------------------------------------------------------- NoC
def test_xy_routes_and_hops():
    spec = ChipSpec.from_hw(hwconfig(rows=3, cols=4))
    # core 0 (0,0) -> core 11 (2,3): along row 0 to col 3, then down column 3
    assert spec.route(0, 11) == ((0, 1), (1, 2), (2, 3), (3, 7), (7, 11))
    assert spec.hops(0, 11) == 5 and spec.hops(11, 0) == 5
    assert spec.route(11, 0) == ((11, 10), (10, 9), (9, 8), (8, 4), (4, 0))
    assert spec.snake_order() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert spec.mpc((3, 4)) == 4 and spec.mpc((4, 5)) == 2     # next wider entry


def test_link_contention_serialises_transfers():
    spec = ChipSpec.from_hw(hwconfig(rows=1, cols=3))
    links = Links(spec)
    # 32 B at 2 B/cycle = 16 cycles on the wire; 0->2 uses links 0->1, 1->2; 1->2 shares link 1->2
    assert links.transfer(0, 0, 2, 32, "activation") == 16 + 2 * 1
    assert links.transfer(0, 1, 2, 32, "activation") == 16 + 16 + 1     # waits for link 1->2
    assert links.transfer(0, 1, 0, 32, "error") == 16 + 1                # opposite direction: free
    assert links.bytes == {(0, 1): 32, (1, 2): 64, (1, 0): 32}
    assert links.byte_hops == 32 * 2 + 32 + 32


def test_route_link_ids_follow_xy_routes():
    # the arithmetic link ids of a route are exactly ChipSpec.route's links
    spec = ChipSpec.from_hw(hwconfig(rows=3, cols=4))
    links = Links(spec)
    for a in range(spec.n_cores):
        for b in range(spec.n_cores):
            assert [links.link_pair(l) for l in route_ids(spec.cols, a, b)] == list(spec.route(a, b))


def test_tag_bytes_in_order_of_first_transfer():
    links = Links(ChipSpec.from_hw(hwconfig(rows=1, cols=3)))
    links.tag_id("error")                                   # registered first, used second
    links.transfer(0, 0, 1, 8, "activation")
    links.transfer(0, 1, 0, 4, "error")
    links.transfer(0, 1, 2, 0, "reduce")                    # no bytes: no transfer, no entry
    assert list(links.tag_bytes.items()) == [("activation", 8.0), ("error", 4.0)]
    assert (links.transfers, links.hops) == (2, 2)


def test_event_heap_pops_like_heapq():
    rng = random.Random(0)
    ht, hk, n, ref = np.zeros(200), np.zeros(200, dtype=np.int64), 0, []
    for _ in range(500):
        if n and rng.random() < 0.45:
            assert heap_pop(ht, hk, n) == heapq.heappop(ref)
            n -= 1
        elif n < 200:
            item = (float(rng.randrange(5)), rng.randrange(10 ** 6))
            heap_push(ht, hk, n, *item)
            heapq.heappush(ref, item)
            n += 1
    while n:
        assert heap_pop(ht, hk, n) == heapq.heappop(ref)
        n -= 1
