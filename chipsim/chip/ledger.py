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
* ``sample``: one copy per micro-batch instance, live from
  the earliest start to the latest end of that instance's touching ops in the
  timing schedule (an op that only reads it releases it when its compute ends;
  one that writes it holds it until its result is delivered, e.g. reduced);
  bytes = nbytes / samples * samples in the instance.
The GPU-style measure (everything of the batch resident in one pool) does
not depend on a chip at all and is ``chipsim.chip.pool``.
The (layer, category) pairs the mapping placed off-chip (``chipsim.chip.offchip``)
leave the layer's cores' ledgers and are held once, at the layer's peak, off-chip.
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
    cores: dict                      # core id -> CoreMemory
    curves: dict = field(repr=False, default_factory=dict)  # layer index -> LayerCurve (on-chip part)
    offchip_by_category: dict = field(default_factory=dict)   # category -> bytes held off-chip (one copy)

    @property
    def offchip_bytes(self) -> float:
        return float(sum(self.offchip_by_category.values()))

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


def _touch_pairs(trace):
    """(buffer, op, op writes it) for every op touching a non-persistent buffer, grouped by buffer id."""
    pairs = []
    for o in trace.ops:
        w = set(o.writes)
        pairs += [(b, o.id, b in w) for b in set(o.reads) | w if trace.buffers[b].scope != "persistent"]
    pairs.sort(key=lambda p: (p[0], p[1]))
    a = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2].astype(bool)


def _lifetimes(trace, sched):
    """Every touched non-persistent buffer's copies: (buffer ids, copies, t0, t1, bytes).

    One row per buffer, in id order; t0, t1, bytes are (n_buffers, width)
    arrays of which the first ``copies[row]`` columns are real: the
    micro-batch instances of a ``sample`` buffer, else the single copy in column 0.
    """
    bufs, ops, writes = _touch_pairs(trace)
    ids, first = np.unique(bufs, return_index=True)
    nbytes = np.array([float(trace.buffers[b].nbytes) for b in ids])
    t0 = np.minimum.reduceat(sched.start[ops], first, axis=0)
    # a writer holds a buffer until its result is delivered, a reader until its compute ends
    t1 = np.maximum.reduceat(np.where(writes[:, None], sched.end[ops], sched.cend[ops]), first, axis=0)
    nb = nbytes[:, None] / max(trace.samples, 1) * np.asarray(sched.groups, dtype=float)
    step = np.array([trace.buffers[b].scope == "step" for b in ids], dtype=bool)
    t0[step, 0], t1[step, 0], nb[step, 0] = t0[step].min(axis=1), t1[step].max(axis=1), nbytes[step]
    return ids, np.where(step, 1, t0.shape[1]), t0, t1, nb


def _events(trace, sched, lay, col):
    """Allocation (+bytes at t0) and free (-bytes at t1) events of every buffer copy, sorted by
    (layer, time, frees before allocations, buffer order): (layer, time, column, bytes) arrays.

    t1 is nudged past t0 so that a zero-length lifetime still counts at its instant.
    """
    ids, copies, t0, t1, nb = _lifetimes(trace, sched)
    t1 = np.where(t1 > t0, t1, np.nextafter(t0, np.inf))
    width = t0.shape[1]
    row, copy = np.nonzero(np.arange(width) < copies[:, None])
    ev_row = np.concatenate([row, row])
    ev_time = np.concatenate([t0[row, copy], t1[row, copy]])
    ev_alloc = np.repeat([1, 0], len(row))
    ev_bytes = np.concatenate([nb[row, copy], -nb[row, copy]])
    ev_seq = np.concatenate([2 * row * width + copy, (2 * row + 1) * width + copy])   # buffer order
    ev_layer = lay[ids][ev_row]
    order = np.lexsort((ev_seq, ev_alloc, ev_time, ev_layer))
    return ev_layer[order], ev_time[order], col[ids][ev_row][order], ev_bytes[order]


def layer_curves(trace, sched) -> dict:
    """LayerCurve per layer index, over the timing schedule ``sched`` (timing.Schedule).

    Vectorised over buffers, because the mapper rebuilds the curves after
    every split: the events of all layers are built and sorted at once; a
    cumulative sum per layer gives the live bytes after each event.
    """
    pos = {l.index: p for p, l in enumerate(trace.layers)}
    B = trace.buffers
    lay = np.array([pos[b.layer] for b in B], dtype=np.int64)
    col = np.array([_CI[b.category] * 2 + (b.split != "units") for b in B], dtype=np.int64)   # units | fixed
    persistent = np.array([b.scope == "persistent" for b in B], dtype=bool)
    base = np.zeros((len(pos), 2 * _NC))
    np.add.at(base, (lay[persistent], col[persistent]), np.array([float(b.nbytes) for b in B])[persistent])

    ev_layer, ev_time, ev_col, ev_bytes = _events(trace, sched, lay, col)
    bounds = np.searchsorted(ev_layer, np.arange(len(pos) + 1))
    curves = {}
    for l, p in pos.items():
        lo, hi = bounds[p], bounds[p + 1]
        if lo == hi:
            curves[l] = LayerCurve(np.zeros(1), base[p, 0::2][None, :].copy(), base[p, 1::2][None, :].copy())
            continue
        delta = np.zeros((hi - lo, 2 * _NC))
        delta[np.arange(hi - lo), ev_col[lo:hi]] = ev_bytes[lo:hi]
        live = np.cumsum(delta, axis=0)
        live = np.maximum(live, 0.0)   # guards float dust from +b/-b pairs
        curves[l] = LayerCurve(ev_time[lo:hi], live[:, 0::2] + base[p, 0::2], live[:, 1::2] + base[p, 1::2])
    return curves


def _split_offchip(curves: dict, offchip) -> tuple:
    """(on-chip curves, off-chip bytes by category): the (layer, category) pairs in ``offchip`` leave the
    layer's cores; off-chip, each layer holds one copy of them (no per-slice replica) at its own peak."""
    by_cat = {}
    if not offchip:
        return curves, by_cat
    out = dict(curves)
    for li, cv in curves.items():
        cats = sorted(c for l, c in offchip if l == li)
        if not cats:
            continue
        cols = [_CI[c] for c in cats]
        both = cv.units[:, cols] + cv.fixed[:, cols]
        k = int(np.argmax(both.sum(axis=1)))
        for c, v in zip(cats, both[k]):
            by_cat[c] = by_cat.get(c, 0.0) + float(v)
        units, fixed = cv.units.copy(), cv.fixed.copy()
        units[:, cols] = 0.0
        fixed[:, cols] = 0.0
        out[li] = LayerCurve(cv.times, units, fixed)
    return out, by_cat


def build_ledger(trace, mapping, capacity: int, sched) -> Ledger:
    curves, off = _split_offchip(layer_curves(trace, sched), getattr(mapping, "offchip", frozenset()))
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
    return Ledger(capacity=capacity, cores=cores, curves=curves, offchip_by_category=off)
