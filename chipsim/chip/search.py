"""``mapping.strategy: search``: layouts between ``fit`` and ``balanced``, the best by ``mapping.objective``.

Why a search: ``fit`` splits a layer only as far as SRAM needs, ``balanced``
gives every idle core to the heaviest layer; neither is the best layout for
a rule in general (a split layer repeats its batch norm and quantization on
every slice, while an unsplit bottleneck stretches the step and, with static
power, every core's leakage). A verdict between rules must compare each at
its best layout, so the mapper looks for it.

The space, three dimensions: for each layer, a number of slices between its
``fit`` count and its ``balanced`` count; where a split layer's replicated work
(normalisation and quantisation of the input every slice holds) runs -- on
every slice, or once on the first and multicast (``chipsim.chip.replicas``; one
choice for the whole mapping); and the walk the slices are laid along
(``chipsim.chip.placement``: row or column boustrophedon). A layout is costed as a
step is -- schedule, ledger, energy with static power -- and one that overflows
a core is discarded. When the space has at most ``mapping.search_layouts``
layouts it is enumerated; otherwise the search starts from the best of fit,
balanced and points between them (every slice, row walk), then that start
with the other shared-work choice and the other walk, and moves one coordinate
at a time -- one layer's count (halfway to a bound, or by one), the busiest
layer's first, then the other shared-work choice, the other walk -- taking the
first move that improves the objective, until no move does or the budget (``search_layouts``, ``search_seconds``) is spent. The mapping records
how many layouts it costed, how long it took and whether the enumeration was
exhaustive. A layout is ``(counts, shared-work index, placement index)``; ties
go to the smaller, so index 0 (today's every-slice, row walk) wins a tie.
"""
from __future__ import annotations

import itertools
import math
import time

from .energy import step_energy
from .placement import PLACEMENTS
from .replicas import SHARED_WORK

OBJECTIVES = ("latency", "energy", "edp")


def objective(kind: str, latency_cycles: float, energy_pj: float) -> float:
    """The value the search minimises: cycles, pJ, or their product."""
    if kind == "latency":
        return latency_cycles
    if kind == "energy":
        return energy_pj
    if kind == "edp":
        return latency_cycles * energy_pj
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")


class Costed:
    """Costs layouts ((slices per layer), shared-work index, placement index) once each, within the budget."""

    def __init__(self, trace, hw, spec, offchip, kind, max_layouts, seconds, evaluate):
        self.trace, self.hw, self.spec, self.offchip, self.kind = trace, hw, spec, offchip, kind
        self.evaluate = evaluate   # mapping._evaluate: counts -> (mapping, schedule, ledger)
        self.max_layouts, self.deadline = max_layouts, time.perf_counter() + seconds
        self.seen = {}             # counts -> objective value (inf: overflows)
        self.best = None           # (value, counts, (mapping, schedule, ledger))

    @property
    def spent(self) -> bool:
        return len(self.seen) >= self.max_layouts or time.perf_counter() >= self.deadline

    def cost(self, key, result=None) -> float:
        counts, sw, pl = key
        key = counts = (tuple(counts), sw, pl)
        if key in self.seen:
            return self.seen[key]
        m, sched, led = result or self.evaluate(self.trace, self.hw, self.spec, list(key[0]), "search",
                                                self.offchip, PLACEMENTS[pl], SHARED_WORK[sw])
        if led.overflowing():
            self.seen[counts] = math.inf
            return math.inf
        en = step_energy(self.trace, self.spec, m, sched.links, sched.n_inst, sched.latency)
        v = objective(self.kind, sched.latency, en.total_pj)
        self.seen[counts] = v
        if self.best is None or v < self.best[0] or (v == self.best[0] and counts < self.best[1]):
            self.best = (v, counts, (m, sched, led))
        return v


def _toggles(key):
    """The layouts of ``key`` with the other shared-work choice (where a layer is split) and the other walk."""
    cur, sw, pl = list(key[0]), key[1], key[2]
    if any(n > 1 for n in cur):
        yield cur, 1 - sw, pl
    yield cur, sw, 1 - pl


def _moves(key, lo, hi, best):
    """Neighbouring layouts of ``key``: by layer, the busiest first (its slices' busiest core): halfway to its
    balanced count, one more slice, halfway back to its fit count, one fewer; then ``_toggles``."""
    cur, sw, pl = list(key[0]), key[1], key[2]
    m, sched, _ = best
    busy = sched.busy
    order = sorted(range(len(cur)), key=lambda p: -max(busy.get(s.core, 0.0)
                                                        for s in m.slices_of(m.layers[p].index)))
    for p in order:
        for n in dict.fromkeys(((cur[p] + hi[p] + 1) // 2, cur[p] + 1, (cur[p] + lo[p]) // 2, cur[p] - 1)):
            if lo[p] <= n <= hi[p] and n != cur[p]:
                yield cur[:p] + [n] + cur[p + 1:], sw, pl
    yield from _toggles(key)


def search(trace, hw, spec, fitted, balanced_counts, evaluate):
    """(Mapping, Schedule, Ledger) of the best layout found; ``fitted``: the fit mapping's triple; ``evaluate``:
    ``mapping._evaluate``, passed in so this module does not import the mapping that imports it."""
    t0 = time.perf_counter()
    m0 = fitted[0]
    lo, hi = list(m0.counts), [max(a, b) for a, b in zip(m0.counts, balanced_counts)]
    cfg = hw.mapping
    c = Costed(trace, hw, spec, m0.offchip, cfg.objective, cfg.search_layouts, cfg.search_seconds, evaluate)
    c.cost((lo, 0, 0), fitted)
    size = space_size(lo, hi)
    exhaustive = size <= cfg.search_layouts
    if exhaustive:
        for key in layouts(lo, hi):
            if c.spent:
                break
            c.cost(key)
        exhaustive = len(c.seen) >= size
    else:
        for a in (1.0, 0.5, 0.25, 0.75):
            if c.spent:
                break
            c.cost(([l + round(a * (h - l)) for l, h in zip(lo, hi)], 0, 0))
        for key in list(_toggles(c.best[1])):   # the best start where its replicated work runs, and walked
            if c.spent:                         # the other way, before its counts move
                break
            c.cost(key)
        while not c.spent:
            cur_v, cur = c.best[0], c.best[1]
            for key in _moves(cur, lo, hi, c.best[2]):
                if c.spent or c.cost(key) < cur_v:
                    break                       # first improvement: re-rank the layers from the new best
            if c.best[0] >= cur_v:
                break                           # no move improves: a local optimum
    v, (counts, sw, pl), (m, sched, led) = c.best
    m.strategy = "search"
    m.iterations = m0.iterations + len(c.seen) - 1
    m.notes = list(m0.notes)
    m.search = {"objective": cfg.objective, "value": v, "layouts": len(c.seen), "space": size,
                "exhaustive": exhaustive, "seconds": time.perf_counter() - t0,
                "stopped_by": None if exhaustive or not c.spent else
                ("layouts" if len(c.seen) >= cfg.search_layouts else "seconds"),
                "fit_counts": lo, "balanced_counts": hi, "counts": list(counts),
                "shared_work": SHARED_WORK[sw], "placement": PLACEMENTS[pl]}
    return m, sched, led


def layouts(lo, hi):
    """Every layout between the bounds: counts x shared work x placement; ``once`` only where some layer is
    split (elsewhere it is the every-slice layout again)."""
    for pl in range(len(PLACEMENTS)):
        for counts in itertools.product(*(range(l, h + 1) for l, h in zip(lo, hi))):
            for sw in range(len(SHARED_WORK) if any(n > 1 for n in counts) else 1):
                yield counts, sw, pl


def space_size(lo, hi) -> int:
    """How many layouts ``layouts`` yields."""
    n = math.prod(h - l + 1 for l, h in zip(lo, hi))
    unsplit = 1 if all(l == 1 for l in lo) else 0     # the one all-ones count vector has no once variant
    return (n * len(SHARED_WORK) - unsplit * (len(SHARED_WORK) - 1)) * len(PLACEMENTS)
