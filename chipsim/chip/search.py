"""``mapping.strategy: search``: layouts between ``fit`` and ``balanced``, the best by ``mapping.objective``.

Why a search: ``fit`` splits a layer only as far as SRAM needs, ``balanced``
gives every idle core to the heaviest layer; neither is the best layout for
a rule in general (a split layer repeats its batch norm and quantization on
every slice, while an unsplit bottleneck stretches the step and, with static
power, every core's leakage). A verdict between rules must compare each at
its best layout, so the mapper looks for it.

The space: for each layer, a number of slices between its ``fit`` count and
its ``balanced`` count (placement stays the snake walk of ``mapping.place``).
A layout is costed as a step is -- schedule, ledger, energy with static power
-- and one that overflows a core is discarded. When the space has at most
``mapping.search_layouts`` layouts it is enumerated; otherwise the search
starts from the best of fit, balanced and points between them, and moves one
layer's count at a time (halfway to a bound, or by one), the busiest layer's
first, taking the first move that improves the objective, until no move does
or the budget (``search_layouts``, ``search_seconds``) is spent. The mapping records how many layouts it costed,
how long it took and whether the enumeration was exhaustive.
"""
from __future__ import annotations

import itertools
import math
import time

from .energy import step_energy

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
    """Costs layouts (slices per layer) once each, within the budget."""

    def __init__(self, trace, hw, spec, offchip, kind, max_layouts, seconds, evaluate):
        self.trace, self.hw, self.spec, self.offchip, self.kind = trace, hw, spec, offchip, kind
        self.evaluate = evaluate   # mapping._evaluate: counts -> (mapping, schedule, ledger)
        self.max_layouts, self.deadline = max_layouts, time.perf_counter() + seconds
        self.seen = {}             # counts -> objective value (inf: overflows)
        self.best = None           # (value, counts, (mapping, schedule, ledger))

    @property
    def spent(self) -> bool:
        return len(self.seen) >= self.max_layouts or time.perf_counter() >= self.deadline

    def cost(self, counts, result=None) -> float:
        counts = tuple(counts)
        if counts in self.seen:
            return self.seen[counts]
        m, sched, led = result or self.evaluate(self.trace, self.hw, self.spec, list(counts), "search",
                                                self.offchip)
        if led.overflowing():
            self.seen[counts] = math.inf
            return math.inf
        en = step_energy(self.trace, self.spec, m, sched.links, sched.n_inst, sched.latency)
        v = objective(self.kind, sched.latency, en.total_pj)
        self.seen[counts] = v
        if self.best is None or v < self.best[0] or (v == self.best[0] and counts < self.best[1]):
            self.best = (v, counts, (m, sched, led))
        return v


def _moves(cur, lo, hi, best):
    """Neighbouring layouts of ``cur``, the busiest layer's first (its slices' busiest core): for each layer,
    halfway to its balanced count, one more slice, halfway back to its fit count, one fewer."""
    m, sched, _ = best
    busy = sched.busy
    order = sorted(range(len(cur)), key=lambda p: -max(busy.get(s.core, 0.0)
                                                        for s in m.slices_of(m.layers[p].index)))
    for p in order:
        for n in dict.fromkeys(((cur[p] + hi[p] + 1) // 2, cur[p] + 1, (cur[p] + lo[p]) // 2, cur[p] - 1)):
            if lo[p] <= n <= hi[p] and n != cur[p]:
                yield cur[:p] + [n] + cur[p + 1:]


def search(trace, hw, spec, fitted, balanced_counts, evaluate):
    """(Mapping, Schedule, Ledger) of the best layout found; ``fitted``: the fit mapping's triple; ``evaluate``:
    ``mapping._evaluate``, passed in so this module does not import the mapping that imports it."""
    t0 = time.perf_counter()
    m0 = fitted[0]
    lo, hi = list(m0.counts), [max(a, b) for a, b in zip(m0.counts, balanced_counts)]
    cfg = hw.mapping
    c = Costed(trace, hw, spec, m0.offchip, cfg.objective, cfg.search_layouts, cfg.search_seconds, evaluate)
    c.cost(lo, fitted)
    size = math.prod(h - l + 1 for l, h in zip(lo, hi))
    exhaustive = size <= cfg.search_layouts
    if exhaustive:
        for counts in itertools.product(*(range(l, h + 1) for l, h in zip(lo, hi))):
            if c.spent:
                break
            c.cost(counts)
        exhaustive = len(c.seen) >= size
    else:
        for a in (1.0, 0.5, 0.25, 0.75):
            if c.spent:
                break
            c.cost([l + round(a * (h - l)) for l, h in zip(lo, hi)])
        while not c.spent:
            cur_v, cur = c.best[0], list(c.best[1])
            for counts in _moves(cur, lo, hi, c.best[2]):
                if c.spent or c.cost(counts) < cur_v:
                    break                       # first improvement: re-rank the layers from the new best
            if c.best[0] >= cur_v:
                break                           # no move improves: a local optimum
    v, counts, (m, sched, led) = c.best
    m.strategy = "search"
    m.iterations = m0.iterations + len(c.seen) - 1
    m.notes = list(m0.notes)
    m.search = {"objective": cfg.objective, "value": v, "layouts": len(c.seen), "space": size,
                "exhaustive": exhaustive, "seconds": time.perf_counter() - t0,
                "stopped_by": None if exhaustive or not c.spent else
                ("layouts" if len(c.seen) >= cfg.search_layouts else "seconds"),
                "fit_counts": lo, "balanced_counts": hi}
    return m, sched, led
