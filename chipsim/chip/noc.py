"""NoC traffic: which core sends how many bytes to which, and link contention.

Why here and not in timing: the *plan* of a send (which slices talk to which,
what fraction of the bytes each pair carries) depends only on the trace and the
mapping, so it is computed once per op; timing then replays it per sample.

Rules (from the trace's ``split`` of the buffers a send reads and writes):
* source ``units``: each source slice sends its share (its units / layer units);
  source ``replicated`` or ``reduce``: the layer's first slice sends everything
  (a ``reduce`` source has already been summed onto it, see ``reduce_flow``).
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
  A step-scope ``reduce`` buffer that sample-scope ops accumulate into (the
  label embedding's gradient) is complete only after the last sample: it is
  reduced once, just before the step-scope send that reads it
  (``reductions_before``).
* the sensor (a send that reads no buffer) sends from the input port's router
  (``chip.noc.input_port``, ``ChipSpec.input_core``), split or not: a first
  layer on that core, unsplit, receives it over 0 hops.
* a send from a layer to itself (``dst_layer == layer``: the loss gradient,
  the reduced embedding gradient) is slice 0 multicasting its copy to the
  layer's other slices; unsplit it moves nothing.

Link model: a transfer (unicast or multicast) reserves every link it uses for
``bytes / link_bytes_per_cycle`` cycles, starting when all of them are free
(first come, first served in simulated time), and arrives
``hops * hop_latency_cycles`` after its last byte left (hops to the farthest
destination for a multicast). Two transfers sharing
a link are therefore serialised on it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit


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
    if is_local_multicast(op):
        others = [(d.core, 1.0) for d in src_sl[1:]]
        return [(src_sl[0].core, others)] if others else []
    if src_buf is None:                      # the sensor: from the input port
        sources = [(mapping.spec.input_core, 1.0)]
    elif src_buf.split == "units":
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


def is_local_multicast(op) -> bool:
    """A send from a layer to its own slices (slice 0 to the others), e.g. the loss gradient."""
    return op.kind == "send" and bool(op.reads) and op.dst_layer == op.layer


def reductions_after(op, trace, mapping) -> list:
    """The reduce buffers summed onto slice 0 after ``op`` writes them: on a split layer, a sample-scope
    partial after every write, a step-scope one after a step-scope (non-send) op's write."""
    if is_local_multicast(op):
        return []
    out = []
    for b in (trace.buffers[x] for x in op.writes):
        if (b.split == "reduce" and len(mapping.slices_of(b.layer)) > 1
                and (b.scope == "sample" or op.scope == "step")):
            out.append(b)
    return out


def reductions_before(op, trace, mapping) -> list:
    """The step-scope reduce buffers summed onto slice 0 just before ``op`` sends them: partials that
    sample-scope ops accumulated over the step (the label embedding's gradient), which a step-scope
    send from the layer to its own slices then multicasts back."""
    if op.scope != "step" or not is_local_multicast(op):
        return []
    b = trace.buffers[op.reads[0]]
    return [b] if b.split == "reduce" and b.scope == "step" and len(mapping.slices_of(b.layer)) > 1 else []


def reduce_flow(layer, mapping):
    """(first slice's core, [other slices' cores]) of a layer's reduction, or None if unsplit."""
    sl = mapping.slices_of(layer)
    return (sl[0].core, [s.core for s in sl[1:]]) if len(sl) > 1 else None


class LinkState(NamedTuple):
    """Links' arrays, as ``link_send`` (and the compiled schedule) reads and updates them in place."""
    free: np.ndarray        # (n_links,) time each link is free again
    ptr: np.ndarray         # (n_flows + 1,) flow f's link ids are ids[ptr[f]:ptr[f + 1]]
    ids: np.ndarray         # link ids of all flows, concatenated
    depth: np.ndarray       # (n_flows,) hops to the farthest destination
    fbytes: np.ndarray      # (n_flows,) bytes sent over the step
    tags: np.ndarray        # (n_tags, 3): bytes, byte-hops, transfer number of the tag's first transfer (-1: none)
    totals: np.ndarray      # (3,): byte-hops, hops (links used, summed over transfers), transfers
    bw: float               # bytes per cycle per link
    lat: float              # cycles per hop


@njit(cache=True)
def link_send(net, fid, tag, t, nbytes):
    """Replay flow ``fid`` with ``nbytes`` ready at t; returns when the farthest destination has it.

    Compiled because the schedule calls it for every transfer of every sample
    (~100,000 times for a 1,000-core mesh); ``Links.send`` calls it too, so the
    rule exists once.
    """
    lo, hi = net.ptr[fid], net.ptr[fid + 1]
    n = hi - lo
    if n == 0 or nbytes <= 0:
        return t
    start = t
    for k in range(lo, hi):
        start = max(start, net.free[net.ids[k]])
    end = start + nbytes / net.bw
    for k in range(lo, hi):
        net.free[net.ids[k]] = end
    net.fbytes[fid] += nbytes
    if net.tags[tag, 2] < 0:
        net.tags[tag, 2] = net.totals[2]
    net.tags[tag, 0] += nbytes
    net.tags[tag, 1] += nbytes * n
    net.totals[0] += nbytes * n
    net.totals[1] += n
    net.totals[2] += 1
    return end + net.depth[fid] * net.lat


class Links:
    """Per-link reservations and traffic accounting over one simulated step.

    A *flow* is a source core and its destinations: the union of their XY
    routes (a multicast tree: a link shared by several routes carries the data
    once). Flows (and tags) are registered once, in Python; replaying them per
    sample is ``link_send`` on the arrays of ``state()``. Per-link bytes are
    distributed from per-flow totals at the end, which keeps the per-transfer
    cost to two short loops over the flow's links.

    Link id = from_core * 4 + direction (0: +col, 1: -col, 2: +row, 3: -row).
    """

    def __init__(self, spec):
        self.spec = spec
        self.bw = spec.link_bytes_per_cycle
        self.lat = spec.hop_latency_cycles
        self.free = np.zeros(spec.n_cores * 4)      # link id -> time it is free again
        self._flows = {}                            # (src, dsts) -> flow id
        self._links = []                            # flow id -> sorted tuple of link ids
        self._depth = []                            # flow id -> hops to the farthest destination
        self._tag_ids = {}                          # tag -> row of the tag table
        self._fbytes = np.zeros(0)
        self._tags = np.zeros((0, 3))
        self._totals = np.zeros(3)
        self._state = None                          # LinkState, rebuilt after a registration

    def link_pair(self, lid: int) -> tuple:
        a, d = divmod(lid, 4)
        return a, a + (1, -1, self.spec.cols, -self.spec.cols)[d]

    def _register(self, key, src_dst_pairs) -> int:
        """Flow id of ``key``: the union of the XY routes of the (src, dst) pairs."""
        fid = self._flows.get(key)
        if fid is None:
            cols = self.spec.cols
            ids = set().union(*(route_ids(cols, s, d) for s, d in src_dst_pairs))
            fid = len(self._links)
            self._flows[key] = fid
            self._links.append(tuple(sorted(ids)))
            self._depth.append(max((self.spec.hops(s, d) for s, d in src_dst_pairs), default=0))
            self._state = None
        return fid

    def flow(self, src: int, dsts) -> int:
        """A multicast (or unicast) flow from ``src`` to every core of ``dsts``."""
        dsts = tuple(dsts)
        return self._register((src, dsts), [(src, d) for d in dsts])

    def gather(self, root: int, srcs) -> int:
        """A reduction flow from ``srcs`` onto ``root``: the union of their routes, summed in the network."""
        srcs = tuple(srcs)
        return self._register(("reduce", root, srcs), [(s, root) for s in srcs])

    def tag_id(self, tag: str) -> int:
        """Row of ``tag`` in the tag table (registered on first use)."""
        k = self._tag_ids.get(tag)
        if k is None:
            k = self._tag_ids[tag] = len(self._tag_ids)
            self._state = None
        return k

    def state(self) -> LinkState:
        """The arrays ``link_send`` works on; accumulators keep their values across registrations."""
        if self._state is None:
            n = len(self._links)
            ptr = np.zeros(n + 1, dtype=np.int64)
            ptr[1:] = np.cumsum([len(x) for x in self._links])
            ids = np.fromiter((l for x in self._links for l in x), dtype=np.int64, count=int(ptr[-1]))
            self._fbytes = np.concatenate([self._fbytes, np.zeros(n - len(self._fbytes))])
            new_tags = np.zeros((len(self._tag_ids) - len(self._tags), 3))
            new_tags[:, 2] = -1
            self._tags = np.concatenate([self._tags, new_tags])
            self._state = LinkState(self.free, ptr, ids, np.asarray(self._depth, dtype=np.int64), self._fbytes,
                                    self._tags, self._totals, float(self.bw), float(self.lat))
        return self._state

    def send(self, t: float, fid: int, nbytes: float, tag: str) -> float:
        """Replay flow ``fid`` with ``nbytes`` ready at t; returns when the farthest destination has it."""
        k = self.tag_id(tag)
        return link_send(self.state(), fid, k, float(t), float(nbytes))

    def transfer(self, t: float, src: int, dst: int, nbytes: float, tag: str) -> float:
        """A unicast from core src to dst ready at t; returns the arrival time."""
        return self.send(t, self.flow(src, (dst,)), nbytes, tag)

    def _by_tag(self, col: int) -> dict:
        """tag -> column ``col`` of the tag table, for tags that carried bytes, in order of first transfer."""
        used = [(self._tags[k, 2], tag, k) for tag, k in self._tag_ids.items()
                if k < len(self._tags) and self._tags[k, 2] >= 0]
        return {tag: float(self._tags[k, col]) for _, tag, k in sorted(used)}

    @property
    def tag_bytes(self) -> dict:
        """tag -> bytes injected at sources."""
        return self._by_tag(0)

    @property
    def byte_hops(self) -> float:
        return float(self._totals[0])

    @property
    def hops(self) -> int:
        """Sum over transfers of the links each used."""
        return int(self._totals[1])

    @property
    def transfers(self) -> int:
        return int(self._totals[2])

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


@lru_cache(maxsize=1 << 16)
def route_ids(cols: int, a: int, b: int) -> tuple:
    """Link ids (see ``Links``) of the XY route from core a to core b: along the row, then the column.

    Arithmetic rather than mapping each link of ``ChipSpec.route`` to its id, because
    a 1,000-core mapping registers ~1,000 multicast flows of ~10 routes each.
    """
    ra, ca = divmod(a, cols)
    rb, cb = divmod(b, cols)
    corner = ra * cols + cb
    x = range(a * 4, corner * 4, 4) if cb >= ca else range(a * 4 + 1, corner * 4 + 1, -4)
    y = range(corner * 4 + 2, b * 4 + 2, 4 * cols) if rb >= ra else range(corner * 4 + 3, b * 4 + 3, -4 * cols)
    return (*x, *y)
