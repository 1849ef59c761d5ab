"""Mapping: each layer gets one or more slices (contiguous unit ranges) on distinct cores.

Why one layer per core (a core never holds two layers): the ledger of a core is
then exactly its layer's buffers, an SRAM overflow names one layer, and a
layer's slices run in lock-step without competing with another layer for the
core. The price is that a model needs at least as many cores as layers.

Placement: slices are laid out layer after layer along a boustrophedon (snake)
walk of the mesh, so consecutive slices -- and the last slice of layer l and
the first of layer l+1 -- are one hop apart.

Strategies (``mapping.strategy``):
* ``fit``: start with one slice per layer; schedule, build the ledger, and give
  every overflowing layer the fewest slices that make its largest slice fit
  under the liveness just measured; repeat (splitting changes the schedule,
  hence the liveness) until everything fits or the cores run out.
* ``balanced``: the fit mapping, then idle cores go one at a time to the layer
  with the most MACs per slice (throughput). If the faster pipeline makes some
  core overflow, the fit mapping is kept.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..errors import MappingError
from .ledger import build_ledger
from .spec import ChipSpec
from .timing import schedule

KIB = 1024.0
_WEIGHTY = ("weights", "master_weights", "optimizer_state", "feedback_weights", "bn_params", "label_embedding")
_PER_SAMPLE = ("act_update", "act_backward", "gradients", "noc_buffers")


@dataclass(frozen=True)
class Slice:
    layer: int          # layer index
    index: int          # slice number within the layer (0 = the one partials are reduced onto)
    lo: int             # first unit
    hi: int             # one past the last unit
    units: int          # the layer's total units
    core: int
    coord: tuple        # (row, col)

    @property
    def fraction(self) -> float:
        return (self.hi - self.lo) / self.units if self.units else 1.0


@dataclass
class Mapping:
    spec: ChipSpec
    layers: list                     # trace.Layer, in trace order
    slices: dict                     # layer index -> [Slice]
    strategy: str = "fit"
    iterations: int = 0              # schedule+ledger evaluations the fit loop needed
    notes: list = field(default_factory=list)

    def __post_init__(self):
        self.layer_pos = {l.index: p for p, l in enumerate(self.layers)}
        self.core_slice = {s.core: s for sl in self.slices.values() for s in sl}

    def slices_of(self, layer: int) -> list:
        return self.slices[layer]

    @property
    def counts(self) -> list:
        return [len(self.slices[l.index]) for l in self.layers]

    @property
    def cores_used(self) -> int:
        return len(self.core_slice)


def split_units(units: int, n: int) -> list:
    """n contiguous (lo, hi) ranges covering ``units``; the first ``units % n`` are one larger."""
    base, extra = divmod(units, n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def place(layers, counts, spec: ChipSpec, strategy: str = "fit") -> Mapping:
    """Lay the slices out along the snake order, layer after layer."""
    order = spec.snake_order()
    if sum(counts) > len(order):
        raise ValueError("more slices than cores")
    slices, k = {}, 0
    for layer, n in zip(layers, counts):
        sl = []
        for i, (lo, hi) in enumerate(split_units(layer.units, n)):
            c = order[k]
            k += 1
            sl.append(Slice(layer.index, i, lo, hi, layer.units, c, spec.coord(c)))
        slices[layer.index] = sl
    return Mapping(spec=spec, layers=list(layers), slices=slices, strategy=strategy)


def _evaluate(trace, hw, spec, counts, strategy):
    m = place(trace.layers, counts, spec, strategy)
    sched = schedule(trace, spec, m, hw.mapping.micro_batch, hw.training.update)
    return m, sched, build_ledger(trace, m, spec.sram_bytes, sched)


def fit(trace, hw, spec: ChipSpec | None = None):
    """(Mapping, Schedule, Ledger) of the first mapping that fits; raises MappingError."""
    spec = spec or ChipSpec.from_hw(hw)
    strategy = hw.mapping.strategy
    layers = trace.layers
    if len(layers) > spec.n_cores:
        first_out = layers[spec.n_cores]
        raise MappingError(
            f"chip {spec.name}: layer {first_out.name!r} (layer {first_out.index}) gets no core: the model has "
            f"{len(layers)} layers, each needs a core of its own, but the {spec.rows}x{spec.cols} mesh has "
            f"{spec.n_cores} cores; to fit, use a mesh with at least {len(layers)} cores or a shallower model")
    counts = [1] * len(layers)
    its = 0
    while True:
        its += 1
        m, sched, led = _evaluate(trace, hw, spec, counts, "fit")
        bad = led.overflowing()
        if not bad:
            break
        need, impossible = list(counts), []
        for mem in bad:
            p = m.layer_pos[mem.layer]
            n = led.curves[mem.layer].needed_slices(layers[p].units, spec.sram_bytes)
            if n is None:
                impossible.append(mem)
            else:
                need[p] = max(need[p], n, counts[p] + 1)
        if impossible:
            raise MappingError(_message(spec, m, impossible[0], None))
        if sum(need) > spec.n_cores:
            raise MappingError(_message(spec, m, bad[0], sum(need)))
        counts = need
    m.iterations = its
    if strategy == "balanced":
        bal = _balance(trace, counts, spec.n_cores)
        if bal != counts:
            mb, sb, lb = _evaluate(trace, hw, spec, bal, "balanced")
            if not lb.overflowing():
                mb.iterations = its + 1
                return mb, sb, lb
            m.notes.append("balanced split made a core overflow; kept the fit mapping")
        m.strategy = "balanced"
    return m, sched, led


def map_trace(trace, hw, spec: ChipSpec | None = None) -> Mapping:
    """The mapping ``hw.mapping.strategy`` chooses for this trace (raises MappingError if none fits)."""
    return fit(trace, hw, spec)[0]


def _balance(trace, counts, n_cores) -> list:
    macs = {}
    for o in trace.ops:
        macs[o.layer] = macs.get(o.layer, 0) + o.macs
    counts = list(counts)
    idle = n_cores - sum(counts)
    heap = [(-macs.get(l.index, 0) / counts[p], p) for p, l in enumerate(trace.layers)
            if counts[p] < l.units and macs.get(l.index, 0) > 0]
    heapq.heapify(heap)
    while idle > 0 and heap:
        _, p = heapq.heappop(heap)
        counts[p] += 1
        idle -= 1
        if counts[p] < trace.layers[p].units:
            heapq.heappush(heap, (-macs.get(trace.layers[p].index, 0) / counts[p], p))
    return counts


def _kib(x: float) -> str:
    return f"{x / KIB:.4g} KiB"


def _message(spec, m, mem, cores_needed) -> str:
    """One line: core, layer, categories on it, capacity, and what would make it fit."""
    layer = m.layers[m.layer_pos[mem.layer]]
    n = len(m.slices_of(mem.layer))
    cats = ", ".join(f"{c} {_kib(v)}" for c, v in sorted(mem.at_peak.items(), key=lambda kv: -kv[1]) if v > 0)
    r, c = spec.coord(mem.core)
    head = (f"chip {spec.name}: layer {layer.name!r} (layer {layer.index}, {layer.units} units"
            f"{f', slice {mem.slice} of {n}' if n > 1 else ''}) does not fit core {mem.core} (row {r}, col {c}): "
            f"peak {_kib(mem.peak_bytes)} [{cats}] > {_kib(spec.sram_bytes)} SRAM "
            f"(chip.core.sram_kib={spec.sram_bytes / KIB:g})")
    fixes = []
    if cores_needed is not None:
        fixes.append(f"use a chip with at least {cores_needed} cores (the layers need ~{cores_needed} "
                     f"slices in all, the {spec.rows}x{spec.cols} mesh has {spec.n_cores})")
    else:
        head += ("; splitting cannot help: even at one unit per core the replicated/reduced buffers and the "
                 "unit's share exceed the SRAM")
    w = sum(mem.at_peak[k] for k in _WEIGHTY)
    if w > 0:
        fixes.append(f"use fewer bits (precision.weight_bits / update_bits, or optimizer sgd; weights, master "
                     f"weights and optimizer state are {_kib(w)} here)")
    a = sum(mem.at_peak[k] for k in _PER_SAMPLE)
    if a > 0:
        fixes.append(f"use a smaller training.batch_size / mapping.micro_batch (activations, gradients and "
                     f"NoC buffers are {_kib(a)} here)")
    fixes.append("give cores more SRAM (chip.core.sram_kib)")
    return head + "; to fit: " + ", or ".join(fixes)
