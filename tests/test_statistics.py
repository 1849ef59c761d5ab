"""mapping.statistics: the engine computes what each mode says, and the chip's schedule agrees.

* ``running``: a row's BN output and its codes depend on no later row (checked by changing the later rows);
* ``micro-batch``: a row's BN statistics are its micro-batch's alone (checked against torch's batch norm run
  on that group only);
* ``batch``: a changed row moves every row (the value really is batch-coupled), and the schedule holds every
  sample before a barrier op; ``running`` has no barrier, and samples stream past each other.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from chipsim import api, cli
from chipsim.config.hwconfig import Precision
from chipsim.engine.layers.block import QuantBlock
from chipsim.engine.layers.statistics import rows_per_sample
from chipsim.errors import ConfigError
from chipsim.kernels.norm_stream import batchnorm_micro_forward, batchnorm_stream_forward
from chipsim.modelspec import Block
from chipsim.quant.streaming import StreamErrorScale

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "hwconfigs" / "44core_4bit.yaml"


def _x(n=6, c=3, s=5, seed=0):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=(n, c, s, s)).astype(np.float32)


# ------------------------------------------------------------------ kernels
def test_running_bn_matches_a_plain_loop_and_ignores_later_rows():
    x = _x()
    n, c = x.shape[:2]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y, cache, seen = batchnorm_stream_forward(x, np.ones(c), np.zeros(c), rm, rv, 0, 0.25)
    assert seen == n
    # independent reference: row t (1-based) is folded with weight a = max(1/(t+1), 0.25) into an EW mean and the
    # mixture variance (1-a)(var + a d^2) + a v, then normalised with the estimate it just updated
    m, v = np.zeros(c), np.ones(c)
    for t in range(1, n + 1):
        a = max(1.0 / (t + 1), 0.25)
        row = x[t - 1].reshape(c, -1).astype(np.float64)
        mu, var_in = row.mean(1), row.var(1)
        d = mu - m
        m = m + a * d
        v = (1 - a) * (v + a * d * d) + a * var_in
        ref = (row - m[:, None]) / np.sqrt(v[:, None] + 1e-5)
        np.testing.assert_allclose(y[t - 1].reshape(c, -1), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, m, rtol=1e-6)
    np.testing.assert_allclose(rv, v, rtol=1e-6)
    # rows 0-2 come out the same whatever follows them
    x2 = x.copy()
    x2[3:] *= -5.0
    y2, _, _ = batchnorm_stream_forward(x2, np.ones(c), np.zeros(c), np.zeros(c, np.float32),
                                        np.ones(c, np.float32), 0, 0.25)
    np.testing.assert_array_equal(y2[:3], y[:3])
    assert not np.allclose(y2[3:], y[3:])


def test_running_bn_of_a_dense_input_is_a_plain_loop_bit_for_bit():
    """One value per channel (a dense layer's N x features) takes a loop of its own (``_stream_rows_1``,
    vectorised over the channels). It must do the general loop's IEEE operations exactly; the reference
    here is that loop in plain Python floats (float64), float32 where the kernel rounds to it. Signed
    zeros and a tiny eps included."""
    rng = np.random.default_rng(6)
    n, c = 9, 37
    x = (rng.standard_normal((n, c)) * 30).astype(np.float32)
    x[::2, ::3] = -0.0
    x[1::2, 1::4] = 0.0
    gamma, beta = rng.uniform(0.5, 2, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm0, rv0 = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    rm, rv = rm0.copy(), rv0.copy()
    y, cache, seen = batchnorm_stream_forward(x, gamma, beta, rm, rv, 4, 0.125, eps=1e-7)
    m, v = [float(u) for u in rm0], [float(u) for u in rv0]
    f32 = np.float32
    for b in range(n):
        a = max(1.0 / (4 + b + 1 + 1), 0.125)
        for ci in range(c):
            xv = float(x[b, ci])
            mu = (0.0 + xv) / 1
            d0 = xv - mu
            var_in = (0.0 + d0 * d0) / 1
            d = mu - m[ci]
            m[ci] = m[ci] + a * d
            v[ci] = (1.0 - a) * (v[ci] + a * d * d) + a * var_in
            inv = 1.0 / np.sqrt(v[ci] + 1e-7)
            want = ((f32(xv) - f32(m[ci])) * f32(inv)) * gamma[ci] + beta[ci]
            assert y[b, ci].tobytes() == f32(want).tobytes(), (b, ci)
            assert cache.inv_std[b, ci] == f32(inv) and cache.mean[b, ci] == f32(m[ci]) and cache.var[b, ci] == f32(v[ci])
    assert seen == 4 + n and rm.tolist() == [float(f32(u)) for u in m] and rv.tolist() == [float(f32(u)) for u in v]


def test_micro_batch_bn_is_torch_batch_norm_on_each_group():
    x = _x(n=7)
    c = x.shape[1]
    y, cache = batchnorm_micro_forward(x, np.ones(c), np.zeros(c), 3)
    for r0 in (0, 3, 6):                      # groups of 3 rows, the last of 1
        xs = torch.tensor(x[r0:r0 + 3])
        ref = torch.nn.functional.batch_norm(xs, None, None, training=True, eps=1e-5).numpy()
        np.testing.assert_allclose(y[r0:r0 + 3], ref, rtol=1e-4, atol=1e-4)
    assert cache.inv_std.shape == (7, c)


def test_streaming_error_scale_is_latched_and_ignores_later_rows():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(8, 20)).astype(np.float32)
    warm = StreamErrorScale(8, "nearest")
    warm.quantize(g, None)                    # a first step sets the estimate
    a, b = StreamErrorScale(8, "nearest"), StreamErrorScale(8, "nearest")
    a.running = b.running = warm.running
    g2 = g.copy()
    g2[4:] *= 100.0                           # later rows far larger: a batch max would change every code
    qa, sa = a.quantize(g, None)
    qb, sb = b.quantize(g2, None)
    assert sa == sb                           # the step's scale was known before its rows arrived
    np.testing.assert_array_equal(qa[:4], qb[:4])
    assert b.running > a.running              # ... and the later rows moved the estimate for the next step


def test_streaming_error_scale_holds_the_peak_so_the_rows_with_the_largest_errors_do_not_saturate():
    # SymBa's and FF's per-sample errors are a sigmoid of each sample's margin: a few rows carry errors
    # 100x the rest. A running mean of per-row maxima sat near the typical row and saturated those rows.
    g = np.ones((8, 4), np.float32)
    g[3] = 100.0                              # one row with a 100x error, 4 rows before the step ends
    est = StreamErrorScale(8, "nearest")
    est.quantize(g, None)
    # peak hold: the first row starts it at 1; row 3 raises it to 100; the 4 rows after it decay it by
    # 0.9 ** (1/8) each: 100 * 0.9 ** 0.5 = 94.868...
    assert est.running == pytest.approx(94.868, abs=1e-3)
    nxt = np.full((2, 4), 90.0, np.float32)   # the next step's large row: under the held peak, not clipped
    q, scale = est.quantize(nxt, None)
    # scale = 94.868 / 127 = 0.74699; 90 / 0.74699 = 120.48 -> code 120 -> 89.64
    assert q.max() * scale == pytest.approx(89.64, abs=0.01)


# ------------------------------------------------------------------ a block under each mode
def _block(mode, micro_batch=1):
    blk = QuantBlock(0, Block(type="dense", units=5), (12,), Precision(), np.random.default_rng(0))
    blk.use_statistics(mode, micro_batch)
    return blk


def _outputs(mode, x, micro_batch=1, reps=1):
    blk = _block(mode, micro_batch)
    with rows_per_sample(reps):
        blk.forward(np.random.default_rng(9).normal(size=(12, 12)).astype(np.float32), train=True)   # warm-up
        out, cache = blk.forward(x, train=True)
    return out, cache


@pytest.mark.parametrize("bits, signed, group", [(4, False, 1), (4, True, 1), (8, False, 4), (2, True, 3),
                                                  (4, False, 5)])
def test_stream_scale_thresholds_in_one_pass_equal_one_call_per_group(bits, signed, group):
    # the one-pass thresholds (every group the same size) against the per-group reference they replace,
    # bit for bit: 12 rows of (3, 5, 7), heavy-tailed values with an outlier row; group 5 does not divide
    # 12 rows, so it takes the per-group path itself, and must still agree
    from chipsim.quant.streaming import StreamScale
    rng = np.random.default_rng(7)
    x = (rng.standard_t(2, size=(12, 3, 5, 7)) * 0.3).astype(np.float32)
    x[5] *= 40.0
    scale = StreamScale(bits, signed, group=group)
    groups = [(r0, min(12, r0 + group)) for r0 in range(0, 12, group)]
    got, want = scale._thresholds(x, group), [scale.threshold(x[r0:r1]) for r0, r1 in groups]
    assert got == want and [type(v) for v in got] == [type(v) for v in want]
    # the error scale's per-group max |x| (one pass), through its peak hold, against one slice per group
    from chipsim.quant.streaming import _hold_peak
    err = StreamErrorScale(8, group=group)
    err.quantize(x, None)                 # first use: starts from the first group's max, then holds the peak
    maxes = [float(np.abs(x[r0:r1]).max()) for r0, r1 in groups]
    assert err.running == _hold_peak(maxes[0], maxes, err.momentum)


def test_block_running_output_of_a_row_does_not_depend_on_later_rows():
    x = np.random.default_rng(2).normal(size=(10, 12)).astype(np.float32)
    x2 = x.copy()
    x2[6:] = 7.0 * x2[6:] + 3.0
    a, ca = _outputs("running", x)
    b, cb = _outputs("running", x2)
    np.testing.assert_array_equal(a[:6], b[:6])          # rows before the change: bit for bit the same
    np.testing.assert_array_equal(ca["zq"][:6], cb["zq"][:6])
    assert not np.array_equal(a[6:], b[6:])
    # under batch the same change moves the earlier rows too: the value is batch-coupled
    a_b, _ = _outputs("batch", x)
    b_b, _ = _outputs("batch", x2)
    assert not np.array_equal(a_b[:6], b_b[:6])


def test_block_micro_batch_output_depends_only_on_its_micro_batch():
    # 2 samples per micro-batch, 2 rows per sample (a label variant each): groups of 4 rows
    x = np.random.default_rng(3).normal(size=(12, 12)).astype(np.float32)
    x2 = x.copy()
    x2[4:] = -3.0 * x2[4:] + 1.0              # change the second and third micro-batches
    a, ca = _outputs("micro-batch", x, micro_batch=2, reps=2)
    b, cb = _outputs("micro-batch", x2, micro_batch=2, reps=2)
    np.testing.assert_array_equal(a[:4], b[:4])
    assert not np.array_equal(a[4:8], b[4:8])
    # each group of 4 rows shares its statistics, and they are its own
    inv = ca["bnc"].inv_std
    assert (inv[:4] == inv[0]).all() and not np.array_equal(inv[0], inv[4])
    np.testing.assert_allclose(ca["bnc"].mean[0], x[:4].mean(0), rtol=1e-5, atol=1e-6)


def test_block_backward_uses_each_rows_statistics():
    blk = _block("running")
    x = np.random.default_rng(4).normal(size=(6, 12)).astype(np.float32)
    _, cache = blk.forward(x, train=True)
    gy = np.random.default_rng(5).normal(size=(6, 5)).astype(np.float32)
    gx = blk.grad_input(gy, cache, np.random.default_rng(6))
    one = blk.select(cache, [2])
    gx1 = blk.grad_input(gy[2:3], one, np.random.default_rng(6))
    assert gx.shape == (6, 12) and gx1.shape == (1, 12)
    # fixed statistics: row 2's error is its own pre-BN error times its own gamma * inv_std
    assert np.all(np.isfinite(gx)) and np.abs(gx1).sum() > 0


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("bad, why", [("mapping.statistics=stream", "allowed: auto, batch, running, micro-batch"),
                                      ("mapping.statistics=running", "fixed-stats")])
def test_bad_statistics_is_one_clear_line(bad, why, capsys):
    extra = ["--set", "learning.bn_backward=batch-stats"] if "running" in bad else []
    assert cli.main(["validate", str(PRESET), "--set", bad] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "mapping.statistics" in err and why in err


def test_statistics_refused_on_a_vit_model():
    with pytest.raises(ConfigError, match="mapping.statistics: running applies to conv and dense models"):
        api.validate(REPO / "hwconfigs" / "44core_4bit.yaml", ["mapping.statistics=running",
                                                               f"workload.model={REPO / 'models' / 'vit_tiny.yaml'}",
                                                               "workload.rule=cff"])


# ------------------------------------------------------------------ the schedule
def _simulate(mode, rule):
    from chipsim.chip import simulate
    from chipsim.config import load_config
    from chipsim.runner import _one_step
    cfg = load_config(str(PRESET), (f"workload.model={REPO / 'models' / 'dense3.yaml'}", f"workload.rule={rule}",
                                    "training.batch_size=6", f"mapping.statistics={mode}"))
    tr = _one_step(cfg)
    return tr.trace, simulate(tr.trace, cfg.hw)


@pytest.mark.parametrize("rule", ["bp", "df-r"])
def test_batch_statistics_put_a_barrier_in_the_schedule(rule):
    trace, chip = _simulate("batch", rule)
    s = chip.schedule
    barriers = [o for o in trace.ops if o.barrier]
    bn_fwd = [o for o in trace.ops if o.kind == "fwd" and any(w.kind == "bn_forward" for w in o.work)]
    assert bn_fwd and set(o.id for o in bn_fwd) <= set(o.id for o in barriers)
    assert s.n_inst == 6
    from chipsim.chip.timing import dataflow
    deps = dataflow(trace)
    for o in barriers:
        waits = [d for d in deps[o.id] if trace.ops[d].scope == "sample"]
        if not waits:
            continue
        # no sample starts the barrier op before every sample's inputs to it are there
        assert s.start[o.id].min() >= max(s.end[d].max() for d in waits) - 1e-9, o.name
    # a BN layer past the first: its forward runs for no sample until all have been sent to it
    o = [o for o in bn_fwd if o.layer == 1][0]
    assert s.start[o.id].min() >= max(s.end[d].max() for d in deps[o.id] if trace.ops[d].scope == "sample")


@pytest.mark.parametrize("rule", ["bp", "df-r"])
def test_running_statistics_stream_with_no_barrier(rule):
    trace, chip = _simulate("running", rule)
    s = chip.schedule
    assert not any(o.barrier for o in trace.ops)
    o = [o for o in trace.ops if o.kind == "fwd" and o.layer == 1][0]
    src = [o0 for o0 in trace.ops if o0.kind == "fwd" and o0.layer == 0][0]
    # sample 0 is past layer 1's BN before the last sample has left layer 0
    assert s.start[o.id, 0] < s.end[src.id, -1]


def test_the_barrier_holds_the_batch_in_sram_and_costs_time():
    """The same trace and mapping, with and without its barriers: holding the batch costs SRAM and time."""
    from dataclasses import replace

    from chipsim.chip.model import simulate_on
    from chipsim.config import load_config
    trace, held = _simulate("batch", "df-r")
    free = replace(trace, ops=[replace(o, barrier=False) for o in trace.ops])
    cfg = load_config(str(PRESET), (f"workload.model={REPO / 'models' / 'dense3.yaml'}", "workload.rule=df-r",
                                    "training.batch_size=6"))
    streamed = simulate_on(free, cfg.hw, held.mapping)
    assert held.latency_cycles > streamed.latency_cycles
    # layer 1 holds every sample's received input until its BN barrier opens; streaming, at most the
    # flow-control window (PIPELINE_SLACK + 1 = 2 of the 6 samples)
    recv = [b for b in trace.buffers if b.layer == 1 and b.category == "noc_buffers" and b.scope == "sample"]
    whole = sum(b.nbytes for b in recv if b.split == "replicated")
    assert whole > 0

    def most_held(chip):
        return max(c.max_by_category["noc_buffers"] for c in chip.ledger.cores.values() if c.layer == 1)
    assert most_held(held) >= whole
    assert most_held(streamed) <= whole * 2 / 6 + 1e-6


def test_the_compiled_running_estimate_is_the_python_loop_bit_for_bit():
    """``streaming._fold`` folds a step's thresholds (one a row) in a compiled loop: it must give the
    Python loop's float, of the type the estimate had (a checkpoint saves it)."""
    from chipsim.quant import streaming
    rng = np.random.default_rng(2)
    values = list(rng.standard_normal(321) * np.exp2(rng.uniform(-20, 20, 321)))
    mu = 0.9 ** (1.0 / len(values))
    for start in (0.7, np.float64(-3.5e-7)):
        want = start
        for v in values:
            want = mu * want + (1 - mu) * float(v)
        got = streaming._fold(start, values, 0.9)
        assert got == want and type(got) is type(want)
