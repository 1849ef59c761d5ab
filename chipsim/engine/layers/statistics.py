"""``mapping.statistics``: where a block's batch-coupled values come from, and how many rows make a group.

Why a module: the block (``block.QuantBlock``) asks one question -- over which rows are BN's statistics and
the quantisation scales taken -- and the answer depends on the config (``batch`` | ``running`` |
``micro-batch``) and on how many rows a sample has in this step (a local rule's label variants, BP's one).
The step knows the latter (``rows.RowSet.reps``) and says it with :func:`rows_per_sample`; the block reads
it with :func:`group_rows`. The chip's schedule reads the same setting (``chipsim.trace.trace``: an op
that computes a batch-coupled value under ``batch`` is a barrier).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

STATISTICS = ("batch", "running", "micro-batch")

_ROWS_PER_SAMPLE: ContextVar[int] = ContextVar("rows_per_sample", default=1)


@contextmanager
def rows_per_sample(reps: int):
    """Within this block of a step, each sample is ``reps`` consecutive rows of every batch a block sees."""
    token = _ROWS_PER_SAMPLE.set(max(1, int(reps)))
    try:
        yield
    finally:
        _ROWS_PER_SAMPLE.reset(token)


def group_rows(mode: str, micro_batch: int) -> int:
    """Rows that share statistics and fold into the running scales together: one row (``running``: each
    row streams on its own), a micro-batch's rows (``micro-batch``), or 0 (``batch``: the whole batch)."""
    if mode == "running":
        return 1
    if mode == "micro-batch":
        return max(1, int(micro_batch)) * _ROWS_PER_SAMPLE.get()
    return 0
