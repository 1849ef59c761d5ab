"""A vision transformer of chipsim's ``vit`` blocks in plain PyTorch (float32), as a practitioner writes one.

Each block is one pre-LN encoder layer (ViT, Dosovitskiy et al.; the CFF paper's Sec. 3.4)::

    z = x + proj(MHSA(LN1(x)))
    f = z + fc2(GELU(fc1(LN2(z))))

with ``torch.nn.LayerNorm`` / ``torch.nn.Linear`` modules (biases included), exact (erf) GELU, and the
first block embedding the image: a stride-``patch`` ``Conv2d`` (the usual patch embedding) plus a learned
position embedding. What the engine's network adds per rule (``engine/networks/vit.py``):

* FF/SymBa/DF carry the label as one extra patch per row, a fixed random pattern per class (uniform in
  [0, 1), a buffer: never trained), through the same projection weights, with its own position; every
  later block divides each input token by its L2 norm first (the CFF paper's Algorithm 1, right);
* what a block's loss reads is the token mean of its output (the paper's Eq. 13): :meth:`TorchViT.readout`;
* BP's head is a linear classifier (no bias) on the token mean of the last block's output.

Attention is ``torch.nn.functional.scaled_dot_product_attention`` (:data:`ATTENTION` ``"sdpa"``, the
default): it is what ``torch.nn.MultiheadAttention`` and timm's ViT call today, so it is what a
practitioner's step holds. Its fused kernels (flash attention on CPU and CUDA) keep the row log-sum-exp for
the backward instead of the N x H x T x T probabilities, which changes the measured peak; ``"explicit"``
(softmax(Q K^T / sqrt(d)) V in three ops, which keeps the probabilities) is there to measure the difference.

CFF's two views of each sample arrive as rows of the batch, as a supervised-contrastive data loader
delivers them (``TwoCropTransform``): the step holds 2B images, sample s's views in rows 2s and 2s + 1.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError

LN_EPS = 1e-5          # the engine's (and torch's default) layer-norm epsilon
L2_EPS = 1e-12         # token norms below this are not blown up (the engine's token_l2_normalize)


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def _explicit(q, k, v):
    p = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
    return p @ v


#: how the heads' attention is computed: (Q, K, V) each (N, H, T, d) -> O (N, H, T, d)
ATTENTION = {"sdpa": _sdpa, "explicit": _explicit}


class LabelledImages(NamedTuple):
    """The first block's input under a label rule: images (R, C, H, W) and one label patch per row (R, 1, C*p*p)."""
    images: torch.Tensor
    patches: torch.Tensor


class PatchEmbedding(torch.nn.Module):
    """Patches -> tokens: a stride-``patch`` convolution, extra patches through the same weights, + position."""

    def __init__(self, channels: int, patch: int, dim: int, tokens: int, gen, dtype):
        super().__init__()
        self.proj = torch.nn.Conv2d(channels, dim, patch, stride=patch, dtype=dtype)
        bound = math.sqrt(6.0 / (channels * patch * patch + dim))          # Xavier on the (E, C*p*p) product
        with torch.no_grad():
            self.proj.weight.copy_((torch.rand(self.proj.weight.shape, generator=gen, dtype=dtype) * 2 - 1) * bound)
            self.proj.bias.zero_()
        self.pos = torch.nn.Parameter(torch.randn((tokens, dim), generator=gen, dtype=dtype) * 0.02)

    def forward(self, a):
        images, patches = (a.images, a.patches) if isinstance(a, LabelledImages) else (a, None)
        t = self.proj(images).flatten(2).transpose(1, 2)
        if patches is not None:
            t = torch.cat([t, F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)], 1)
        return t + self.pos


def _linear(n_in, n_out, gen, dtype):
    lin = torch.nn.Linear(n_in, n_out, dtype=dtype)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(lin.weight, generator=gen)
        lin.bias.zero_()
    return lin


class TorchVitBlock(torch.nn.Module):
    """One ``vit`` block: [patch embedding | L2-normalised input tokens] -> pre-LN encoder layer."""

    def __init__(self, spec, tokens: int, gen, dtype, channels: Optional[int] = None, normalise_input: bool = False,
                 attention: str = "sdpa"):
        super().__init__()
        e, m = spec.dim, spec.mlp_dim or 4 * spec.dim
        self.heads = spec.heads
        self.embed = PatchEmbedding(channels, spec.patch, e, tokens, gen, dtype) if spec.patch else None
        self.normalise_input = bool(normalise_input)
        self.attention = ATTENTION[attention]
        self.ln1 = torch.nn.LayerNorm(e, eps=LN_EPS, dtype=dtype)
        self.qkv = _linear(e, 3 * e, gen, dtype)
        self.proj = _linear(e, e, gen, dtype)
        self.ln2 = torch.nn.LayerNorm(e, eps=LN_EPS, dtype=dtype)
        self.fc1 = _linear(e, m, gen, dtype)
        self.fc2 = _linear(m, e, gen, dtype)

    def forward(self, a):
        if self.embed is not None:
            x = self.embed(a)
        elif self.normalise_input:
            x = a / a.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)
        else:
            x = a
        n, t, e = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(n, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        z = x + self.proj(self.attention(q, k, v).transpose(1, 2).reshape(n, t, e))
        return z + self.fc2(F.gelu(self.fc1(self.ln2(z))))


class TorchViT(torch.nn.Module):
    """The ``vit`` blocks of a ModelSpec, plus what the rule needs: FF's label patches, BP's head.

    The same interface as ``nets.TorchNet`` (``blocks``, ``num_classes``, ``rows``, ``readout``,
    ``head_input``, ``head``), so the steps of ``steps.py`` drive both."""

    def __init__(self, blocks, input_shape, num_classes: int, with_label: bool, feedback: bool, with_head: bool,
                 seed: int = 0, dtype=torch.float32, attention: str = "sdpa"):
        super().__init__()
        if feedback:
            raise ConfigError("rule: a vit model has no random feedback path (df-r); allowed on vit: "
                              "cff, ff, symba, df, bp")
        if attention not in ATTENTION:
            raise ConfigError(f"attention: {attention!r}; allowed: {', '.join(ATTENTION)}")
        gen = torch.Generator().manual_seed(seed)
        c, h, w = input_shape
        patch = blocks[0].patch
        if not patch or h % patch or w % patch:
            raise ConfigError(f"blocks[0].patch: {patch} does not tile a {h}x{w} image")
        tokens = (h // patch) * (w // patch) + int(with_label)
        self.blocks = torch.nn.ModuleList(
            TorchVitBlock(spec, tokens, gen, dtype, channels=c if i == 0 else None,
                          normalise_input=with_label and i > 0, attention=attention)
            for i, spec in enumerate(blocks))
        self.num_classes = num_classes
        self.register_buffer("label_patches", torch.rand((num_classes, 1, c * patch * patch), generator=gen,
                                                         dtype=dtype) if with_label else None)
        dim = blocks[-1].dim
        bound = math.sqrt(6.0 / dim)
        self.head = (torch.nn.Parameter((torch.rand((num_classes, dim), generator=gen, dtype=dtype) * 2 - 1) * bound)
                     if with_head else None)

    def rows(self, x, labels):
        """The input rows: images ``x`` (R, C, H, W) with the label patch of ``labels`` (R,)."""
        return LabelledImages(x, self.label_patches[labels])

    @staticmethod
    def readout(out):
        """What a block's loss reads: the token mean (N, T, E) -> (N, E)."""
        return out.mean(1)

    head_input = readout
