"""Thread-pool caps for numba and BLAS, low in the import graph so the engine and the experiments share them.

Why a module of its own: the engine caps its threads for a vision transformer (:func:`single_threaded`) and
the experiment executors cap each worker (``limit_threads``); the engine must not import the experiments.
"""
from __future__ import annotations


def limit_threads(n: int) -> None:
    """Cap this process's numba and BLAS thread pools at ``n``.

    Without a cap, two workers on two cores run four spinning BLAS threads and
    each runs several times slower than alone.
    """
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, n)))
    threadpool_limits(limits=n)


def single_threaded() -> None:
    """Run this process's numba and BLAS kernels on one thread.

    A transformer layer's products are small (a few thousand token rows by 64-256 features), so a thread
    hand-off costs more than it saves, and on a loaded machine far more: a CFF step of 32 samples on
    vit_tiny measured 0.087 s on one thread against 4.3 s on two, on 2 shared cores."""
    limit_threads(1)
