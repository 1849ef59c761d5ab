"""Token kernels of a vision transformer: patch embedding, token-wise dense products,
pooling over tokens, and the adds (bias, position, residual).

Token tensors are ``(N, T, E)``: batch, tokens, features. The weighted sums
go through ``chipsim.kernels.exact._matmul`` with ``int_bound``, as the dense
and conv kernels do, and return the raw accumulator; they have their own op
kinds (``patch_embed``, ``token_dense_*``) so a report can tell a
transformer's projections from a CNN's dense layers. A token-wise dense is
one GEMM over all ``N*T`` token rows: the same weights serve every token.

Patches are taken row-major over the patch grid, each flattened channel-major
then row, column -- the layout of a stride-``p`` convolution's kernel, so a
torch ``conv2d(x, w.reshape(E, C, p, p), stride=p)`` is the reference.
"""
from __future__ import annotations

import numpy as np

from ..trace.work import bits_of_bound, costed
from .exact import _f32, _matmul


def _bound_bits(a, out):
    return bits_of_bound(a.int_bound)


def patchify(x, patch: int):
    """(N, C, H, W) -> (N, T, C*p*p) with T = (H/p)*(W/p); pure data movement (addressing), no arithmetic."""
    n, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"patch {patch} does not tile a {h}x{w} image")
    hp, wp = h // patch, w // patch
    t = x.reshape(n, c, hp, patch, wp, patch).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(t.reshape(n, hp * wp, c * patch * patch))


def _rows(x):
    return x.reshape(-1, x.shape[-1])


def _patch_rows(x, patch, extra):
    pt = patchify(_f32(x), patch)
    if extra is not None:
        pt = np.concatenate([pt, _f32(extra)], axis=1)
    return pt


@costed("patch_embed", count=lambda a, out: out.size * a.w.shape[1], bits=_bound_bits)
def patch_embed_forward(x, w, patch: int, int_bound=None, extra=None):
    """Tokens (N, T, E) = patchify(x) @ w^T, ``w`` (E, C*p*p); ``int_bound`` on (x, w).

    ``extra`` (N, X, C*p*p): patches appended after the image's (e.g. FF's label patch), same weights.
    """
    pt = _patch_rows(x, patch, extra)
    acc = _matmul(_rows(pt), _f32(w).T, int_bound, "patch_embed_forward")
    return acc.reshape(pt.shape[:2] + (w.shape[0],))


@costed("patch_embed_grad_weight", count=lambda a, out: a.gy.size * out.shape[1], bits=_bound_bits)
def patch_embed_grad_weight(x, gy, patch: int, int_bound=None, extra=None):
    """dL/dw (E, C*p*p) = gy^T @ patchify(x) [+ extra], reduced over every token of the batch; bound on (x, gy)."""
    pt = _patch_rows(x, patch, extra)
    return _matmul(_rows(_f32(gy)).T, _rows(pt), int_bound, "patch_embed_grad_weight")


@costed("token_dense_forward", count=lambda a, out: out.size * a.w.shape[1], bits=_bound_bits)
def token_dense_forward(x, w, int_bound=None):
    """y (..., O) = x (..., K) @ w (O, K)^T over every token row; ``int_bound`` on (x, w)."""
    acc = _matmul(_rows(_f32(x)), _f32(w).T, int_bound, "token_dense_forward")
    return acc.reshape(x.shape[:-1] + (w.shape[0],))


@costed("token_dense_grad_weight", count=lambda a, out: a.gy.size * out.shape[1], bits=_bound_bits)
def token_dense_grad_weight(x, gy, int_bound=None):
    """dL/dw (O, K) = gy^T @ x summed over every token row; bound on (x, gy)."""
    return _matmul(_rows(_f32(gy)).T, _rows(_f32(x)), int_bound, "token_dense_grad_weight")


@costed("token_dense_grad_input", count=lambda a, out: out.size * a.w.shape[0], bits=_bound_bits)
def token_dense_grad_input(gy, w, int_bound=None):
    """dL/dx (..., K) = gy (..., O) @ w (O, K); ``int_bound`` on (gy, w)."""
    acc = _matmul(_rows(_f32(gy)), _f32(w), int_bound, "token_dense_grad_input")
    return acc.reshape(gy.shape[:-1] + (w.shape[1],))


@costed("token_mean", count=lambda a, out: np.asarray(a.x).size)
def token_mean(x):
    """(N, T, E) -> (N, E): the average over tokens (the paper's Eq. 13), summed in float64."""
    return np.asarray(x, dtype=np.float64).mean(axis=1).astype(np.float32)


@costed("token_mean_backward", count=lambda a, out: out.size)
def token_mean_backward(g, tokens: int):
    """(N, E) -> (N, T, E): each token gets g / T."""
    g = _f32(g) / np.float32(tokens)
    return np.ascontiguousarray(np.broadcast_to(g[:, None, :], (g.shape[0], int(tokens), g.shape[1])))


@costed("bias_add", count=lambda a, out: out.size)
def bias_add(x, b):
    """x + b, ``b`` broadcast over the leading axes (a bias (E,), or a position embedding (T, E))."""
    return (_f32(x) + _f32(b)).astype(np.float32)


@costed("bias_grad", count=lambda a, out: np.asarray(a.g).size)
def bias_grad(g, keep: int = 1):
    """The gradient of :func:`bias_add`: ``g`` summed over all but its last ``keep`` axes (float64 sum)."""
    g = np.asarray(g)
    return g.astype(np.float64).sum(axis=tuple(range(g.ndim - keep))).astype(np.float32)


@costed("residual_add", count=lambda a, out: out.size)
def residual_add(x, y):
    """x + y: a residual connection (its backward sends the same error down both branches)."""
    return (_f32(x) + _f32(y)).astype(np.float32)


L2NORM_OPS = 4           # per element: square, sum, (one reciprocal square root per token), multiply; counted alike
L2NORM_EPS = 1e-12


@costed("token_l2norm", count=lambda a, out: out.size * L2NORM_OPS)
def token_l2_normalize(x):
    """Each token (the last axis) divided by its L2 norm (sum in float64; norms below 1e-12 are not blown up)."""
    x = _f32(x)
    norm = np.sqrt(np.square(x.astype(np.float64)).sum(axis=-1, keepdims=True))
    return (x / np.maximum(norm, L2NORM_EPS)).astype(np.float32)
