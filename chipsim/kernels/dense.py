"""Dense layers: one exact GEMM each (forward, grad-weight, grad-input). Activations and errors may come as
int8 codes (``exact._codes``), weights as float32 codes."""
from __future__ import annotations

from ..trace.work import bits_of_bound, costed
from .exact import _codes, _f32, _matmul


@costed("dense_forward", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: out.size * a.w.shape[1])
def dense_forward(x, w, int_bound=None):
    """y (N,O) = x (N,K) @ w (O,K)^T; ``int_bound`` on (x, w)."""
    return _matmul(_codes(x), _f32(w).T, int_bound, "dense_forward")


@costed("dense_grad_weight", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: out.size * a.x.shape[0])
def dense_grad_weight(x, gy, int_bound=None):
    """dL/dw (O,K) = gy^T @ x, reduction over the batch; bound on (x, gy)."""
    return _matmul(_codes(gy).T, _codes(x), int_bound, "dense_grad_weight")


@costed("dense_grad_input", bits=lambda a, out: bits_of_bound(a.int_bound),
        count=lambda a, out: out.size * a.w.shape[0])
def dense_grad_input(gy, w, int_bound=None):
    """dL/dx (N,K) = gy (N,O) @ w (O,K); ``int_bound`` on (gy, w)."""
    return _matmul(_codes(gy), _f32(w), int_bound, "dense_grad_input")
