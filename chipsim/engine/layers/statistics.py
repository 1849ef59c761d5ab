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

from ... import kernels as K
from ...kernels import norm_stream
from ...quant.streaming import StreamErrorScale, StreamScale

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


def use_mode(blk, mode: str, micro_batch: int = 1) -> None:
    """Put block ``blk`` under ``mode``: under ``running`` and ``micro-batch`` its activation scales
    become streaming ones (``quant.streaming.StreamScale``, keeping their bits, sign, momentum and scale
    mode) and its two error quantisers (the weight gradient's, the error sent down) streaming error
    scales; under ``batch`` it keeps the batch's."""
    blk.statistics, blk.micro_batch = mode, max(1, int(micro_batch))
    if mode == "batch":
        return
    p = blk.prec

    def stream(old):
        return None if old is None else StreamScale(old.bits, old.signed, old.momentum, old.scale_mode)
    blk.z_scale, blk.out_scale, blk.good_scale = stream(blk.z_scale), stream(blk.out_scale), stream(blk.good_scale)
    blk.err_scales = tuple(StreamErrorScale(p.gradient_bits, p.rounding, p.scale) for _ in range(2))


def set_groups(blk) -> int:
    """Before a block's scales quantize: how many rows fold in together now (:func:`group_rows`)."""
    g = group_rows(blk.statistics, blk.micro_batch)
    for sc in (blk.z_scale, blk.out_scale, blk.good_scale) + tuple(blk.err_scales or ()):
        if sc is not None:
            sc.group = g
    return g


# ---------------------------------------------------------------- BN in training, one function per mode
def _bn_batch(blk, x, momentum, eps):
    """The batch's statistics (a barrier on chip), folded into the eval statistics once per batch."""
    z, bnc = K.batchnorm_train_forward(x, blk.gamma, blk.beta, eps)
    K.batchnorm_update_running(blk.running_mean, blk.running_var, bnc, momentum, x.size // x.shape[1])
    return z, bnc


def _bn_running(blk, x, momentum, eps):
    """Row by row, with running estimates that are also the eval statistics; horizon one batch's rows."""
    z, bnc, blk.bn_seen = norm_stream.batchnorm_stream_forward(x, blk.gamma, blk.beta, blk.running_mean,
                                                               blk.running_var, blk.bn_seen, 1.0 / x.shape[0], eps)
    return z, bnc


def _bn_micro(blk, x, momentum, eps):
    """Each micro-batch's own statistics; each folds into the eval statistics, together moving them as far
    as one batch would."""
    g = group_rows("micro-batch", blk.micro_batch)
    z, bnc = norm_stream.batchnorm_micro_forward(x, blk.gamma, blk.beta, g, eps)
    mom = 1.0 - (1.0 - momentum) ** (g / x.shape[0])
    per = x.size // x.shape[0] // x.shape[1]
    for r0 in range(0, x.shape[0], g):
        K.batchnorm_update_running(blk.running_mean, blk.running_var,
                                   bnc._replace(mean=bnc.mean[r0], var=bnc.var[r0]), mom,
                                   min(g, x.shape[0] - r0) * per)
    return z, bnc


#: mapping.statistics -> BN's training forward on a block: f(block, x, momentum, eps) -> (z, cache)
BN_LEARN = {"batch": _bn_batch, "running": _bn_running, "micro-batch": _bn_micro}
