"""Memory ledger: per core and per SRAM category, the peak of live bytes.

Why liveness from the schedule: the trace says *which* ops touch a buffer
(dataflow liveness), the schedule says *when*. A rule that keeps activations
for a backward pass that returns late (BP) therefore holds many samples' copies
at once, one that consumes them right away (DF-R) holds about one -- and no
line here knows which rule produced the trace.

Lifetimes (intervals are half-open [start, end): a buffer freed at t and one
allocated at t never coexist; a zero-length lifetime still counts at its instant):
* ``persistent``: always live.
* ``step``: from the first start of an op touching it to the last end of one.
* ``sample``, ``streaming`` mode: one copy per micro-batch instance, live from
  the earliest start to the latest end of that instance's touching ops in the
  timing schedule (an op that only reads it releases it when its compute ends;
  one that writes it holds it until its result is delivered, e.g. reduced);
  bytes = nbytes / samples * samples in the instance.
* ``sample``, ``whole-batch`` mode (the GPU-style measurement): the whole
  batch's nbytes are live from the first to the last touching op in program
  order (time = op index); ``step`` buffers likewise.
Bytes land on a layer's slices by ``split``: ``units`` in proportion to the
slice's units, ``replicated``/``reduce`` in full on every slice. A layer owns
its cores exclusively (see ``mapping``), so a core's ledger is its layer's
buffers only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..trace import CATEGORIES

_NC = len(CATEGORIES)
_CI = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass
class LayerCurve:
    """Live bytes of one layer over time, before splitting: units-split and fixed parts per category."""
    times: np.ndarray       # (n,) event times (one row per event, in order)
    units: np.ndarray       # (n, n_categories) live bytes of units-split buffers (whole layer)
    fixed: np.ndarray       # (n, n_categories) live bytes of replicated/reduce buffers (per slice)

    def on_slice(self, fraction: float):
        """(peak bytes, row of the peak, per-category at peak, per-category maxima) for one slice."""
        per = self.units * fraction + self.fixed
        tot = per.sum(axis=1)
        k = int(np.argmax(tot))
        return float(tot[k]), k, per[k], per.max(axis=0)

    def needed_slices(self, units: int, capacity: float):
        """Fewest slices (by units) so the largest slice fits ``capacity``, or None if none does."""
        U, R = self.units.sum(axis=1), self.fixed.sum(axis=1)

        def fits(n):
            return float(np.max(U * (math.ceil(units / n) / units) + R)) <= capacity
        if not fits(units):
            return None
        lo, hi = 1, units
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo


@dataclass
class CoreMemory:
    core: int
    layer: int
    slice: int
    peak_bytes: float
    peak_time: float
    at_peak: dict           # category -> bytes live at the time of this core's peak
    max_by_category: dict   # category -> its own maximum over the step


@dataclass
class Ledger:
    capacity: int                    # bytes of SRAM per core
    mode: str
    cores: dict                      # core id -> CoreMemory
    curves: dict = field(repr=False, default_factory=dict)  # layer index -> LayerCurve

    @property
    def peak_core(self) -> int:
        return max(self.cores, key=lambda c: self.cores[c].peak_bytes)

    @property
    def peak_bytes(self) -> float:
        return self.cores[self.peak_core].peak_bytes if self.cores else 0.0

    def overflowing(self) -> list:
        """CoreMemory of every core whose peak exceeds the SRAM, worst first."""
        bad = [m for m in self.cores.values() if m.peak_bytes > self.capacity]
        return sorted(bad, key=lambda m: -m.peak_bytes)

    def totals(self) -> dict:
        """Per category: the sum over cores of each core's category at its peak (chip-wide footprint)."""
        out = {c: 0.0 for c in CATEGORIES}
        for m in self.cores.values():
            for c, v in m.at_peak.items():
                out[c] += v
        return out

    def total_peak_bytes(self) -> float:
        return float(sum(m.peak_bytes for m in self.cores.values()))


def _touchers(trace):
    """Per buffer: (ops touching it, ops writing it)."""
    t = [([], []) for _ in trace.buffers]
    for o in trace.ops:
        for b in set(o.reads) | set(o.writes):
            t[b][0].append(o.id)
        for b in set(o.writes):
            t[b][1].append(o.id)
    return t


def _last_use(sched, T, W):
    """Per instance: the latest end among touchers (delivery for writers, compute end for readers)."""
    R = [o for o in T if o not in W]
    ends = [sched.end[W].max(axis=0)] if W else []
    if R:
        ends.append(sched.cend[R].max(axis=0))
    return np.maximum.reduce(ends) if len(ends) > 1 else ends[0]


def layer_curves(trace, mode: str, sched=None) -> dict:
    """LayerCurve per layer index. ``sched`` (timing.Schedule) is needed in streaming mode."""
    S = max(trace.samples, 1)
    touch = _touchers(trace)
    const = {l.index: np.zeros((2, _NC)) for l in trace.layers}
    ev = {l.index: ([], [], [], []) for l in trace.layers}   # times, is_alloc, column, bytes
    if mode == "streaming":
        groups = np.asarray(sched.groups, dtype=float)
    for b in trace.buffers:
        fixed = 0 if b.split == "units" else 1
        col = _CI[b.category] * 2 + fixed
        if b.scope == "persistent":
            const[b.layer][fixed, _CI[b.category]] += b.nbytes
            continue
        T, W = touch[b.id]
        if not T:
            continue
        if mode == "whole-batch":
            t0 = np.array([float(min(T))])
            t1 = np.array([float(max(T) + 1)])
            nb = np.array([float(b.nbytes)])
        elif b.scope == "step":
            t0 = np.array([sched.start[T].min()])
            t1 = np.array([_last_use(sched, T, W).max()])
            nb = np.array([float(b.nbytes)])
        else:
            t0 = sched.start[T].min(axis=0)
            t1 = _last_use(sched, T, W)
            nb = b.nbytes / S * groups
        t1 = np.where(t1 > t0, t1, np.nextafter(t0, np.inf))
        times, alloc, cols, nbs = ev[b.layer]
        times += [t0, t1]
        alloc += [np.ones(len(t0)), np.zeros(len(t1))]
        cols += [np.full(len(t0), col), np.full(len(t1), col)]
        nbs += [nb, -nb]
    curves = {}
    for li, (times, alloc, cols, nbs) in ev.items():
        base = const[li]
        if not times:
            curves[li] = LayerCurve(np.zeros(1), base[0][None, :].copy(), base[1][None, :].copy())
            continue
        times, alloc = np.concatenate(times), np.concatenate(alloc)
        cols, nbs = np.concatenate(cols).astype(int), np.concatenate(nbs)
        order = np.lexsort((alloc, times))
        delta = np.zeros((len(times), 2 * _NC))
        delta[np.arange(len(times)), cols[order]] = nbs[order]
        live = np.cumsum(delta, axis=0)
        live = np.maximum(live, 0.0)   # guards float dust from +b/-b pairs
        curves[li] = LayerCurve(times[order], live[:, 0::2] + base[0], live[:, 1::2] + base[1])
    return curves


def build_ledger(trace, mapping, capacity: int, mode: str, sched=None) -> Ledger:
    curves = layer_curves(trace, mode, sched)
    cores = {}
    for li, curve in curves.items():
        cache = {}
        for s in mapping.slices_of(li):
            if s.fraction not in cache:
                cache[s.fraction] = curve.on_slice(s.fraction)
            peak, k, at, mx = cache[s.fraction]
            cores[s.core] = CoreMemory(core=s.core, layer=li, slice=s.index, peak_bytes=peak,
                                       peak_time=float(curve.times[k]),
                                       at_peak={c: float(at[i]) for i, c in enumerate(CATEGORIES)},
                                       max_by_category={c: float(mx[i]) for i, c in enumerate(CATEGORIES)})
    return Ledger(capacity=capacity, mode=mode, cores=cores, curves=curves)
