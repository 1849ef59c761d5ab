"""The core of multi-head self-attention, between the Q/K/V projection and the output projection.

Forward, per head h (``d = E / H``)::

    S = (Q K^T) / sqrt(d)        Q, K codes at attn_bits: exact integer product, then rescaled
    P = softmax(S)               float32 on the vector unit (S is an accumulator value)
    O = P V                      P codes at softmax_bits (non-negative), V codes at attn_bits: exact product

Widths, and why:

* Q, K and V are requantized to ``attn_bits`` (default: activation_bits),
  signed, each with its own running clipping scale, because they are the
  operands of the two attention products on the MAC array.
* The scores are never stored or sent; the softmax reads them at accumulator
  width and computes in float32. A softmax on 4-bit inputs would leave 15
  logit levels to rank T tokens by; chips keep the accumulator's width here.
* P lies in [0, 1] and needs no scale search: a fixed scale (a shift) and
  codes ``0 .. 2**(b-1) - 1`` at ``softmax_bits`` = b (default 8, and never
  narrower than the activations) -- the non-negative half of a signed b-bit
  lane, so the P V product runs on the b-bit MAC lanes (an unsigned b-bit
  operand would need b + 1 signed bits). At 4 bits an average weight
  1/T = 1/16 of a 16-token sequence would sit below one code step (1/8).
* The stored copy of P (those codes) is the attention matrix a core keeps for
  the backward pass: ``N * H * T * T`` codes at ``softmax_bits``, held by the
  core that owns the head (a layer split by heads splits P with it). The
  softmax backward uses the same dequantized codes, so P is kept once.

Backward: the error at O and the error at S are quantized to ``gradient_bits``
(stochastic rounding, seeded) before their integer products; quantizers are
straight-through.
"""
from __future__ import annotations

import numpy as np

from .... import kernels as K
from ....quant import ROUND_OPS, ClippedScale, quantize_signed, signed_max
from ....trace import nbytes_of
from ....trace.work import record
from .token_layers import code_bound, dequantize, int_bound, rescale


def quantize_probs(p, bits: int):
    """P in [0, 1] -> (codes in 0 .. 2**(bits-1) - 1, scale 2**-(bits-1)); identity at 32 bits.

    A probability of exactly 1 saturates one step below (1 - 2**-(bits-1)).
    """
    if bits == 32:
        return p, np.float32(1.0)
    record("quantize", "quantize_probs", ROUND_OPS * np.size(p))
    qmax = signed_max(bits)
    return (np.clip(np.rint(p * float(qmax + 1)), 0, qmax).astype(np.float32),
            np.float32(1.0 / (qmax + 1)))


class SelfAttentionCore:
    """Scores, softmax and values of ``heads`` heads over ``dim`` features (no projections)."""

    def __init__(self, dim: int, heads: int, precision, attn_bits: int, softmax_bits: int):
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.head_dim = int(dim), int(heads), int(dim) // int(heads)
        self.prec = precision
        self.attn_bits, self.softmax_bits = int(attn_bits), int(softmax_bits)
        self.q_scale, self.k_scale, self.v_scale = (ClippedScale(self.attn_bits, signed=True,
                                                                 scale_mode=precision.scale) for _ in range(3))

    def _split(self, qkv):
        """(N, T, 3E) -> three (N, H, T, d) views."""
        n, t, _ = qkv.shape
        parts = qkv.reshape(n, t, 3, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        return parts[0], parts[1], parts[2]

    def _merge(self, x):
        """(N, H, T, d) -> (N, T, E)."""
        n, h, t, d = x.shape
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(n, t, h * d)

    def forward(self, qkv, train: bool):
        """(N, T, 3E) -> (O (N, T, E), cache)."""
        q, k, v = self._split(qkv)
        qq, qs = self.q_scale.quantize(q, update=train)
        kq, ks = self.k_scale.quantize(k, update=train)
        vq, vs = self.v_scale.quantize(v, update=train)
        a = code_bound(self.attn_bits)
        s_acc = K.attn_scores(qq, kq, int_bound=int_bound(a, a))
        # the 1/sqrt(d) of the scores folds into the rescale: one multiply per score either way
        s = rescale(s_acc, qs * ks / np.sqrt(self.head_dim), "SelfAttentionCore.forward", True)
        p = K.softmax(s)
        pq, ps = quantize_probs(p, self.softmax_bits)
        pv = int_bound(code_bound(self.softmax_bits), a)
        o = self._merge(rescale(K.attn_values(pq, vq, int_bound=pv), ps * vs, "SelfAttentionCore.forward",
                                pv is not None))
        return o, dict(qq=qq, qs=qs, kq=kq, ks=ks, vq=vq, vs=vs, pq=pq, ps=ps)

    def _quantize_error(self, g, rng):
        p = self.prec
        return quantize_signed(g, p.gradient_bits, p.rounding, rng, p.scale)

    def backward(self, go, cache, rng):
        """Error at O (N, T, E) -> error at the Q/K/V projection's output (N, T, 3E)."""
        c = cache
        n, t, _ = go.shape
        go = np.ascontiguousarray(go.reshape(n, t, self.heads, self.head_dim).transpose(0, 2, 1, 3))
        a, g = code_bound(self.attn_bits), code_bound(self.prec.gradient_bits)
        sm = code_bound(self.softmax_bits)
        goq, gos = self._quantize_error(go, rng)
        quant = g is not None and a is not None
        name = "SelfAttentionCore.backward"
        gp = rescale(K.attn_values_grad_probs(goq, c["vq"], int_bound=int_bound(g, a)), gos * c["vs"], name, quant)
        gv = rescale(K.attn_values_grad_values(c["pq"], goq, int_bound=int_bound(sm, g)), c["ps"] * gos, name,
                     quant and sm is not None)
        p = dequantize(c["pq"], c["ps"], self.softmax_bits)
        if sm is not None:
            record("dequantize", name, np.size(p))
        gs = K.softmax_backward(gp, p)
        gsq, gss = self._quantize_error(rescale(gs, np.float32(1.0 / np.sqrt(self.head_dim)), name, quant), rng)
        gq = rescale(K.attn_scores_grad_query(gsq, c["kq"], int_bound=int_bound(g, a)), gss * c["ks"], name, quant)
        gk = rescale(K.attn_scores_grad_key(gsq, c["qq"], int_bound=int_bound(g, a)), gss * c["qs"], name, quant)
        out = np.stack([gq, gk, gv])                         # (3, N, H, T, d)
        return np.ascontiguousarray(out.transpose(1, 3, 0, 2, 4)).reshape(n, t, 3 * self.dim)

    def stored_bytes(self, cache) -> dict:
        """Q, K, V codes at attn_bits and the attention matrix P at softmax_bits (the largest buffer for long
        sequences: N*H*T*T), all in the SRAM of the core that owns the heads."""
        return {"qkv": nbytes_of(3 * cache["qq"].size, self.attn_bits),
                "attn_probs": nbytes_of(cache["pq"].size, self.softmax_bits)}

    def state(self):
        return dict(q=self.q_scale.running, k=self.k_scale.running, v=self.v_scale.running)

    def load(self, s):
        self.q_scale.running, self.k_scale.running, self.v_scale.running = s["q"], s["k"], s["v"]
