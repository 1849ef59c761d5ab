"""One training step's schedule as a Chrome trace-event file, for ui.perfetto.dev and chrome://tracing.

Why: ``gantt.png`` shows 48 cores at one zoom; a real schedule has thousands
of op instances and transfers, and the question is usually "why does this
core wait?". The trace-event viewer zooms, searches, and follows an arrow
from a transfer to the op that consumed it. The file is written from the
very schedule ``gantt.png`` draws (``ChipReport.gantt_rows``), so the two
never disagree.

Layout (``ph`` is the trace-event phase):

* process 1, "cores": one track (thread) per used core, named ``core 7 (1,3)
  · L2 conv2``; every op instance is a complete slice (``"X"``) of its kind,
  with ``args``: ``macs`` and ``work_pj`` (the energy of its kernels, from the
  chip's energy tables) done by *this* slice in *this* instance, the bytes it
  reads and writes, its layer, op and sample (micro-batch instance);
* process 2, "NoC links": one track per directed mesh link that carried data,
  named ``(r,c)->(r,c)``; every transfer (send or reduction) occupies each
  link of its XY route for ``bytes / link_bytes_per_cycle`` cycles, replayed
  first come, first served in simulated time as ``noc.Links`` does; ``args``:
  bytes, tag, source and destination cores;
* every transfer is also a flow arrow (``"s"`` -> ``"f"``) from the op on the
  source core that produced its data to the next op on each destination core.

Times are microseconds at the chip's clock (``ts``/``dur``, as the format
wants); ``args.cycles`` keeps the cycles. Only the busy time of op slices is on
core tracks, so a core's summed slice durations are its ``schedule.busy``.
"""
from __future__ import annotations

import bisect
import json

from .atomic import atomic_file
from .chip.noc import Links, reduce_flow, reductions_after, reductions_before, route_ids, send_flows

CORES_PID, LINKS_PID = 1, 2
NAME = "schedule.perfetto.json"


def _transfers(chip) -> list:
    """[(ready time, bytes, tag, src core, dst cores, route link ids)] of every send and reduction."""
    tr, mp, sch, spec = chip.trace, chip.mapping, chip.schedule, chip.spec
    S = max(tr.samples, 1)
    out = []
    for o in tr.ops:
        insts = [0] if o.scope == "step" else range(sch.n_inst)
        for b in reductions_before(o, tr, mp):
            root, srcs = reduce_flow(b.layer, mp)
            ids = sorted(set().union(*(route_ids(spec.cols, s, root) for s in srcs)))
            out.append((float(sch.start[o.id, 0]), float(b.nbytes), "reduce", srcs[0], (root,), ids, o.id, 0))
        if o.kind == "send":
            for sc, dsts in send_flows(o, tr, mp):
                cores = tuple(d for d, _ in dsts)
                ids = sorted(set().union(*(route_ids(spec.cols, sc, d) for d in cores)))
                for i in insts:
                    nb = o.nbytes if o.scope == "step" else o.nbytes / S * sch.groups[i]
                    out.append((float(sch.start[o.id, i]), nb * dsts[0][1], o.tag or "untagged", sc, cores, ids,
                                o.id, i))
        for b in reductions_after(o, tr, mp):
            root, srcs = reduce_flow(b.layer, mp)
            ids = sorted(set().union(*(route_ids(spec.cols, s, root) for s in srcs)))
            for i in insts:
                n = S if o.scope == "step" else sch.groups[i]
                nb = b.nbytes / S * n if b.scope == "sample" else b.nbytes
                for s in srcs:
                    out.append((float(sch.cend[o.id, i]), nb, "reduce", s, (root,), ids, o.id, i))
                    break                        # one in-network reduction: the union of routes, carried once
    out.sort(key=lambda t: (t[0], t[6], t[7]))
    return out


def events(chip, title: str = "") -> dict:
    """The trace-event document (a dict ready for ``json.dump``) of ``chip``'s schedule."""
    spec, tr, mp, sch = chip.spec, chip.trace, chip.mapping, chip.schedule
    us = spec.cycles_to_us
    S = max(tr.samples, 1)
    slice_of = {s.core: s for layer in mp.layers for s in mp.slices_of(layer.index)}
    name_of = {layer.index: layer.name for layer in mp.layers}
    ev = [{"ph": "M", "pid": CORES_PID, "name": "process_name", "args": {"name": f"{spec.name}: cores"}},
          {"ph": "M", "pid": LINKS_PID, "name": "process_name", "args": {"name": f"{spec.name}: NoC links"}},
          {"ph": "M", "pid": CORES_PID, "name": "process_sort_index", "args": {"sort_index": 0}},
          {"ph": "M", "pid": LINKS_PID, "name": "process_sort_index", "args": {"sort_index": 1}}]
    for core, s in sorted(slice_of.items()):
        ev.append({"ph": "M", "pid": CORES_PID, "tid": core, "name": "thread_name",
                   "args": {"name": f"core {core} ({s.coord[0]},{s.coord[1]}) · L{s.layer} {name_of[s.layer]}"}})
        ev.append({"ph": "M", "pid": CORES_PID, "tid": core, "name": "thread_sort_index",
                   "args": {"sort_index": core}})
    per_core = {}                                 # core -> sorted [(start, end)] for binding flow arrows
    for r in chip.gantt_rows():                   # the rows gantt.png draws
        per_core.setdefault(r["core"], []).append((r["start"], r["end"]))
        o = tr.ops[r["op_id"]]
        sl = slice_of[r["core"]]
        share = 1.0 if r["instance"] is None else sch.groups[r["instance"]] / S
        macs, pj, rd, wr = _slice_work(o, sl, share, tr, spec)
        ev.append({"ph": "X", "pid": CORES_PID, "tid": r["core"], "name": f"{r['kind']}: {r['op']}",
                   "cat": r["kind"], "ts": us(r["start"]), "dur": us(r["end"] - r["start"]),
                   "args": {"layer": r["layer"], "op": r["op"], "kind": r["kind"],
                            "instance": r["instance"], "macs": macs, "work_pj": pj, "bytes_read": rd,
                            "bytes_written": wr, "cycles": r["end"] - r["start"]}})
    for spans in per_core.values():
        spans.sort()
    starts = {c: [a for a, _ in spans] for c, spans in per_core.items()}
    free, seen_links, flow_id = {}, set(), 0
    links = Links(spec)
    for t, nb, tag, src, dsts, ids, _, _ in _transfers(chip):
        if nb <= 0 or not ids:
            continue
        t0 = max([t] + [free.get(lid, 0.0) for lid in ids])
        dur = nb / spec.link_bytes_per_cycle
        for lid in ids:
            free[lid] = t0 + dur
            if lid not in seen_links:
                seen_links.add(lid)
                a, b = links.link_pair(lid)
                ev.append({"ph": "M", "pid": LINKS_PID, "tid": lid, "name": "thread_name",
                           "args": {"name": f"{spec.coord(a)}->{spec.coord(b)}"}})
            ev.append({"ph": "X", "pid": LINKS_PID, "tid": lid, "name": tag, "cat": "noc", "ts": us(t0),
                       "dur": us(dur), "args": {"bytes": nb, "tag": tag, "src_core": src, "dst_cores": list(dsts),
                                                "cycles": dur}})
        arrive = t0 + dur + max(spec.hops(src, d) for d in dsts) * spec.hop_latency_cycles
        at = _bound(per_core, starts, src, t)
        for d in dsts:
            nxt = _next(per_core, starts, d, arrive)
            if at is None or nxt is None:
                continue
            flow_id += 1
            ev.append({"ph": "s", "pid": CORES_PID, "tid": src, "id": flow_id, "name": tag, "cat": "transfer",
                       "ts": us(at)})
            ev.append({"ph": "f", "bp": "e", "pid": CORES_PID, "tid": d, "id": flow_id, "name": tag,
                       "cat": "transfer", "ts": us(nxt)})
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "otherData": {"title": title, "chip": spec.name, "clock_mhz": spec.clock_mhz, "samples": tr.samples,
                          "latency_us": chip.latency_us, "time_unit": "microseconds at the chip's clock"}}


def _slice_work(o, sl, share: float, trace, spec) -> tuple:
    """(MACs, pJ of its kernels, bytes read, bytes written) of op ``o`` on slice ``sl`` in one instance that
    holds ``share`` of the step's samples (1 for a step op)."""
    macs = pj = 0.0
    for w in o.work:
        part = (sl.fraction if w.split == "units" else 1.0) * (1.0 if w.per_instance else share)
        if w.unit == "mac":
            macs += w.count * part
        pj += spec.work_energy(w) * part

    def moved(ids):
        total = 0.0
        for b in (trace.buffers[x] for x in ids):
            part = sl.fraction if b.split == "units" else 1.0
            total += b.nbytes * part * (share if b.scope == "sample" and o.scope != "step" else 1.0)
        return total
    return macs, pj, moved(o.reads), moved(o.writes)


def _bound(per_core, starts, core, t):
    """A time inside the op slice on ``core`` that ended last at or before ``t`` (the producer), or None."""
    spans = per_core.get(core)
    if not spans:
        return None
    k = bisect.bisect_right(starts[core], t) - 1
    if k < 0:
        return None
    a, b = spans[k]
    return a + 0.5 * (min(b, t) - a) if b > a else a


def _next(per_core, starts, core, t):
    """A time inside the first op slice on ``core`` that is running at or starts after ``t``, or None."""
    spans = per_core.get(core)
    if not spans:
        return None
    k = bisect.bisect_right(starts[core], t) - 1
    if k >= 0 and spans[k][1] > t:
        a, b = spans[k]
        return t if t > a else a + 0.5 * (b - a)
    k += 1
    if k >= len(spans):
        return None
    a, b = spans[k]
    return a + 0.5 * (b - a) if b > a else a


def write(chip, path: str, title: str = "") -> str:
    """Write ``events(chip)`` to ``path`` atomically (a reader never sees half a file)."""
    doc = events(chip, title)
    with atomic_file(path, suffix=".json") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return path
