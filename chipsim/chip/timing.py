"""Event-driven list schedule of one training step over cores and links.

Why event-driven: how many samples a core holds in flight (hence SRAM, see
``ledger``) depends on *when* each sample's ops run, and that depends on which
ops are ready when a core becomes free -- a static formula cannot capture BP's
update lock or DF-R's pipelining, a schedule does, from the trace alone.

Model:
* Dependencies are read-after-write on buffers, in program order: an op waits
  for the latest earlier writer of every buffer it reads. A sample-scope op
  instance waits for the same sample's writer; a step-scope op (the update)
  waits for every sample's instance of a sample-scope writer.
* Samples are grouped into micro-batches of ``micro_batch`` samples; each
  sample-scope op runs once per micro-batch with that many samples' work. All
  samples are available at t = 0: a new one enters as soon as the first
  layer's core is free -- and, as with credit-based flow control, a layer may
  run ahead of the layer it feeds by at most ``PIPELINE_SLACK`` instances: the
  first op of instance i on layer l waits until the first op of instance
  i - PIPELINE_SLACK has started on every layer l sends activations to.
  Without this a fast layer would flood a slow one's receive buffers with the
  whole batch; with it, only data that is *kept* for later (BP's activations
  waiting for the backward pass) accumulates.
* A layer's slices run its ops in lock-step (SPMD): an op instance starts when
  its inputs are ready and all the layer's slices are free; slice i is busy for
  ``macs * samples_in_group / samples * units_i / units / macs_per_cycle(bits)``
  cycles; the layer is free again when its slowest slice is. Among ready op
  instances a core runs the oldest sample first (then program order), so a
  core finishes old samples before admitting new ones.
* ``send`` ops use no core cycles; their transfers go through ``noc.Links``.
  An op that writes a ``reduce`` buffer on a split layer is done only once
  the partials have reached the first slice.
Cycles are real numbers (no rounding), so hand calculations stay exact.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from .noc import Links, reduce_flow, send_flows

PIPELINE_SLACK = 1   # instances a layer may run ahead of a layer it feeds (one receive buffer)


@dataclass
class Schedule:
    n_inst: int                 # micro-batch instances per sample-scope op
    groups: list                # samples in each instance
    start: np.ndarray           # (n_ops, n_inst) start time of each op instance (step ops: all columns equal)
    end: np.ndarray             # (n_ops, n_inst) time its results are available (after any reduction)
    cend: np.ndarray            # (n_ops, n_inst) time its compute ends (its inputs may be freed)
    latency: float              # cycles of the whole step
    tasks: list                 # per layer position: [(op_id, inst, start)] in execution order
    critical_path: list         # [(op_id, inst, start, end, gate)] first to last
    links: Links
    busy: dict = field(default_factory=dict)   # core -> busy cycles


def dataflow(trace):
    """Per op: (sample writers it depends on, step writers it depends on), from RAW in program order."""
    last = {}
    deps = []
    for o in trace.ops:
        ws = sorted({last[b] for b in o.reads if b in last})
        deps.append(ws)
        for b in o.writes:
            last[b] = o.id
    return deps


def schedule(trace, spec, mapping, micro_batch: int = 1) -> Schedule:
    S = trace.samples
    mb = max(1, int(micro_batch))
    n_inst = max(1, math.ceil(S / mb))
    groups = [min(mb, S - i * mb) for i in range(n_inst)] if S > 0 else [0]
    ops = trace.ops
    n_ops = len(ops)
    is_step = [o.scope == "step" for o in ops]
    lpos = mapping.layer_pos
    layer_of = [lpos[o.layer] for o in ops]
    n_layers = len(mapping.layers)

    # -- dependency graph
    deps = dataflow(trace)
    dep_same = [[] for _ in range(n_ops)]    # dependents that wait for the same instance
    dep_step = [[] for _ in range(n_ops)]    # step dependents of a sample writer (count n_inst)
    dep_bcast = [[] for _ in range(n_ops)]   # sample dependents of a step writer (all instances)
    rem = []
    for d, ws in enumerate(deps):
        if is_step[d]:
            rem.append([sum(1 if is_step[w] else n_inst for w in ws)])
        else:
            rem.append([len(ws)] * n_inst)
        for w in ws:
            if is_step[w] == is_step[d]:
                dep_same[w].append(d)
            elif is_step[d]:
                dep_step[w].append(d)
            else:
                dep_bcast[w].append(d)

    # -- flow control: entry op of a layer waits for its consumers' entry op PIPELINE_SLACK instances back
    entry = {}
    for o in ops:
        if o.scope == "sample" and o.kind != "send" and o.layer not in entry:
            entry[o.layer] = o.id
    on_start = [[] for _ in range(n_ops)]
    K = PIPELINE_SLACK
    gated = set()
    for o in ops:
        if o.kind == "send" and o.tag == "activation" and o.dst_layer is not None:
            u, dn = entry.get(o.layer), entry.get(o.dst_layer)
            if u is not None and dn is not None and (dn, u) not in gated and dn != u:
                gated.add((dn, u))
                on_start[dn].append(u)
                for i in range(K, n_inst):
                    rem[u][i] += 1

    # -- per-op work: cycles per sample on each slice of its layer
    cyc = []
    for o in ops:
        if o.kind == "send" or o.macs == 0:
            cyc.append(None)
            continue
        per = o.macs / (1 if o.scope == "step" else max(S, 1)) / spec.mpc(o.bits)
        cyc.append([per * s.fraction for s in mapping.slices_of(o.layer)])
    links = Links(spec)
    plans = [[(links.flow(sc, tuple(d for d, _ in dsts)), dsts[0][1]) for sc, dsts in send_flows(o, trace, mapping)]
             if o.kind == "send" else None for o in ops]
    red = []
    for o in ops:
        rb = [trace.buffers[b] for b in o.writes if trace.buffers[b].split == "reduce"]
        rb = [b for b in rb if len(mapping.slices_of(b.layer)) > 1
              and (b.scope == "sample" or o.scope == "step")]
        red.append([(b, links.gather(*reduce_flow(b.layer, mapping))) for b in rb])

    start = [[0.0] * (1 if s else n_inst) for s in is_step]
    end = [[0.0] * (1 if s else n_inst) for s in is_step]
    cend = [[0.0] * (1 if s else n_inst) for s in is_step]
    ready_t = [[0.0] * (1 if s else n_inst) for s in is_step]
    pred = [[None] * (1 if s else n_inst) for s in is_step]
    gate = [["start"] * (1 if s else n_inst) for s in is_step]
    core_free = [0.0] * n_layers
    core_last = [None] * n_layers
    readyq = [[] for _ in range(n_layers)]
    tasks = [[] for _ in range(n_layers)]
    ev = []
    seq = 0
    by_flow = set()     # instances whose latest release was a flow-control credit

    def push_ready(d, i, t):
        nonlocal seq
        if ops[d].kind == "send":
            run_send(d, i, t)
        else:
            L = layer_of[d]
            heapq.heappush(readyq[L], (n_inst if is_step[d] else i, d, i))
            seq += 1
            heapq.heappush(ev, (t, 1, seq, L, 0))

    def finish(d, i, t_compute):
        """Launch reduce transfers after a compute (or send) and post the done event."""
        nonlocal seq
        t_done = t_compute
        o = ops[d]
        if red[d]:
            g = groups[i] if not is_step[d] else S
            for b, fid in red[d]:
                nb = b.nbytes / max(S, 1) * g if b.scope == "sample" else b.nbytes
                t_done = max(t_done, links.send(t_compute, fid, nb, "reduce"))
        end[d][i] = t_done
        cend[d][i] = t_compute
        seq += 1
        heapq.heappush(ev, (t_done, 0, seq, d, i))

    def run_send(d, i, t):
        o = ops[d]
        g = groups[i] if not is_step[d] else S
        nb = o.nbytes / max(S, 1) * g if not is_step[d] else o.nbytes
        start[d][i] = t
        gate[d][i] = "data" if pred[d][i] is not None else "start"
        t_done = t
        tag = o.tag or "untagged"
        for fid, fr in plans[d]:
            t_done = max(t_done, links.send(t, fid, nb * fr, tag))
        finish(d, i, t_done)

    for d in range(n_ops):
        for i in range(len(rem[d])):
            if rem[d][i] == 0:
                push_ready(d, i, 0.0)

    cmax = [max(c) if c else 0.0 for c in cyc]
    heappop, heappush = heapq.heappop, heapq.heappush
    while ev:
        t, typ, _, a, b = heappop(ev)
        if typ == 0:                       # op instance (a, b) done at t: release dependents
            w, i = a, b
            if is_step[w]:
                for d in dep_same[w]:
                    _release(rem, ready_t, pred, d, 0, t, (w, 0), push_ready, by_flow, False)
                for d in dep_bcast[w]:
                    for j in range(n_inst):
                        _release(rem, ready_t, pred, d, j, t, (w, 0), push_ready, by_flow, False)
            else:
                who = (w, i)
                for d in dep_same[w]:      # the hot path, inlined _release
                    r = rem[d]
                    r[i] -= 1
                    rt = ready_t[d]
                    if t >= rt[i]:
                        rt[i] = t
                        pred[d][i] = who
                        if by_flow:
                            by_flow.discard((d, i))
                    if r[i] == 0:
                        push_ready(d, i, rt[i])
                for d in dep_step[w]:
                    _release(rem, ready_t, pred, d, 0, t, who, push_ready, by_flow, False)
        else:                              # try to dispatch on layer a
            L = a
            if core_free[L] > t or not readyq[L]:
                continue
            _, d, i = heappop(readyq[L])
            start[d][i] = t
            if t > ready_t[d][i] and core_last[L] is not None:
                pred[d][i], gate[d][i] = core_last[L], "core"
            elif pred[d][i] is not None:
                gate[d][i] = "flow" if (d, i) in by_flow else "data"
            if on_start[d] and i + K < n_inst:
                for u in on_start[d]:
                    _release(rem, ready_t, pred, u, i + K, t, (d, i), push_ready, by_flow, True)
            dur = cmax[d] * (1 if is_step[d] else groups[i])   # cyc: per sample (sample ops) / per step
            te = t + dur
            core_free[L] = te
            core_last[L] = (d, i)
            tasks[L].append((d, i, t))
            finish(d, i, te)
            seq += 1
            heappush(ev, (te, 1, seq, L, 0))

    st = np.empty((n_ops, n_inst))
    en = np.empty((n_ops, n_inst))
    ce = np.empty((n_ops, n_inst))
    for d in range(n_ops):
        st[d, :] = start[d]
        en[d, :] = end[d]
        ce[d, :] = cend[d]
    latency = float(en.max()) if n_ops else 0.0

    # -- critical path: walk back from the last op instance to finish
    path = []
    if n_ops:
        d, i = np.unravel_index(int(np.argmax(en)), en.shape)
        d, i = int(d), (0 if is_step[int(d)] else int(i))
        cur = (d, i)
        while cur is not None:
            d, i = cur
            path.append((d, i, start[d][i], end[d][i], gate[d][i]))
            cur = pred[d][i]
        path.reverse()

    busy = {}
    for o, c in zip(ops, cyc):
        if c is None:
            continue
        k = 1 if o.scope == "step" else S
        for s, ci in zip(mapping.slices_of(o.layer), c):
            busy[s.core] = busy.get(s.core, 0.0) + ci * k
    return Schedule(n_inst=n_inst, groups=groups, start=st, end=en, cend=ce, latency=latency, tasks=tasks,
                    critical_path=path, links=links, busy=busy)


def _release(rem, ready_t, pred, d, j, t, who, push_ready, by_flow, is_flow):
    """One dependency of instance (d, j) is met at t; queue it when none is left."""
    r = rem[d]
    r[j] -= 1
    if t >= ready_t[d][j]:
        ready_t[d][j] = t
        pred[d][j] = who
        if is_flow:
            by_flow.add((d, j))
        else:
            by_flow.discard((d, j))
    if r[j] == 0:
        push_ready(d, j, ready_t[d][j])
