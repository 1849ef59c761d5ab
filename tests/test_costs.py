"""Every operation the engine executes is costed, at the width the engine used it.

* A hand count of every kind of work in one DF-O step of a 3-block net, and its cycles and pJ on a toy
  chip with round numbers.
* An instrumented step: every call of a kernel (``chipsim.kernels``, the quantizers, the losses, the
  optimizer) logs work, and every logged item is in some trace op.
* ``precision.optimizer_bits`` and ``accumulator_bits`` change what the engine stores (the arrays) and
  the ledger by the same factor.
"""
import dataclasses
import functools
import os

import numpy as np
import pytest

from chipsim import kernels as K
from chipsim import quant
from chipsim.trace import work
from chipsim.chip import simulate
from chipsim.config import HwConfig, Learning, Precision, load_config
from chipsim.engine.rules import losses
from chipsim.engine.training import optim
from chipsim.engine.networks.network import Network
from chipsim.engine.rules.rows import LabelledRows
from chipsim.engine.rules.compose import local_step
from chipsim.engine.tracing.step import StepTracer
from chipsim.engine.training.trainer import Trainer, training_state
from chipsim.engine.training.update import apply_gradients
from chipsim.modelspec import Block, ModelSpec
from chipsim.runner import _Synthetic
from chipsim.schema import Where, build
from chipsim.trace import TraceRecorder
from rule_helpers import df_rule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P4 = Precision(weight_bits=4, activation_bits=4, gradient_bits=8, update_bits=16, goodness_bits=4,
               optimizer_bits=16, accumulator_bits=32)
MODEL = ModelSpec(name="t3", blocks=(Block(type="conv", channels=4, pool=2),
                                     Block(type="conv", channels=6, padding=0),
                                     Block(type="dense", units=5)))


def dfo_step(prec=P4):
    """One DF-O step, batch-statistics BN (every row gets an error), 2 samples x (1 + 3 negatives) = 8 rows."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    labels = np.array([0, 3])
    negatives = (labels[:, None] + 1 + np.arange(3)) % 4
    net = Network(MODEL, (1, 8, 8), 4, prec, seed=0, with_label=True, with_head=False, bn_backward="batch-stats")
    opt, acc = training_state(net, prec, "adam")
    rec = TraceRecorder(samples=2)
    tracer = StepTracer(rec, net, opt, acc, False)
    r = np.random.default_rng(2)
    with work.open_log(tracer.log):
        res = local_step(net, df_rule("df-o", Learning(), 3, 3), LabelledRows.with_negatives(net, x, labels, negatives),
                         0, r, tracer)
        apply_gradients(net, res.grads, 1e-3, opt, acc, prec, r, tracer)
        tracer.close()
    return rec.trace


# ------------------------------------------------------------------ vector ops per element, by hand
# Literals, never imported from the code under test, each derived from the kernel as written. The
# convention (the one the chip model's comments state): one vector op per elementwise add, subtract,
# multiply, divide, compare, round (rint, or floor(v + u) of a stochastic round) and clip (saturate to a
# range); a multiply-accumulate into a reduction is two (multiply, add); a draw of the chip's
# counter-based PRNG is two (the kernels emulate it in software with splitmix64, chipsim.quant.passes._uniform).
# Scalars computed once per tensor or channel (1/scale, the bias-correction factors) are not per element.
#
# quantize_weights' and ClippedScale's threshold: |w| then max-compare (2), or ACIQ's square and accumulate
# (2) -- chipsim/quant/codes.py quantize_weights, chipsim/quant/stores.py ClippedScale.threshold
SCALE_SEARCH_OPS = 2
# nearest rounding: multiply by 1/scale, rint, clip -- passes._quantize_flat_nearest, _divide_round_clip_flat
ROUND_OPS = 3
# stochastic rounding: multiply by 1/scale, PRNG draw (2), floor(v + u), clip -- passes._quantize_flat_stochastic
STOCHASTIC_OPS = 5
# master weights, nearest: divide by the power-of-two step (a shift), round, add to q, saturate (clip);
# stochastic: + the PRNG draw (2) -- stores.FixedPoint.apply
MASTER_OPS = 4
MASTER_STOCHASTIC_OPS = MASTER_OPS + 2
# BN backward, batch statistics: sum(gy) (1) and sum(gy * xhat) (2), then k * (m*gy - sg - xhat*sgx): m*gy,
# subtract sg, xhat*sgx, subtract, multiply by k (5) -- kernels/norm.py batchnorm_backward
BN_BACKWARD_OPS = 8
# The four below were findings of issue 23 (the chip model's constants differed from a count of the
# kernel's arithmetic: 6, 6, 12 and 6 per goodness value); the kernels now log these counts:
# BN forward, batch statistics. The kernel's statistics are two-pass (norm._bn_stats4): add x (1); subtract
# the mean, square and accumulate (3); normalise: subtract, multiply by inv_std (2); affine: multiply by
# gamma, add beta (2): 8.
BN_TRAIN_OPS = 8
# BN running statistics, per channel. norm.batchnorm_update_running: mean += momentum * (mean_b - mean):
# subtract, multiply, add (3); var += momentum * (var_b * factor - var): multiply by the factor, subtract,
# multiply, add (4): 7.
BN_RUNNING_OPS = 7
# Adam, per weight, every step (the first included: it reads the zeroed stored moments like any other):
# m = b1*m + (1-b1)*g (3); v = b2*s*s + (1-b2)*g*g with s the stored sqrt(v) (5); sqrt(v) to store (1);
# mhat = m / c1 (1); vhat = v / c2 (1); sqrt(vhat) (1); + eps (1); mhat / that (1); times -lr (1): 15.
ADAM_OPS = 15
# DF's loss (losses.df_loss, reduce max), per negative value: the argmax compare (1), dhard * (active +
# lam) / b's multiply (1); per sample: hinge = margin + hard - gp (2), active = hinge > 0 (1),
# max(hinge, 0) + lam * hard (3), the mean's add (1), dgp = -active / b (1), active + lam (1), / b (1):
# 2 per negative + 10 per sample, i.e. 16 per sample at N = 3 (the model charged 6 x 4 = 24).
# A sample's weight gradient streamed into its accumulator: rescale (1 multiply) and add (1), per
# accumulator value and sample (issue 23, defect 3).
ACCUMULATE_OPS = 2


def df_ops(samples: int, negatives: int) -> int:
    return samples * (2 * negatives + 10)


def hand_counts():
    """Operations of each kind in ``dfo_step``, counted from the shapes (8 rows):

    block 0: in 2x8x8 (label channel appended), conv 2->4 k3 p1 -> 4x8x8, pool 2 -> 4x4x4, K = 18, 72 weights
    block 1: in 4x4x4, conv 4->6 k3 p0 -> 6x2x2, K = 36, 216 weights
    block 2: in 24, dense 24->5, 120 weights; label embedding 4 x 8 x 8 = 256 values
    """
    R = 8
    inp = [R * 2 * 64, R * 64, R * 24]                  # elements each block normalises
    pre = [R * 4 * 64, R * 24, R * 5]                   # pre-activations (conv / dense outputs)
    out = [R * 4 * 16, R * 24, R * 5]                   # block outputs (after the pool)
    chans = [2, 4, 24]                                  # BN features
    macs = [R * 256 * 18, R * 24 * 36, R * 5 * 24]      # rows x outputs x K, any of the three products
    numel = [72, 216, 120]
    emb = 256
    q, qs, sr = ROUND_OPS, SCALE_SEARCH_OPS, STOCHASTIC_OPS
    c = {}

    def add(kind, n):
        c[kind] = c.get(kind, 0) + n
    for l in range(3):                                   # forward, goodness, loss
        add("bn_forward", BN_TRAIN_OPS * inp[l])
        add("bn_running_stats", BN_RUNNING_OPS * chans[l])
        add("quantize_scale", qs * inp[l] + qs * out[l])        # input and output clipping thresholds
        add("quantize", q * inp[l] + q * out[l])
        add("conv_forward" if l < 2 else "dense_forward", macs[l])
        add("dequantize", pre[l])                                # integer accumulator x scales
        add("relu", pre[l])
        add("goodness", out[l])
        add("loss", df_ops(2, 3))                                # 2 samples, 3 negatives: 32
    add("maxpool", out[0] * 4)                                   # 2x2 window: 4 compares per output
    # DF-O: loss 1 into block 0 through W1^T, loss 2 into block 1 through W2^T; plus the label embedding's
    # grad-input through W0. Each: pool/ReLU backward, error x weight scale, quantize (stochastic), product,
    # rescale, BN backward (batch statistics)
    for upper in (1, 2):
        add("goodness_backward", out[upper])                     # the loss's error at the block output
        add("relu_backward", pre[upper])
        add("dequantize", pre[upper])
        add("quantize_scale", pre[upper])                        # max |error|: one compare per element
        add("quantize_stochastic", sr * pre[upper])
        add("conv_grad_input" if upper == 1 else "dense_grad_input", macs[upper])
        add("dequantize", inp[upper])                            # rescale of the input error
        add("bn_backward", BN_BACKWARD_OPS * inp[upper])
        # the sender quantises the error it sends (8-bit codes, stochastic); the block below's weight
        # gradient reads those codes back (issue 23, defect 7)
        add("quantize_scale", inp[upper])
        add("quantize_stochastic", sr * inp[upper])
        add("dequantize", inp[upper])
    # weight gradients: blocks 0 and 1 sum their own loss's error with the one from above
    for l in range(3):
        add("goodness_backward", out[l])
        if l < 2:
            add("error_sum", 2 * out[l])
        if l == 0:
            add("maxpool_backward", out[0])
        add("relu_backward", pre[l])
        add("quantize_scale", pre[l])
        add("quantize_stochastic", sr * pre[l])
        add("conv_grad_weight" if l < 2 else "dense_grad_weight", macs[l])
        add("accumulate", ACCUMULATE_OPS * numel[l] * 2)         # each of the 2 samples, rescaled and added
    # block 0's error into its input for the label embedding (same chain as an error down)
    add("dequantize", pre[0] + inp[0])
    add("quantize_scale", pre[0])
    add("quantize_stochastic", sr * pre[0])
    add("conv_grad_input", macs[0])
    add("bn_backward", BN_BACKWARD_OPS * inp[0])
    add("embedding_grad_scatter", R * 64)
    add("accumulate", ACCUMULATE_OPS * emb * 2)
    # updates (Adam, a steady-state step even at step 1): moments loaded (dequantised, 1 per value each) and
    # stored at 16 bits (m signed, sqrt(v) unsigned), master weights, the compute copy requantised; the
    # accumulator is float32 (nothing to quantise)
    for n, requant in [(k, True) for k in numel] + [(emb, False)]:
        add("dequantize", 2 * n)
        add("quantize_scale", 2 * n)
        add("quantize_stochastic", 2 * sr * n)
        add("update_optimizer", ADAM_OPS * n)
        add("update_master", MASTER_STOCHASTIC_OPS * n)
        if requant:
            add("quantize_weights", (qs + q) * n)
    return c, macs


def test_every_kind_of_work_in_a_step_counted_by_hand():
    t = dfo_step()
    expected, macs = hand_counts()
    got = {}
    for o in t.ops:
        for w in o.work:
            got[w.kind] = got.get(w.kind, 0) + w.count
    assert got == expected
    # the MAC products run at the widths the engine proved exact: 4-bit activations x 4-bit weights
    # forward, 4-bit input x 8-bit error for the weight gradient, 8-bit error x 4-bit weights down
    widths = {w.kind: w.bits for o in t.ops for w in o.work if w.unit == work.MAC}
    assert widths == {"conv_forward": (4, 4), "dense_forward": (4, 4), "goodness": (4, 4),
                      "conv_grad_weight": (4, 8), "dense_grad_weight": (4, 8),
                      "conv_grad_input": (8, 4), "dense_grad_input": (8, 4)}
    assert all(w.bits == (32,) for o in t.ops for w in o.work if w.unit == work.VECTOR)   # float32 vector work
    # only normalising the input (every slice holds it whole), finishing an input error and accumulating
    # into the label embedding's gradient (every slice of block 0 holds a whole partial) are replicated, and
    # the label embedding's update: every slice of block 0 holds and updates the whole table (issue 23)
    emb = next(o for o in t.ops if o.name == "label_embedding_update")
    assert emb.work and {w.split for w in emb.work} == {"replicated"}
    repl = {w.kind for o in t.ops if o is not emb for w in o.work if w.split == "replicated"}
    assert repl == {"bn_forward", "bn_running_stats", "quantize_scale", "quantize", "dequantize", "bn_backward",
                    "accumulate"}


def toy_chip(rows=2, cols=2, sram_kib=64.0):
    """MAC 4/cycle at 4 bits, 2 at 8; vector 8/cycle; 1 pJ per 4-bit MAC, 2 per 8-bit, 0.5 per vector op."""
    return build(HwConfig, {
        "chip": {"name": "toy", "mesh": {"rows": rows, "cols": cols}, "clock_mhz": 100,
                 "core": {"sram_kib": sram_kib, "macs_per_cycle": {4: 4, 8: 2, 16: 1},
                          "vector_ops_per_cycle": {32: 8},
                          "energy_pj": {"mac": {4: 1.0, 8: 2.0, 16: 4.0}, "vector_op": {32: 0.5},
                                        "sram_read_byte": 0.0, "sram_write_byte": 0.0}},
                 "noc": {"link_bytes_per_cycle": 2, "hop_latency_cycles": 1, "energy_pj": {"byte_hop": 0.0}}},
        "workload": {"model": os.path.join(ROOT, "models", "dense3.yaml")},
    }, "", Where("test"))


def test_cycles_and_energy_of_each_kind_on_a_toy_chip():
    t = dfo_step()
    expected, _ = hand_counts()
    rep = simulate(t, toy_chip())
    assert all(len(rep.mapping.slices_of(l.index)) == 1 for l in t.layers)      # one core per layer
    pj = {"mac": {4: 1.0, 8: 2.0}, "vector": {32: 0.5}}
    rate = {"mac": {4: 4, 8: 2}, "vector": {32: 8}}
    unit = {k: work.KINDS[k][0] for k in expected}
    bits = {w.kind: max(w.bits) for o in t.ops for w in o.work}
    for k, n in expected.items():
        assert rep.energy.by_op[k] == pytest.approx(n * pj[unit[k]][bits[k]]), k
        assert rep.schedule.busy_by_kind[k] == pytest.approx(n / rate[unit[k]][bits[k]]), k
    assert rep.energy.total_pj == pytest.approx(sum(rep.energy.by_op.values()))
    assert sum(rep.busy().values()) == pytest.approx(sum(rep.schedule.busy_by_kind.values()))
    # block 0's forward op of sample 0 lasts the sum of its work's cycles for one of the two samples
    fwd0 = next(o for o in t.ops if o.kind == "fwd" and o.layer == 0)
    per_sample = sum(w.count / rate[w.unit][max(w.bits)] for w in fwd0.work) / 2
    assert rep.schedule.cend[fwd0.id, 0] - rep.schedule.start[fwd0.id, 0] == pytest.approx(per_sample)
    d = rep.to_dict()
    assert d["energy"]["by_op"] == rep.energy.by_op and d["timing"]["busy_cycles_by_op"]
    for name in ("bn", "relu", "pool", "quantiz", "loss", "update"):
        assert any(name in k for k in d["energy"]["by_op"]), name


def test_replicated_work_is_paid_on_every_slice():
    """A layer split over n cores: its input normalisation runs on each core, its weighted sum is shared."""
    t = dfo_step()
    one = simulate(t, toy_chip(rows=4, cols=4, sram_kib=64.0))
    split = simulate(t, toy_chip(rows=4, cols=4, sram_kib=4.5))       # block 0 (4.9 KiB) splits in two
    n = {l.index: len(split.mapping.slices_of(l.index)) for l in t.layers}
    assert max(n.values()) > 1
    l0 = max(n, key=n.get)
    bn = sum(w.count for o in t.ops if o.layer == l0 for w in o.work if w.kind == "bn_forward") * 0.5
    mac = sum(w.count for o in t.ops if o.layer == l0 for w in o.work if w.kind.endswith("_forward")
              and w.unit == work.MAC)
    extra_bn = split.energy.by_op["bn_forward"] - one.energy.by_op["bn_forward"]
    assert extra_bn == pytest.approx(bn * (n[l0] - 1))
    assert split.energy.by_op["dense_forward" if l0 == 2 else "conv_forward"] == \
        one.energy.by_op["dense_forward" if l0 == 2 else "conv_forward"]
    assert mac > 0


# ----------------------------------------------------------------------------- the model's constants
def _logged(fn, *args, **kw) -> dict:
    """Work logged by one call: kind -> count."""
    with work.open_log(work.WorkLog()) as log:
        fn(*args, **kw)
    out = {}
    for w in log.items:
        out[w.kind] = out.get(w.kind, 0) + w.count
    return out


def _bn_inputs():
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 5)).astype(np.float32)
    return x, np.ones(3, np.float32), np.zeros(3, np.float32)


def test_the_constants_that_agree_with_the_kernels_are_what_they_log():
    x, g, b = _bn_inputs()
    y, cache = K.batchnorm_train_forward(x, g, b)
    assert _logged(K.batchnorm_backward, x, cache) == {"bn_backward": BN_BACKWARD_OPS * x.size}
    w = np.random.default_rng(1).normal(size=(6, 3, 3, 3)).astype(np.float32)
    assert _logged(quant.quantize_weights, w, 4) == {"quantize_weights": (SCALE_SEARCH_OPS + ROUND_OPS) * w.size}
    rng = np.random.default_rng(2)
    assert _logged(quant.quantize_signed, x, 8, "stochastic", rng) == {"quantize_scale": x.size,
                                                                      "quantize_stochastic": STOCHASTIC_OPS * x.size}
    assert _logged(quant.quantize_signed, x, 8) == {"quantize_scale": x.size, "quantize": ROUND_OPS * x.size}
    fp = quant.FixedPoint(w, 16)
    assert _logged(fp.apply, 1e-3 * w, "stochastic", rng) == {"update_master": MASTER_STOCHASTIC_OPS * w.size}
    assert _logged(fp.apply, 1e-3 * w, "nearest") == {"update_master": MASTER_OPS * w.size}


def test_bn_train_constant_matches_the_kernels_arithmetic():
    """Issue 23: the kernel logs the 8 operations per element its two-pass statistics and affine compute."""
    x, g, b = _bn_inputs()
    assert _logged(K.batchnorm_train_forward, x, g, b) == {"bn_forward": BN_TRAIN_OPS * x.size}


def test_bn_running_constant_matches_the_kernels_arithmetic():
    """Issue 23: 7 operations per channel for the two running estimates."""
    x, g, b = _bn_inputs()
    _, cache = K.batchnorm_train_forward(x, g, b)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    assert _logged(K.batchnorm_update_running, rm, rv, cache, 0.1, 100) == {"bn_running_stats": BN_RUNNING_OPS * 3}


@pytest.mark.parametrize("bits", [32, 8])
def test_adam_constant_matches_the_kernels_arithmetic(bits):
    """Issue 23: 15 operations per weight, on the first step as on any later one; at 8 bits both stored
    moments are loaded (dequantised: 1 per value each) on each step, the first included (defect 1)."""
    opt = optim.make_optimizer("adam", 0.0, bits)
    opt.register("w", (5,))
    loads = {} if bits == 32 else {"dequantize": 2 * 5}
    for step in (1, 2):
        logged = _logged(opt.delta, "w", np.ones(5, np.float32), 1e-3)
        assert {k: v for k, v in logged.items() if k in ("update_optimizer", "dequantize")} == \
            {"update_optimizer": ADAM_OPS * 5, **loads}, step


def test_df_loss_constant_matches_the_kernels_arithmetic():
    """Issue 23: 2 per negative and 10 per sample, not 6 per goodness value."""
    gp, gn = np.ones(2, np.float32), np.zeros((2, 3), np.float32)
    assert _logged(losses.df_loss, gp, gn, 1.0, 0.01) == {"loss": df_ops(2, 3)}           # 32
    gp, gn = np.ones(4, np.float32), np.zeros((4, 9), np.float32)
    assert _logged(losses.df_loss, gp, gn, 1.0, 0.01) == {"loss": 4 * 28}                 # 4 x (18 + 10)


# ----------------------------------------------------------------------------- instrumentation
# Functions that log their work with ``work.record`` rather than through the ``work.costed`` wrapper, so
# they are not in ``work.REGISTRY``: the per-tensor quantizers, the stores' methods, the probability
# quantizer, and the contrastive loss (whose parts are costed inside it).
INLINE_LOGGING = ("quantize_signed", "quantize_unsigned", "ClippedScale.quantize", "FixedPoint.apply",
                  "QuantStore.load", "mhsa.quantize_probs", "contrastive.contrastive_loss")
# public functions of chipsim.kernels that execute no work of their own: addressing and configuration
# the unit's choice (kernel_path, set_kernels) and addressing only: no arithmetic of the step
NOT_KERNELS = {"accumulation_path", "numba_threads", "_fp32_chunk", "_chunked_fp64", "_nchw_to_grid", "patchify",
               "kernel_path", "set_kernels", "use_int8"}


def _kernel_functions():
    """(owner, name) of every function a training step may execute: every function ``work.costed`` wraps
    (``work.REGISTRY``), found in the module that defines it, plus :data:`INLINE_LOGGING`."""
    import sys

    from chipsim import augment  # noqa: F401  (registers its kernels)
    from chipsim.engine.layers import feedback  # noqa: F401
    from chipsim.engine.layers.vit import mhsa  # noqa: F401
    from chipsim.engine.networks import network  # noqa: F401
    from chipsim.engine.rules import contrastive  # noqa: F401
    out = []
    for mod_name, mod in sorted(sys.modules.items()):
        if not mod_name.startswith("chipsim"):
            continue
        for name, value in vars(mod).items():
            # a costed kernel: a functools.wraps wrapper, defined in this module, of a name in the registry
            if (callable(value) and getattr(value, "__wrapped__", None) is not None and name in work.REGISTRY
                    and getattr(value, "__module__", None) == mod_name):
                out.append((mod, name))
    assert sorted(n for _, n in out) == sorted(work.REGISTRY), "a costed kernel not found in its module"
    owners = {"ClippedScale": quant.ClippedScale, "FixedPoint": quant.FixedPoint, "QuantStore": quant.QuantStore,
              "mhsa": mhsa, "contrastive": contrastive}
    for dotted in INLINE_LOGGING:
        owner, name = dotted.split(".") if "." in dotted else ("", dotted)
        out.append((owners.get(owner, quant), name))
    return out


def test_every_public_kernel_is_costed():
    """A public function of chipsim.kernels is in the registry (so the spy below wraps it) or does no work."""
    fns = [n for n in K.__all__ if callable(getattr(K, n)) and not isinstance(getattr(K, n), type)]
    uncosted = [n for n in fns if n not in work.REGISTRY and n not in NOT_KERNELS]
    assert not uncosted, uncosted
    assert NOT_KERNELS <= set(fns)


@pytest.mark.parametrize("overrides", [
    ("workload.rule=df-r",), ("workload.rule=df-o", "mapping.feedback_storage=seeded"),
    ("workload.rule=df-r", "mapping.feedback_storage=seeded", "learning.bn_backward=batch-stats"),
    ("workload.rule=bp", "training.optimizer=sgd"), ("workload.rule=cwc", "workload.model=models/cwc_mnist.yaml",
                                                    "learning.inference=head"),
    ("workload.rule=ff", "learning.label_encoding=random", "learning.inference=head"),
    ("workload.rule=cff", "workload.model=models/vit_tiny.yaml", "learning.contrastive_margin=[0.4, 0.3, 0.2, 0.1]"),
    ("workload.rule=cff", "workload.model=models/vit_tiny.yaml", "mapping.batch_loss=keep"),
    ("workload.rule=ff", "workload.model=models/vit_tiny.yaml", "learning.negatives=1"),
    ("workload.rule=bp", "workload.model=models/vit_tiny.yaml"),
])
def test_every_kernel_call_of_a_step_is_in_the_trace(overrides, monkeypatch):
    """Wrap every kernel: each call made during a traced step must log work, and everything logged must
    end up in a trace op (an op the engine runs and the chip does not cost would fail here)."""
    calls = []

    def spy(fn, name):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            before = len(work._ACTIVE.items) if work._ACTIVE is not None else None
            res = fn(*a, **kw)
            if before is not None:
                calls.append((name, len(work._ACTIVE.items) - before if work._ACTIVE is not None else 0))
            return res
        return wrapper

    import sys
    for owner, name in _kernel_functions():
        original = getattr(owner, name)
        wrapped = spy(original, name)
        monkeypatch.setattr(owner, name, wrapped)
        # names imported directly: chipsim.quant re-exports quantize_signed from chipsim.quant.codes, and
        # chipsim.quant.stores (QuantStore.store) and the engine call it through their own bindings
        for mod in [m for k, m in sys.modules.items() if k.startswith("chipsim")]:
            if mod is not owner and getattr(mod, name, None) is original:
                monkeypatch.setattr(mod, name, wrapped)
    cfg = load_config(os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml"),
                      ("training.batch_size=4", "precision.optimizer_bits=8", "precision.accumulator_bits=16")
                      + overrides)
    data = _Synthetic("mnist5k", (1, 28, 28, 10), 4, 0)
    tr = Trainer(cfg.hw, cfg.model, data)
    tr.train_step(data.x_train, data.y_train, record=True)
    assert calls, "no kernel ran"
    silent = sorted({n for n, logged in calls if logged < 1})
    assert not silent, f"kernels that ran without logging work: {silent}"
    logged = sum(len(o.work) for o in tr.trace.ops)
    assert logged >= len(calls)                 # nested calls log once each; nothing is lost on the way


# ----------------------------------------------------------------------------- stored widths
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_optimizer_bits_change_the_stored_arrays_and_the_ledger_alike(optimizer):
    # running: the same mapping at 8 and 32 bits (batch's barriers make the 8-bit one split layers differently)
    base = ("training.batch_size=4", f"training.optimizer={optimizer}", "training.momentum=0.9",
            "mapping.statistics=running")
    path = os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml")
    data = _Synthetic("mnist5k", (1, 28, 28, 10), 4, 0)
    got = {}
    for bits in (8, 32):
        cfg = load_config(path, base + (f"precision.optimizer_bits={bits}",))
        tr = Trainer(cfg.hw, cfg.model, data)
        tr.train_step(data.x_train, data.y_train, record=True)
        stores = [s for d in tr.opt.stores.values() for s in d.values()]
        for s in stores:
            if bits == 8:
                assert s.codes.dtype in (np.int8, np.uint8)
                assert np.all(s.codes.astype(np.int64) <= (127 if s.signed else 255))
                assert s.codes.any()                      # the state really holds the step's moments
            else:
                assert s.codes.dtype == np.float32
        values = sum(s.codes.size for s in stores)
        scales = len(stores) if bits == 8 else 0
        assert tr.trace.bytes_by_category()["optimizer_state"] == values * bits // 8 + 4 * scales
        got[bits] = (tr.trace.bytes_by_category()["optimizer_state"], values, scales,
                     simulate(tr.trace, cfg.hw).ledger.totals()["optimizer_state"])
    (b8, n, s8, led8), (b32, _, _, led32) = got[8], got[32]
    assert b32 / b8 == pytest.approx(4 * n / (n + 4 * s8)) and b32 / b8 > 3.9
    assert led32 / led8 == pytest.approx(b32 / b8, rel=1e-3)


def test_accumulator_bits_are_the_gradient_accumulators_the_engine_keeps():
    path = os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml")
    data = _Synthetic("mnist5k", (1, 28, 28, 10), 4, 0)
    sizes = {}
    for bits in (8, 32):
        cfg = load_config(path, ("training.batch_size=4", f"precision.accumulator_bits={bits}"))
        tr = Trainer(cfg.hw, cfg.model, data)
        tr.train_step(data.x_train, data.y_train, record=True)
        assert all(a.codes.dtype == (np.int8 if bits == 8 else np.float32) for a in tr.acc.values())
        grad_acc = sum(b.nbytes for b in tr.trace.buffers if b.name in ("grad_acc", "embedding_grad_acc"))
        assert grad_acc == sum(a.nbytes for a in tr.acc.values())
        sizes[bits] = grad_acc
    assert 3.9 < sizes[32] / sizes[8] <= 4


def test_seeded_feedback_reads_no_weights_and_pays_its_regeneration():
    path = os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml")
    data = _Synthetic("mnist5k", (1, 28, 28, 10), 4, 0)
    traces = {}
    for storage in ("stored", "seeded"):
        cfg = load_config(path, ("training.batch_size=4", f"mapping.feedback_storage={storage}"))
        tr = Trainer(cfg.hw, cfg.model, data)
        res = tr.train_step(data.x_train, data.y_train, record=True)
        traces[storage] = (tr.trace, res.loss)
    stored, seeded = traces["stored"][0], traces["seeded"][0]
    assert traces["stored"][1] == traces["seeded"][1]                 # the same B either way
    assert stored.bytes_by_category()["feedback_weights"] > 0 == seeded.bytes_by_category()["feedback_weights"]
    weights = {b.id for b in seeded.buffers if b.category in ("weights", "feedback_weights")}
    for o in seeded.ops:
        if o.kind == "feedback":
            assert not set(o.reads) & weights
            regen = [w for w in o.work if w.kind == "feedback_regenerate"]
            assert len(regen) == 1 and regen[0].per_instance
    assert stored.work_count("feedback_regenerate") == 0
    cfg = load_config(path, ("training.batch_size=4", "mapping.feedback_storage=seeded"))
    rep1 = simulate(seeded, cfg.hw)
    rep2 = simulate(seeded, dataclasses.replace(cfg.hw, mapping=dataclasses.replace(cfg.hw.mapping, micro_batch=2)))
    # paid once per instance: 4 instances at micro-batch 1, 2 at micro-batch 2
    assert rep1.energy.by_op["feedback_regenerate"] == pytest.approx(2 * rep2.energy.by_op["feedback_regenerate"])


# ----------------------------------------------------------------------------- flow-controlled input
@pytest.mark.slow
def test_cifar_shaped_cnn10_at_batch_128_maps_on_the_176_core_chip():
    """The sensor feeds layer 0 only as fast as it admits samples, so its receive buffers hold a few
    images, not the whole batch (before: 369 KiB of images on core 0 and a refused mapping). A claim about a
    chip that streams (mapping.statistics: running): under batch, layer 0's BN barrier holds every image."""
    from chipsim.runner import trace_one_step
    cfg = load_config(os.path.join(ROOT, "hwconfigs", "176core_512k.yaml"),
                      ("workload.model=" + os.path.join(ROOT, "models", "cnn10.yaml"), "workload.dataset=cifar10",
                       "training.batch_size=128", "workload.rule=df-r", "mapping.statistics=running"))
    t = trace_one_step(cfg)
    rep = simulate(t, cfg.hw)
    image = 3 * 32 * 32                                          # bytes of one 8-bit sensor image
    core0 = rep.ledger.cores[rep.mapping.slices_of(0)[0].core]
    assert core0.max_by_category["noc_buffers"] <= 3 * image < 128 * image
    sensor = next(o for o in t.ops if o.kind == "send" and not o.reads)
    first = next(o for o in t.ops if o.layer == 0 and o.kind == "fwd")
    # instance i of the sensor input waits for layer 0 to start instance i - 1
    st = rep.schedule.start
    assert all(st[sensor.id, i] >= st[first.id, i - 1] for i in range(1, rep.schedule.n_inst))


def test_the_light_ff_model_maps_with_cwc_on_cifar():
    from chipsim.runner import trace_one_step
    cfg = load_config(os.path.join(ROOT, "hwconfigs", "176core_512k.yaml"),
                      ("workload.model=" + os.path.join(ROOT, "models", "ff_tiny.yaml"), "workload.dataset=cifar10",
                       "workload.rule=cwc", "training.batch_size=16"))
    rep = simulate(trace_one_step(cfg), cfg.hw)
    assert rep.mapping.cores_used >= len(rep.trace.layers)
