"""``mapping.negatives: sequential | sequential-recompute``: a block takes a sample's label variants one
after another.

Why: under ``parallel`` every sample passes each block as N + 1 rows, and a
block keeps all of them until the losses above have said which rows their
errors reach. DF's max loss gives an error to at most the positive and the
hardest negative, so a block that sees the variants one at a time need not
keep the others -- if it can tell, or recompute, which ones a loss above will
pick. Pass k is the k-th label variant of every sample; pass 0 the positive.

Both dataflows:

* a block's batch statistics and activation scales come from pass 0 and are
  applied, not updated, in the negative passes: when it normalises a negative
  the block has not seen the batch's other rows (``QuantBlock.forward(
  stats_from=...)``). This changes the arithmetic against ``parallel``
  (statistics over the positives, not over every row), so the accuracy of a
  sequential dataflow is measured, not assumed. ``learning.bn_backward:
  batch-stats`` is refused (``config``): its gradient couples every row of the
  batch, so no row could be dropped;
* after a block's goodness of pass k its own loss's running hardest negative
  is updated (one compare per sample) and the block keeps, per sample, its
  input codes, ReLU mask, pool index and goodness copy for the positive and
  that hardest negative only;
* the losses, errors and weight gradients then run as in ``parallel``
  (``backward.LocalBackward``) on the kept rows.

They differ in what they do about the rows a loss *above* will ask for:

* ``sequential`` (pass-major: pass k goes through every block before pass
  k + 1; the chip's natural order, each block on its own cores): block l also
  keeps, for every higher loss reaching it (DF-O/DF-R: block l+1's), the
  running hardest negative of that loss. Its decision on a pass-k row waits
  for that loss's goodness of the same pass, sent down over the NoC (4 bytes
  per row). Nothing is recomputed; but every block holds its few rows until
  the last pass, all at once.
* ``sequential-recompute`` (block-major: a block takes all passes before the
  next block starts; a GPU's natural order, one block resident at a time):
  the rows a loss above picks are unknown while the block runs, so it keeps
  its *input* rows (the block below's outputs, or block 0's sensor image) and,
  once that loss has said which rows it needs, recomputes the block's forward
  on the missing ones: a ``recompute`` op with that forward's work, so the
  memory saved and the compute spent sit side by side in the trace.
"""
from __future__ import annotations

import numpy as np

from ... import kernels as K
from ...trace.work import record
from .backward import LocalBackward

RUNNING_MAX_OPS = 1       # one compare of a new goodness with the kept hardest one, per sample and loss
_NO_OUTPUT = np.zeros(0, np.float32)   # the backward reads no block output: kept rows carry none


def _merge(ids_a, arrs_a, ids_b, arrs_b, want):
    """Rows ``want`` (sorted ids) taken from two row sets (ids, dict of arrays aligned with them)."""
    ids = np.concatenate([ids_a, ids_b])
    take = np.flatnonzero(np.isin(ids, want))
    take = take[np.argsort(ids[take], kind="stable")]
    assert len(take) == len(want), "a kept row is neither kept nor in this pass"
    return ids[take], {k: (None if arrs_a[k] is None else np.concatenate([arrs_a[k], arrs_b[k]])[take])
                       for k in arrs_a}


def _positions(have, ids):
    pos = np.searchsorted(have, ids)
    assert np.all(pos < len(have)) and np.array_equal(have[np.minimum(pos, len(have) - 1)], ids), \
        "the backward asks for a row the block did not keep"
    return pos


class RowStore:
    """The rows one block keeps of a step: three parts, each a sorted array of global row ids
    (``s * reps + k``) with its arrays -- ``zq`` (input codes), ``act`` (pre-activation ``y`` and pool index:
    the backward's routing) and ``sq`` (the goodness copy, for the block's own loss).

    ``held``: for ``sequential-recompute``, a function giving the block's input on given rows (what it
    received, still held), from which missing rows are recomputed; ``stats`` their pass-0 statistics.
    """

    PARTS = {"zq": ("zq",), "act": ("y", "argmax"), "sq": ("sq",)}

    def __init__(self, blk, tracer, held=None):
        self.blk, self.tracer, self.held, self.stats = blk, tracer, held, None
        self.ids = {p: np.zeros(0, np.int64) for p in self.PARTS}
        self.data = {p: {k: None for k in ks} for p, ks in self.PARTS.items()}
        self.zs = self.bnc = self.tail = None

    @property
    def n_rows(self) -> int:
        return len(self.ids["zq"])

    @staticmethod
    def _part(part, cache):
        return {"zq": {"zq": cache["zq"]}, "act": {"y": cache["y"], "argmax": cache["argmax"]},
                "sq": {"sq": cache["gsrc"]}}[part]

    def keep(self, part, want, pass_ids, cache):
        """After a pass: keep exactly rows ``want`` of ``part``, from what it held and this pass's rows."""
        self.zs, self.bnc, self.tail = cache["zs"], cache["bnc"], tuple(cache["r_shape"][1:])
        new, old = self._part(part, cache), self.data[part]
        if old[next(iter(old))] is None:                 # nothing kept yet: start from empty rows
            old = {k: (None if v is None else v[:0]) for k, v in new.items()}
        self.ids[part], self.data[part] = _merge(self.ids[part], old, pass_ids, new, np.sort(want))

    def squared(self, ids):
        """The goodness copy on rows ``ids`` (the own loss's rows): what its error needs."""
        return self.data["sq"]["sq"][_positions(self.ids["sq"], ids)]

    def rows(self, blk, ids, loss: int):
        """The backward's cache on rows ``ids``; rows the block dropped are recomputed first."""
        missing = np.setdiff1d(ids, self.ids["zq"])
        if len(missing):
            self._recompute(missing, loss)
        z, a = _positions(self.ids["zq"], ids), _positions(self.ids["act"], ids)
        act = self.data["act"]
        return dict(zq=self.data["zq"]["zq"][z], zs=self.zs, bnc=self.bnc, y=act["y"][a],
                    argmax=None if act["argmax"] is None else act["argmax"][a],
                    r_shape=(len(ids),) + self.tail, out=_NO_OUTPUT, cols=None)

    def all(self, blk, loss: int):
        return self.rows(blk, self.ids["zq"], loss)

    def is_all(self, ids) -> bool:
        return np.array_equal(ids, self.ids["zq"])

    def _recompute(self, ids, loss):
        """The block's forward again on rows ``ids``, from its held input (a ``recompute`` op). With the
        pass-0 statistics and scales, as in the negative passes, it gives the rows the passes gave."""
        assert self.held is not None, f"block {self.blk.index} dropped rows it cannot recompute"
        _, cache = self.blk.forward(self.held(ids), train=True, stats_from=self.stats)
        self.tracer.recompute(self.blk, cache, loss)
        for part in ("zq", "act"):
            self.ids[part], self.data[part] = _merge(self.ids[part], self.data[part], ids,
                                                     self._part(part, cache), np.union1d(self.ids[part], ids))

    def arrays(self):
        """Everything kept, keyed as a forward cache, for sizing the trace's buffers."""
        return dict(zq=self.data["zq"]["zq"], y=self.data["act"]["y"], argmax=self.data["act"]["argmax"],
                    gsrc=self.data["sq"]["sq"])


def _running_hardest(g, hard, k, ids):
    """Pass ``k``'s rows ``ids`` against each sample's hardest negative so far (pass index in ``hard``, 0:
    none yet); ties keep the earlier row, as ``argmax`` does."""
    if k == 0:
        return hard
    record("running_max", "sequential_step", RUNNING_MAX_OPS * len(ids))
    best = np.where(hard > 0, g[(ids - k) + hard], -np.inf)
    return np.where(g[ids] > best, k, hard)


class _Step:
    """State of one sequential step; ``run`` executes it in the order of ``rule.negatives``."""

    def __init__(self, net, rule, rows, step, rng, tracer):
        self.bw = LocalBackward(net, rule, rows, step, rng, tracer)
        self.net, self.rule, self.rows, self.tracer = net, rule, rows, tracer
        self.blocks, self.plan = net.blocks, self.bw.plan
        L, self.reps, B = len(self.blocks), rows.reps, rows.samples
        self.recompute = rule.negatives == "sequential-recompute"
        # the losses whose rows each block keeps: all that reach it, or (recomputing) only its own
        self.wants = [self.plan.updated_by(l) for l in range(L)]
        self.pos = np.arange(B) * self.reps
        self.hard = [{j: np.zeros(B, np.int64) for j in w} for w in self.wants]
        self.g_all = [np.zeros(rows.n, np.float32) for _ in range(L)]
        self.stats, self.pending = [None] * L, [None] * L
        self.inputs = [np.empty((rows.n,) + blk.in_shape, np.float32) if self.recompute and l else None
                       for l, blk in enumerate(self.blocks)]
        self.stores = [RowStore(blk, tracer, self._held(l) if self.recompute else None)
                       for l, blk in enumerate(self.blocks)]

    def _held(self, l):
        return (lambda ids: self.rows.a0[ids]) if l == 0 else (lambda ids: self.inputs[l][ids])

    def forward_pass(self, l, k, a):
        """Block l's forward of pass k (rows ``a``), its goodness and the send to the block above."""
        blk, ids = self.blocks[l], self.pos + k
        if self.inputs[l] is not None:
            self.inputs[l][ids] = a.reshape((len(a),) + self.inputs[l].shape[1:])   # held for recomputing
        out, cache = blk.forward(a, train=True, stats_from=self.stats[l])
        if k == 0:
            self.stats[l] = {"bnc": cache["bnc"]}
            self.stores[l].stats = self.stats[l]
        self.tracer.pass_forward(blk, cache, k)
        if self.plan.active(l):
            g = K.goodness(cache["gsrc"], bits=blk.goodness_bits)
            self.g_all[l][ids] = g
            self.tracer.pass_goodness(blk, g, k)
        if l + 1 < len(self.blocks):
            self.tracer.pass_send(l, l + 1, k)
        self.pending[l] = cache
        return out

    def own_select(self, l, k):
        """Block l's goodness of pass k is known: keep its own loss's rows of the parts it decides."""
        ids, own, none = self.pos + k, l in self.wants[l], self.pos[:0]
        if own:
            self.hard[l][l] = _running_hardest(self.g_all[l], self.hard[l][l], k, ids)
        keep = np.union1d(self.pos, self.pos + self.hard[l][l]) if own else (self.pos if self.wants[l] else none)
        parts = ("sq", "zq", "act") if self.recompute else ("sq",)
        for p in parts:
            self.stores[l].keep(p, keep if (p != "sq" or own) else none, ids, self.pending[l])
        self.tracer.keep_pass_rows(self.blocks[l], k, parts, self.stores[l], deciders=(l,) if own else ())

    def above_select(self, m, k):
        """(``sequential``) every loss reaching block m has its goodness of pass k: m's input codes and
        routing for the positive and each loss's hardest negative."""
        ids = self.pos + k
        for j in self.wants[m]:
            if j != m:
                self.tracer.goodness_down(j, m, k)
                self.hard[m][j] = _running_hardest(self.g_all[j], self.hard[m][j], k, ids)
        keep = (self.pos[:0] if not self.wants[m] else
                np.unique(np.concatenate([self.pos] + [self.pos + h for h in self.hard[m].values()])))
        for p in ("zq", "act"):
            self.stores[m].keep(p, keep, ids, self.pending[m])
        self.tracer.keep_pass_rows(self.blocks[m], k, ("zq", "act"), self.stores[m], deciders=self.wants[m])

    def loss(self, j):
        blk = self.blocks[j]
        self.bw.block_loss(j, self.rule.objective.from_goodness(blk, self.g_all[j], self.stores[j].squared,
                                                                self.rows, self.tracer, self.bw.sparse))

    def run(self):
        self.tracer.holds_input = self.recompute
        self.tracer.sensor_input(self.rows.x)
        self.bw.kept = list(self.stores)
        (self._block_major if self.recompute else self._pass_major)()
        return self.bw.result(None)

    def _block_major(self):
        """Each block takes every pass, then its loss runs and the blocks below that have all their
        errors finish (recomputing the rows a loss above picked), as ``parallel`` does block by block."""
        a = None
        for l in range(len(self.blocks)):
            outs = []
            for k in range(self.reps):
                inp = self.rows.a0[self.pos + k] if l == 0 else a[k]
                outs.append(self.forward_pass(l, k, inp))
                self.own_select(l, k)
            if self.plan.active(l):
                self.loss(l)
            self.bw.finish_ready(l)
            a = outs

    def _pass_major(self):
        """Pass k runs through every block before pass k + 1; a block's rows are decided once every loss
        reaching it has the pass's goodness, and the backward starts as the last pass climbs."""
        L = len(self.blocks)
        decide_at = [max(w) if w else l for l, w in enumerate(self.wants)]
        done = set()
        for k in range(self.reps):
            a = self.rows.a0[self.pos + k]
            for l in range(L):
                a = self.forward_pass(l, k, a)
                self.own_select(l, k)
                for m in range(l + 1):
                    if decide_at[m] == l:
                        self.above_select(m, k)
                if k < self.reps - 1:
                    continue
                for j in range(l + 1):              # losses whose error path is decided
                    reach = self.plan.reaches(j)
                    if j in done or not reach or any(decide_at[i] > l for i in range(reach[0] + 1, j + 1)):
                        continue
                    done.add(j)
                    self.loss(j)
                for j in range(l, -1, -1):          # blocks with every error
                    if decide_at[j] <= l and all(i in done for i in self.wants[j]):
                        self.bw.finish(j)


def sequential_step(net, rule, rows, step, rng, tracer):
    """Gradients of one local step with the label variants passing each block one after another
    (``rule.negatives``; the module docstring says what each dataflow keeps). ``tracer``: a
    ``tracing.passes.PassTracer``."""
    return _Step(net, rule, rows, step, rng, tracer).run()
