"""Mapping: each layer gets one or more slices (contiguous unit ranges) on distinct cores.

Why one layer per core (a core never holds two layers): the ledger of a core is
then exactly its layer's buffers, an SRAM overflow names one layer, and a
layer's slices run in lock-step without competing with another layer for the
core. The price is that a model needs at least as many cores as layers.

Placement (``Mapping.placement``): slices are laid out layer after layer along
a boustrophedon (snake) walk of the mesh, so consecutive slices -- and the last
slice of layer l and the first of layer l+1 -- are one hop apart. ``row-snake``
walks along the rows (every strategy's layout); ``column-snake`` along the
columns, which packs the used cores into a block a few columns wide instead of
a band a few rows high (``chipsim.chip.placement``; ``mapping.strategy: search`` tries both).
Where a split layer's replicated work runs (``Mapping.shared_work``): on every
slice, or once and multicast (``chipsim.chip.replicas``; search tries both).

Strategies (``mapping.strategy``):
* ``fit``: start with one slice per layer; schedule, build the ledger, and give
  every overflowing layer the fewest slices that make its largest slice fit
  under the liveness just measured; repeat (splitting changes the schedule,
  hence the liveness) until everything fits or the cores run out.
* ``balanced``: the fit mapping, then idle cores go one at a time to the layer
  with the most MACs per slice (throughput). If the faster pipeline makes some
  core overflow, the fit mapping is kept.
* ``search``: layouts between the two, the best by ``mapping.objective``
  (``chipsim.chip.search``).

When no split fits and the chip has an off-chip tier (``chip.offchip``), data
moves off-chip, coldest category first, until the step fits
(``chipsim.chip.offchip``). A refusal names the chip changes that were
re-mapped and fit (``chipsim.chip.advice``).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..errors import MappingError
from .ledger import build_ledger
from .advice import advice
from .offchip import OFFLOAD_ORDER, describe
from .placement import PLACEMENTS, walk
from .replicas import SHARED_WORK
from .spec import ChipSpec
from .timing import schedule

KIB = 1024.0


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
    offchip: frozenset = frozenset()  # (layer index, category) pairs held off-chip (chipsim.chip.offchip)
    search: dict | None = None       # mapping.strategy search: layouts tried, seconds, objective, best value
    offchip_stall: dict = field(default_factory=dict)   # op id -> off-chip stall cycles (set by timing.schedule)
    placement: str = PLACEMENTS[0]   # the walk of the mesh the slices were laid along (PLACEMENTS)
    shared_work: str = SHARED_WORK[0]   # where a split layer's replicated work runs (chipsim.chip.replicas)
    once: frozenset = frozenset()    # ops whose replicated work runs once (set by timing.schedule)

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


def place(layers, counts, spec: ChipSpec, strategy: str = "fit", placement: str = PLACEMENTS[0],
          shared_work: str = SHARED_WORK[0]) -> Mapping:
    """Lay the slices out along the ``placement`` walk, layer after layer."""
    order = walk(spec, placement)
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
    return Mapping(spec=spec, layers=list(layers), slices=slices, strategy=strategy, placement=placement,
                   shared_work=shared_work)


def _evaluate(trace, hw, spec, counts, strategy, offchip=frozenset(), placement=PLACEMENTS[0],
              shared_work=SHARED_WORK[0]):
    m = place(trace.layers, counts, spec, strategy, placement, shared_work)
    m.offchip = frozenset(offchip)
    sched = schedule(trace, spec, m, hw.mapping.micro_batch, hw.training.update)
    return m, sched, build_ledger(trace, m, spec.sram_bytes, sched)


class NoFit(Exception):
    """The fit loop found no mapping: the last mapping tried, the worst core, the cores the split would need
    (None: splitting cannot help)."""

    def __init__(self, mapping, mem, cores_needed):
        super().__init__("no fit")
        self.mapping, self.mem, self.cores_needed = mapping, mem, cores_needed


def fit_counts(trace, hw, spec: ChipSpec, offchip=frozenset()):
    """(Mapping, Schedule, Ledger) of the fewest slices per layer that fit SRAM with ``offchip`` categories
    held off-chip; raises NoFit."""
    layers = trace.layers
    counts = [1] * len(layers)
    its = 0
    while True:
        its += 1
        m, sched, led = _evaluate(trace, hw, spec, counts, "fit", offchip)
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
            raise NoFit(m, impossible[0], None)
        if sum(need) > spec.n_cores:
            raise NoFit(m, bad[0], sum(need))
        counts = need
    m.iterations = its
    return m, sched, led


def _with_offchip(trace, hw, spec, first: NoFit):
    """Fit with data moved off-chip, coldest category first (``offchip.OFFLOAD_ORDER``): a layer that no split
    can fit moves its own next category; when the splits need more cores than the mesh has, the next category
    moves for every layer (each then needs fewer slices). Afterwards each move is undone if the step still
    fits without it. Raises the last NoFit when nothing is left to move."""
    present = {(b.layer, b.category) for b in trace.buffers if b.nbytes > 0}
    steps, off, nf = [], set(), first
    while True:
        if nf.cores_needed is None:             # this layer does not fit at any split: move its own data
            layer = nf.mem.layer
            nxt = next((c for c in OFFLOAD_ORDER if (layer, c) in present and (layer, c) not in off), None)
            step = {(layer, nxt)} if nxt is not None else set()
        else:                                   # too few cores: move a category everywhere
            nxt = next((c for c in OFFLOAD_ORDER if any((l, c) in present and (l, c) not in off
                                                        for l in (x.index for x in trace.layers))), None)
            step = {p for p in present if p[1] == nxt and p not in off} if nxt is not None else set()
        if not step:
            nf.mapping.offchip = frozenset(off)
            raise nf
        steps.append(step)
        off |= step
        try:
            found = fit_counts(trace, hw, spec, frozenset(off))
            break
        except NoFit as again:
            nf = again
    for step in steps[:-1]:                  # keep on-chip whatever fits there once hotter data has moved
        trial = found[0].offchip - step
        try:
            found = fit_counts(trace, hw, spec, trial)
        except NoFit:
            pass
    m, sched, led = found
    if led.offchip_bytes > spec.offchip_bytes:
        raise MappingError(
            f"chip {spec.name}: the off-chip tier would hold {_mib(led.offchip_bytes)} of "
            f"{describe(m.offchip)} but has {_mib(spec.offchip_bytes)} (chip.offchip.capacity_mib="
            f"{spec.offchip_bytes / KIB / KIB:g}); to fit: a larger off-chip memory, or more SRAM per core "
            f"(chip.core.sram_kib)")
    m.notes.append(f"SRAM cannot hold the step: {describe(m.offchip)} placed off-chip "
                   f"({_mib(led.offchip_bytes)} of {_mib(spec.offchip_bytes)})")
    return m, sched, led


def fit(trace, hw, spec: ChipSpec | None = None, advise: bool = True):
    """(Mapping, Schedule, Ledger) of the mapping ``mapping.strategy`` picks; raises MappingError, whose
    ``fixes`` (with ``advise``) are changes checked by re-mapping to make the step fit."""
    spec = spec or ChipSpec.from_hw(hw)
    strategy = hw.mapping.strategy
    layers = trace.layers
    if len(layers) > spec.n_cores:
        first_out = layers[spec.n_cores]
        raise MappingError(
            f"chip {spec.name}: layer {first_out.name!r} (layer {first_out.index}) gets no core: the model has "
            f"{len(layers)} layers, each needs a core of its own, but the {spec.rows}x{spec.cols} mesh has "
            f"{spec.n_cores} cores; to fit, use a mesh with at least {len(layers)} cores or a shallower model")
    try:
        m, sched, led = fit_counts(trace, hw, spec)
    except NoFit as nf:
        try:
            if not spec.has_offchip:
                raise nf
            m, sched, led = _with_offchip(trace, hw, spec, nf)
        except NoFit as nf2:
            fixes = advice(trace, hw, spec, nf2, fit) if advise else []
            exc = MappingError(_message(spec, nf2.mapping, nf2.mem, nf2.cores_needed, fixes))
            exc.fixes = fixes
            raise exc from None
    counts = m.counts
    its = m.iterations
    if strategy == "balanced":
        bal = _balance(trace, counts, spec.n_cores)
        if bal != counts:
            mb, sb, lb = _evaluate(trace, hw, spec, bal, "balanced", m.offchip)
            if not lb.overflowing():
                mb.iterations = its + 1
                mb.notes = list(m.notes)
                return mb, sb, lb
            m.notes.append("balanced split made a core overflow; kept the fit mapping")
        m.strategy = "balanced"
    elif strategy == "search":
        from .search import search
        return search(trace, hw, spec, (m, sched, led), _balance(trace, counts, spec.n_cores), _evaluate)
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


def _mib(x: float) -> str:
    return f"{x / KIB / KIB:.4g} MiB"


def _kib(x: float) -> str:
    return f"{x / KIB:.4g} KiB"


def _message(spec, m, mem, cores_needed, fixes) -> str:
    """One line: core, layer, categories on it, capacity, and the changes that were checked to make it fit."""
    layer = m.layers[m.layer_pos[mem.layer]]
    n = len(m.slices_of(mem.layer))
    cats = ", ".join(f"{c} {_kib(v)}" for c, v in sorted(mem.at_peak.items(), key=lambda kv: -kv[1]) if v > 0)
    r, c = spec.coord(mem.core)
    head = (f"chip {spec.name}: layer {layer.name!r} (layer {layer.index}, {layer.units} units"
            f"{f', slice {mem.slice} of {n}' if n > 1 else ''}) does not fit core {mem.core} (row {r}, col {c}): "
            f"peak {_kib(mem.peak_bytes)} [{cats}] > {_kib(spec.sram_bytes)} SRAM "
            f"(chip.core.sram_kib={spec.sram_bytes / KIB:g})")
    if m.offchip:
        head += f" even with {describe(m.offchip)} off-chip"
    if cores_needed is not None:
        head += (f"; the layers need ~{cores_needed} slices in all, the {spec.rows}x{spec.cols} mesh has "
                 f"{spec.n_cores} cores")
    else:
        head += ("; splitting cannot help: even at one unit per core the replicated/reduced buffers and the "
                 "unit's share exceed the SRAM")
    if not fixes:
        return head + ("; no change of the chip alone (cores, SRAM, an off-chip tier, micro-batch) was found that "
                       "fits; changes of the workload (batch size, bit widths, optimizer) need the engine to "
                       "re-run and were not checked")
    return head + "; each of these was checked by re-mapping and fits: " + ", or ".join(t for t, _ in fixes)
