"""Event-driven list schedule of one training step over cores and links.

Why event-driven: how many samples a core holds in flight (hence SRAM, see
``ledger``) depends on *when* each sample's ops run, and that depends on which
ops are ready when a core becomes free -- a static formula cannot capture BP's
update lock or DF-R's pipelining, a schedule does, from the trace alone.

Model:
* Dependencies are read-after-write on buffers, in program order: an op waits
  for the latest earlier writer of every buffer it reads. A sample-scope op
  instance waits for the same sample's writer; a step-scope op (the update)
  waits for every sample's instance of a sample-scope writer. A step op also
  waits for every earlier op that read a buffer it overwrites (write-after-
  read): the update lock -- W_l's update waits until DF-O's (or BP's) error
  has gone through W_l^T; DF-R's error goes through the fixed B_l, which no
  update writes, so its updates wait for their gradients only
  (``lock_waits`` measures how long each update waited for the lock).
* Samples are grouped into micro-batches of ``micro_batch`` samples; each
  sample-scope op runs once per micro-batch with that many samples' work. All
  samples are available at t = 0: a new one enters as soon as the first
  layer's core is free -- and, as with credit-based flow control, a layer may
  run ahead of the layer it feeds by at most ``PIPELINE_SLACK`` instances: the
  first op of instance i on layer l waits until the first op of instance
  i - PIPELINE_SLACK has started on every layer l sends activations to.
  Without this a fast layer would flood a slow one's receive buffers with the
  whole batch; with it, only data that is *kept* for later (BP's activations
  waiting for the backward pass) accumulates. Successive transfers of one
  stream within an instance (a sample's label variants under
  ``mapping.negatives: sequential``) share a receive buffer the same way: the
  producer of transfer i starts once the consumer of transfer i - 1 has.
* A barrier op (``Op.barrier``: it computes a value over the whole batch,
  ``mapping.statistics: batch``) is a sample-scope op each of whose instances
  waits for *every* instance of the sample-scope ops it depends on: no sample
  passes it before all have reached it. Its layer then receives the whole
  batch, so it grants its feeders no flow-control credit (they run ahead
  freely) and the ledger sees every sample's input live until the barrier
  opens (holding, not recomputing: the inputs are kept in SRAM).
* A layer's slices run its ops in lock-step (SPMD): an op instance starts when
  its inputs are ready and all the layer's slices are free; slice i is busy for
  the sum over the op's work items (``chipsim.trace.work``) of
  ``count * samples_in_group / samples * share_i / rate(unit, bits)`` cycles,
  where ``share_i`` is ``units_i / units`` for ``units`` work and 1 for
  ``replicated`` work, and a ``per_instance`` item costs its whole count in
  every instance; the layer is free again when its slowest slice is. Among ready op
  instances a core runs the oldest sample first (then program order), so a
  core finishes old samples before admitting new ones. A layer's update runs
  after every sample op ready on its cores (``training.update: batch``) or
  ahead of them as soon as it is ready (``immediate``).
* ``send`` ops use no core cycles; their transfers go through ``noc.Links``.
  An op that writes a ``reduce`` buffer on a split layer is done only once
  the partials have reached the first slice; a step-scope send of a
  step-scope ``reduce`` buffer (``noc.reductions_before``) starts its
  transfers only once the reduction has reached the first slice.
* An op that reads or writes a buffer of an off-chip category stalls its
  slices for those bytes over the shared interface plus its latency
  (``chipsim.chip.offchip``), and the step lasts at least as long as the
  interface needs for all of the step's off-chip bytes.
Cycles are real numbers (no rounding), so hand calculations stay exact.

Implementation: this module turns the trace and mapping into arrays (who
waits for whom, what each op costs, which flows a send uses) and packages
the result; the event loop itself is ``eventloop.run``, compiled with numba
because the mapper runs it after every split (see there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .eventloop import GATES, Graph, Work, run
from .noc import Links, reduce_flow, reductions_after, reductions_before, send_flows
from .offchip import offchip_cycles, step_offchip_bytes
from .replicas import multicast_buffers, once_ops, share

PIPELINE_SLACK = 1   # instances a layer may run ahead of a layer it feeds (one receive buffer)
UPDATES = ("batch", "immediate")


@dataclass
class Schedule:
    n_inst: int                 # micro-batch instances per sample-scope op
    groups: list                # samples in each instance
    n_layers: int               # layer positions (core groups) of the mapping
    start: np.ndarray           # (n_ops, n_inst) start time of each op instance (step ops: all columns equal)
    end: np.ndarray             # (n_ops, n_inst) time its results are available (after any reduction)
    cend: np.ndarray            # (n_ops, n_inst) time its compute ends (its inputs may be freed)
    latency: float              # cycles of the whole step
    task_ids: np.ndarray        # (n_tasks, 3) [op_id, inst, layer position] of compute instances, in start order
    task_start: np.ndarray      # (n_tasks,) their start times
    critical_path: list         # [(op_id, inst, start, end, gate)] first to last
    links: Links
    busy: dict = field(default_factory=dict)   # core -> busy cycles
    busy_by_kind: dict = field(default_factory=dict)   # work kind -> busy cycles summed over cores
    offchip_bytes: float = 0.0  # bytes the off-chip interface carries over the step
    offchip_floor: float = 0.0  # cycles the interface needs for them: the step lasts at least this long
    compute_latency: float = 0.0  # the schedule's own latency (before the off-chip floor)

    @property
    def offchip_stall_cycles(self) -> float:
        """Cycles the off-chip tier adds to the step beyond the event schedule (the contention floor)."""
        return max(0.0, self.latency - self.compute_latency)

    @cached_property
    def tasks(self) -> list:
        """Per layer position: [(op_id, inst, start)] in execution order.

        Built on demand (the Gantt chart): the mapper's many schedules never need it."""
        out = [[] for _ in range(self.n_layers)]
        for (d, i, L), t in zip(self.task_ids.tolist(), self.task_start.tolist()):
            out[L].append((d, i, t))
        return out


def dataflow(trace):
    """Per op: the ops it waits for -- the latest earlier writer of every buffer it reads (RAW, in program
    order), and for a step op (an update) every earlier op that read a buffer it overwrites (WAR: the
    update lock, e.g. DF-O's error through W^T must have read W before W's update writes it)."""
    return [sorted(set(r) | set(w)) for r, w in zip(*_raw_war(trace))]


def _raw_war(trace):
    """(RAW writers, WAR readers) per op; WAR only for step-scope writers."""
    last, readers = {}, {}
    raw, war = [], []
    for o in trace.ops:
        raw.append(sorted({last[b] for b in o.reads if b in last}))
        war.append(sorted({r for b in o.writes for r in readers.get(b, ()) if r != o.id})
                   if o.scope == "step" else [])
        for b in o.reads:
            readers.setdefault(b, set()).add(o.id)
        for b in o.writes:
            last[b] = o.id
            readers[b] = set()
    return raw, war


def lock_waits(trace, sched) -> dict:
    """Layer -> cycles its update waited for the update lock: how much later the last op still reading
    its old weights ended than the update's own inputs (its gradient) were ready; 0 where nothing waited."""
    raw, war = _raw_war(trace)
    out = {}
    for o, r, w in zip(trace.ops, raw, war):
        if o.scope != "step" or not w:
            continue
        ready = max((float(sched.end[d].max()) for d in r), default=0.0)
        held = max(float(sched.end[d].max()) for d in w)
        out[o.layer] = out.get(o.layer, 0.0) + max(0.0, held - ready)
    return out


def schedule(trace, spec, mapping, micro_batch: int = 1, update: str = "batch", offchip_time: bool = True) -> Schedule:
    """Schedule one step of ``trace`` on ``mapping``: the model above, executed by ``eventloop.run``.
    ``update``: ``training.update`` (``batch``: a layer's update waits behind its cores' sample ops;
    ``immediate``: it runs first once ready). ``offchip_time`` False: off-chip accesses take no time (to
    measure how much of the step they account for)."""
    S = trace.samples
    mb = max(1, int(micro_batch))
    n_inst = max(1, math.ceil(S / mb))
    groups = [min(mb, S - i * mb) for i in range(n_inst)] if S > 0 else [0]
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    g = _graph(trace, mapping, groups, step_prio=0 if update == "immediate" else n_inst)
    mapping.offchip_stall = offchip_cycles(trace, spec, mapping, n_inst) if offchip_time else {}
    mapping.once = once_ops(trace, mapping)
    cyc = [op_cycles(o, trace.samples, spec, mapping) for o in trace.ops]
    links = Links(spec)
    start, end, cend, pred_op, pred_inst, gate, task_ids, task_start = run(
        g, _work(trace, mapping, links, cyc), links.state())
    step_rows = g.is_step.nonzero()[0]
    for a in (start, end, cend):             # a step op's single instance fills every column
        a[step_rows] = a[step_rows, :1]
    latency = float(end.max()) if trace.ops else 0.0
    off_bytes = step_offchip_bytes(trace, mapping, n_inst) if mapping.offchip else 0.0
    floor = spec.offchip_cycles(off_bytes) if offchip_time else 0.0
    return Schedule(n_inst=n_inst, groups=groups, n_layers=len(mapping.layers), start=start, end=end, cend=cend,
                    latency=max(latency, floor), task_ids=task_ids, task_start=task_start,
                    offchip_bytes=off_bytes, offchip_floor=floor, compute_latency=latency,
                    critical_path=_critical_path(start, end, gate, pred_op, pred_inst, g.is_step), links=links,
                    busy=_busy(trace, mapping, cyc, n_inst), busy_by_kind=busy_by_kind(trace, spec, mapping, n_inst))


def _csr(lists):
    """(ptr, flat) int64 arrays of a list of int lists: entry k is flat[ptr[k]:ptr[k + 1]]."""
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    return ptr, np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(ptr[-1]))


def _pass_credits(trace, n_ops):
    """Consumer op -> producer ops it lets start: successive transfers of one stream on a link (a sample's
    label variants under sequential negatives) share its receive buffer, so the producer of transfer i
    starts only once the consumer of transfer i - 1 has started (and taken its buffer). A transfer
    whose copy is held past its consumer (kept for recomputing) occupies a buffer of its own: no credit."""
    last_touch, first_reader, writer = {}, {}, {}
    for o in trace.ops:
        for b in set(o.reads) | set(o.writes):
            last_touch[b] = o.id
        for b in o.reads:
            first_reader.setdefault(b, o.id)
        for b in o.writes:
            writer.setdefault(b, o.id)
    credits, prev = [[] for _ in range(n_ops)], {}
    for o in trace.ops:
        if o.kind != "send" or o.tag != "activation" or o.dst_layer is None or not o.reads:
            continue
        key = (o.layer, o.dst_layer, o.name)
        before = prev.get(key)
        prev[key] = o
        if before is None:
            continue
        recv = before.writes[0]
        c, p = first_reader.get(recv), writer.get(o.reads[0])
        if c is not None and p is not None and last_touch[recv] == c and trace.ops[p].scope == "sample":
            credits[c].append(p)
    return credits


def _graph(trace, mapping, groups, step_prio=None) -> Graph:
    """Dependencies of the step's op instances (RAW in program order, plus flow-control credits)."""
    ops = trace.ops
    n_ops, n_inst = len(ops), len(groups)
    is_step = [o.scope == "step" for o in ops]
    deps = dataflow(trace)
    dep_same = [[] for _ in range(n_ops)]    # dependents that wait for the same instance
    dep_step = [[] for _ in range(n_ops)]    # step dependents of a sample writer (count n_inst)
    dep_bcast = [[] for _ in range(n_ops)]   # sample dependents of a step writer (all instances)
    dep_all = [[] for _ in range(n_ops)]     # barrier dependents of a sample writer (wait for all instances)
    barrier = [o.scope == "sample" and getattr(o, "barrier", False) for o in ops]
    rem = np.zeros((n_ops, n_inst), dtype=np.int64)
    for d, ws in enumerate(deps):
        if is_step[d]:
            rem[d, 0] = sum(1 if is_step[w] else n_inst for w in ws)
        elif barrier[d]:
            rem[d, :] = sum(1 if is_step[w] else n_inst for w in ws)
        else:
            rem[d, :] = len(ws)
        for w in ws:
            if barrier[d] and not is_step[w]:
                dep_all[w].append(d)
            elif is_step[w] == is_step[d]:
                dep_same[w].append(d)
            elif is_step[d]:
                dep_step[w].append(d)
            else:
                dep_bcast[w].append(d)

    # flow control: entry op of a layer waits for its consumers' entry op PIPELINE_SLACK instances back;
    # the sensor feeds the first layer the same way (a send with no source buffer: a sample enters the
    # chip only when layer 0 has a receive buffer free for it)
    entry = {}
    for o in ops:
        if o.scope == "sample" and o.kind != "send" and o.layer not in entry:
            entry[o.layer] = o.id
    credits = [[] for _ in range(n_ops)]
    gated = set()
    for o in ops:
        if o.kind == "send" and o.tag == "activation" and o.dst_layer is not None:
            u = o.id if not o.reads else entry.get(o.layer)     # the sensor input gates itself
            dn = entry.get(o.dst_layer)
            if u is not None and dn is not None and (dn, u) not in gated and dn != u and not barrier[dn]:
                gated.add((dn, u))
                credits[dn].append(u)
                rem[u, PIPELINE_SLACK:] += 1
    pass_credits = _pass_credits(trace, n_ops)
    for producers in pass_credits:
        for p in producers:
            rem[p, :] += 1
    is_send = np.array([o.kind == "send" for o in ops], dtype=np.bool_)
    layer = np.array([mapping.layer_pos[o.layer] for o in ops], dtype=np.int64)
    compute = np.where(is_send, 0, np.where(is_step, 1, n_inst))
    return Graph(trace.samples, np.asarray(groups, dtype=float), PIPELINE_SLACK, np.array(is_step, dtype=np.bool_),
                 is_send, layer, np.bincount(layer, compute, minlength=len(mapping.layers)).astype(np.int64), rem,
                 *_csr(dep_same), *_csr(dep_step), *_csr(dep_bcast), *_csr(credits), *_csr(pass_credits),
                 n_inst if step_prio is None else int(step_prio), *_csr(dep_all))


def op_cycles(op, samples, spec, mapping):
    """(per-sample cycles, per-instance cycles) of ``op`` on each slice of its layer, or None if it
    computes nothing. A step op's whole work is 'per sample' with one sample (it runs once)."""
    if not op.work:
        return None
    sl = mapping.slices_of(op.layer)
    per, fixed = np.zeros(len(sl)), np.zeros(len(sl))
    div = 1 if op.scope == "step" else max(samples, 1)
    once = op.id in mapping.once
    for w in op.work:
        c = spec.work_cycles(w) * share(w, sl, once)
        if w.per_instance and op.scope != "step":
            fixed += c
        else:
            per += c / div
    stall = mapping.offchip_stall.get(op.id)
    if stall is not None:                   # off-chip reads/writes: every slice waits for the shared interface
        per += stall[0]
        fixed += stall[1]
    return per, fixed


def busy_by_kind(trace, spec, mapping, n_inst: int) -> dict:
    """Work kind -> core cycles over the step, summed over all cores that do it."""
    out = {}
    for o in trace.ops:
        sl = mapping.slices_of(o.layer)
        for w in o.work:
            c = spec.work_cycles(w) * float(share(w, sl, o.id in mapping.once).sum())
            if w.per_instance and o.scope != "step":
                c *= n_inst
            out[w.kind] = out.get(w.kind, 0.0) + c
    return out


def _work(trace, mapping, links, cyc) -> Work:
    """Per op on this mapping: slowest slice's cycles, send flows, reductions (flows registered in ``links``)."""
    ops = trace.ops
    plans, red, pre = [], [], []
    for o in ops:
        plans.append([(links.flow(sc, tuple(d for d, _ in dsts)), dsts[0][1])
                      for sc, dsts in send_flows(o, trace, mapping)] if o.kind == "send" else [])
        red.append([(b, links.gather(*reduce_flow(b.layer, mapping))) for b in reductions_after(o, trace, mapping)])
        if o.id in mapping.once:                # replicated work done on slice 0: its output multicast to the rest
            sl = mapping.slices_of(o.layer)
            red[-1] += [(b, links.flow(sl[0].core, tuple(s.core for s in sl[1:])))
                        for b in multicast_buffers(o, trace) if b.scope == "sample" or o.scope == "step"]
        pre.append([(b, links.gather(*reduce_flow(b.layer, mapping)))
                    for b in reductions_before(o, trace, mapping)])
    send_ptr, send_flow = _csr([[f for f, _ in p] for p in plans])
    red_ptr, red_flow = _csr([[f for _, f in r] for r in red])
    pre_ptr, pre_flow = _csr([[f for _, f in r] for r in pre])
    return Work(cycles=np.array([c[0].max() if c is not None else 0.0 for c in cyc]),
                fixed=np.array([c[1].max() if c is not None else 0.0 for c in cyc]),
                send_bytes=np.array([float(o.nbytes) if o.kind == "send" else 0.0 for o in ops]),
                send_tag=np.array([links.tag_id(o.tag or "untagged") if o.kind == "send" else 0 for o in ops],
                                  dtype=np.int64),
                send_ptr=send_ptr, send_flow=send_flow,
                send_frac=np.array([fr for p in plans for _, fr in p], dtype=float),
                red_ptr=red_ptr, red_flow=red_flow,
                red_bytes=np.array([float(b.nbytes) for r in red for b, _ in r]),
                red_sample=np.array([b.scope == "sample" for r in red for b, _ in r], dtype=np.bool_),
                red_tag=links.tag_id("reduce"), pre_ptr=pre_ptr, pre_flow=pre_flow,
                pre_bytes=np.array([float(b.nbytes) for r in pre for b, _ in r]))


def _critical_path(start, end, gate, pred_op, pred_inst, is_step) -> list:
    """[(op, inst, start, end, gate)] from the first instance to the one that finished last."""
    path = []
    if end.size:
        d, i = np.unravel_index(int(np.argmax(end)), end.shape)
        d, i = int(d), (0 if is_step[int(d)] else int(i))
        while d >= 0:
            path.append((d, i, float(start[d, i]), float(end[d, i]), GATES[gate[d, i]]))
            d, i = int(pred_op[d, i]), int(pred_inst[d, i])
        path.reverse()
    return path


def _busy(trace, mapping, cyc, n_inst: int) -> dict:
    """core -> cycles its slices compute over the step."""
    busy = {}
    for o, c in zip(trace.ops, cyc):
        if c is None:
            continue
        k, ki = (1, 0) if o.scope == "step" else (trace.samples, n_inst)
        for sl, per, fixed in zip(mapping.slices_of(o.layer), *c):
            busy[sl.core] = busy.get(sl.core, 0.0) + per * k + fixed * ki
    return busy
