"""chipsim.framework: the rules in PyTorch and the measured peak of one training step.

The hand counts are derived from what PyTorch keeps, tensor by tensor, for a net small enough to list
every tensor: one dense block of 3 units without BN on 4 inputs (1 x 2 x 2), a head of 2 classes,
batch 2, float32 (4 bytes a value), int64 labels (8 bytes).
"""
import numpy as np
import pytest
import torch

from chipsim.errors import ConfigError
from chipsim.framework import measure_peak
from chipsim.framework.losses import LossParams
from chipsim.framework.nets import TorchNet
from chipsim.framework.steps import train_step
from chipsim.modelspec import Block, ModelSpec

TINY = (Block(type="dense", units=3, norm="none"),)


def test_bp_sgd_peak_is_the_hand_count():
    p = measure_peak(TINY, "bp", batch=2, negatives=1, optimizer="sgd", dataset_shape=(1, 2, 2), num_classes=2,
                     momentum=0.0)
    # live when the step starts (as after a step: the gradients are there):
    #   W0 3x4 = 48, head 2x3 = 24                      parameters                     72
    #   x 2x4 floats = 32, labels 2 int64 = 16          the batch                      48
    #   last step's W0.grad 48 + head.grad 24           gradients (freed by zero_grad) 72
    #   SGD without momentum keeps no state                                              0
    assert p.resident_bytes == 72 + 48 + 72
    # the peak: block 0's weight gradient being written, in the last op of the backward. Live then:
    #   parameters 72, batch 48, head.grad 24, W0.grad 48 (the new one),
    #   dL/dy 2x3 = 24 (ReLU's backward output, read by this mm),
    #   r = ReLU(y) 2x3 = 24 (saved by ReLU and the head's mm; the step's variable still holds it),
    #   the loss 4 and nll_loss's total_weight 4 (saved by NllLossBackward0; scalars)
    # (y = z W0^T was freed in the forward: ReLU saves its output, not its input; the logits were freed
    #  after log_softmax, which saves its output, freed in its own backward)
    assert p.bytes == 72 + 48 + 24 + 48 + 24 + 24 + 4 + 4
    assert (p.rule, p.variant, p.optimizer, p.rows, p.negatives) == ("bp", "plain", "sgd", 2, 0)
    assert p.label() == f"measured, torch {'.'.join(torch.__version__.split('.')[:2])}, cpu"


def test_bp_adam_peak_is_the_hand_count():
    p = measure_peak(TINY, "bp", batch=2, negatives=1, optimizer="adam", dataset_shape=(1, 2, 2), num_classes=2)
    # resident: the 192 bytes of the SGD case, plus Adam's state per parameter: exp_avg and exp_avg_sq
    # (2 x (48 + 24) = 144) and a float32 step counter (4 each, 2 parameters: 8)
    assert p.resident_bytes == 192 + 144 + 8
    # the peak is in Adam's update of W0, the second parameter it visits (the head's update ran first):
    #   resident 344 (the new gradients have replaced the old: same bytes),
    #   the head's denominator 2x3 = 24, still held by the update loop's variable,
    #   W0's sqrt(exp_avg_sq) 48 and its quotient by sqrt(bias correction) 48,
    #   that Python scalar as a 0-dim float64 tensor 8 and its float32 copy 4
    assert p.bytes == 344 + 24 + 48 + 48 + 8 + 4


def test_the_peak_repeats_exactly_run_to_run():
    model = ModelSpec(name="t", blocks=(Block(type="conv", channels=4, pool=2), Block(type="dense", units=5)))
    a = measure_peak(model, "df-r", batch=3, negatives=2, dataset_shape=(1, 8, 8), num_classes=4)
    b = measure_peak(model, "df-r", batch=3, negatives=2, dataset_shape=(1, 8, 8), num_classes=4)
    assert a.bytes == b.bytes and a.resident_bytes == b.resident_bytes
    assert a.bytes > a.resident_bytes > 0


SMALL = (Block(type="conv", channels=4, pool=2), Block(type="conv", channels=6),
         Block(type="conv", channels=6), Block(type="dense", units=5))


def _one_step(rule, variant, seed=0):
    """Weights after one float64 step of ``rule`` from the same start and batch."""
    torch.manual_seed(0)
    net = TorchNet(SMALL, (1, 8, 8), 4, with_label=rule != "cwc", feedback=rule == "df-r", with_head=False,
                   seed=seed, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)       # linear in the gradient: Adam would blow up
    g = torch.Generator().manual_seed(1)                  # round-off on gradients that are ~0
    x = torch.rand((5, 1, 8, 8), generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    neg = (y[:, None] + 1 + torch.arange(3)[None, :]) % 4
    train_step(net, opt, rule, variant, x, y, neg, LossParams())
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("rule", ["df", "df-o", "df-r", "ff", "symba"])
def test_naive_and_conscious_local_rules_give_the_same_weights(rule):
    naive, conscious = _one_step(rule, "naive"), _one_step(rule, "conscious")
    start = [p.detach() for p in TorchNet(SMALL, (1, 8, 8), 4, with_label=True, feedback=rule == "df-r",
                                          with_head=False, seed=0, dtype=torch.float64).parameters()]
    for a, b, s in zip(naive, conscious, start):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert not torch.equal(a, s)          # the step moved every weight (the test compares something)


def test_span_two_reaches_the_block_below_and_no_further():
    """DF-O's step differs from greedy DF's in the blocks below the top (the error of loss l + 1 reaches
    block l), and DF-R's from DF-O's (that error crosses through B, not W)."""
    greedy, dfo, dfr = _one_step("df", "conscious"), _one_step("df-o", "conscious"), _one_step("df-r", "conscious")
    assert not torch.allclose(greedy[0], dfo[0])
    assert not torch.allclose(dfo[0], dfr[0])


@pytest.mark.parametrize("rule", ["df-o", "df-r", "df"])
def test_the_conscious_local_rule_peaks_lower_than_the_naive_one(rule):
    model = ModelSpec(name="t", blocks=SMALL)
    kw = dict(batch=8, negatives=3, dataset_shape=(1, 16, 16), num_classes=4)
    naive = measure_peak(model, rule, variant="naive", **kw)
    conscious = measure_peak(model, rule, variant="conscious", **kw)
    assert conscious.bytes < naive.bytes
    assert conscious.resident_bytes == naive.resident_bytes


def test_checkpointed_bp_peaks_lower_than_plain_bp_on_a_deep_net():
    model = ModelSpec(name="t", blocks=(Block(type="conv", channels=8),) * 6 + (Block(type="dense", units=10),))
    kw = dict(batch=8, negatives=1, dataset_shape=(1, 16, 16))
    plain = measure_peak(model, "bp", variant="plain", **kw)
    ckpt = measure_peak(model, "bp", variant="checkpointed", **kw)
    assert ckpt.bytes < plain.bytes


def test_checkpointed_bp_gives_plain_bp_s_weights():
    out = []
    for variant in ("plain", "checkpointed"):
        net = TorchNet(SMALL, (1, 8, 8), 4, with_label=False, feedback=False, with_head=True, seed=0,
                       dtype=torch.float64)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        x = torch.rand((5, 1, 8, 8), generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (5,), generator=g)
        train_step(net, opt, "bp", variant, x, y, None, LossParams())
        out.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_df_loss_matches_the_engine_s_hand_written_gradient():
    """The framework's DF loss, differentiated by autograd, against engine/losses.df_loss's gradient."""
    from chipsim.engine.rules.losses import df_loss
    from chipsim.framework.losses import df_loss as torch_df
    rng = np.random.default_rng(0)
    out = torch.tensor(rng.normal(size=(4 * 3, 5)), requires_grad=True)
    hp = LossParams(margin=1.0, reg_lambda=0.1)
    torch_df(out, None, 3, hp, 10).backward()
    g = out.detach().pow(2).mean(1).view(4, 3).numpy()
    _, dgp, dgn = df_loss(g[:, 0], g[:, 1:], 1.0, 0.1)
    dg = np.concatenate([dgp[:, None], dgn], 1).reshape(-1, 1)
    np.testing.assert_allclose(out.grad.numpy(), dg * 2 * out.detach().numpy() / 5, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kw, key", [(dict(rule="vit"), "rule"), (dict(variant="naive"), "variant"),
                                     (dict(optimizer="lamb"), "optimizer"), (dict(device="tpu"), "--device")])
def test_bad_arguments_are_one_line_config_errors(kw, key):
    args = dict(model=TINY, rule="bp", batch=2, negatives=1, dataset_shape=(1, 2, 2), num_classes=2)
    args.update(kw)
    with pytest.raises(ConfigError, match=f"^{key}"):
        measure_peak(**args)


@pytest.mark.parametrize("rule", ["df", "df-o", "df-r"])
def test_the_framework_step_has_the_routed_reference_s_gradients(rule):
    """The framework's local step (span 1 and 2, W or B across blocks) gives the gradients of
    tests/torch_reference.torch_routed_grads, the reference test_routing_torch checks the engine against."""
    from chipsim.framework.steps import RULES, _input_rows, _local_conscious
    from torch_reference import torch_routed_grads
    net = TorchNet(SMALL, (1, 8, 8), 4, with_label=True, feedback=rule == "df-r", with_head=False, seed=0,
                   dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((5, 1, 8, 8), generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    neg = (y[:, None] + 1 + torch.arange(3)[None, :]) % 4
    hp = LossParams(reg_lambda=0.1)
    a0, lab, reps = _input_rows(net, RULES[rule], x, y, neg)
    _local_conscious(net, RULES[rule], a0, lab, reps, hp)

    ws = [b.w.detach().clone().requires_grad_() for b in net.blocks]
    emb = net.embedding.detach().clone().requires_grad_()
    lab_rows = torch.cat([y[:, None], neg], 1).reshape(-1)
    ref_a0 = torch.cat([x.repeat_interleave(4, 0), emb[lab_rows][:, None]], 1)
    span = RULES[rule].span
    reach = [tuple(range(max(0, l - span + 1), l + 1)) for l in range(len(SMALL))]
    fbs = [None] + [b.b for b in net.blocks[1:]] if rule == "df-r" else None

    def loss(l, out):
        gd = out.reshape(out.shape[0], -1).pow(2).mean(1).reshape(-1, 4)
        hard = gd[:, 1:].max(1).values
        return (torch.clamp(1.0 + hard - gd[:, 0], min=0) + 0.1 * hard).mean()
    torch_routed_grads(list(SMALL), ws, ref_a0, reach, loss, fbs)
    for blk, w in zip(net.blocks, ws):
        torch.testing.assert_close(blk.w.grad, w.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(net.embedding.grad, emb.grad, rtol=1e-10, atol=1e-12)


def test_compare_puts_the_measured_framework_peak_beside_the_chip_figures(tmp_path):
    from pathlib import Path
    from chipsim.experiments.compare import compare
    from chipsim.modelspec import cnn_family
    big = str(Path(__file__).resolve().parents[1] / "hwconfigs" / "176core_512k.yaml")
    t = compare(big, ("bp", "df-r"), (3,), overrides=("learning.negatives=1", "training.batch_size=8"), width=8,
                out_dir=str(tmp_path), jobs=1, progress=False)
    by = {r["rule"]: r for r in t["rows"]}
    for rule, variant in (("bp", "plain"), ("df-r", "conscious")):
        direct = measure_peak(cnn_family(3, width=8), rule, 8, 1, "adam", (1, 28, 28), variant=variant)
        assert by[rule]["measured"]["total_peak_bytes"] == direct.bytes       # the same measurement, repeated
        assert by[rule]["measured"]["label"] == direct.label()
    ckpt = measure_peak(cnn_family(3, width=8), "bp", 8, 1, "adam", (1, 28, 28), variant="checkpointed")
    assert by["bp"]["measured-ckpt"]["total_peak_bytes"] == ckpt.bytes
    assert t["ratios"]["measured:total_peak_bytes:df-r"][3] == by["df-r"]["measured"]["total_peak_bytes"] / \
        by["bp"]["measured"]["total_peak_bytes"]
    md = (tmp_path / "compare.md").read_text()
    assert direct.label() in md and "measured (KiB)" in md
    assert (tmp_path / "ratio_measured.png").exists() and (tmp_path / "memory_measured.png").exists()


def test_compare_refuses_an_unknown_device(tmp_path):
    from pathlib import Path
    from chipsim.experiments.compare import compare
    big = str(Path(__file__).resolve().parents[1] / "hwconfigs" / "176core_512k.yaml")
    with pytest.raises(ConfigError, match="^--device: 'tpu'; allowed: cpu, cuda, none"):
        compare(big, ("bp",), (3,), out_dir=str(tmp_path), jobs=1, progress=False, device="tpu")


def test_map_under_pytorch_memory_mode_reports_the_measured_step():
    from pathlib import Path
    from chipsim import api
    from chipsim.report import headline
    cfg = str(Path(__file__).resolve().parents[1] / "hwconfigs" / "44core_4bit.yaml")
    sets = ("training.batch_size=4", "learning.negatives=1")
    r = api.map(cfg, sets + ("mapping.memory_mode=pytorch",), write=False, progress=False)
    fw = r.summary["framework"]
    direct = measure_peak(_model_of(cfg), "df-r", 4, 1,
                          "adam", (1, 28, 28))
    assert fw["total_peak_bytes"] == direct.bytes
    assert fw["label"] == direct.label() and fw["torch_version"] == direct.torch_version and fw["device"] == "cpu"
    rows = headline(r.summary)
    # the headline's memory is the measurement, labelled with torch version and device; no modelled pool
    assert rows[0][0] == "memory (pytorch, mapping.memory_mode)"
    assert rows[0][1].startswith(f"{direct.bytes / 1024:.1f} KiB ({direct.label()}): peak allocator bytes")
    assert f"(df-r conscious, {4 * 2} rows, adam; torch.profiler memory events), measured " in rows[0][1]
    assert "pytorch" not in r.summary["chip"]["pool"]
    # the same point again in this process: the figure is reused, and the headline says so
    again = api.map(cfg, sets + ("mapping.memory_mode=pytorch",), write=False, progress=False).summary["framework"]
    assert again["reused"] and again["total_peak_bytes"] == direct.bytes
    assert headline({**r.summary, "framework": again})[0][1].endswith("measured earlier in this process; "
                                                                       "framework memory (PyTorch)")
    streaming = api.map(cfg, sets, write=False, progress=False).summary
    assert streaming["framework"] is None                                                 # streaming: no step
    assert dict(headline(streaming))["framework memory (PyTorch)"].startswith("not measured: set mapping.memory_mode: "
                                                                              "pytorch")


def _model_of(cfg):
    from chipsim.config import load_config
    return load_config(cfg).model
