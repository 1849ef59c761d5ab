"""Issue 23, defects 4-6: the transfers a split first layer needs, and where the sensor's image enters.

One DF-O step of ``test_costs.dfo_step`` (3 blocks, 2 samples x (1 + 3 negatives) = 8 rows, a learned label
embedding of 4 labels x 1x8x8 = 256 values, accumulated at 32 bits = 1024 B) on the toy 2x2 chip of
``test_chip.hwconfig`` (links 2 B/cycle, 1 cycle per hop). At 64 KiB per core every layer has a core of its
own (layer 0 on core 0); at 4.5 KiB block 0 (4.9 KiB) splits over cores 0 and 1 (snake order: 0, 1, 3, 2),
one hop apart.

* defect 4: each slice accumulates a partial embedding gradient; it is reduced onto slice 0 and multicast
  back, and every slice runs the whole embedding update;
* defect 5: the loss runs once, on slice 0; its gradient travels to the other slice before the backward;
* defect 6: the image enters at ``chip.noc.input_port`` (default router (0, 0)), split or not.

Every expected figure is a literal derived in the comments.
"""
import pytest

from chipsim.chip import simulate
from chipsim.chip.noc import send_plan
from chipsim.errors import ConfigError
from test_chip import hwconfig
from test_costs import dfo_step

SPLIT_KIB, WHOLE_KIB = 4.5, 64.0


@pytest.fixture(scope="module")
def step():
    return dfo_step()


@pytest.fixture(scope="module")
def split(step):
    rep = simulate(step, hwconfig(sram_kib=SPLIT_KIB))
    assert [s.core for s in rep.mapping.slices_of(0)] == [0, 1]       # block 0 on cores 0 and 1
    return rep


@pytest.fixture(scope="module")
def whole(step):
    rep = simulate(step, hwconfig(sram_kib=WHOLE_KIB))
    assert [len(rep.mapping.slices_of(l.index)) for l in step.layers] == [1, 1, 1]
    return rep


def _embedding_send(t):
    sends = [o for o in t.ops if o.kind == "send" and o.name.startswith("label embedding")]
    assert len(sends) == 1
    return sends[0]


# ----------------------------------------------------------------------------- defect 4
def test_embedding_gradient_is_a_reduce_partial_sent_back_before_a_replicated_update(step):
    t = step
    send = _embedding_send(t)
    acc = t.buffers[send.reads[0]]
    assert acc.name == "embedding_grad_acc" and acc.split == "reduce" and acc.scope == "step"
    # 4 labels x 64 values at 32 bits: 1024 B, once per step, slice 0 to the layer's own other slices
    assert (send.scope, send.layer, send.dst_layer, send.tag, send.nbytes) == ("step", 0, 0, "reduce", 1024)
    update = next(o for o in t.ops if o.name == "label_embedding_update")
    assert update.id > send.id and acc.id in update.reads
    assert update.work and all(w.split == "replicated" for w in update.work)   # every slice updates its copy


def test_split_first_layer_reduces_and_multicasts_the_embedding_gradient(step, split):
    sch = split.schedule
    # reduce traffic: block 0's goodness partial (8 rows x 4 B = 32 B) + the embedding gradient's partial
    # from core 1 to core 0 (1024 B) + the reduced gradient back from core 0 to core 1 (1024 B), all 1 hop
    assert sch.links.tag_bytes["reduce"] == 32 + 1024 + 1024
    assert sch.links.bytes[(1, 0)] >= 1024 and sch.links.bytes[(0, 1)] >= 1024
    send = _embedding_send(step)
    # reduction 1024 / 2 = 512 cycles + 1 hop, then the multicast 512 + 1 (the links are idle by then)
    assert sch.end[send.id, 0] - sch.start[send.id, 0] == pytest.approx(513 + 513)
    update = next(o for o in step.ops if o.name == "label_embedding_update")
    assert sch.start[update.id, 0] >= sch.end[send.id, 0]


def test_unsplit_first_layer_moves_no_embedding_gradient(step, whole):
    sch = whole.schedule
    assert "reduce" not in sch.links.tag_bytes
    send = _embedding_send(step)
    assert sch.end[send.id, 0] == sch.start[send.id, 0]


def test_replicated_embedding_update_costs_every_slice(step, split, whole):
    """The update's work on 2 slices costs twice what it costs on one core: for a kind no other op does
    replicated (the layers' own updates are shared by units), split minus whole is one more copy of it."""
    update = next(o for o in step.ops if o.name == "label_embedding_update")
    repl_elsewhere = {w.kind for o in step.ops if o.id != update.id for w in o.work if w.split == "replicated"}
    kinds = {w.kind for w in update.work} - repl_elsewhere
    assert "update_optimizer" in kinds
    for k in kinds:
        one_copy = sum(split.spec.work_energy(w) for w in update.work if w.kind == k)
        assert one_copy > 0
        assert split.energy.by_op[k] - whole.energy.by_op[k] == pytest.approx(one_copy), k


# ----------------------------------------------------------------------------- defect 5
def test_loss_gradient_travels_from_slice_0_before_the_backward(step, split, whole):
    loss0 = next(o for o in step.ops if o.kind == "loss" and o.layer == 0)
    dg = loss0.writes[0]
    send = next(o for o in step.ops if o.kind == "send" and o.reads == (dg,))
    # 8 rows x float32 = 32 B over the step, block 0 to itself, tag error
    assert (send.layer, send.dst_layer, send.tag, send.nbytes, send.scope) == (0, 0, "error", 32, "sample")
    sch = split.schedule
    readers = [o for o in step.ops if o.id > send.id and dg in o.reads]
    assert readers
    for i in range(sch.n_inst):
        assert sch.start[send.id, i] >= sch.end[loss0.id, i]
        # one sample's 16 B at 2 B/cycle + 1 hop
        assert sch.end[send.id, i] - sch.start[send.id, i] >= 16 / 2 + 1
        for o in readers:
            assert sch.start[o.id, i if o.scope == "sample" else 0] >= sch.end[send.id, i]
    # error traffic: the errors sent down (512 + 192 B, as test_trace counts them) + block 0's loss
    # gradient (32 B); unsplit the loss gradients move nothing
    assert sch.links.tag_bytes["error"] == 512 + 192 + 32
    assert whole.schedule.links.tag_bytes["error"] == 512 + 192
    for o in step.ops:
        if o.kind == "send" and o.dst_layer == o.layer and o.reads:
            assert (whole.schedule.end[o.id] == whole.schedule.start[o.id]).all()


def test_split_first_layer_is_slower_by_its_new_transfers(step, split):
    """The split step's critical path includes the loss gradient's and the embedding gradient's transfers."""
    path_ops = {d for d, *_ in split.schedule.critical_path}
    emb = _embedding_send(step)
    assert emb.id in path_ops


# ----------------------------------------------------------------------------- defect 6
def test_sensor_enters_at_the_default_port_split_or_not(step, split, whole):
    sensor = step.ops[0]
    assert sensor.kind == "send" and not sensor.reads and sensor.nbytes == 2 * 64     # 2 images, 8-bit codes
    # unsplit on core 0 = router (0, 0): 0 hops, nothing on the NoC (activation: 256 + 96 between blocks)
    assert send_plan(sensor, step, whole.mapping) == [(0, 0, 1.0)]
    assert whole.schedule.links.tag_bytes["activation"] == 256 + 96
    # split: one multicast from the port to both slices (not an exchange between the slices)
    assert send_plan(sensor, step, split.mapping) == [(0, 0, 1.0), (0, 1, 1.0)]
    # one image: 64 B at 2 B/cycle + 1 hop to core 1
    assert split.schedule.end[sensor.id, 0] - split.schedule.start[sensor.id, 0] == pytest.approx(33)


def test_sensor_from_another_port_costs_its_hops(step, whole):
    moved = simulate(step, hwconfig(sram_kib=WHOLE_KIB, sets=("chip.noc.input_port=[1,1]",)))
    sensor = step.ops[0]
    # router (x 1, y 1) = core 3; layer 0 on core 0: 2 hops
    assert send_plan(sensor, step, moved.mapping) == [(3, 0, 1.0)]
    assert moved.schedule.links.tag_bytes["activation"] == 128 + 256 + 96
    # 128 B x 2 hops x 0.25 pJ more on the NoC
    assert moved.energy.noc_pj - whole.energy.noc_pj == pytest.approx(128 * 2 * 0.25)
    # the first image arrives after 64 / 2 cycles + 2 hops
    fwd0 = next(o for o in step.ops if o.kind == "fwd" and o.layer == 0)
    assert moved.schedule.start[fwd0.id, 0] == pytest.approx(34)
    assert whole.schedule.start[fwd0.id, 0] == 0


def test_input_port_outside_the_mesh_is_refused():
    with pytest.raises(ConfigError, match=r"chip\.noc\.input_port: \[2, 0\] .*x \(column\) in 0\.\.1"):
        hwconfig(sets=("chip.noc.input_port=[2,0]",))
    with pytest.raises(ConfigError, match=r"chip\.noc\.input_port"):
        hwconfig(sets=("chip.noc.input_port=[0]",))
