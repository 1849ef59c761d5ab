"""Dense layers: one exact GEMM each (forward, grad-weight, grad-input)."""
from __future__ import annotations

from .exact import _f32, _matmul


def dense_forward(x, w, int_bound=None):
    """y (N,O) = x (N,K) @ w (O,K)^T; ``int_bound`` on (x, w)."""
    return _matmul(_f32(x), _f32(w).T, int_bound, "dense_forward")


def dense_grad_weight(x, gy, int_bound=None):
    """dL/dw (O,K) = gy^T @ x, reduction over the batch; bound on (x, gy)."""
    return _matmul(_f32(gy).T, _f32(x), int_bound, "dense_grad_weight")


def dense_grad_input(gy, w, int_bound=None):
    """dL/dx (N,K) = gy (N,O) @ w (O,K); ``int_bound`` on (gy, w)."""
    return _matmul(_f32(gy), _f32(w), int_bound, "dense_grad_input")
