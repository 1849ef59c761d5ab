"""Keep freed memory mapped in the process, so that a training step does not page-fault its temporaries.

Why: every step the engine allocates, and frees again, the same large
temporaries (im2col columns, GEMM outputs, padded planes: megabytes each).
By default glibc serves large allocations with fresh ``mmap`` pages and
gives them back to the kernel on ``free``, so the next step faults every
page in again. On the 2-core dev VM that tripled the time of a conv layer's
forward + gradients: 93 k page faults and 24-30 ms for the 16->32-channel
layer at batch 64, against 33 k faults and about 9 ms once those pages were
kept. Raising the mmap threshold is not enough: glibc caps it at 32 MiB,
and at the engine's 320 training rows (batch 32 x 10 label variants) the
second conv layer's im2col columns take 39 MB. So ``M_MMAP_MAX = 0`` serves
every size from the heap, and a 1 GiB trim threshold keeps freed heap pages
for reuse: a DF-R training step on the 44-core preset went from 9,500 page
faults and 26 ms of system time to 170 faults and 3 ms. The price is a
resident size that stays near the step's peak instead of shrinking between
steps.

Only glibc (Linux) has ``mallopt``; elsewhere, or with
``CHIPSIM_MALLOC_TUNING=0`` in the environment, this does nothing. Results
do not depend on it: it changes where memory comes from, never a value.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
M_MMAP_MAX = -4            # how many blocks glibc may serve with mmap; 0 = none
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_applied: bool | None = None


def apply() -> bool:
    """Set the thresholds once per process; True if glibc accepted them."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CHIPSIM_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
