"""Issue 23, defect 8: CFF's second stage -- encoding the training set and training the linear probe for
``learning.head_epochs`` passes after every epoch -- is traced as its own phase ("probe"), costed by the
chip on the training mapping, reported, and added to the per-epoch cost in the ViT table.

The work is checked against hand counts (the probe's products: rows x E x C) and against the one-pass
inference trace of the same encoder (encoding is that pass, without the head)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from chipsim.chip import simulate
from chipsim.config import load_config
from chipsim.engine.tracing.inference import trace_inference
from chipsim.engine.tracing.probe import trace_probe
from chipsim.engine.training.trainer import Trainer
from chipsim.report import probe_section
from chipsim.runner import _Synthetic, cost_probe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "hwconfigs", "44core_4bit.yaml")
VIT = "workload.model=" + os.path.join(REPO, "models", "vit_tiny.yaml")
B, E, C = 4, 64, 10          # step batch; vit_tiny's token width; mnist5k's classes


@pytest.fixture(scope="module")
def cff():
    cfg = load_config(CONFIG, (VIT, "workload.rule=cff", f"training.batch_size={B}", "learning.head_epochs=3"))
    data = _Synthetic("mnist5k", (1, 28, 28, C), B, 0)
    tr = Trainer(cfg.hw, cfg.model, data)
    tr.train_step(data.x_train, data.y_train, record=True)
    return cfg, tr, simulate(tr.trace, cfg.hw)


def _images(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, C, n)


def test_the_probe_phase_work_is_traced(cff):
    cfg, tr, _ = cff
    x, y = _images(70)
    enc, step = trace_probe(tr.head, x, y)
    assert enc.samples == 64 and step.samples == 64               # PROBE_BATCH images / features
    head = tr.head.layer.index
    # encoding = the encoder's one-pass inference, 64 times, without the head's product
    one = trace_inference(tr.net, x[:1], tr.rule.objective, 1, tr.head)
    enc_macs = sum(o.macs for o in one.ops if o.layer != head)
    assert enc_macs > 0
    assert sum(o.macs for o in enc.ops if o.layer != head) == 64 * enc_macs
    # ... then the last layer's tokens go to the probe's core, which averages them: no product there
    assert sum(o.macs for o in enc.ops if o.layer == head) == 0
    assert enc.work_count("token_mean", layer=head) > 0
    # one probe step: forward 64 x 64 x 10 = 40960 MACs, the weight gradient as many, then one update
    kinds = [(o.kind, o.macs) for o in step.ops if o.kind != "send"]
    assert kinds[:3] == [("fwd", 40960), ("loss", 0), ("grad_w", 40960)]
    assert kinds[3][0] == "update" and step.ops[-1].scope == "step"
    assert step.work_count("bn_forward") > 0 and step.work_count("update_optimizer") > 0
    # the traced step changed nothing the probe holds
    assert tr.head.fitted is None


def test_the_probe_phase_is_costed_per_epoch(cff):
    cfg, tr, chip = cff
    x, y = _images(130)
    p = cost_probe(tr, x, y, cfg.hw, chip.mapping)
    assert p["phase"] == "probe" and p["images"] == 130 and p["head_epochs"] == 3
    # ceil(130 / 64) = 3 encoding batches; 3 passes of 3 steps = 9 probe steps
    assert p["encode_batches_per_epoch"] == 3 and p["probe_steps_per_epoch"] == 9
    enc, trn = p["encode"], p["train"]
    assert enc["energy_pj"] > 0 and trn["energy_pj"] > 0 and enc["latency_us"] > 0 and trn["latency_us"] > 0
    assert enc["per_epoch_energy_pj"] == pytest.approx(3 * enc["energy_pj"])
    assert trn["per_epoch_energy_pj"] == pytest.approx(9 * trn["energy_pj"])
    assert p["per_epoch_energy_pj"] == pytest.approx(3 * enc["energy_pj"] + 9 * trn["energy_pj"])
    assert p["per_epoch_latency_us"] == pytest.approx(3 * enc["latency_us"] + 9 * trn["latency_us"])
    assert p["feature_bytes"] == 4 * 130 * E
    # a rule without a linear probe has no probe phase
    bp_cfg = load_config(CONFIG, (VIT, "workload.rule=bp", f"training.batch_size={B}"))
    data = _Synthetic("mnist5k", (1, 28, 28, C), B, 0)
    bp = Trainer(bp_cfg.hw, bp_cfg.model, data)
    assert cost_probe(bp, x, y, bp_cfg.hw, chip.mapping) is None


def test_the_report_states_the_probe_phase_against_the_training():
    probe = {"images": 100, "head_epochs": 2, "encode_batches_per_epoch": 2, "probe_steps_per_epoch": 4,
             "feature_bytes": 25600, "per_epoch_energy_pj": 3e6, "per_epoch_latency_us": 50.0,
             "encode": {"samples": 64, "per_epoch_energy_pj": 2e6, "per_epoch_latency_us": 30.0},
             "train": {"samples": 64, "per_epoch_energy_pj": 1e6, "per_epoch_latency_us": 20.0}}
    summary = {"probe": probe, "training": {"epochs": 2, "steps": 20},
               "chip": {"energy": {"total_pj": 1.5e6}, "timing": {"latency_us": 25.0}}}
    text = "\n".join(probe_section(summary))
    # 10 steps an epoch: 15 µJ and 250 µs; the probe phase adds 3 / 15 = 20% energy, 50 / 250 = 20% latency
    assert "| probe phase, per epoch | 50.0 | 3.00 |" in text
    assert "Stage 1 takes 10 steps an epoch: 15.00 µJ and 250.0 µs." in text
    assert "adds 20.0% to that energy and 20.0% to that latency" in text
    assert "(25.0 KiB, float32)" in text
