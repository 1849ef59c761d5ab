"""precision.vector_bits: the vector unit computes in bfloat16 at 16 bits, and is costed at 16 bits.

What is checked, each against something independent of the code under test:

* the bfloat16 rounding against torch's own ``float32 -> bfloat16`` conversion (round to nearest even,
  subnormals, overflow to infinity, NaN);
* batch norm and Adam at 16 bits against float64 references computed from the same bfloat16 inputs and
  rounded by torch: every output is a bfloat16 value, within one bfloat16 step of the reference, and
  different from the 32-bit kernel's result;
* a real training step of the engine at 16 bits: the batch-norm outputs and optimizer deltas it really
  computed (spied where the engine calls them), and the running statistics it keeps, are bfloat16 values;
  every vector work item it logs carries 16 bits; its weights differ from the 32-bit run's;
* the chip model prices that work with the preset's 16-bit vector entry (0.38 pJ, a literal read off
  hwconfigs/44core_4bit.yaml), against 1.15 pJ at 32 bits;
* the config refuses 8 bits, and a chip with no vector entry at 16 bits or wider, in one line naming the key.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from chipsim import kernels as K
from chipsim.config import load_config
from chipsim.engine.training import optim
from chipsim.errors import ChipsimError
from chipsim.trace import work
from chipsim.trace.vector import to_bfloat16, vector_width

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml")


def torch_bf16(x) -> np.ndarray:
    """The independent reference: torch's float32 -> bfloat16 -> float32 round trip."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def is_bf16(x) -> bool:
    x = np.asarray(x, dtype=np.float32)
    return np.array_equal(torch_bf16(x), x, equal_nan=True)


def bf16_steps_apart(a, b) -> float:
    """Largest distance between a and b in units of bfloat16's step at b (2^-7 of b's binade)."""
    b = np.asarray(b, dtype=np.float64)
    step = np.exp2(np.floor(np.log2(np.maximum(np.abs(b), 1e-30))) - 7)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b) / step))


def test_bfloat16_rounding_matches_torch():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(50_000) * 10.0 ** rng.integers(-40, 38, 50_000)).astype(np.float32)
    edge = np.array([0.0, -0.0, 1e-40, -3e-39, np.inf, -np.inf, np.nan, 3.4e38, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8,
                     65504.0, 1e-8], dtype=np.float32)        # ties to even both ways, subnormals, overflow
    for v in (x, edge, x.reshape(100, 500)[:, ::7]):            # a strided view keeps its shape
        r = to_bfloat16(v)
        assert r.shape == v.shape and r.dtype == np.float32
        assert np.array_equal(r, torch_bf16(v), equal_nan=True)
    assert to_bfloat16(np.float32(1.0 + 2 ** -9)).shape == ()   # a tie rounds to even: 1.0
    assert float(to_bfloat16(np.float32(1.0 + 2 ** -9))) == 1.0


def _bn_case():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 6, 5, 5)) * 3 + 1).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(6)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(6)).astype(np.float32)
    return x, gamma, beta


def test_batch_norm_at_16_bits_is_bfloat16_and_matches_a_float64_reference():
    x, gamma, beta = _bn_case()
    y32, _ = K.batchnorm_train_forward(x, gamma, beta, 1e-5)
    with vector_width(16):
        y, cache = K.batchnorm_train_forward(x, gamma, beta, 1e-5)
    for a in (y, cache.xhat, cache.inv_std, cache.mean, cache.var):
        assert a.dtype == np.float32 and is_bf16(a)
    # reference: the bfloat16 inputs, float64 arithmetic, one rounding of the result by torch
    xb, gb, bb = (torch_bf16(v).astype(np.float64) for v in (x, gamma, beta))
    mean = xb.mean(axis=(0, 2, 3), keepdims=True)
    var = xb.var(axis=(0, 2, 3), keepdims=True)
    ref = torch_bf16(((xb - mean) / np.sqrt(var + 1e-5) * gb[None, :, None, None] + bb[None, :, None, None]))
    assert bf16_steps_apart(y, ref) <= 1.0
    assert np.mean(y == ref) > 0.97          # float32 inside the kernel: rarely a different neighbour
    assert not np.array_equal(y, y32) and not is_bf16(y32)
    # the backward too: bfloat16 errors out
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    with vector_width(16):
        gx = K.batchnorm_backward(gy, cache)[0]
    assert is_bf16(gx) and not np.array_equal(gx, K.batchnorm_backward(gy, cache)[0])


def test_adam_delta_at_16_bits_matches_a_float64_reference():
    g = (np.random.default_rng(3).standard_normal((20, 30)) * 1e-3).astype(np.float32)
    lr = 1e-3

    def delta(bits):
        opt = optim.make_optimizer("adam", 0.0, bits=32)
        opt.register("w", g.shape)
        with vector_width(bits):
            return opt.delta("w", g, lr)

    d16, d32 = delta(16), delta(32)
    assert is_bf16(d16) and not is_bf16(d32) and not np.array_equal(d16, d32)
    # Adam's first step from the bfloat16 gradient, in float64 (torch.optim.Adam's formula, betas 0.9/0.999)
    gb = torch_bf16(g).astype(np.float64)
    m, v = 0.1 * gb, 0.001 * gb * gb
    ref = torch_bf16(-lr * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8))
    assert bf16_steps_apart(d16, ref) <= 1.0


def _trainer(bits, rule="df-r", model="dense3.yaml"):
    """A trainer at vector width ``bits`` on the batch's statistics (the kernels the spies below watch)."""
    from chipsim.runner import _Synthetic
    from chipsim.engine.training.trainer import Trainer
    cfg = load_config(PRESET, (f"precision.vector_bits={bits}", f"workload.rule={rule}",
                               f"workload.model={os.path.join(ROOT, 'models', model)}", "training.batch_size=8",
                               "mapping.statistics=batch"))
    data = _Synthetic("mnist5k", (1, 28, 28, 10), 8, 0)
    return cfg, Trainer(cfg.hw, cfg.model, data), data


@pytest.mark.parametrize("rule", ["df-r", "bp"])
def test_the_engine_really_computes_at_16_bits(rule, monkeypatch):
    seen = {"bn": [], "delta": []}
    bn, adam = K.batchnorm_train_forward, optim._adam

    def bn_spy(*a, **kw):
        out = bn(*a, **kw)
        seen["bn"].append(out)
        return out

    def adam_spy(*a, **kw):
        out = adam(*a, **kw)
        seen["delta"].append(out)
        return out

    monkeypatch.setattr(K, "batchnorm_train_forward", bn_spy)
    monkeypatch.setattr(optim, "_adam", adam_spy)
    states = {}
    for bits in (32, 16):
        seen["bn"].clear(), seen["delta"].clear()
        _, tr, data = _trainer(bits, rule)
        tr.train_step(data.x_train, data.y_train, record=True)
        tr.train_step(data.x_train, data.y_train)
        assert seen["bn"] and seen["delta"]
        ys = [y for y, _ in seen["bn"]]
        arrays = ys + [c.xhat for _, c in seen["bn"]] + seen["delta"]
        arrays += [b.running_mean for b in tr.net.blocks] + [b.running_var for b in tr.net.blocks]
        if bits == 16:
            assert all(is_bf16(a) for a in arrays)
        else:
            assert not all(is_bf16(a) for a in ys + seen["delta"])
        vec = [w for o in tr.trace.ops for w in o.work if w.unit == work.VECTOR]
        assert vec and {w.bits for w in vec if w.kind != "accumulate"} == {(bits,)}
        # the step's gradient is summed in float32 whatever the vector width (chipsim.engine.tracing.step)
        assert {w.bits for w in vec if w.kind == "accumulate"} == {(32,)}
        states[bits] = [m.value.copy() for b in tr.net.layers() for _, _, _, m, _ in b.param_tensors()]
    assert any(not np.array_equal(a, b) for a, b in zip(states[16], states[32]))
    # the default is 32, and outside the engine's step the vector unit is back at 32
    assert work.float_bits("bn_forward") == 32


def test_the_vector_energy_uses_the_16_bit_entry():
    from chipsim.chip import simulate
    energy, counts = {}, {}
    for bits in (32, 16):
        cfg, tr, data = _trainer(bits, "df-r")
        tr.train_step(data.x_train, data.y_train, record=True)
        rep = simulate(tr.trace, cfg.hw)
        counts[bits], per_instance = {}, set()
        for o in tr.trace.ops:
            n_sl = len(rep.mapping.slices_of(o.layer))
            for w in o.work:
                if w.unit == work.VECTOR:
                    n = w.count * (n_sl if w.split == "replicated" else 1)
                    counts[bits][w.kind] = counts[bits].get(w.kind, 0) + n
                    if w.per_instance:
                        per_instance.add(w.kind)
        energy[bits] = (rep.energy.vector_pj, rep.energy.by_op)
    # hwconfigs/44core_4bit.yaml: energy_pj.vector_op {8: 0.06, 16: 0.38, 32: 1.15}; each kind's count (replicated
    # work paid once per slice) times its entry -- but DF-R's feedback regeneration, paid once per micro-batch
    # instance, is left out (DF's kept rows depend on the values, so the two runs' counts may differ a little);
    # accumulating the step's gradient is float32 work at either width (1.15)
    for bits, pj in ((32, 1.15), (16, 0.38)):
        by_op = energy[bits][1]
        for kind, n in counts[bits].items():
            if kind not in per_instance:
                want = (1.15 if kind == "accumulate" else pj) * n
                assert by_op[kind] == pytest.approx(want, rel=1e-12), (bits, kind)
    acc = {b: energy[b][1]["accumulate"] for b in (16, 32)}
    assert energy[16][0] - acc[16] < 0.35 * (energy[32][0] - acc[32])     # 0.38 / 1.15 = 0.330


def test_vector_bits_config_errors(tmp_path):
    with pytest.raises(ChipsimError, match=r"precision\.vector_bits.*16.*32"):
        load_config(PRESET, ("precision.vector_bits=8",))
    with pytest.raises(ChipsimError, match=r"chip\.core\.(vector_ops_per_cycle|energy_pj\.vector_op).*16 bits"):
        load_config(PRESET, ("precision.vector_bits=16", "chip.core.vector_ops_per_cycle={8: 64}"))


def test_a_transformer_step_at_16_bits(monkeypatch):
    """The transformer's own vector kernels (layer norm, softmax, GELU) go through the same cast point."""
    probs = []
    softmax = K.softmax

    def spy(s):
        p = softmax(s)
        probs.append(p)
        return p

    monkeypatch.setattr(K, "softmax", spy)
    _, tr, data = _trainer(16, "bp", "vit_tiny.yaml")
    tr.train_step(data.x_train, data.y_train, record=True)
    vec = [w for o in tr.trace.ops for w in o.work if w.unit == work.VECTOR]
    assert {"layernorm", "softmax", "gelu"} <= {w.kind for w in vec}
    assert {w.bits for w in vec if w.kind != "accumulate"} == {(16,)}
    assert probs and all(is_bf16(p) for p in probs)
