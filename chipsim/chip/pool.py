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

Two sizings of the same trace:

* :func:`whole_batch`: each buffer at the bytes the chip stores it in (its
  bit widths): the algorithm's demand on this chip's number formats.
* :func:`pytorch`: what a framework on a GPU holds for the same dataflow, all
  in float32 (``mapping.memory_mode: pytorch``, the closest we come to how
  the DF paper measured its Figure 4A). Assumptions, per buffer of the trace,
  by its declared role (``chipsim.trace.roles.Role``; ``Buffer.elements`` is
  its tensor's value count; no buffer name is ever read):

  - parameters: one float32 copy (the master weights; the chip's low-bit
    compute copy does not exist), float32 gradients (the accumulator's
    lifetime: from the first weight-gradient op to the update), optimizer
    state in float32 (Adam: two moments per weight), BN running statistics,
    the label embedding and its state, DF-R's fixed feedback kernel;
  - autograd's saved tensors: a block's input twice (BN saves its input, the
    convolution saves BN's output; once without BN), the ReLU output where the
    chip keeps a 1-bit mask, int64 max-pool indices, the block output the
    goodness squares (``pow`` saves its base), goodness and dL/dgoodness;
    errors in flight in float32;
  - a block output sent on is the next block's input (counted there), and a
    received copy is the sender's tensor (a GPU has one memory), so neither
    is counted twice -- unless the dataflow holds the copy past the forward
    that consumed it (``sequential-recompute``'s held input), which then
    counts in float32; the sensor's batch is counted once, in float32;
  - liveness is the trace's dataflow liveness: tensors live while the
    dataflow needs them and rows are dropped where the dataflow drops them
    (a framework keeps a saved tensor whole until its graph's backward has
    run, which for these rules is where the dataflow drops the rows anyway);
    no allocator caching or fragmentation, no CUDA workspace;
  - a vision transformer's kept tensors (layer-norm state, Q/K/V, the
    attention matrix, the products' inputs, the MLP pre-activations) and its
    partials in float32, its token mean as the goodness copy; its attention
    half's output z is the MLP half's input (not counted twice).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..trace import CATEGORIES
from ..trace.roles import Role

F32, I64 = 4, 8


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


#: why :func:`pytorch` gives no figure for a trace with unsized tensors
PYTORCH_UNSIZED = ("not available: this trace does not record the value count of every tensor (a hand-built "
                   "trace), and a float32 size is not derived from a low-bit byte count by guessing")


def pytorch(trace) -> PoolMemory | None:
    """The same pool with every tensor as a float32 framework holds it (see the module docstring).

    None when a buffer that holds bytes does not record its tensor's value count (``elements``): the
    float32 size of such a tensor is unknown, and a pool that counted it as 0 would be a false figure
    (the engine's tracers size every tensor; a hand-built trace may not). Callers show
    :data:`PYTORCH_UNSIZED` instead."""
    if any(b.nbytes and not b.elements for b in trace.buffers):
        return None
    return _pool(trace, torch_bytes(trace))


def torch_bytes(trace) -> list:
    """Per buffer: the bytes a float32 framework holds for it (the assumptions of the module docstring)."""
    with_bn = {b.layer for b in trace.buffers if b.role == Role.NORM_PARAMS}
    goodness_copy = {b.layer for b in trace.buffers if b.role == Role.GOODNESS_INPUT}
    squared = {b for o in trace.ops if o.kind == "goodness" for b in o.reads}
    readers = {}
    for o in trace.ops:
        for b in o.reads:
            readers[b] = readers.get(b, 0) + 1
    out = []
    for b in trace.buffers:
        n = b.elements
        if b.role == Role.WEIGHTS or (b.role == Role.RECEIVED and readers.get(b.id, 0) <= 1):
            size = 0                                   # no low-bit copy; a received copy is the sender's tensor
        elif b.role == Role.KEPT_INPUT:
            size = (2 if b.layer in with_bn else 1) * F32 * n
        elif b.role == Role.POOL_INDEX:
            size = I64 * n
        elif b.role == Role.OUTPUT:
            # the next block's input (counted there), or the base goodness squares when no wider copy exists
            size = F32 * n if b.layer not in goodness_copy and b.id in squared else 0
        else:
            size = F32 * n
        out.append(float(size))
    return out


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
