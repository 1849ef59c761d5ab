"""The vector unit's width: the number format of the engine's vector arithmetic (``precision.vector_bits``).

Why a width of its own: the vector unit (batch norm, quantisation scaling, losses, the optimizer,
activation functions, softmax, layer norm) carries most of a learning chip's energy when it computes in
float32, and an on-chip-learning design would run it narrower. The engine must then really compute at
that width, so that the accuracy it reports and the costs the trace carries describe the same machine.

The formats, by ``precision.vector_bits``:

* ``32``: IEEE float32, the engine's arithmetic as it has always been (nothing is rounded; every number,
  trace and weight is bit-identical to a build without this module);
* ``16``: **bfloat16** (1 sign, 8 exponent, 7 stored mantissa bits), round to nearest, ties to even.

Why bfloat16 and not float16 or 16-bit fixed point: the vector unit's values span a wide dynamic range
that no one scale fits. Adam's second moment is a squared gradient (1e-10 and below), a loss's
exponential can exceed 65504, a batch variance of small activations is tiny; float16 under- or
overflows on these (its smallest normal is 6.1e-5, its largest 65504) and would need loss scaling, and
16-bit fixed point would need a calibrated scale per tensor per kernel. bfloat16 keeps float32's
exponent, so every value the float32 engine produced has a bfloat16 neighbour within 2^-9 relative error,
with no scales to choose; its 8-bit significand multiplier is also smaller than float16's 11-bit one.
The price is precision: 2-3 significant decimal digits. That is enough for values that are next
quantised to 4-8-bit codes (activations, errors) or added to 16-bit fixed-point master weights, which is
where every vector result goes. 8 bits is not offered: an 8-bit float (e4m3 / e5m2) cannot hold Adam's
moments or a batch variance without per-tensor scaling machinery the engine does not model.

What "computes at that width" means here (the emulation): every float32 array a vector kernel reads is
rounded to the format on entry, and every float32 array it returns is rounded on exit, so each value
that passes between kernels, or into a store, is exactly representable in the format. Inside one kernel
the arithmetic runs in float32, as a bfloat16 unit's multiply-accumulate keeps a float32 accumulator
(batch sums, a loss's sum over classes, the chained products of Adam's update): an elementwise chain
inside one kernel is rounded once, at its end, not after each operation -- slightly optimistic for
long chains, exact for single operations. Values a kernel reads from 16-bit fixed-point stores
(optimizer state, accumulators) are codes times a scale, as they are on chip.

Where it applies: :func:`chipsim.trace.work.costed` calls :func:`run_at_width` for every wrapped kernel
of the vector unit while a width below 32 is active, and logs that kernel's work at the width (the
chip model then prices it with the 16-bit entries of ``chip.core.energy_pj.vector_op`` and
``vector_ops_per_cycle``). The engine enters the width with :func:`vector_width` around its training
step, its evaluation and its traced inference; outside, the width is 32.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from numba import njit

#: precision.vector_bits -> the format the vector unit computes in.
FORMATS = {16: "bfloat16", 32: "float32"}
#: kinds whose kernel updates float32 arrays it is given in place (running statistics): their arguments
#: are rounded in place after the call, not copied before it.
IN_PLACE_KINDS = frozenset({"bn_running_stats"})

_WIDTH = 32


def width() -> int:
    """The active width of the vector unit (32 outside :func:`vector_width`)."""
    return _WIDTH


@contextmanager
def vector_width(bits: int):
    """Run the block's vector kernels at ``bits`` (16: bfloat16; 32: float32)."""
    global _WIDTH
    bits = int(bits)
    if bits not in FORMATS:
        raise ValueError(f"vector width must be one of {sorted(FORMATS)}, got {bits!r}")
    prev, _WIDTH = _WIDTH, bits
    try:
        yield
    finally:
        _WIDTH = prev


def to_bfloat16(x) -> np.ndarray:
    """``x`` rounded to the nearest bfloat16 (ties to even), returned as float32 values.

    bfloat16 is the upper half of a float32: adding ``0x7FFF`` plus the lowest kept bit, then clearing
    the lower 16 bits, rounds to nearest-even; a carry into the exponent is the right result (up to
    infinity past bfloat16's largest finite value). NaNs are kept as NaN. One compiled pass (this runs on
    every vector kernel's operands at 16 bits; a chain of numpy operations cost several times the kernel)."""
    shape = np.shape(x)
    a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(a)
    _round_bf16(a.view(np.uint32), out.view(np.uint32))
    return out.reshape(shape)


@njit(cache=True)
def _round_bf16(u, out):
    for i in range(u.size):
        v = u[i]
        if (v & np.uint32(0x7F800000)) == np.uint32(0x7F800000) and (v & np.uint32(0x007FFFFF)) != 0:
            out[i] = v                                    # NaN: kept (rounding could carry it to infinity)
        else:
            out[i] = (v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


def vector_round(x, bits: int):
    """``x`` as the vector unit at ``bits`` holds it: unchanged at 32, bfloat16 values at 16.

    Only float32 arrays (and float32 scalars) are rounded; integer codes, masks, indices and anything
    else pass unchanged."""
    if bits == 32:
        return x
    if isinstance(x, np.ndarray):
        return to_bfloat16(x) if x.dtype == np.float32 else x
    if isinstance(x, np.float32):
        return np.float32(to_bfloat16(np.asarray(x))[()])
    return x


def _round_out(out, bits):
    """Round the float32 arrays of a kernel's result, through tuples, named tuples and dicts (a cache)."""
    if isinstance(out, tuple):
        items = [_round_out(v, bits) for v in out]
        return type(out)._make(items) if hasattr(out, "_fields") else tuple(items)
    if isinstance(out, list):
        return [_round_out(v, bits) for v in out]
    if isinstance(out, dict):
        return {k: _round_out(v, bits) for k, v in out.items()}
    return vector_round(out, bits)


def run_at_width(fn, kind: str, args, kwargs):
    """Call the vector kernel ``fn`` at the active width: float32 array inputs rounded on entry (in place
    after the call, for :data:`IN_PLACE_KINDS`), float32 results rounded on exit."""
    bits = _WIDTH
    if kind in IN_PLACE_KINDS:
        out = fn(*args, **kwargs)
        for v in list(args) + list(kwargs.values()):
            if isinstance(v, np.ndarray) and v.dtype == np.float32:
                v[...] = to_bfloat16(v)
        return _round_out(out, bits)
    args = tuple(vector_round(v, bits) for v in args)
    kwargs = {k: vector_round(v, bits) for k, v in kwargs.items()}
    return _round_out(fn(*args, **kwargs), bits)
