"""Chip-independent memory demand: every tensor of a step in ONE memory pool (the GPU-style measures).

Why apart from the ledger: the per-core ledger answers "does this chip hold
the step" and depends on the mapping (slices replicate inputs) and on the
schedule (how many samples are in flight). The paper's memory figure asks a
different question -- how much memory the algorithm needs when everything of
the batch is resident at once, as a framework on a GPU holds it -- and that
must not depend on any chip, nor fail when a chip cannot fit the model.

The pool counts each tensor of the trace once, at its full (whole-batch)
size: persistent buffers always; ``step`` and ``sample`` buffers from the
first to the last op that touches them, in program order (op index is the
clock). A ``select`` op executes nothing and moves no row: the buffers it is
the last to touch and only reads are dead at its instant, the smaller ones it
writes live -- so the old and the new kept rows are never counted together.
The category breakdown is taken at the pool's peak, so it adds up to the peak.

Each buffer counts at the bytes the chip stores it in (its bit widths): the
algorithm's demand on this chip's number formats. Which buffers exist, and
their scope and category, is what the trace declares for them
(``chipsim.trace``); no buffer name is read.

What a framework such as PyTorch holds for the same step is not modelled here:
a hand model of autograd's saved tensors got it wrong both ways (issue 24), so
that figure is measured in real PyTorch instead (``chipsim.framework``;
``mapping.memory_mode: pytorch``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..trace import CATEGORIES


@dataclass
class PoolMemory:
    peak_bytes: float
    peak_op: int                 # the op index at which the peak occurs (-1: persistent state only)
    at_peak: dict                # category -> bytes live at the peak (sums to peak_bytes)
    persistent_bytes: float

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "peak_op": self.peak_op, "at_peak": self.at_peak,
                "persistent_bytes": self.persistent_bytes}


def whole_batch(trace) -> PoolMemory:
    """Peak of one pool holding every tensor once, whole batch, in program order, at the chip's widths."""
    return _pool(trace, [float(b.nbytes) for b in trace.buffers])


def _pool(trace, size) -> PoolMemory:
    """Peak of one pool in program order; ``size[b]``: bytes of buffer b."""
    n_ops, n_cat = len(trace.ops), len(CATEGORIES)
    ci = {c: i for i, c in enumerate(CATEGORIES)}
    first, last, last_writes = {}, {}, {}
    for o in trace.ops:
        w = set(o.writes)
        for b in set(o.reads) | w:
            first.setdefault(b, o.id)
            last[b] = o.id
            last_writes[b] = b in w
    delta = np.zeros((n_ops + 1, n_cat))
    base = np.zeros(n_cat)
    for b in trace.buffers:
        if b.scope == "persistent":
            base[ci[b.category]] += size[b.id]
        elif b.id in first:                          # live over [first toucher, last toucher]
            end = last[b.id] + 1
            if trace.ops[last[b.id]].kind == "select" and not last_writes[b.id] and end - 1 > first[b.id]:
                end -= 1                             # ... or up to the select that ends it, exclusive
            delta[first[b.id], ci[b.category]] += size[b.id]
            delta[end, ci[b.category]] -= size[b.id]
    live = np.cumsum(delta[:n_ops], axis=0) + base if n_ops else base[None, :]
    tot = live.sum(axis=1)
    k = int(np.argmax(tot))
    return PoolMemory(peak_bytes=float(tot[k]), peak_op=k if n_ops else -1,
                      at_peak={c: float(live[k, i]) for i, c in enumerate(CATEGORIES)},
                      persistent_bytes=float(base.sum()))
