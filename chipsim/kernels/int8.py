"""Exact integer GEMMs on the CPU's int8 dot-product units, and the choice of unit.

Why: the weighted sums of a quantized step multiply small integer codes (4-bit
activations and weights, 8-bit errors). A float32 GEMM over them is exact only
because a bound proves it (``chipsim.kernels.exact``), and it spends a 32-bit
lane per 4-bit value. CPUs with int8 dot-product instructions (x86 AVX-512
VNNI / AVX-VNNI / AMX-INT8, ARM ``asimddp``) multiply int8 by int8 into int32
sums four lanes at a time, exactly: no rounding exists to prove away, only the
int32 range. Through ``torch._int_mm`` (oneDNN on the CPU, cuBLASLt on a GPU)
that measured 3-5x faster than float32 on the same operands here.

Exactness argument. With ``|a| <= ma`` and ``|b| <= mb`` (both <= 127, so the
codes *are* int8), every partial sum of ``k`` products lies in
``[-k*ma*mb, k*ma*mb]``; int32 holds it exactly while ``k*ma*mb < 2**31``. A
longer reduction is cut into chunks of at most ``(2**31 - 1) // (ma*mb)``
terms, each an exact int32 GEMM, summed in int64. The result is the exact
integer, so it equals, value for value, what the float paths return; the
callers convert it to the dtype the float path would have given (float32 below
``2**24``, float64 below ``2**53``) so everything downstream sees the same
bits whichever unit ran.

Codes wider than int8 (8-bit unsigned up to 255, 16-bit) are split into
balanced base-128 digits, each an int8 operand, when that takes at most four
GEMMs; the digit products are shifted and added in int64 (exact below 2**63).

The unit is chosen once per process (:func:`kernel_path`): ``int8`` where the
CPU has int8 dot-product instructions (read from /proc/cpuinfo) and torch has
``_int_mm``, ``float`` (BLAS sgemm) otherwise. Environment:

* ``CHIPSIM_KERNELS=auto|int8|float`` overrides the choice (:func:`set_kernels`
  does, for tests and benchmarks). ``int8`` forced on a CPU without the
  instructions still computes exactly (oneDNN's reference kernels), slowly.
* ``CHIPSIM_DEVICE=cpu|cuda`` runs the int8 GEMMs on a CUDA device (the data
  movement stays on the CPU).
* ``CHIPSIM_INT8_THREADS`` (default 1; 0 = torch's setting): see
  :data:`GEMM_THREADS`.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
from numba import njit

INT32_EXACT = 2 ** 31
INT8_MAX = 127
CHOICES = ("auto", "int8", "float")
# x86: AVX-512 VNNI, AVX-VNNI (the VEX form), AMX int8 tiles; ARM: the SDOT/UDOT dot product
DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")

_STATE = {"choice": None, "cpu": None, "device": None}

# Threads for one int8 GEMM (torch's intra-op pool is set to this for the call, then restored).
# One by default, for the reason the numba copies run serial (``exact.PARALLEL``): the GEMMs of a
# step are short (0.1-1 ms), and a multi-threaded call ends in a join that, on a machine whose
# cores are shared, waits for a descheduled thread. Measured on the 2-core VM under load (load
# average 4.7): a 13440 x 144 x 32 int8 GEMM took 16.0 ms median on 2 threads, 0.43 ms on 1.
# Set CHIPSIM_INT8_THREADS=0 to use torch's own setting, or N for N threads, on a quiet machine.
def _gemm_threads(text: str) -> int:
    """CHIPSIM_INT8_THREADS as a count >= 0; anything else is the default, 1, with a note on stderr (an
    environment variable is no place for a traceback)."""
    try:
        n = int(text)
        if n >= 0:
            return n
    except ValueError:
        pass
    import sys
    print(f"chipsim: note: CHIPSIM_INT8_THREADS={text!r} is not a count >= 0; using 1", file=sys.stderr)
    return 1


GEMM_THREADS = _gemm_threads(os.environ.get("CHIPSIM_INT8_THREADS", "1"))


def _device() -> str:
    """Where the int8 GEMMs run: ``CHIPSIM_DEVICE=cpu|cuda`` (default cpu), or :func:`set_device`."""
    if _STATE["device"] is None:
        d = os.environ.get("CHIPSIM_DEVICE", "cpu").strip().lower() or "cpu"
        if d not in ("cpu", "cuda"):
            from ..errors import ChipsimError
            raise ChipsimError(f"environment variable CHIPSIM_DEVICE: {d!r} is not one of cpu, cuda")
        set_device(d)
    return _STATE["device"]


def _choice() -> str:
    if _STATE["choice"] is None:
        c = os.environ.get("CHIPSIM_KERNELS", "auto").strip().lower() or "auto"
        if c not in CHOICES:
            from ..errors import ChipsimError
            raise ChipsimError(f"environment variable CHIPSIM_KERNELS: {c!r} is not one of "
                               f"{', '.join(CHOICES)}")
        _STATE["choice"] = c
    return _STATE["choice"]


def set_kernels(choice: str) -> str:
    """Select the GEMM unit for this process: ``auto`` | ``int8`` | ``float``; returns the previous choice.

    Every choice gives bit-identical results (the tests check it); only the speed differs.
    """
    if choice not in CHOICES:
        raise ValueError(f"kernels must be one of {CHOICES}, got {choice!r}")
    old = _choice()
    _STATE["choice"] = choice
    return old


def cpu_dot_flags() -> tuple:
    """The int8 dot-product flags this CPU reports in /proc/cpuinfo (empty where it has none or
    the file does not exist, e.g. macOS: the float path is then kept)."""
    if _STATE["cpu"] is None:
        found = set()
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        found |= set(line.split(":", 1)[1].split()) & set(DOT_FLAGS)
                        break
        except OSError:
            pass
        _STATE["cpu"] = tuple(f for f in DOT_FLAGS if f in found)
    return _STATE["cpu"]


def _torch_int_mm():
    """torch's ``_int_mm`` if it runs on this CPU and returns exact sums, else None (older torch
    builds have it for CUDA only). Probed once per process on a small product whose exact result is
    known: 17 rows of 32 products of 127 * -127 = -516128 each."""
    if "int_mm" not in _STATE:
        fn = None
        try:
            import torch
            f = getattr(torch, "_int_mm", None)
            if f is not None:
                got = f(torch.full((17, 32), 127, dtype=torch.int8), torch.full((32, 8), -127, dtype=torch.int8))
                if got.dtype == torch.int32 and bool((got == -516128).all()):
                    fn = f
        except Exception:          # noqa: BLE001 - any failure means: no int8 unit here
            fn = None
        _STATE["int_mm"] = fn
    return _STATE["int_mm"]


def use_int8() -> bool:
    """True when the weighted sums whose codes fit int8 run on the int8 unit."""
    c = _choice()
    if c == "float":
        return False
    if _torch_int_mm() is None:
        return False
    return c == "int8" or bool(cpu_dot_flags()) or _device() == "cuda"


def kernel_path() -> str:
    """A short name of the GEMM unit the exact weighted sums use in this process, e.g.
    ``"int8-amx (torch._int_mm, oneDNN direct conv)"``, ``"int8-vnni (torch._int_mm)"`` or
    ``"float32-blas"`` (printed by ``chipsim run``, kept in every report's provenance)."""
    if not use_int8():
        return "float32-blas"
    if _device() == "cuda":
        return "int8-cuda (torch._int_mm)"
    flags = cpu_dot_flags()
    unit = ("amx" if "amx_int8" in flags else "vnni" if any("vnni" in f for f in flags)
            else "dotprod" if flags else "generic")
    from .conv_direct import in_use                 # (imported here: conv_direct imports this module)
    return f"int8-{unit} (torch._int_mm{', oneDNN direct conv' if in_use() else ''})"


def set_device(device: str) -> None:
    """``cpu`` or ``cuda``: where the int8 GEMMs run (the data movement stays on the CPU)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            from ..errors import ChipsimError
            raise ChipsimError("device cuda (CHIPSIM_DEVICE or set_device): torch sees no CUDA device; use cpu")
    _STATE["device"] = device


def fits_int8(int_bound) -> bool:
    """Both operands' codes fit int8 (|code| <= 127)."""
    return int_bound is not None and max(int(np.ceil(int_bound[0])), int(np.ceil(int_bound[1]))) <= INT8_MAX


def int32_chunk(int_bound) -> int:
    """Most products one int32 sum may hold: the largest k with ``k*ma*mb < 2**31``."""
    prod = int(np.ceil(int_bound[0])) * int(np.ceil(int_bound[1]))
    return (INT32_EXACT - 1) // max(prod, 1)


@contextlib.contextmanager
def gemm_threads():
    """torch's intra-op threads set to :data:`GEMM_THREADS` for the calls inside, then restored."""
    import torch
    before = torch.get_num_threads()
    if GEMM_THREADS <= 0 or GEMM_THREADS == before:
        yield
        return
    torch.set_num_threads(GEMM_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mm(a8: np.ndarray, b8: np.ndarray) -> np.ndarray:
    """One int8 x int8 -> int32 GEMM through torch (numpy views in and out where possible)."""
    import torch
    ta, tb = torch.from_numpy(a8), torch.from_numpy(b8)
    if _device() == "cuda":
        return _mm_cuda(ta, tb)
    with gemm_threads():
        return torch._int_mm(ta, tb).numpy()


def _mm_cuda(ta, tb) -> np.ndarray:
    """``torch._int_mm`` on the GPU, whose int8 GEMM wants M > 16 and K, N multiples of 8: the
    operands are zero-padded up to those sizes (zeros add exact zeros) and the result cut back."""
    import torch
    m, k = ta.shape
    n = tb.shape[1]
    mp, kp, np_ = max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8
    a = torch.zeros((mp, kp), dtype=torch.int8, device="cuda")
    b = torch.zeros((kp, np_), dtype=torch.int8, device="cuda")
    a[:m, :k] = ta.cuda()
    b[:k, :n] = tb.cuda()
    return torch._int_mm(a, b)[:m, :n].cpu().numpy()


def int8_gemm(a8: np.ndarray, b8: np.ndarray, int_bound, k_eff=None) -> np.ndarray:
    """Exact ``a8 (M,K) @ b8 (K,N)`` for int8 codes with ``|a| <= ma``, ``|b| <= mb``.

    Returns int32 when one int32 sum holds every output (``k_eff*ma*mb < 2**31``, ``k_eff``
    defaulting to K: the most nonzero products reaching one output), else int64: the sum of
    int32 GEMMs over K-chunks of :func:`int32_chunk` terms (see the module docstring).
    """
    K = a8.shape[1]
    kc = int32_chunk(int_bound)
    if (K if k_eff is None else k_eff) <= kc:
        return _mm(a8, b8)
    n_chunks = -(-K // kc)
    size = -(-K // n_chunks)
    acc = _mm(a8[:, :size], b8[:size]).astype(np.int64)
    for k0 in range(size, K, size):
        acc += _mm(a8[:, k0:k0 + size], b8[k0:k0 + size])
    return acc


# --------------------------------------------------------------------------
# wider codes: balanced base-128 digits, each an int8 operand
# --------------------------------------------------------------------------
MAX_DIGIT_PRODUCTS = 4     # at most this many int8 GEMMs per product (e.g. 16-bit x 8-bit: 3)


def digits_needed(max_abs) -> int:
    """Balanced base-128 digits that hold every code ``|a| <= max_abs``.

    The lower digits lie in [-64, 63], the top one in [-127, 127]: one digit holds 127, two hold
    127*128 + 63 = 16319, three 16319*128 + 63 = 2088895 (so 8-bit unsigned codes up to 255 take
    two, signed 16-bit codes up to 32767 three).
    """
    m, d, cap = int(np.ceil(max_abs)), 1, INT8_MAX
    while m > cap:
        cap, d = cap * 128 + 63, d + 1
    return d


def split_digits(a, d: int) -> list:
    """Integer codes -> ``d`` int8 arrays ``a_0 .. a_{d-1}`` (low first) with ``a = sum_i a_i * 128**i``.

    Each lower digit is ``((r + 64) mod 128) - 64``, the remainder then divides exactly by 128; the
    caller's bound (:func:`digits_needed`) keeps the top digit within int8.
    """
    r = np.asarray(a).astype(np.int64)
    out = []
    for _ in range(d - 1):
        low = ((r + 64) & 127) - 64
        out.append(np.ascontiguousarray(low, dtype=np.int8))
        r = (r - low) >> 7
    out.append(np.ascontiguousarray(r, dtype=np.int8))
    return out


def split_fits(int_bound) -> bool:
    """The product can run as at most MAX_DIGIT_PRODUCTS exact int8 GEMMs."""
    return int_bound is not None and \
        digits_needed(int_bound[0]) * digits_needed(int_bound[1]) <= MAX_DIGIT_PRODUCTS


def _digit_bounds(d: int, max_abs) -> list:
    return [64] * (d - 1) + [min(INT8_MAX, int(np.ceil(max_abs)))] if d > 1 else [max(1, int(np.ceil(max_abs)))]


def _split_gemm(a, b, k_eff):
    """Exact ``a @ b`` for codes wider than int8: the sum over digit pairs of
    ``128**(i+j) * (a_i @ b_j)``, each an exact int8 GEMM, added in int64 (exact below 2**63, which
    ``exact.accumulation_path`` guarantees for the whole product).

    The digits are sized from each operand's own largest magnitude, measured here: a caller's
    ``int_bound`` bounds the pair but need not list the bounds in the operands' order (the weight
    gradients pass (x, gy) for a product gy^T @ x), and only the product of the two is symmetric.
    """
    ma, mb = int(np.abs(a).max(initial=0)), int(np.abs(b).max(initial=0))
    da, db = digits_needed(ma), digits_needed(mb)
    ad, bd = split_digits(a, da), split_digits(b, db)
    ba, bb = _digit_bounds(da, ma), _digit_bounds(db, mb)
    acc = None
    for i, (ai, mi) in enumerate(zip(ad, ba)):
        for j, (bj, mj) in enumerate(zip(bd, bb)):
            part = int8_gemm(ai, bj, (mi, mj), k_eff).astype(np.int64) << (7 * (i + j))
            acc = part if acc is None else acc + part
    return acc


@njit(cache=True)
def has_nan(a):
    """Whether a 2-D array (any layout, any dtype) holds a NaN; integer arrays never do. A row at a time,
    without a branch inside it (so the compare vectorises)."""
    for i in range(a.shape[0]):
        nan = False
        for j in range(a.shape[1]):
            nan |= a[i, j] != a[i, j]
        if nan:
            return True
    return False


def to_int8(a) -> np.ndarray:
    """Integer codes (any dtype holding exact integers in [-127, 127]) as a C-contiguous int8 array."""
    return np.ascontiguousarray(a, dtype=np.int8) if np.asarray(a).dtype != np.int8 else np.ascontiguousarray(a)


def matmul_int8(a, b, int_bound, k_eff=None) -> np.ndarray:
    """Exact ``a (M,K) @ b (K,N)`` for integer codes that fit int8 (or, split into int8 digits, at most
    MAX_DIGIT_PRODUCTS GEMMs: :func:`split_fits`), any layout in. None if an operand holds a NaN
    (a diverged run): int8 has no NaN, so the caller takes the float path, which carries it on.

    oneDNN's int8 GEMM is fast when the long dimension is M and N is narrow (measured here: a
    32 x 144 x 13440 product 13x slower than its transpose), so when M < N the transposed
    product ``(b^T a^T)^T`` is taken; the int8 copies made anyway are made in that layout.
    """
    a, b = np.asarray(a), np.asarray(b)
    if (a.dtype.kind == "f" and has_nan(a)) or (b.dtype.kind == "f" and has_nan(b)):
        return None
    if not fits_int8(int_bound):
        if a.shape[0] >= b.shape[1]:
            return _split_gemm(a, b, k_eff)
        return np.ascontiguousarray(_split_gemm(b.T, a.T, k_eff).T)
    if a.shape[0] >= b.shape[1]:
        return int8_gemm(to_int8(a), to_int8(b), int_bound, k_eff)
    # C-contiguous out, as np.matmul's: a later float reduction over it (a bias gradient, BN's
    # sums) adds in an order that follows the memory layout
    return np.ascontiguousarray(int8_gemm(to_int8(b.T), to_int8(a.T), int_bound[::-1], k_eff).T)
