"""The off-chip memory tier: which categories live there, and what the step's accesses to them cost.

Why a tier the mapper opts into: a real edge chip that learns keeps its master
weights and optimizer state (touched once per step, by the update) in an
LPDDR-class memory when SRAM cannot hold them. chipsim models that only where
a config gives ``chip.offchip``, and only when SRAM alone cannot hold the step:
the mapper then moves the categories of the layer that does not fit off-chip,
one at a time and coldest first (``OFFLOAD_ORDER``), until the rest fits; a
mapping's ``offchip`` is a set of (layer index, category) pairs. Without the section nothing moves
and today's refusal stands.

Costs, from the trace's reads and writes of the buffers of an off-chip
category (the same bytes ``energy`` would charge SRAM for):

* energy: ``bytes * chip.offchip.energy_pj_per_byte`` instead of the SRAM's pJ/B;
* time: the op stalls on each of its layer's slices for the bytes all the
  slices move (the interface is shared: they access it at once) over the
  interface's bandwidth, plus ``latency_ns`` once per op instance -- on the
  critical path wherever the op is;
* the step also cannot end before the interface has carried every off-chip
  byte of the step (the contention floor, ``Schedule.offchip_floor``): the
  per-op stalls do not see other layers using the interface at the same time.

The off-chip ledger holds one copy of each off-chip buffer (no per-slice
replicas), at its layer's peak, and must fit ``capacity_mib``.
"""
from __future__ import annotations

from .noc import is_local_multicast

#: categories the mapper may place off-chip, coldest first: the update alone touches the first two;
#: kept activations and accumulators are touched by every sample, so they come later, and receive buffers
#: last (then every activation a layer receives is written to and read back from the off-chip memory).
#: The compute copy of the weights, BN parameters and the label embedding stay on-chip.
OFFLOAD_ORDER = ("optimizer_state", "master_weights", "feedback_weights", "act_backward", "act_update",
                 "gradients", "noc_buffers")


def categories(offchip) -> list:
    """The categories of a mapping's off-chip (layer, category) pairs, in ``OFFLOAD_ORDER``."""
    cats = {c for _, c in offchip}
    return [c for c in OFFLOAD_ORDER if c in cats]


def describe(offchip) -> str:
    """'optimizer_state (layers 1, 2), act_update (layer 1)'."""
    parts = []
    for c in categories(offchip):
        ls = sorted(l for l, x in offchip if x == c)
        parts.append(f"{c} (layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))})")
    return ", ".join(parts)


def moved(op, buf, n_inst: int) -> float:
    """Bytes op moves of buf over the step (once per buffer it names; see ``energy``)."""
    if op.scope == "step" or buf.scope == "sample":
        return float(buf.nbytes)
    return float(buf.nbytes) * n_inst


def read_copies(op, buf, mapping) -> int:
    """Copies of ``buf`` an op reads: one for a units-split buffer or a send's source, else one per slice.
    A send from a layer to its own other slices (``noc.is_local_multicast``) reads slice 0's copy, and
    nothing on an unsplit layer (it moves nothing)."""
    if is_local_multicast(op):
        return 1 if len(mapping.slices_of(op.layer)) > 1 else 0
    return 1 if (buf.split == "units" or op.kind == "send") else len(mapping.slices_of(buf.layer))


def write_copies(op, buf, mapping) -> int:
    """Copies of ``buf`` an op writes: one per slice for replicated buffers and reduced partials; a send
    from a layer to its own slices writes one per slice other than slice 0."""
    if is_local_multicast(op):
        return len(mapping.slices_of(op.layer)) - 1
    return len(mapping.slices_of(buf.layer)) if buf.split == "replicated" or (
        buf.split == "reduce" and op.kind != "send") else 1


def op_offchip_bytes(op, trace, mapping, n_inst: int, sample_share: bool = False) -> tuple:
    """(bytes read, bytes written) of off-chip buffers by ``op`` over the step (all slices).
    ``sample_share``: only sample-scope buffers (per-sample part) vs. only the rest (per-instance part):
    returns the two parts as ((r_sample, w_sample), (r_inst, w_inst)) instead."""
    off = mapping.offchip
    B = trace.buffers
    parts = [[0.0, 0.0], [0.0, 0.0]]      # [sample part, per-instance part] x [read, write]
    if not off or op.kind == "select":
        return ((0.0, 0.0), (0.0, 0.0)) if sample_share else (0.0, 0.0)
    for k, (ids, copies) in enumerate(((op.reads, read_copies), (op.writes, write_copies))):
        for bid in ids:
            b = B[bid]
            if (b.layer, b.category) not in off:
                continue
            n = moved(op, b, n_inst) * copies(op, b, mapping)
            per_sample = op.scope == "step" or b.scope == "sample"
            parts[0 if per_sample else 1][k] += n
    if sample_share:
        return tuple(map(tuple, parts))
    return parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]


def offchip_cycles(trace, spec, mapping, n_inst: int) -> dict:
    """op id -> (per-sample stall cycles, per-instance stall cycles) of every op touching an off-chip buffer,
    in ``timing.op_cycles``'s convention (a step op's whole stall is 'per sample' with one sample)."""
    out = {}
    if not mapping.offchip:
        return out
    S = max(trace.samples, 1)
    for o in trace.ops:
        if o.kind == "send":
            continue
        (rs, ws), (ri, wi) = op_offchip_bytes(o, trace, mapping, n_inst, sample_share=True)
        if rs + ws + ri + wi == 0:
            continue
        if o.scope == "step":
            out[o.id] = (spec.offchip_cycles(rs + ws + ri + wi) + spec.offchip_latency_cycles, 0.0)
        else:
            # sample-scope buffers: their step total is spread over the samples (per-sample stall);
            # persistent/step buffers are moved whole by every instance, and each instance pays the latency
            out[o.id] = (spec.offchip_cycles(rs + ws) / S,
                         spec.offchip_cycles((ri + wi) / n_inst) + spec.offchip_latency_cycles)
    return out


def step_offchip_bytes(trace, mapping, n_inst: int) -> float:
    """Bytes the off-chip interface carries over the step (reads + writes, all ops)."""
    tot = 0.0
    for o in trace.ops:
        r, w = op_offchip_bytes(o, trace, mapping, n_inst)
        tot += r + w
    return tot
