"""Exact GEMM dispatch: float BLAS where a bound proves it exact, int64 loops otherwise.

Integer-exact accumulation
--------------------------
With ``int_bound=(max_abs_a, max_abs_b)`` the caller promises that both
operands hold integers (quantization codes) with ``|a| <= max_abs_a`` and
``|b| <= max_abs_b``.  Every product then is an integer of magnitude at most
``ma*mb`` and *every partial sum over any subset of the K products*, whatever
order BLAS uses, is an integer of magnitude at most ``K*ma*mb``.  A float
format with a p-bit significand represents all integers below ``2**p``
exactly, so if ``K*ma*mb < 2**p`` no rounding ever happens and the float GEMM
returns the exact integer result.  :func:`accumulation_path` picks the
cheapest format for which that proof holds:

* ``"fp32"`` (p = 24): one float32 GEMM; result returned as float32.
* ``"fp64"`` (p = 53): the reduction is split into chunks of ``kc`` terms
  with ``kc*ma*mb < 2**24``.  Each chunk is an exact float32 GEMM; the chunk
  results are summed in float64, exact because the running total stays below
  ``K*ma*mb < 2**53``.  This keeps fast sgemm for e.g. 8-bit operands.  When
  chunks would be too short to be efficient (``kc < MIN_CHUNK``, e.g. 16-bit
  operands) a single float64 GEMM is used instead (exact by the same
  argument with p = 53).  The result is returned as float64.
* ``"int64"``: explicit int64 loops (exact below ``2**63``); result int64.

The chosen path of the last call of each public function is recorded in
:data:`LAST_PATH` (``"float"`` when ``int_bound`` is None).

Integer unit
------------
Where the CPU has int8 dot-product instructions and both operands' codes fit
int8 (``max_abs <= 127``), the same exact sums run as int8 x int8 -> int32
GEMMs instead (``chipsim.kernels.int8``); wider codes (8-bit unsigned up to
255, 16-bit) are split into balanced base-128 int8 digits when that takes at
most four int8 GEMMs (``"int8-digits"``); the exact integer result is then
returned in the dtype the path above names, so callers see the same bits
whichever unit ran. :data:`LAST_UNIT` records ``"int8"`` or ``"float"`` per
function, and :func:`kernel_path` names the unit this process uses.

Data movement (im2col, col2im, layout transposes, pooling, batch-norm
reductions, the int64 GEMM) is in ``@njit(cache=True)`` numba kernels written
with ``prange`` where each iteration owns its slice of the output, so results
never depend on thread scheduling.  The int64 GEMM always runs parallel;
the kernels that sit between BLAS calls run serial unless
``CHIPSIM_NUMBA_PARALLEL=1`` (see :data:`PARALLEL` for the measured reason).
The GEMMs themselves go to BLAS through ``np.matmul`` called from thin
Python wrappers: matmul hands strided column blocks (used by the chunked
fp64 path below) straight to BLAS without copies, where a jitted ``np.dot``
would copy them and ``np.dot`` itself falls back to a slow non-BLAS loop for
some strided transposed blocks (measured 5-150x slower on grad_w chunks).
OpenBLAS sgemm with a fixed thread count partitions only the output, never
the reduction, so it is bit-reproducible run to run.
"""
from __future__ import annotations

import os

import numpy as np
from numba import njit, prange

from .int8 import fits_int8, kernel_path, matmul_int8, set_kernels, split_fits, use_int8  # noqa: F401

LAST_PATH: dict[str, str] = {}
LAST_UNIT: dict[str, str] = {}     # "int8", "int8-digits" or "float": the unit of each function's last call
_RESULT_DTYPE = {"fp32": np.float32, "fp64": np.float64, "int64": np.int64}
FP32_EXACT = 2 ** 24
FP64_EXACT = 2 ** 53
INT64_EXACT = 2 ** 63
MIN_CHUNK = 64  # shorter fp32 chunks lose to one fp64 GEMM

# Threads for the data-movement kernels that run between BLAS calls.
# They are written with prange (every iteration owns its output slice, so
# results are identical either way) but compiled serial by default: after
# each GEMM the OpenBLAS worker threads busy-wait (~0.1 s) for more work, and
# on a 2-core machine a numba/OpenMP worker then fights them for the core.
# Measured on the 2-core dev box this turned 0.5 ms copies into 8-16 ms
# stalls and made the whole conv step 3-4x slower than running the copies
# serially on the main thread.  Set CHIPSIM_NUMBA_PARALLEL=1 (before import)
# on machines with cores to spare.
PARALLEL = os.environ.get("CHIPSIM_NUMBA_PARALLEL", "0") == "1"
# numba's on-disk cache key ignores the `parallel` flag, so only the default
# (serial) flavour is cached; the parallel one is compiled per process.
_MOVE = dict(parallel=PARALLEL, cache=not PARALLEL)


# --------------------------------------------------------------------------
# exact GEMM dispatch
# --------------------------------------------------------------------------
def accumulation_path(K, max_abs_a, max_abs_b) -> str:
    """Cheapest exact accumulator for a K-term sum of products of integers.

    ``"fp32"`` if ``K*ma*mb < 2**24``, ``"fp64"`` if ``< 2**53``, else
    ``"int64"`` (see the module docstring for why these bounds are exact).
    Computed with Python ints, so the test itself cannot overflow.
    """
    total = int(K) * int(np.ceil(max_abs_a)) * int(np.ceil(max_abs_b))
    if total < FP32_EXACT:
        return "fp32"
    if total < FP64_EXACT:
        return "fp64"
    if total >= INT64_EXACT:
        raise ValueError(f"K*ma*mb = {total} overflows int64 accumulation")
    return "int64"


def int8_unit(int_bound) -> bool:
    """This exact product runs on the int8 unit: it is chosen for the process and the codes fit int8."""
    return int_bound is not None and fits_int8(int_bound) and use_int8()


def as_path_dtype(acc, path: str):
    """An exact integer accumulator in the dtype the float path ``path`` returns (a no-op when it
    already is): the values are the same integers, so the bits are the ones the float path gives."""
    return acc.astype(_RESULT_DTYPE[path], copy=False)


def _fp32_chunk(max_abs_a, max_abs_b) -> int:
    """Largest kc with kc*ma*mb < 2**24 (0 if even one product is too big)."""
    prod = int(np.ceil(max_abs_a)) * int(np.ceil(max_abs_b))
    return (FP32_EXACT - 1) // max(prod, 1)


def _matmul(a, b, int_bound, name, k_eff=None):
    """``a (M,K) @ b (K,N)`` with the accumulator chosen by ``int_bound``.

    ``k_eff`` (default K) is the most *nonzero* products that reach one
    final output element: more than K when the caller adds GEMM outputs
    afterwards (col2im), fewer when some of the K terms are known zeros
    (the garbage columns of the stride-1 grid).  The exactness bound only
    needs the nonzero count, since adding an exact zero never rounds.
    """
    if int_bound is None:
        LAST_PATH[name] = LAST_UNIT[name] = "float"
        return np.matmul(a, b)
    K = a.shape[1]
    path = accumulation_path(K if k_eff is None else k_eff, *int_bound)
    LAST_PATH[name] = path
    if int_bound is not None and split_fits(int_bound) and use_int8():
        acc = matmul_int8(a, b, int_bound, k_eff)
        if acc is not None:                         # None: a NaN operand, which only the float path carries
            LAST_UNIT[name] = "int8" if fits_int8(int_bound) else "int8-digits"
            return as_path_dtype(acc, path)
    LAST_UNIT[name] = "float"
    a, b = _float(a), _float(b)
    if path == "fp32":
        return np.matmul(a, b)
    if path == "int64":
        return _matmul_int64(np.ascontiguousarray(a, dtype=np.int64),
                             np.ascontiguousarray(b, dtype=np.int64))
    kc = _fp32_chunk(*int_bound)
    if kc < MIN_CHUNK:
        return np.matmul(a.astype(np.float64), b.astype(np.float64))
    return _chunked_fp64(a, b, kc)


def _chunked_fp64(a, b, kc):
    """Sum of exact float32 GEMMs over K-chunks of at most ``kc`` terms.

    Chunks are equal-sized (``ceil(K / n_chunks)``) so no tiny tail GEMM.
    The slices are strided views; ``np.matmul`` passes them to BLAS without
    copying (``np.dot`` does not always: see the module docstring).
    """
    K = a.shape[1]
    n_chunks = -(-K // kc)
    size = -(-K // n_chunks)
    acc = np.matmul(a[:, :size], b[:size]).astype(np.float64)
    for k0 in range(size, K, size):
        acc += np.matmul(a[:, k0:k0 + size], b[k0:k0 + size])
    return acc


@njit(parallel=True, cache=True)
def _matmul_int64(a, b):
    """Exact int64 GEMM; rows in parallel, each row owned by one thread."""
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n), dtype=np.int64)
    for i in prange(m):
        for kk in range(k):
            av = a[i, kk]
            if av != 0:
                for j in range(n):
                    c[i, j] += av * b[kk, j]
    return c


_BLAS = []        # numpy's BLAS, as a threadpoolctl controller (found once per process), or None


def blas_threads() -> int:
    """Threads numpy's BLAS uses now (respects ``threadpoolctl.threadpool_limits``); 0 if unknown.

    Read through the library's own ``get_num_threads`` (well under a microsecond), so a kernel
    may ask before every call.
    """
    if not _BLAS:
        from threadpoolctl import ThreadpoolController
        libs = [c for c in ThreadpoolController().lib_controllers if c.internal_api == "openblas"]
        mine = [c for c in libs if "numpy" in c.filepath] or libs
        _BLAS.append(mine[0] if mine else None)
    return _BLAS[0].get_num_threads() if _BLAS[0] is not None else 0


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _codes(a):
    """An operand of a weighted sum as the kernels take it: int8 codes as they are (the quantizers make
    them for the int8 unit: ``quant.passes.INT_CHUNK``), anything else as float32, both C-contiguous."""
    a = np.asarray(a)
    return np.ascontiguousarray(a) if a.dtype == np.int8 else np.ascontiguousarray(a, dtype=np.float32)


def _float(a):
    """int8 codes as float32 (the same integers) for a float product; any other operand untouched, so a
    float32 product keeps the layout it was given (a BLAS call's rounding may depend on it)."""
    return a.astype(np.float32) if a.dtype == np.int8 else a

