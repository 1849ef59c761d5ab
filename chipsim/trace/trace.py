"""The execution trace: what the engine actually did in one training step.

The chip model (``chipsim.chip``) never looks at the model description; it
costs only this trace. That is what keeps memory, traffic, time and energy
honest: a change to a learning rule changes what the engine executes, hence the
trace, hence every figure -- there is no per-rule formula that could drift.

Format (version 3), small on purpose:

* ``layers``: the logical layers (blocks, plus BP's classifier head). Each has
  ``units`` -- the size of the axis along which the mapper may split it across
  cores (output channels or neurons).
* ``buffers``: SRAM allocations. ``nbytes`` is the size over the whole step,
  ``elements`` the values of the tensor it holds (every buffer the engine
  records gives both). ``category`` is the budget line it is charged to,
  ``role`` (a ``chipsim.trace.roles.Role``) what tensor it is; ``name`` is for
  people only and no consumer matches it.
  ``scope`` says how it lives:
    - ``persistent``: across steps (weights, master weights, optimizer state,
      BN parameters, label embedding, feedback weights).
    - ``step``: allocated at the first op that writes it and live until the
      step's last op that touches it (gradient accumulators).
    - ``sample``: one copy per sample in flight; ``nbytes / trace.samples`` is
      one sample's share. It is live from the op that writes it until the last
      op that reads it -- *dataflow liveness*: the engine does not say when to
      free, the reads it performed say it.
  ``split`` says how the bytes land on a layer's slices:
    - ``units``: divided among the slices in proportion to their units;
    - ``replicated``: every slice holds a full copy (e.g. a multicast input);
    - ``reduce``: every slice holds a full-size *partial* (grad-input, partial
      goodness) that must be summed onto the layer's first slice.
* ``ops``: in program order. ``kind`` is one of ``KINDS``: what the op is in
  the dataflow (a forward, an error sent down, an update ...). ``work`` is
  what it executed: one ``chipsim.trace.work.Work`` per kernel call the engine made
  for it (kernel kind, operations, operand widths, and whether a split layer's
  slices share it by units or each do it in full), logged by the kernels
  themselves (``chipsim.trace.work``) and attached by the tracer. Counts are totals
  over the step. ``macs`` is the op's multiply-accumulates (its ``mac``-unit
  work). ``scope`` is ``sample`` (runs once per sample; ``work`` covers all
  samples) or ``step`` (once per step, e.g. the optimizer update). ``reads``
  and ``writes`` are buffer ids: dependencies and liveness both come from them.
  A ``send`` op moves ``nbytes`` from ``layer`` to ``dst_layer`` (tag in
  ``tag``); it reads the source buffer and writes the received copy. A send
  that reads nothing is the sensor's image (it enters at the chip's input
  port); a send from a layer to itself (``dst_layer == layer``) is its slice 0
  multicasting a buffer to its other slices (``chipsim.chip.noc``).
  A ``select`` op marks the rows of a layer's kept buffers that stay live
  (the others got no error): it reads the full buffers, ending their
  lifetime, and writes the smaller ones. The kept rows stay where they are,
  so it moves no data; its only work is the compares that decided it
  (``mapping.negatives: sequential``'s running hardest negative), if any.
  A ``recompute`` op runs a block's forward again on rows it had dropped
  (``mapping.negatives: sequential-recompute``), from the input it held, when
  a loss above asks for those rows: its ``work`` is what that forward
  executed, its ``reads`` what it was recomputed from, so the memory saved
  and the compute spent sit side by side in the trace.
  ``barrier`` (sample-scope ops only) says the op computed a value over the
  whole batch (``mapping.statistics: batch``: BN's batch statistics, an
  activation's or an error's quantisation scale): no sample's instance of it
  may start before every sample has reached it, so the chip's schedule makes
  each instance wait for every instance of the ops it depends on, and the
  layer holds the batch's inputs meanwhile (their liveness says so). Under
  ``running`` or ``micro-batch`` no op is a barrier (a micro-batch's samples
  already run together as one instance). The recorder sets it from the work
  the op executed (``BATCH_COUPLED`` kinds) when the step asks it to.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from ..errors import ChipsimError
from .roles import CATEGORY_ROLE, Role
from .work import MAC, Work

#: 3: buffers declare their role (``Role``); 2 had none (the chip matched buffer names)
TRACE_VERSION = 3


class TraceVersionError(ChipsimError):
    """A stored trace (a checkpoint's) was written in another trace format version."""

CATEGORIES = (
    "weights",            # compute copy at weight_bits
    "master_weights",     # update_bits copy the optimizer writes
    "optimizer_state",    # momentum / Adam moments
    "bn_params",          # BN affine parameters and running statistics
    "label_embedding",    # the learnable label channel
    "feedback_weights",   # DF-R fixed random feedback kernels
    "act_update",         # activations kept for the block's own (local) update
    "act_backward",       # activations kept for BP's backward pass
    "gradients",          # error signals and gradient accumulators
    "noc_buffers",        # send / receive staging
)
KINDS = ("fwd", "goodness", "loss", "grad_x", "grad_w", "feedback", "update", "send", "select", "decode",
         "recompute")
# the op kind that only moves data: it executes no kernel (a select marks liveness; it executes at most the
# compares that decided it, under mapping.negatives: sequential)
NO_WORK = ("send",)
TAGS = ("activation", "error", "goodness", "label", "reduce")
#: work kinds that compute a value over the whole batch under mapping.statistics: batch (the batch's BN
#: statistics; a quantisation scale picked from the batch): an op that executed one is a barrier
BATCH_COUPLED = ("bn_forward", "quantize_scale")
SCOPES = ("persistent", "step", "sample")
SPLITS = ("units", "replicated", "reduce")


@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    units: int          # size of the split axis (output channels / neurons)
    kind: str           # "conv" | "dense" | "head"


@dataclass(frozen=True)
class Buffer:
    id: int
    layer: int
    name: str
    category: str
    nbytes: int
    scope: str
    split: str
    elements: int = 0         # values of the tensor it holds (0: not recorded, a hand-built trace)
    role: Role = Role.ACTIVATION   # what tensor it is (chipsim.trace.roles)


@dataclass(frozen=True)
class Op:
    id: int
    layer: int
    kind: str
    name: str
    work: tuple = ()          # chipsim.trace.work.Work items: what the op executed
    scope: str = "sample"
    reads: tuple = ()
    writes: tuple = ()
    dst_layer: Optional[int] = None
    nbytes: int = 0
    tag: Optional[str] = None
    barrier: bool = False     # every sample reaches it before any goes on (mapping.statistics: batch)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the op (its MAC-array work)."""
        return sum(w.count for w in self.work if w.unit == MAC)

    @property
    def bits(self) -> tuple:
        """Operand widths of its widest MAC work ((32, 32) if it has none): for display."""
        macs = [w.bits for w in self.work if w.unit == MAC]
        return max(macs, key=max) if macs else (32, 32)


@dataclass
class Trace:
    """One training step's record. Build it with ``TraceRecorder``."""
    samples: int
    layers: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    version: int = TRACE_VERSION

    # ---- totals (what tests compare with hand counts)
    def macs(self, kind: str | None = None, layer: int | None = None) -> int:
        return sum(o.macs for o in self.ops
                   if (kind is None or o.kind == kind) and (layer is None or o.layer == layer))

    def work_count(self, kind: str | None = None, layer: int | None = None) -> int:
        """Operations of work kind ``kind`` (``chipsim.trace.work.KINDS``), over all ops or one layer's."""
        return sum(w.count for o in self.ops if layer is None or o.layer == layer
                   for w in o.work if kind is None or w.kind == kind)

    def bytes_by_category(self, scope: str | None = None) -> dict:
        out = {c: 0 for c in CATEGORIES}
        for b in self.buffers:
            if scope is None or b.scope == scope:
                out[b.category] += b.nbytes
        return out

    def sent_bytes(self, tag: str | None = None) -> int:
        return sum(o.nbytes for o in self.ops if o.kind == "send" and (tag is None or o.tag == tag))

    def per_sample(self) -> "Trace":
        """The same dataflow for ONE sample: sample-scope amounts divided by ``samples``.

        Used to time one sample in isolation (no pipelining), e.g. how long its
        update phase takes after its last forward op -- the paper's 'backward
        time'. Step-scope amounts (updates, accumulators) are unchanged.
        """
        s = self.samples
        bufs = [b if b.scope != "sample" else replace(b, nbytes=-(-b.nbytes // s), elements=-(-b.elements // s))
                for b in self.buffers]
        ops = [o if o.scope != "sample" else Op(o.id, o.layer, o.kind, o.name,
                                                tuple(w if w.per_instance else w._replace(count=-(-w.count // s))
                                                      for w in o.work),
                                                o.scope, o.reads, o.writes, o.dst_layer, -(-o.nbytes // s), o.tag,
                                                o.barrier)
               for o in self.ops]
        return Trace(samples=1, layers=list(self.layers), buffers=bufs, ops=ops, version=self.version)

    # ---- persistence
    def to_dict(self) -> dict:
        return {"version": self.version, "samples": self.samples,
                "layers": [asdict(x) for x in self.layers],
                "buffers": [{**asdict(x), "role": x.role.value} for x in self.buffers],
                "ops": [{**asdict(x), "work": [list(w) for w in x.work]} for x in self.ops]}

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        if d.get("version") != TRACE_VERSION:
            raise TraceVersionError(
                f"stored trace has format version {d.get('version')!r}; this chipsim reads version {TRACE_VERSION} "
                f"only (version 3 added each buffer's role); rerun the training with this chipsim, or use the "
                f"chipsim that wrote it")
        ops = [Op(**{**o, "work": tuple(Work(w[0], w[1], w[2], tuple(w[3]), *w[4:]) for w in o["work"]),
                     "reads": tuple(o["reads"]), "writes": tuple(o["writes"])}) for o in d["ops"]]
        return cls(samples=d["samples"], layers=[Layer(**x) for x in d["layers"]],
                   buffers=[Buffer(**{**x, "role": Role(x["role"])}) for x in d["buffers"]], ops=ops)

    def dumps(self) -> str:
        return json.dumps(self.to_dict())


class TraceRecorder:
    """Appends buffers and ops as the engine runs; costs a few list appends per op.

    The engine calls ``buffer(...)`` once per allocation and ``op(...)`` once per
    kernel call. ``enabled=False`` turns both into near no-ops so steps whose
    trace is not needed (every step after the first identical one) pay nothing.
    """

    def __init__(self, samples: int, enabled: bool = True, barriers: bool = False):
        """``barriers``: mark every sample-scope op that executed ``BATCH_COUPLED`` work a barrier
        (``mapping.statistics: batch``)."""
        self.trace = Trace(samples=samples)
        self.enabled = enabled
        self.barriers = barriers

    def layer(self, index: int, name: str, units: int, kind: str) -> None:
        if self.enabled:
            self.trace.layers.append(Layer(index, name, int(units), kind))

    def buffer(self, layer: int, name: str, category: str, nbytes: int, scope: str = "sample",
               split: str = "units", elements: int = 0, role: Role | None = None) -> int:
        """A buffer of ``nbytes`` holding a tensor of ``elements`` values, which is a ``role``. The engine's
        tracers declare every role; a hand-built trace may leave it to its category's
        (``roles.CATEGORY_ROLE``)."""
        if not self.enabled:
            return -1
        assert category in CATEGORIES and scope in SCOPES and split in SPLITS, (category, scope, split)
        role = CATEGORY_ROLE[category] if role is None else Role(role)
        bid = len(self.trace.buffers)
        self.trace.buffers.append(Buffer(bid, layer, name, category, int(nbytes), scope, split, int(elements),
                                         role))
        return bid

    def op(self, layer: int, kind: str, name: str, macs: int = 0, bits=(32, 32), scope: str = "sample",
           reads=(), writes=(), dst_layer=None, nbytes: int = 0, tag=None, work=()) -> int:
        """Append an op. ``work``: the Work items it executed. ``macs``/``bits`` is a shorthand for
        hand-built traces: one generic ``mac`` item of that many multiply-accumulates."""
        if not self.enabled:
            return -1
        assert kind in KINDS and scope in ("sample", "step"), (kind, scope)
        work = tuple(work)
        if macs:
            work += (Work("mac", name, int(macs), tuple(int(b) for b in bits)),)
        assert not (work and kind in NO_WORK), (kind, work)
        oid = len(self.trace.ops)
        barrier = self.barriers and scope == "sample" and any(w.kind in BATCH_COUPLED for w in work)
        self.trace.ops.append(Op(oid, layer, kind, name, work, scope, tuple(reads), tuple(writes), dst_layer,
                                 int(nbytes), tag, barrier))
        return oid

    def send(self, src_layer: int, dst_layer: int, name: str, src_buffer: int, dst_buffer: int,
             nbytes: int, tag: str) -> int:
        assert tag in TAGS, tag
        return self.op(src_layer, "send", name, reads=(src_buffer,), writes=(dst_buffer,),
                       dst_layer=dst_layer, nbytes=nbytes, tag=tag)


def nbytes_of(numel: int, bits: int) -> int:
    """Bytes to store ``numel`` values at ``bits`` each, packed (sub-byte values share bytes)."""
    return (int(numel) * int(bits) + 7) // 8
