"""chipsim.framework on vision transformers: the torch blocks against the engine's at 32 bits, each rule's
whole step against the engine's gradients, the variants of each step (same weights, the memory-conscious one
peaking lower), CFF's loss against the engine's hand-written gradient, and vit_tiny through measure_point."""
from pathlib import Path

import numpy as np
import pytest
import torch

from chipsim.config import Precision, load_config
from chipsim.engine.networks.vit import TransformerNetwork
from chipsim.errors import ConfigError
from chipsim.framework import measure_peak
from chipsim.framework.losses import LossParams
from chipsim.framework.steps import train_step
from chipsim.framework.vit import TorchViT
from chipsim.modelspec import Block, ModelSpec

REPO = Path(__file__).resolve().parents[1]
FLOAT = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, goodness_bits=32,
                  optimizer_bits=32)
CLASSES, PATCH = 4, 4
TWO = ModelSpec(name="vit2", blocks=(Block(type="vit", patch=PATCH, dim=16, heads=2, mlp_dim=32),
                                     Block(type="vit", dim=16, heads=2, mlp_dim=32)))
# engine tensor name -> (torch sub-module path, how the value is laid out there)
_NAMES = {"ln1.gamma": "ln1.weight", "ln1.beta": "ln1.bias", "qkv.w": "qkv.weight", "qkv.b": "qkv.bias",
          "proj.w": "proj.weight", "proj.b": "proj.bias", "ln2.gamma": "ln2.weight", "ln2.beta": "ln2.bias",
          "fc1.w": "fc1.weight", "fc1.b": "fc1.bias", "fc2.w": "fc2.weight", "fc2.b": "fc2.bias",
          "embed.w": "embed.proj.weight", "embed.b": "embed.proj.bias", "pos": "embed.pos"}


def _engine(with_label, with_head):
    net = TransformerNetwork(TWO, (1, 8, 8), CLASSES, FLOAT, seed=3, with_label=with_label, with_head=with_head,
                             normalise_inputs=with_label)
    rng = np.random.default_rng(0)
    for blk in net.blocks:                       # off the init (biases 0, gains 1): every tensor matters
        for m in blk.masters().values():
            m.apply((0.2 * rng.standard_normal(m.value.shape)).astype(np.float32))
        blk.requantize()
    return net


def _copy_engine_weights(torch_net, engine):
    """The engine's tensors into the torch modules (a different seed built them: nothing shared otherwise)."""
    params = dict(torch_net.named_parameters())
    with torch.no_grad():
        for i, blk in enumerate(engine.blocks):
            for name, m in blk.masters().items():
                p = params[f"blocks.{i}.{_NAMES[name]}"]
                p.copy_(torch.from_numpy(np.ascontiguousarray(m.value)).reshape(p.shape))
        if engine.label_patches is not None:
            torch_net.label_patches.copy_(torch.from_numpy(engine.label_patches)[:, None, :])
        if engine.head is not None:
            torch_net.head.copy_(torch.from_numpy(engine.head.master.value))


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("with_label", [False, True])
def test_torch_vit_blocks_equal_the_engine_s_at_32_bits(with_label, attention):
    """Every block's output and token mean, block by block, with FF's label patch and input normalisation
    (with_label) or BP's head (without): the torch modules on the engine's weights give the engine's values."""
    engine = _engine(with_label, with_head=not with_label)
    net = TorchViT(TWO.blocks, (1, 8, 8), CLASSES, with_label=with_label, feedback=False,
                   with_head=not with_label, seed=7, attention=attention)
    before = [p.detach().clone() for p in net.parameters()]
    _copy_engine_weights(net, engine)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))      # every tensor was copied
    rng = np.random.default_rng(1)
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    a_eng = engine.input_with_label(x, labels) if with_label else x
    a_t = net.rows(torch.from_numpy(x), torch.from_numpy(labels)) if with_label else torch.from_numpy(x)
    with torch.no_grad():
        for eblk, tblk in zip(engine.blocks, net.blocks):
            a_eng, cache = eblk.forward(a_eng, train=True)
            a_t = tblk(a_t)
            np.testing.assert_allclose(a_t.numpy(), a_eng, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(net.readout(a_t).numpy(), cache["pooled"], rtol=1e-5, atol=1e-5)
        if not with_label:
            logits = engine.head.forward(a_eng, train=True)[0]
            np.testing.assert_allclose((net.head_input(a_t) @ net.head.t()).numpy(), logits, rtol=1e-5, atol=1e-5)
    assert a_t.shape == (6, 4 + with_label, 16)          # 2x2 patches of 4x4 (+ the label patch)


def test_the_contrastive_loss_has_the_engine_s_hand_written_gradient():
    """The framework's CFF loss (Eq. 15 with a margin), differentiated by autograd, against
    engine/rules/contrastive.contrastive_loss's hand-written gradient."""
    from chipsim.engine.rules.contrastive import contrastive_loss
    from chipsim.framework.losses import contrastive_loss as torch_loss
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 0])
    for margin in (0.0, 0.3):
        f = torch.tensor(feats, requires_grad=True)
        hp = LossParams(temperature=0.2, contrastive_margin=margin)
        loss = torch_loss(f, torch.from_numpy(labels), 1, hp, 3)
        loss.backward()
        ref_loss, ref_grad = contrastive_loss(feats, labels, 0.2, margin)
        assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-5)
        np.testing.assert_allclose(f.grad.numpy(), ref_grad, rtol=1e-4, atol=1e-6)


def _batch(rule, views=1):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((6 * views, 1, 8, 8), generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 3])
    neg = (y[:, None] + 1 + torch.arange(2)[None, :]) % CLASSES
    return x, y, neg


def _one_step(rule, variant, blocks=TWO.blocks):
    """Weights after one float64 SGD step of ``rule`` from the same start and batch."""
    net = TorchViT(blocks, (1, 8, 8), CLASSES, with_label=rule != "cff" and rule != "bp", feedback=False,
                   with_head=rule == "bp", seed=0, dtype=torch.float64)
    start = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y, neg = _batch(rule, views=2 if rule == "cff" else 1)
    train_step(net, opt, rule, variant, x, y, neg, LossParams(ff_theta=0.5, temperature=0.2, contrastive_margin=0.1))
    return [p.detach().clone() for p in net.parameters()], start


@pytest.mark.parametrize("rule", ["cff", "ff"])
def test_naive_and_conscious_vit_steps_give_the_same_weights(rule):
    naive, start = _one_step(rule, "naive")
    conscious, _ = _one_step(rule, "conscious")
    # block 0: the patch projection's weight and bias, the positions, 12 encoder tensors; block 1: 12
    assert len(naive) == len(start) == 15 + 12
    for a, b, s in zip(naive, conscious, start):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert not torch.equal(a, s)          # the step moved every tensor (the test compares something)


def test_checkpointed_bp_on_vit_gives_plain_bp_s_weights():
    plain, start = _one_step("bp", "plain")
    ckpt, _ = _one_step("bp", "checkpointed")
    for a, b, s in zip(plain, ckpt, start):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert not torch.equal(a, s)


@pytest.mark.parametrize("rule", ["cff", "ff"])
def test_the_conscious_vit_step_peaks_lower_than_the_naive_one(rule):
    kw = dict(batch=8, negatives=1, dataset_shape=(1, 8, 8), num_classes=CLASSES)
    naive = measure_peak(TWO, rule, variant="naive", **kw)
    conscious = measure_peak(TWO, rule, variant="conscious", **kw)
    assert conscious.bytes < naive.bytes
    assert conscious.resident_bytes == naive.resident_bytes
    assert conscious.rows == 16                  # cff: 8 samples x 2 views; ff: 8 x (1 + 1 negative)


def test_checkpointed_bp_on_a_four_block_vit_peaks_lower_than_plain_bp():
    blocks = (Block(type="vit", patch=PATCH, dim=16, heads=2, mlp_dim=32),) + \
        (Block(type="vit", dim=16, heads=2, mlp_dim=32),) * 3
    kw = dict(batch=8, negatives=1, dataset_shape=(1, 8, 8), num_classes=CLASSES)
    plain = measure_peak(blocks, "bp", variant="plain", **kw)
    ckpt = measure_peak(blocks, "bp", variant="checkpointed", **kw)
    assert ckpt.bytes < plain.bytes
    assert ckpt.resident_bytes == plain.resident_bytes


@pytest.mark.parametrize("rule", ["df-o", "df-r", "cwc"])
def test_rules_a_vit_does_not_run_are_one_line_config_errors(rule):
    with pytest.raises(ConfigError, match=f"^rule: '{rule}' does not run on vit blocks; allowed: "
                                          "bp, ff, symba, df, cff$"):
        measure_peak(TWO, rule, batch=2, negatives=1, dataset_shape=(1, 8, 8), num_classes=CLASSES)


def test_cff_on_conv_blocks_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="^rule: 'cff' does not run on conv blocks"):
        measure_peak((Block(type="conv", channels=4),), "cff", batch=2, negatives=1, dataset_shape=(1, 8, 8),
                     num_classes=CLASSES)


@pytest.mark.parametrize("rule", ["cff", "ff", "bp"])
def test_measure_point_measures_vit_tiny(rule):
    from chipsim.framework.point import measure_point
    cfg = load_config(str(REPO / "hwconfigs" / "44core_4bit.yaml"),
                      (f"workload.model={REPO / 'models' / 'vit_tiny.yaml'}", f"workload.rule={rule}",
                       "training.batch_size=4", "learning.negatives=1"))
    fw = measure_point(cfg.hw, cfg.model)
    assert fw["fits"] is True and fw["total_peak_bytes"] > fw["resident_bytes"] > 0
    assert fw["rule"] == rule and fw["rows"] == (4 if rule == "bp" else 8)
    # vit_tiny's parameters alone, float32 (4 bytes): 4 blocks of 49,984 values (2 LNs 2 x 128, qkv 12,480,
    # proj 4,160, fc1 16,640, fc2 16,448) + the patch embedding (49 x 64 + 64) + 16 positions x 64
    per_block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert per_block == 49984
    assert fw["resident_bytes"] > 4 * (4 * per_block + 49 * 64 + 64 + 16 * 64)


def _engine_step(engine, run):
    from chipsim.engine.tracing.step import StepTracer
    from chipsim.engine.training.trainer import training_state
    from chipsim.trace import TraceRecorder
    opt, acc = training_state(engine, engine.prec)
    return run(StepTracer(TraceRecorder(samples=6, enabled=False), engine, opt, acc,
                          rule_is_bp=engine.head is not None))


@pytest.mark.parametrize("rule, variant", [("cff", "conscious"), ("cff", "naive"), ("ff", "conscious"),
                                           ("ff", "naive"), ("bp", "plain"), ("bp", "checkpointed")])
def test_the_framework_step_has_the_engine_s_gradients_at_32_bits(rule, variant):
    """The whole step -- rows, per-block losses (CFF's contrastive loss on both views; FF's goodness on the
    label-patched rows) or BP's head -- on the engine's weights: every tensor's gradient equals the one the
    engine's rule composition computes in float32 (``rules.compose.local_step`` / ``bp_step``)."""
    from chipsim.config import Learning
    from chipsim.engine.rules.compose import LocalRule, bp_step, local_step
    from chipsim.engine.rules.objectives import ContrastiveObjective, GoodnessObjective
    from chipsim.engine.rules.routing import Routing
    from chipsim.engine.rules.rows import LabelledRows, TwoViews
    engine = _engine(with_label=rule == "ff", with_head=rule == "bp")
    net = TorchViT(TWO.blocks, (1, 8, 8), CLASSES, with_label=rule == "ff", feedback=False, with_head=rule == "bp",
                   seed=7)
    _copy_engine_weights(net, engine)
    rng = np.random.default_rng(1)
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 3])
    negatives = np.stack([(y + 1) % CLASSES, (y + 2) % CLASSES], 1)
    hp = LossParams(ff_theta=0.5, temperature=0.2, contrastive_margin=0.3)
    if rule == "cff":
        lr = LocalRule(TwoViews(2), ContrastiveObjective(0.2, (0.3, 0.3)), Routing(depth=2))
        rows = lr.rows.make(engine, x, y, np.random.default_rng(5))
        res = _engine_step(engine, lambda tr: local_step(engine, lr, rows, 0, np.random.default_rng(6), tr))
        batch = torch.from_numpy(rows.a0)                  # the loader's two views of each sample, as rows
    elif rule == "ff":
        lr = LocalRule(LabelledRows(2), GoodnessObjective("ff", Learning(ff_theta=0.5)), Routing(depth=2))
        rows = LabelledRows.with_negatives(engine, x, y, negatives)
        res = _engine_step(engine, lambda tr: local_step(engine, lr, rows, 0, np.random.default_rng(6), tr))
        batch = torch.from_numpy(x)
    else:
        res = _engine_step(engine, lambda tr: bp_step(engine, x, y, 0, np.random.default_rng(6), tr))
        batch = torch.from_numpy(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)        # the update leaves the gradients to compare
    train_step(net, opt, rule, variant, batch, torch.from_numpy(y), torch.from_numpy(negatives), hp)
    params = dict(net.named_parameters())
    for i, grads in enumerate(res.grads["blocks"][:2]):
        assert len(grads) == 15 - 3 * i
        for name, g in grads.items():
            t = params[f"blocks.{i}.{_NAMES[name]}"].grad.reshape(g.shape).numpy()
            assert np.abs(t).max() > 0, (i, name)
            np.testing.assert_allclose(t, g, rtol=2e-4, atol=2e-5 * max(1.0, float(np.abs(g).max())),
                                       err_msg=f"block {i} {name}")
    if rule == "bp":
        np.testing.assert_allclose(net.head.grad.numpy(), res.grads["blocks"][2], rtol=2e-4, atol=2e-5)
