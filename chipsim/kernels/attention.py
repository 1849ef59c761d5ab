"""Multi-head self-attention core: the per-head batched products and the softmax.

Layout: per-head tensors are ``(N, H, T, d)`` (batch, heads, tokens, head
width); scores and probabilities are ``(N, H, T, T)``. The Q/K/V and output
projections are token-wise dense products (``chipsim.kernels.tokens``); what
is here is what sits between them.

The four batched products return the *raw accumulator* of a product of the
operands given, exactly as the dense and conv kernels do: with
``int_bound=(max_abs_a, max_abs_b)`` on integer codes they are exact
(float32 while ``K*ma*mb < 2**24``, float64 below ``2**53``, int64 loops
above; ``chipsim.kernels.exact``), and the caller rescales by the operands'
quantisation scales and, for the scores, by ``1/sqrt(d)``. Keeping the
scaling out of the kernel keeps the integer part checkable against a plain
int64 reference.

Softmax runs in float32 over the last axis (the vector unit's width; see
``chipsim.engine.layers.vit.transformer`` for which widths feed it and which it feeds).
"""
from __future__ import annotations

import numpy as np

from ..trace.work import bits_of_bound, costed
from .exact import LAST_PATH, _matmul_int64, accumulation_path

SOFTMAX_OPS = 5            # per element: max, subtract, exp, sum, divide
SOFTMAX_BACKWARD_OPS = 4   # per element: g*p, row sum, subtract, multiply


def _bmm(a, b, int_bound, name):
    """Batched ``a (..., M, K) @ b (..., K, N)`` with the accumulator ``int_bound`` proves exact.

    Attention's reductions are short (the head width or the token count), so
    the fp64 path is one float64 product rather than exact.py's chunked sgemm.
    """
    if int_bound is None:
        LAST_PATH[name] = "float"
        return np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32))
    path = accumulation_path(a.shape[-1], *int_bound)
    LAST_PATH[name] = path
    if path == "fp32":
        return np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32))
    if path == "fp64":
        return np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64))
    lead = a.shape[:-2]
    a3 = np.ascontiguousarray(a, dtype=np.int64).reshape((-1,) + a.shape[-2:])
    b3 = np.ascontiguousarray(b, dtype=np.int64).reshape((-1,) + b.shape[-2:])
    out = np.stack([_matmul_int64(x, y) for x, y in zip(a3, b3)])
    return out.reshape(lead + out.shape[-2:])


def _swap(x):
    return np.swapaxes(x, -1, -2)


def _bound_bits(a, out):
    return bits_of_bound(a.int_bound)


# MACs: every product counts its output elements times its reduction length (N*H*T*T*d for all six)


@costed("attn_scores", count=lambda a, out: out.size * a.q.shape[-1], bits=_bound_bits)
def attn_scores(q, k, int_bound=None):
    """S (N,H,T,T) = Q K^T per head; ``int_bound`` on (q, k). Unscaled: the caller applies 1/sqrt(d)."""
    return _bmm(q, _swap(k), int_bound, "attn_scores")


@costed("attn_scores_grad", count=lambda a, out: out.size * a.gs.shape[-1], bits=_bound_bits)
def attn_scores_grad_query(gs, k, int_bound=None):
    """dQ (N,H,T,d) = dS K; ``int_bound`` on (gs, k)."""
    return _bmm(gs, k, int_bound, "attn_scores_grad_query")


@costed("attn_scores_grad", count=lambda a, out: out.size * a.gs.shape[-2], bits=_bound_bits)
def attn_scores_grad_key(gs, q, int_bound=None):
    """dK (N,H,T,d) = dS^T Q; ``int_bound`` on (gs, q)."""
    return _bmm(_swap(gs), q, int_bound, "attn_scores_grad_key")


@costed("attn_values", count=lambda a, out: out.size * a.p.shape[-1], bits=_bound_bits)
def attn_values(p, v, int_bound=None):
    """O (N,H,T,d) = P V per head; ``int_bound`` on (p, v)."""
    return _bmm(p, v, int_bound, "attn_values")


@costed("attn_values_grad", count=lambda a, out: out.size * a.go.shape[-1], bits=_bound_bits)
def attn_values_grad_probs(go, v, int_bound=None):
    """dP (N,H,T,T) = dO V^T; ``int_bound`` on (go, v)."""
    return _bmm(go, _swap(v), int_bound, "attn_values_grad_probs")


@costed("attn_values_grad", count=lambda a, out: out.size * a.p.shape[-2], bits=_bound_bits)
def attn_values_grad_values(p, go, int_bound=None):
    """dV (N,H,T,d) = P^T dO; ``int_bound`` on (p, go)."""
    return _bmm(_swap(p), go, int_bound, "attn_values_grad_values")


@costed("softmax", count=lambda a, out: out.size * SOFTMAX_OPS)
def softmax(s):
    """Softmax over the last axis in float32, max-subtracted so exp never overflows."""
    s = np.asarray(s, dtype=np.float32)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@costed("softmax_backward", count=lambda a, out: out.size * SOFTMAX_BACKWARD_OPS)
def softmax_backward(gp, p):
    """dS = P * (dP - sum(dP * P, last axis)): the softmax Jacobian applied to dP."""
    gp = np.asarray(gp, dtype=np.float32)
    p = np.asarray(p, dtype=np.float32)
    return (p * (gp - (gp * p).sum(axis=-1, keepdims=True))).astype(np.float32)
