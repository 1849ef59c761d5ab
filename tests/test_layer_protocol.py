"""The layer protocol (``chipsim.engine.layers.protocol``): every shipped layer kind implements it, and a
new layer type added by the route ``docs/extending.md`` describes -- one class, its registration in
``layers.registry``, its work kinds in ``chipsim.trace.work.KINDS`` -- trains, traces, updates and is
costed by the chip with no other change to the engine or the chip.

The toy layer is an elementwise scale, ``y = s * x`` with one learned ``s`` per feature. Its kernels are
checked against torch autograd; the rest against hand counts."""
import os

import numpy as np
import pytest
import torch

from chipsim.chip import simulate
from chipsim.config import Precision, load_config
from chipsim.engine.layers import registry
from chipsim.engine.layers.protocol import Layer, ParamGroup, TracePart
from chipsim.engine.layers.sent_error import send_float
from chipsim.engine.networks.network import Network
from chipsim.engine.rules.compose import bp_step
from chipsim.engine.tracing.inference import trace_inference
from chipsim.engine.tracing.step import StepTracer
from chipsim.engine.training.trainer import training_state
from chipsim.engine.training.update import apply_gradients
from chipsim.modelspec import Block, ModelSpec
from chipsim.quant import FixedPoint
from chipsim.trace import TraceRecorder, nbytes_of
from chipsim.trace import work

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, goodness_bits=32,
                  optimizer_bits=32)
B, F, CLASSES = 3, 8, 4


class ScaleLayer:
    """``y = s * x`` per feature: the toy layer type, written against ``layers.protocol.Layer`` only."""
    kind = "scale"
    head = False
    use_bn = False
    goodness_bits = 32
    work_cuts = ()
    error_in_split = "units"

    def __init__(self, index, spec, in_shape, precision, rng, **options):
        self.index, self.prec = index, precision
        self.in_shape = self.out_shape = (int(np.prod(in_shape)),)
        s0 = 1.0 + 0.1 * rng.standard_normal(self.in_shape).astype(np.float32)
        self.master = FixedPoint(s0, precision.update_bits)
        self.requantize()

    @property
    def units(self) -> int:
        return self.in_shape[0]

    def requantize(self, part=None):
        self.s = self.master.value.astype(np.float32)

    def forward(self, a, train: bool):
        x = np.asarray(a, np.float32).reshape(len(a), -1)
        out = x * self.s
        work.record("scale_forward", "scale_forward", out.size)
        return out, dict(zq=x, y=np.zeros(0, np.float32), out=out)

    def backward_pre(self, err, cache):
        return err

    def grad_weight(self, gy, cache, rng):
        work.record("scale_grad_weight", "scale_grad_weight", gy.size)
        return (gy * cache["zq"]).sum(axis=0)

    def grad_input(self, gy, cache, rng, use_feedback: bool = False):
        work.record("scale_grad_input", "scale_grad_input", gy.size)
        return gy * self.s

    def send_error(self, gx, rng):
        return send_float(gx)

    def select(self, cache, rows):
        return {k: v[rows] if v.size else v for k, v in cache.items()}

    def param_tensors(self):
        return ((self, f"w{self.index}", None, self.master, "units"),)

    def stored_bytes(self, cache) -> dict:
        return dict(zq=4 * cache["zq"].size, mask=0, out=4 * cache["out"].size)

    def param_bytes(self) -> dict:
        return dict(weights=4 * self.s.size, master=nbytes_of(self.s.size, self.master.bits), bn=0)

    def feedback_bytes(self) -> int:
        return 0

    def state(self):
        return dict(master=self.master.to_state())

    def load(self, s):
        self.master = FixedPoint.from_state(s["master"])
        self.requantize()

    def trace_parts(self):
        pb = self.param_bytes()
        return (TracePart(self.index, f"scale{self.index}", self.units, "scale", "forward",
                          (ParamGroup("", "units", pb["weights"], pb["master"], self.s.size, (f"w{self.index}",)),)),)

    def trace_outputs(self, out, cache):
        return ((4 * np.size(out), int(np.size(out))),)

    def trace_forward(self, tracer, cache, goodness):
        tracer.block_forward(self, cache, goodness)

    def trace_grad_weight(self, tracer, losses):
        tracer.block_grad_weight(self, losses)

    def trace_error_down(self, tracer, below, rows, use_feedback, loss):
        tracer.block_error_down(self, below, rows, use_feedback, loss)


@pytest.fixture
def scale_type(monkeypatch):
    """The registration: the layer type under its name, and its work kinds (priced by the vector unit)."""
    monkeypatch.setitem(registry.LAYER_TYPES, "scale", ScaleLayer)
    for kind in ("scale_forward", "scale_grad_weight", "scale_grad_input"):
        monkeypatch.setitem(work.KINDS, kind, (work.VECTOR, kind.replace("_", " ")))


def _net():
    model = ModelSpec(name="toy", blocks=(Block(type="dense", units=F, norm="none"), Block(type="scale"),
                                          Block(type="dense", units=6, norm="none")))
    return Network(model, (1, 4, 4), CLASSES, FLOAT, seed=2, with_label=False, with_head=True)


def test_every_shipped_layer_kind_implements_the_protocol():
    from chipsim.engine.networks.vit import TransformerNetwork
    conv = Network(ModelSpec(name="c", blocks=(Block(type="conv", channels=4, pool=2),
                                               Block(type="dense", units=5))), (1, 8, 8), 3, FLOAT, seed=0,
                   with_label=True, with_head=True)
    vit = TransformerNetwork(ModelSpec(name="v", blocks=(Block(type="vit", patch=4, dim=16, heads=2, mlp_dim=32),)),
                             (1, 8, 8), 3, FLOAT, seed=0, with_label=False, with_head=True)
    layers = conv.layers() + vit.layers()
    assert {type(x).__name__ for x in layers} == {"QuantBlock", "TransformerBlock", "TokenMeanHead"}
    for layer in layers:
        assert isinstance(layer, Layer), type(layer)
        parts = layer.trace_parts()
        assert parts[-1].index == layer.index                     # the last part is the layer's output
        assert {k for _, k, *_ in layer.param_tensors()} == {k for p in parts for g in p.params for k in g.keys}
    assert [p.kind for p in vit.blocks[0].trace_parts()] == ["attn", "mlp"]


def test_toy_scale_kernels_match_torch_autograd(scale_type):
    layer = _net().blocks[1]
    assert isinstance(layer, Layer)
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((B, F)).astype(np.float32), rng.standard_normal((B, F)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(layer.s, requires_grad=True)
    yt = xt * st
    (yt * torch.tensor(gy)).sum().backward()
    out, cache = layer.forward(x, train=True)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(layer.grad_weight(gy, cache, None), st.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(layer.grad_input(gy, cache, None), xt.grad.numpy(), rtol=1e-6)


def test_toy_layer_trains_traces_and_is_costed_through_the_registry(scale_type):
    net = _net()
    scale = net.blocks[1]
    assert isinstance(scale, ScaleLayer) and scale.index == 1
    opt, acc = training_state(net, net.prec)
    rng = np.random.default_rng(3)
    x, y = rng.random((B, 1, 4, 4), dtype=np.float32), np.array([0, 1, 3])
    rec = TraceRecorder(samples=B)
    tracer = StepTracer(rec, net, opt, acc, rule_is_bp=True)
    with work.open_log(tracer.log):
        res = bp_step(net, x, y, 0, rng, tracer)
        before = scale.master.value.copy()
        apply_gradients(net, res.grads, 0.1, opt, acc, net.prec, rng, tracer)
    tracer.close()
    assert not np.array_equal(scale.master.value, before)         # the update reached its master copy
    t = rec.trace
    assert [(l.index, l.kind, l.units) for l in t.layers] == [(0, "dense", F), (1, "scale", F), (2, "dense", 6),
                                                              (3, "head", CLASSES)]
    ops = {(o.kind, o.name) for o in t.ops if o.layer == 1}
    assert {("fwd", "forward"), ("grad_w", "grad_weight"), ("grad_x", "grad_input"),
            ("update", "optimizer_update")} <= ops
    # each kernel touches every value once: B rows x F features = 3 x 8 = 24
    assert t.work_count("scale_forward") == t.work_count("scale_grad_weight") == t.work_count("scale_grad_input") == 24
    # its weights: F float32 scales = 32 bytes, split by its units
    w = [b for b in t.buffers if b.layer == 1 and b.scope == "persistent" and b.category == "weights"]
    assert [(b.nbytes, b.split, b.elements) for b in w] == [(32, "units", F)]
    cfg = load_config(os.path.join(REPO, "hwconfigs", "44core_4bit.yaml"))
    chip = simulate(t, cfg.hw)
    row = next(r for r in chip.mapping_table() if r["layer"] == 1)   # mapped onto cores of its own, and busy
    assert row["name"] == "scale1" and row["slices"] >= 1 and row["busy_pct"] > 0
    assert chip.energy.total_pj > 0 and chip.ledger.peak_bytes > 0
    inf = trace_inference(net, x[:1], None, 1)
    assert [o.name for o in inf.ops if o.layer == 1 and o.kind == "fwd"] == ["forward"]
    assert inf.work_count("scale_forward") == F                   # one sample x F features
