"""NoC traffic: which core sends how many bytes to which, and link contention.

Why here and not in timing: the *plan* of a send (which slices talk to which,
what fraction of the bytes each pair carries) depends only on the trace and the
mapping, so it is computed once per op; timing then replays it per sample.

Rules (from the trace's ``split`` of the buffers a send reads and writes):
* source ``units``: each source slice sends its share (its units / layer units);
  source ``replicated`` or ``reduce``: the layer's first slice sends everything
  (a ``reduce`` source has already been summed onto it, see ``reduce_plan``).
* destination ``replicated``: every destination slice receives the full bytes:
  one multicast per source slice along the union of the XY routes (a link
  shared by several destinations' routes carries the bytes once);
  ``units``: slice j receives fraction units_j / units of each source part
  (all-to-all, the split axes of two layers are unrelated);
  ``reduce``: the first slice receives everything.
* a ``reduce`` buffer with n > 1 slices: after each write, slices 1..n-1 send
  their full-size partial to slice 0 (tag ``reduce``), summed on the way
  (in-network / chain reduction: every link of the union of their XY routes
  carries one partial's bytes once; arrival after the farthest slice's hops).

Link model: a transfer (unicast or multicast) reserves every link it uses for
``bytes / link_bytes_per_cycle`` cycles, starting when all of them are free
(first come, first served in simulated time), and arrives
``hops * hop_latency_cycles`` after its last byte left (hops to the farthest
destination for a multicast). Two transfers sharing
a link are therefore serialised on it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def send_plan(op, trace, mapping) -> list:
    """[(src_core, dst_core, fraction of op bytes)] for one ``send`` op (one entry per receiver)."""
    return [(sc, dc, fr) for sc, dsts in send_flows(op, trace, mapping) for dc, fr in dsts]


def send_flows(op, trace, mapping) -> list:
    """[(src_core, [(dst_core, fraction)])]: one multicast (or unicast) per sending slice.

    A replicated destination gets one multicast per source slice carrying that
    slice's part; a units-split destination gets unicasts of different parts.
    """
    src_buf = trace.buffers[op.reads[0]] if op.reads else None
    dst_buf = trace.buffers[op.writes[0]] if op.writes else None
    src_sl = mapping.slices_of(op.layer)
    dst_layer = op.dst_layer if op.dst_layer is not None else (dst_buf.layer if dst_buf else op.layer)
    dst_sl = mapping.slices_of(dst_layer)
    if src_buf is None or src_buf.split == "units":
        sources = [(s.core, s.fraction) for s in src_sl]
    else:
        sources = [(src_sl[0].core, 1.0)]
    dsplit = dst_buf.split if dst_buf is not None else "replicated"
    out = []
    for sc, sf in sources:
        if dsplit == "replicated":
            out.append((sc, [(d.core, sf) for d in dst_sl]))
        elif dsplit == "units":
            out.extend((sc, [(d.core, sf * d.fraction)]) for d in dst_sl)
        else:
            out.append((sc, [(dst_sl[0].core, sf)]))
    return out


def reduce_plan(layer, mapping) -> list:
    """[(src_core, dst_core, 1.0)]: every slice but the first sends its partial to the first."""
    sl = mapping.slices_of(layer)
    return [(s.core, sl[0].core, 1.0) for s in sl[1:]]


def reduce_flow(layer, mapping):
    """(first slice's core, [other slices' cores]) of a layer's reduction, or None if unsplit."""
    sl = mapping.slices_of(layer)
    return (sl[0].core, [s.core for s in sl[1:]]) if len(sl) > 1 else None


class Links:
    """Per-link reservations and traffic accounting over one simulated step.

    A *flow* is a source core and its destinations: the union of their XY
    routes (a multicast tree: a link shared by several routes carries the data
    once). Flows are registered once and replayed per sample, and per-link
    bytes are distributed from per-flow totals at the end, which keeps the
    per-transfer cost to two short loops over the flow's links.
    """

    def __init__(self, spec):
        self.spec = spec
        self.bw = spec.link_bytes_per_cycle
        self.lat = spec.hop_latency_cycles
        self.free = [0.0] * (spec.n_cores * 4)     # link id -> time it is free again
        self._flows = {}                            # (src, dsts) -> flow id
        self._links = []                            # flow id -> np.array of link ids
        self._depth = []                            # flow id -> hops to the farthest destination
        self._fbytes = []                           # flow id -> bytes sent over the step
        self.tag_bytes = defaultdict(float)         # tag -> bytes injected at sources
        self.tag_byte_hops = defaultdict(float)
        self.byte_hops = 0.0
        self.hops = 0                               # sum over transfers of links used
        self.transfers = 0

    def _link_id(self, a: int, b: int) -> int:
        cols = self.spec.cols
        d = {1: 0, -1: 1, cols: 2, -cols: 3}[b - a]
        return a * 4 + d

    def link_pair(self, lid: int) -> tuple:
        a, d = divmod(lid, 4)
        return a, a + (1, -1, self.spec.cols, -self.spec.cols)[d]

    def flow(self, src: int, dsts) -> int:
        key = (src, tuple(dsts))
        fid = self._flows.get(key)
        if fid is None:
            ids = sorted({self._link_id(a, b) for d in dsts for a, b in self.spec.route(src, d)})
            fid = len(self._links)
            self._flows[key] = fid
            self._links.append(tuple(ids))
            self._depth.append(max((self.spec.hops(src, d) for d in dsts), default=0))
            self._fbytes.append(0.0)
        return fid

    def gather(self, root: int, srcs) -> int:
        """A reduction flow from ``srcs`` onto ``root``: the union of their routes, summed in the network."""
        key = ("reduce", root, tuple(srcs))
        fid = self._flows.get(key)
        if fid is None:
            ids = sorted({self._link_id(a, b) for s in srcs for a, b in self.spec.route(s, root)})
            fid = len(self._links)
            self._flows[key] = fid
            self._links.append(tuple(ids))
            self._depth.append(max((self.spec.hops(s, root) for s in srcs), default=0))
            self._fbytes.append(0.0)
        return fid

    def send(self, t: float, fid: int, nbytes: float, tag: str) -> float:
        """Replay flow ``fid`` with ``nbytes`` ready at t; returns when the farthest destination has it."""
        idx = self._links[fid]
        n = len(idx)
        if n == 0 or nbytes <= 0:
            return t
        free = self.free
        start = t
        for l in idx:
            if free[l] > start:
                start = free[l]
        end = start + nbytes / self.bw
        for l in idx:
            free[l] = end
        self._fbytes[fid] += nbytes
        self.tag_bytes[tag] += nbytes
        self.tag_byte_hops[tag] += nbytes * n
        self.byte_hops += nbytes * n
        self.hops += n
        self.transfers += 1
        return end + self._depth[fid] * self.lat

    def transfer(self, t: float, src: int, dst: int, nbytes: float, tag: str) -> float:
        """A unicast from core src to dst ready at t; returns the arrival time."""
        return self.send(t, self.flow(src, (dst,)), nbytes, tag)

    @property
    def bytes(self) -> dict:
        """(from_core, to_core) -> bytes carried over the step."""
        acc = np.zeros(len(self.free))
        for idx, b in zip(self._links, self._fbytes):
            if b:
                acc[list(idx)] += b
        return {self.link_pair(int(l)): float(acc[l]) for l in np.nonzero(acc)[0]}

    @property
    def busy(self) -> dict:
        """(from_core, to_core) -> cycles the link was occupied."""
        return {k: v / self.bw for k, v in self.bytes.items()}
