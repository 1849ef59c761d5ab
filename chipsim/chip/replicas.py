"""Where a split layer's replicated work runs: on every slice, or once and multicast (``Mapping.shared_work``).

Why a choice: the trace marks work that every slice of a split layer does in
full (``chipsim.trace.work``: ``replicated``), e.g. normalising and quantising
the input every slice holds whole. Doing it on every slice costs its energy
once per slice -- on a layer split n ways, n times. The alternative is to do it
on the layer's first slice only and multicast what it produced to the others:
the work is paid once, the multicast costs NoC bytes and time.

What the chip derives from the trace alone (no rule or layer kind): an op
qualifies when its layer is split, it has replicated work, it writes a
replicated buffer with bytes in it (what the first slice multicasts: every
slice holds that buffer whole), and it writes no ``reduce`` buffer (there the
replicated work finishes a slice's own partial, which differs per slice:
it cannot be done once). Such an op's replicated work then runs on slice 0; its
replicated output buffers go to slices 1..n-1 as a multicast after its compute
(``timing._work``), and its energy counts the work once (``energy``).
Simplifications, stated: the input the layer receives still reaches every
slice (the multicast to it is unchanged), so ``once`` pays that traffic too; the
first slice's work and the multicast are serialised after the op's slices'
lock-step compute rather than overlapped with the others' units work.
"""
from __future__ import annotations

import numpy as np

SHARED_WORK = ("every-slice", "once")     # the first is today's layout (and every strategy's but search)


def once_ops(trace, mapping) -> frozenset:
    """Ids of the ops whose replicated work runs once on ``mapping`` (empty unless ``shared_work`` is once)."""
    if getattr(mapping, "shared_work", SHARED_WORK[0]) != "once":
        return frozenset()
    B = trace.buffers
    return frozenset(
        o.id for o in trace.ops
        if o.kind != "send" and len(mapping.slices_of(o.layer)) > 1
        and any(w.split == "replicated" for w in o.work)
        and any(B[b].split == "replicated" and B[b].nbytes > 0 for b in o.writes)
        and not any(B[b].split == "reduce" for b in o.writes))


def multicast_buffers(op, trace) -> list:
    """The replicated buffers ``op`` writes: what its first slice multicasts when it runs ``once``."""
    return [trace.buffers[b] for b in op.writes if trace.buffers[b].split == "replicated"
            and trace.buffers[b].nbytes > 0]


def share(w, slices, once: bool) -> np.ndarray:
    """Fraction of a work item's count each slice does: its units' share; all of it (replicated) on every
    slice, or on the first only when the op runs ``once``."""
    if w.split == "replicated":
        if once:
            out = np.zeros(len(slices))
            out[0] = 1.0
            return out
        return np.ones(len(slices))
    return np.array([s.fraction for s in slices])


def copies(w, n_slices: int, once: bool) -> int:
    """How many slices do work item ``w`` in full (for its energy): 1 unless it is replicated on every slice."""
    return n_slices if w.split == "replicated" and not once else 1
