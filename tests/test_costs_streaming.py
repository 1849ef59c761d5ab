"""What a chip that streams samples pays for its weight update, in the traced step (issue 23, defects 1-3).

* Defect 1: the traced step is step 1, yet Adam loads its stored moments as in any steady-state step
  (the loads are costed), with the same arithmetic as a step that special-cased the zero moments.
* Defect 2: accumulating a weight gradient is read-modify-write: every op that writes a gradient
  accumulator reads it too, once per sample.
* Defect 3: each sample's gradient is rescaled and added into its accumulator, so the ``accumulate``
  work is 2 operations x accumulator values x samples, not once per step.

Expected values are derived here from the stores' and buffers' sizes, never from the code's constants.
"""
import dataclasses
import os

import numpy as np
import pytest

from chipsim.chip import simulate
from chipsim.config import load_config
from chipsim.engine.training import optim
from chipsim.engine.training.trainer import Trainer
from chipsim.runner import _Synthetic
from chipsim.trace import work
from chipsim.trace.roles import Role

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "hwconfigs", "44core_4bit.yaml")


def traced_step(*overrides, batch=4):
    """Step 1 of a run on the default preset (DF-R on cnn_small unless overridden), traced."""
    cfg = load_config(PRESET, (f"training.batch_size={batch}",) + tuple(overrides))
    data = _Synthetic("mnist5k", (1, 28, 28, 10), batch, 0)
    tr = Trainer(cfg.hw, cfg.model, data)
    tr.train_step(data.x_train, data.y_train, record=True)
    return tr, cfg


def _count(ops, kind) -> int:
    return sum(w.count for o in ops for w in o.work if w.kind == kind)


# ------------------------------------------------------------------------------------------ defect 1
def test_adam_step_one_loads_its_moments_and_matches_the_zero_moment_formula():
    """Adam's first step reads both stored moments (their 16-bit codes dequantised: 1 op per value each,
    2 x 6 = 12), as every later step does, and its update is bit for bit the one of moments that start at
    zero: m = (1 - b1) g, v = (1 - b2) g^2 (written out here in float32, as torch.optim.Adam's step 1)."""
    g = np.array([0.5, -0.25, 1e-3, -2.0, 0.0, 3.0], np.float32)
    opt = optim.make_optimizer("adam", 0.0, 16)
    opt.register("w", g.shape)
    with work.open_log(work.WorkLog()) as log:
        delta = opt.delta("w", g, 1e-3, np.random.default_rng(0))
    loads = sum(w.count for w in log.items if w.kind == "dequantize")
    assert loads == 12
    m = np.float32(1 - 0.9) * g
    v = np.float32(1 - 0.999) * g * g
    mhat, vhat = m / np.float32(1 - 0.9), v / np.float32(1 - 0.999)
    ref = (np.float32(-1e-3) * mhat / (np.sqrt(vhat) + np.float32(1e-8))).astype(np.float32)
    np.testing.assert_allclose(delta, ref, rtol=1e-6, atol=0)


def test_the_traced_step_costs_the_optimizer_state_loads_of_a_steady_state_step():
    """Traced step 1 at optimizer_bits 16 (float32 accumulators, so no accumulator load is dequantised):
    the update ops dequantise exactly the optimizer's stored values (two per weight under Adam), and each
    reads the optimizer state buffer at the size the stores hold from step 1."""
    tr, _ = traced_step("precision.optimizer_bits=16", "precision.accumulator_bits=32")
    t = tr.trace
    updates = [o for o in t.ops if o.kind == "update"]
    weights = sum(s.codes.size for s in tr.acc.values())
    state = sum(s.codes.size for d in tr.opt.stores.values() for s in d.values())
    assert state == 2 * weights
    assert _count(updates, "dequantize") == state
    opt_bufs = [b for b in t.buffers if b.role == Role.OPTIMIZER_STATE]
    assert sum(b.nbytes for b in opt_bufs) == sum(s.nbytes for d in tr.opt.stores.values() for s in d.values())
    read = {bid for o in updates for bid in o.reads}
    assert all(b.id in read for b in opt_bufs)


# ------------------------------------------------------------------------------------------ defect 2
@pytest.mark.parametrize("overrides", [
    (),                                                              # DF-R with a learned label embedding
    ("workload.rule=bp",),
    ("workload.rule=ff", "workload.model=models/vit_tiny.yaml", "learning.negatives=1"),
])
def test_every_op_that_accumulates_a_gradient_reads_its_accumulator(overrides):
    """Every gradient accumulator a per-sample op writes (grad_w, the label embedding's gradient), it also
    reads: accumulating is read-modify-write. On the chip, that read costs the accumulator's bytes for every
    sample: the step's SRAM reads exceed those of the same trace without these reads by exactly that."""
    tr, cfg = traced_step(*overrides)
    t = tr.trace
    # (a send that multicasts a reduced accumulator to the layer's slices moves it, it does not accumulate)
    acc_ops = [o for o in t.ops if o.kind != "send" and any(t.buffers[b].role == Role.GRADIENT_ACC for b in o.writes)]
    assert acc_ops and {o.kind for o in acc_ops} <= {"grad_w", "grad_x"}
    assert all(o.scope == "sample" for o in acc_ops)
    for o in acc_ops:
        written = {b for b in o.writes if t.buffers[b].role == Role.GRADIENT_ACC}
        assert written <= set(o.reads), o.name
    if not overrides:
        assert any(o.name == "label_embedding_grad" for o in acc_ops)
    # the chip pays the reads: drop them from a copy of the trace and the difference is the accumulators'
    # bytes x samples, on every core of a layer that holds a (replicated) accumulator whole
    rep = simulate(t, cfg.hw)
    acc_ids = {o.id for o in acc_ops}
    stripped = dataclasses.replace(t, ops=[dataclasses.replace(
        o, reads=tuple(b for b in o.reads if not (o.id in acc_ids and t.buffers[b].role == Role.GRADIENT_ACC)))
        for o in t.ops])
    rep0 = simulate(stripped, cfg.hw)
    expected = 0
    for o in acc_ops:
        for bid in set(o.reads) & {b for b in o.writes}:
            b = t.buffers[bid]
            if b.role == Role.GRADIENT_ACC:
                copies = len(rep.mapping.slices_of(b.layer)) if b.split == "replicated" else 1
                expected += b.nbytes * t.samples * copies
    assert rep.energy.sram_read_bytes - rep0.energy.sram_read_bytes == pytest.approx(expected)


# ------------------------------------------------------------------------------------------ defect 3
@pytest.mark.parametrize("overrides", [(), ("workload.rule=ff", "workload.model=models/vit_tiny.yaml",
                                            "learning.negatives=1")])
def test_each_sample_is_accumulated_into_every_accumulator(overrides):
    """The accumulate work of a step: 2 operations (rescale, add) x the values of every accumulator the
    engine keeps x the step's samples -- so it doubles with the batch -- and each op that writes an
    accumulator carries 2 x its values x samples. The weight-gradient rescale is no longer also logged
    once per step as ``dequantize`` (it is the accumulate's multiply)."""
    got = {}
    for batch in (2, 4):
        tr, _ = traced_step(*overrides, batch=batch)
        t = tr.trace
        values = sum(s.codes.size for s in tr.acc.values())
        assert _count(t.ops, "accumulate") == 2 * values * batch
        for o in (o for o in t.ops if o.kind != "send"):
            acc = [t.buffers[b] for b in o.writes if t.buffers[b].role == Role.GRADIENT_ACC]
            assert sum(w.count for w in o.work if w.kind == "accumulate") == 2 * batch * sum(b.elements for b in acc)
        assert not any(w.kernel in ("QuantBlock.grad_weight", "QuantLinear.grad_weight")
                       for o in t.ops for w in o.work if w.kind == "dequantize")
        got[batch] = _count(t.ops, "accumulate")
    assert got[4] == 2 * got[2]
