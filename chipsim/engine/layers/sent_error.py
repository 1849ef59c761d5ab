"""An error as a layer sends it down the NoC to the layer below: exactly what the receiver gets.

Why a type of its own: the *sender* decides the width on the wire, and the trace must state that
width and no other (issue 23, defect 7). A conv/dense block quantises the error at its input to
``gradient_bits`` before it sends it (per-tensor symmetric codes and one float32 scale), so the
NoC carries codes; a transformer layer sends the float32 it holds. The receiver keeps what arrived
(its receive buffer) and reads the values through :meth:`SentError.__call__`: codes are turned back
into values there (one multiply per value, logged as the receiver's ``dequantize`` work, once per
read, since the receiver keeps the codes, not a float copy).

``cut`` is where in the open work log the sender's quantisation began, so the tracer can put the
grad-input work (done on every slice of a split layer, on 32-bit partials) and the quantisation
(done once the partials are summed) on two ops.
"""
from __future__ import annotations

import numpy as np

from ...trace.work import logged, record


class SentError:
    """Values (``bits == 32``) or signed codes and their scale, as sent; call it for the float32 values."""
    __slots__ = ("codes", "scale", "bits", "cut")

    def __init__(self, codes, scale, bits: int, cut: int | None = None):
        self.codes, self.scale, self.bits, self.cut = codes, np.float32(scale), int(bits), cut

    @property
    def size(self) -> int:
        return int(np.size(self.codes))

    def reshape(self, shape) -> "SentError":
        return SentError(self.codes.reshape(shape), self.scale, self.bits, self.cut)

    def __call__(self) -> np.ndarray:
        """The values the receiver computes with (codes times scale: its dequantisation, logged)."""
        if self.bits == 32:
            return self.codes
        record("dequantize", "SentError.receive", self.codes.size)
        return (self.codes * self.scale).astype(np.float32, copy=False)


def send_float(gx) -> SentError:
    """An error sent as the float32 values it is held in (no quantisation: nothing to log)."""
    return SentError(np.asarray(gx, np.float32), 1.0, 32, logged())


def send_quantized(gx, quantize, bits: int) -> SentError:
    """An error quantised by its sender (``quantize(gx) -> (codes, scale)``) before it goes on the NoC."""
    cut = logged()
    codes, scale = quantize(gx)
    return SentError(codes, scale, bits if bits != 32 else 32, cut)
