"""The event loop of ``timing.schedule``, compiled with numba.

Why compiled: ``mapping.fit`` re-schedules the whole step after every split
(the ledger's liveness depends on the schedule), and a 100-block model's
64-sample step has ~30,000 op instances and, on a 1,000-core mesh, ~80,000
link reservations; the same loop in Python took 0.25-0.7 s per schedule,
which made mapping take seconds. The *model* -- what waits for what, which
ready op a free layer runs first -- is documented in ``timing``; this module
only executes it, on arrays that ``timing`` prepares, and must give the very
same times (the tests compare hand-computed schedules). Numba caches the
compiled code on disk (``cache=True``): the first run after a change to this
file compiles for ~10 s, later processes load it in well under a second.

Encodings:
* an op instance is (op, inst); a step-scope op has the single instance 0;
* a layer's ready queue is a heap of ``priority * n_ops + op`` with priority =
  the instance (oldest sample first) or, for step ops, ``step_prio``
  (``n_inst``: after every sample op; 0: ahead of all but the first sample's),
  so the smallest key is the oldest sample, then program order -- as in the model;
* the event heap orders ``(time, kind << SEQ_BITS | seq)``: at equal times ``DONE``
  (an instance delivered its results) comes before ``DISPATCH`` (a layer may
  start its next op), and the push counter ``seq`` keeps equal events first-in
  first-out; an event's payload (op and instance, or layer) is stored by seq.
  Both heaps are ``heap_push``/``heap_pop`` on preallocated arrays (the
  sizes are known: every instance runs once).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .noc import link_send

DONE, DISPATCH = 0, 1
SEQ_BITS = 40                                 # event key = kind << SEQ_BITS | seq
GATES = ("start", "data", "core", "flow")     # what an instance waited for last (critical-path labels)
GATE_START, GATE_DATA, GATE_CORE, GATE_FLOW = range(4)


class Graph(NamedTuple):
    """The step's dependencies; CSR lists: ``x[x_ptr[op]:x_ptr[op + 1]]`` are op's entries."""
    samples: int
    groups: np.ndarray      # (n_inst,) samples in each micro-batch instance (float)
    slack: int              # PIPELINE_SLACK
    is_step: np.ndarray     # (n_ops,) bool: runs once per step
    is_send: np.ndarray     # (n_ops,) bool: a NoC transfer, no core cycles
    layer: np.ndarray       # (n_ops,) layer position (the core group that runs it)
    layer_ops: np.ndarray   # (n_layers,) compute op instances per layer (its ready queue's capacity)
    rem: np.ndarray         # (n_ops, n_inst) dependencies each instance waits for (step ops: column 0)
    same_ptr: np.ndarray    # dependents that wait for the same instance
    same: np.ndarray
    step_ptr: np.ndarray    # step-scope dependents of a sample writer (wait for all its instances)
    step: np.ndarray
    bcast_ptr: np.ndarray   # sample-scope dependents of a step writer (all their instances wait)
    bcast: np.ndarray
    credit_ptr: np.ndarray  # flow control: starting instance i of an entry op lets instance i + slack of
    credit: np.ndarray      # these upstream entry ops start (a receive buffer is free)
    pass_ptr: np.ndarray    # ... and starting instance i of a pass's consumer lets instance i of the
    pass_credit: np.ndarray  # producer of the next pass on that link start (sequential negatives)
    step_prio: int          # ready-queue priority of step ops: n_inst (after every sample op) or 0 (first)
    all_ptr: np.ndarray     # barrier dependents of a sample writer: every instance of theirs waits for
    all_: np.ndarray        # every instance of the writer (trace Op.barrier)


class Work(NamedTuple):
    """What each op costs on this mapping: core cycles, transfers, reductions."""
    cycles: np.ndarray      # (n_ops,) cycles of the slowest slice, per sample (sample ops) or per step
    fixed: np.ndarray       # (n_ops,) cycles of the slowest slice paid once per instance (whatever its samples)
    send_bytes: np.ndarray  # (n_ops,) bytes a send op moves over the step
    send_tag: np.ndarray    # (n_ops,) its tag's row in the Links tag table
    send_ptr: np.ndarray    # CSR per op: flows of a send (one per sending slice) ...
    send_flow: np.ndarray
    send_frac: np.ndarray   # ... and the fraction of the op's bytes each carries
    red_ptr: np.ndarray     # CSR per op: reductions after it (reduce buffers it writes on a split layer) ...
    red_flow: np.ndarray
    red_bytes: np.ndarray   # ... the buffer's bytes over the step ...
    red_sample: np.ndarray  # ... and whether they are per sample (scaled by the instance's samples)
    red_tag: int            # the tag table row of "reduce"
    pre_ptr: np.ndarray     # CSR per op: reductions a step send waits for before it sends (noc.reductions_before)
    pre_flow: np.ndarray
    pre_bytes: np.ndarray   # ... the buffer's bytes (once per step)


@njit(cache=True)
def heap_push(ht, hk, n, t, k):
    """Add (t, k) to the binary min-heap held in ht[:n], hk[:n] (ordered by t, then k)."""
    j = n
    while j > 0:
        p = (j - 1) >> 1
        if ht[p] < t or (ht[p] == t and hk[p] < k):
            break
        ht[j], hk[j] = ht[p], hk[p]
        j = p
    ht[j], hk[j] = t, k


@njit(cache=True)
def heap_pop(ht, hk, n):
    """Remove and return the smallest (t, k) of the heap held in ht[:n], hk[:n]."""
    top_t, top_k = ht[0], hk[0]
    n -= 1
    t, k = ht[n], hk[n]
    j = 0
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and (ht[c + 1] < ht[c] or (ht[c + 1] == ht[c] and hk[c + 1] < hk[c])):
            c += 1
        if t < ht[c] or (t == ht[c] and k < hk[c]):
            break
        ht[j], hk[j] = ht[c], hk[c]
        j = c
    ht[j], hk[j] = t, k
    return top_t, top_k


@njit(cache=True)
def run(g, w, net):
    """Execute the step; returns (start, end, cend, pred_op, pred_inst, gate, tasks, task_start).

    Also updates the link state ``net`` (reservations, traffic).

    start, end (results delivered, after any reduction), cend (compute or
    transfer done): (n_ops, n_inst) times; pred_op, pred_inst: the instance
    that released each one last (-1: none) and gate: why it waited (GATE_*),
    for the critical path; tasks: (n_tasks, 3) [op, inst, layer] and
    task_start: (n_tasks,) of the compute instances in the order they started.

    The helpers are closures, which numba inlines: passing the arrays to
    separate compiled functions cost more than the work itself; closures
    cannot rebind outer names, hence the counters array ``c``. Instances a
    release makes ready are collected and started (``start_ready``) in
    release order before anything else happens -- exactly when the model
    starts them -- so that each helper is inlined once or twice, which keeps
    the compile time down.
    """
    n_ops, n_inst = g.rem.shape
    n_layers = len(g.layer_ops)
    per_op = np.where(g.is_step, 1, n_inst)
    n_tasks = int(np.where(g.is_send, 0, per_op).sum())
    n_events = int(per_op.sum()) + 2 * n_tasks + 1      # a DONE per instance, <= 2 DISPATCH per compute one

    start, end, cend = np.zeros((n_ops, n_inst)), np.zeros((n_ops, n_inst)), np.zeros((n_ops, n_inst))
    pred_op = np.full((n_ops, n_inst), -1)
    pred_inst = np.zeros((n_ops, n_inst), dtype=np.int64)
    gate = np.zeros((n_ops, n_inst), dtype=np.int8)
    tasks, task_start = np.zeros((n_tasks, 3), dtype=np.int64), np.zeros(n_tasks)
    rem = g.rem.copy()                                  # dependencies still missing
    ready = np.zeros((n_ops, n_inst))                   # time the latest one was met
    by_credit = np.zeros((n_ops, n_inst), dtype=np.bool_)   # ... by a flow-control credit
    core_free = np.zeros(n_layers)                      # per layer: time its cores are free
    last_op = np.full(n_layers, -1)                     # ... and the instance it ran last
    last_inst = np.zeros(n_layers, dtype=np.int64)
    ev_t, ev_k = np.zeros(n_events), np.zeros(n_events, dtype=np.int64)   # event heap: (time, kind << SEQ_BITS | seq)
    ev_a, ev_b = np.zeros(n_events, dtype=np.int64), np.zeros(n_events, dtype=np.int64)   # payload by seq
    q_cap = max(1, g.layer_ops.max()) if n_layers else 1
    q_t = np.zeros((n_layers, q_cap))                  # ready queues: heaps of (0, key) ...
    q_k = np.zeros((n_layers, q_cap), dtype=np.int64)
    q_n = np.zeros(n_layers, dtype=np.int64)             # ... and their lengths
    new_op = np.zeros(n_ops * n_inst, dtype=np.int64)   # instances released, not started yet
    new_inst = np.zeros(n_ops * n_inst, dtype=np.int64)
    c = np.zeros(4, dtype=np.int64)     # counters: [events pushed (seq), events in heap, tasks, newly ready]

    def push(t, kind, a, b):
        seq = c[0] + 1
        c[0] = seq
        ev_a[seq], ev_b[seq] = a, b
        heap_push(ev_t, ev_k, c[1], t, (kind << SEQ_BITS) | seq)
        c[1] += 1

    def release(d, j, t, by_op, by_inst, is_credit):
        """One dependency of instance (d, j) is met at t by (by_op, by_inst); collect it when none is left."""
        rem[d, j] -= 1
        if t >= ready[d, j]:
            ready[d, j] = t
            pred_op[d, j] = by_op
            pred_inst[d, j] = by_inst
            by_credit[d, j] = is_credit
        if rem[d, j] == 0:
            new_op[c[3]], new_inst[c[3]] = d, j
            c[3] += 1

    def finish(d, i, t_compute):
        """Launch the reductions after a compute (or send) done at t_compute and post its DONE event."""
        t_done = t_compute
        n = float(g.samples) if g.is_step[d] else g.groups[i]
        for k in range(w.red_ptr[d], w.red_ptr[d + 1]):
            nb = w.red_bytes[k] / max(g.samples, 1) * n if w.red_sample[k] else w.red_bytes[k]
            t_done = max(t_done, link_send(net, w.red_flow[k], w.red_tag, t_compute, nb))
        end[d, i] = t_done
        cend[d, i] = t_compute
        push(t_done, DONE, d, i)

    def start_ready():
        """Start the collected instances in order: a send runs at once (its transfers), a compute op
        joins its layer's ready queue."""
        for r in range(c[3]):
            d, i = new_op[r], new_inst[r]
            t = ready[d, i]
            if g.is_send[d]:
                nb = w.send_bytes[d] if g.is_step[d] else w.send_bytes[d] / max(g.samples, 1) * g.groups[i]
                start[d, i] = t
                gate[d, i] = GATE_DATA if pred_op[d, i] >= 0 else GATE_START
                t_sent = t
                for k in range(w.pre_ptr[d], w.pre_ptr[d + 1]):     # the partials reach slice 0 first
                    t_sent = max(t_sent, link_send(net, w.pre_flow[k], w.red_tag, t, w.pre_bytes[k]))
                t_done = t_sent
                for k in range(w.send_ptr[d], w.send_ptr[d + 1]):
                    t_done = max(t_done, link_send(net, w.send_flow[k], w.send_tag[d], t_sent,
                                                   nb * w.send_frac[k]))
                finish(d, i, t_done)
            else:
                L = g.layer[d]
                heap_push(q_t[L], q_k[L], q_n[L], 0.0, (g.step_prio if g.is_step[d] else i) * n_ops + d)
                q_n[L] += 1
                push(t, DISPATCH, L, 0)
        c[3] = 0

    def done(op, i, t):
        """Instance (op, i) delivered its results at t: release the instances that wait for it."""
        if g.is_step[op]:
            for k in range(g.same_ptr[op], g.same_ptr[op + 1]):
                release(g.same[k], 0, t, op, i, False)
            for k in range(g.bcast_ptr[op], g.bcast_ptr[op + 1]):
                for j in range(n_inst):
                    release(g.bcast[k], j, t, op, i, False)
        else:
            for k in range(g.same_ptr[op], g.same_ptr[op + 1]):
                release(g.same[k], i, t, op, i, False)
            for k in range(g.step_ptr[op], g.step_ptr[op + 1]):
                release(g.step[k], 0, t, op, i, False)
            for k in range(g.all_ptr[op], g.all_ptr[op + 1]):
                for j in range(n_inst):
                    release(g.all_[k], j, t, op, i, False)

    def dispatch(L, t):
        """Layer L may be free at t: start its highest-priority ready instance on all its slices;
        returns (op, inst, end of compute), op -1 if none started. Credits it grants are collected."""
        if core_free[L] > t or q_n[L] == 0:
            return -1, 0, t
        _, key = heap_pop(q_t[L], q_k[L], q_n[L])
        q_n[L] -= 1
        prio, d = divmod(key, n_ops)
        i = 0 if g.is_step[d] else prio
        start[d, i] = t
        if t > ready[d, i] and last_op[L] >= 0:
            pred_op[d, i], pred_inst[d, i], gate[d, i] = last_op[L], last_inst[L], GATE_CORE
        elif pred_op[d, i] >= 0:
            gate[d, i] = GATE_FLOW if by_credit[d, i] else GATE_DATA
        j = i + g.slack
        if j < n_inst:
            for k in range(g.credit_ptr[d], g.credit_ptr[d + 1]):
                release(g.credit[k], j, t, d, i, True)
        if not g.is_step[d]:
            for k in range(g.pass_ptr[d], g.pass_ptr[d + 1]):
                release(g.pass_credit[k], i, t, d, i, True)
        te = t + w.cycles[d] * (1.0 if g.is_step[d] else g.groups[i]) + w.fixed[d]
        core_free[L] = te
        last_op[L], last_inst[L] = d, i
        tasks[c[2], 0], tasks[c[2], 1], tasks[c[2], 2], task_start[c[2]] = d, i, L, t
        c[2] += 1
        return d, i, te

    for d in range(n_ops):                  # instances with no dependencies are ready at t = 0
        for i in range(1 if g.is_step[d] else n_inst):
            if rem[d, i] == 0:
                new_op[c[3]], new_inst[c[3]] = d, i
                c[3] += 1
    d, i, L, te = -1, 0, 0, 0.0
    while True:
        start_ready()
        if d >= 0:                          # a dispatched op's completion comes after the credits it granted
            finish(d, i, te)
            push(te, DISPATCH, L, 0)
            d = -1
        if c[1] == 0:
            break
        t, key = heap_pop(ev_t, ev_k, c[1])
        c[1] -= 1
        seq = key & ((1 << SEQ_BITS) - 1)
        if key >> SEQ_BITS == DONE:
            done(ev_a[seq], ev_b[seq], t)
        else:
            L = ev_a[seq]
            d, i, te = dispatch(L, t)
    return start, end, cend, pred_op, pred_inst, gate, tasks, task_start
