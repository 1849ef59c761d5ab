"""A conv/dense network of chipsim's blocks in plain PyTorch, written from the papers.

Each block is BN (no affine; batch statistics in training, running statistics kept as buffers; absent
under ``norm: none``) -> conv|dense (no bias, He-uniform) -> ReLU -> max-pool, as chipsim's blocks and
``benchmarks/cwc_torch.py``. Rules whose input carries the label (FF, SymBa, DF and its variants) get a
learned label embedding, one extra input channel (C x H x W, as the engine's ``learned`` encoding);
DF-R gets one fixed random feedback matrix B_l of W_l's shape per block above the first, used by a
custom autograd Function in place of W_l^T; BP gets a linear head (no bias) on the last block.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class FeedbackLinearOp(torch.autograd.Function):
    """y = op(z, W) forward; backward sends the error to z through B instead of W (DF-R's feedback).

    Saves what the plain op saves (its input z and W) plus B, so it holds no more than ``conv2d``/``mm``."""

    @staticmethod
    def forward(ctx, z, w, b, conv_args):
        ctx.save_for_backward(z, w, b)
        ctx.conv_args = conv_args
        return F.conv2d(z, w, **conv_args) if w.dim() == 4 else z @ w.t()

    @staticmethod
    def backward(ctx, gy):
        z, w, b = ctx.saved_tensors
        gz = gw = None
        if w.dim() == 4:
            if ctx.needs_input_grad[0]:
                gz = torch.nn.grad.conv2d_input(z.shape, b, gy, **ctx.conv_args)
            if ctx.needs_input_grad[1]:
                gw = torch.nn.grad.conv2d_weight(z, w.shape, gy, **ctx.conv_args)
        else:
            if ctx.needs_input_grad[0]:
                gz = gy @ b
            if ctx.needs_input_grad[1]:
                gw = gy.t() @ z
        return gz, gw, None, None


def _uniform(shape, gen, dtype):
    bound = math.sqrt(6.0 / int(math.prod(shape[1:])))
    return (torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1) * bound


class TorchBlock(torch.nn.Module):
    """One chipsim block: [BN] -> conv|dense -> ReLU -> [max-pool]."""

    def __init__(self, spec, in_shape, gen, dtype, feedback: bool = False):
        super().__init__()
        self.spec = spec
        if spec.type == "conv":
            c = in_shape[0]
            w_shape = (spec.channels, c, spec.kernel, spec.kernel)
            self.conv_args = dict(stride=spec.stride, padding=spec.padding)
            bn = torch.nn.BatchNorm2d
            n_in = c
        elif spec.type == "dense":
            n_in = int(math.prod(in_shape))
            w_shape = (spec.units, n_in)
            self.conv_args = {}
            bn = torch.nn.BatchNorm1d
        else:
            raise ValueError(f"block type {spec.type!r}: the framework package runs conv and dense blocks")
        self.bn = bn(n_in, affine=False, dtype=dtype) if spec.norm == "batch" else None
        self.w = torch.nn.Parameter(_uniform(w_shape, gen, dtype))
        # DF-R's fixed random feedback B (same shape and scale as W); a buffer: no gradient, no optimizer state
        self.register_buffer("b", _uniform(w_shape, gen, dtype) if feedback else None)

    def forward(self, a):
        if self.spec.type == "dense" and a.dim() > 2:
            a = a.flatten(1)
        z = self.bn(a) if self.bn is not None else a
        if self.b is not None:
            y = FeedbackLinearOp.apply(z, self.w, self.b, self.conv_args)
        elif self.spec.type == "conv":
            y = F.conv2d(z, self.w, **self.conv_args)
        else:
            y = z @ self.w.t()
        r = F.relu(y)
        return F.max_pool2d(r, self.spec.pool) if self.spec.pool else r


def out_shape(spec, in_shape) -> tuple:
    """A block's output shape (no batch axis), without running it."""
    if spec.type == "dense":
        return (spec.units,)
    c, h, w = in_shape
    k, s, p = spec.kernel, spec.stride, spec.padding
    h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if spec.pool:
        h, w = h // spec.pool, w // spec.pool
    return (spec.channels, h, w)


class TorchNet(torch.nn.Module):
    """The blocks of a ModelSpec, plus what the rule needs: a label embedding, feedback, a head."""

    def __init__(self, blocks, input_shape, num_classes: int, with_label: bool, feedback: bool,
                 with_head: bool, seed: int = 0, dtype=torch.float32):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        c, h, w = input_shape
        shape = (c + 1, h, w) if with_label else (c, h, w)
        mods = []
        for i, spec in enumerate(blocks):
            mods.append(TorchBlock(spec, shape, gen, dtype, feedback=feedback and i > 0))
            shape = out_shape(spec, shape)
        self.blocks = torch.nn.ModuleList(mods)
        self.num_classes = num_classes
        # the learned label embedding: one (H, W) pattern per class, a small random start
        self.embedding = (torch.nn.Parameter(torch.randn((num_classes, h, w), generator=gen, dtype=dtype) * 0.5)
                          if with_label else None)
        self.head = (torch.nn.Parameter(_uniform((num_classes, int(math.prod(shape))), gen, dtype))
                     if with_head else None)

    def rows(self, x, labels):
        """The input rows: ``x`` (R, C, H, W) with the label embedding of ``labels`` (R,) as one more channel."""
        return torch.cat([x, self.embedding[labels].unsqueeze(1)], 1)

    @staticmethod
    def readout(out):
        """What a block's loss reads: its whole output (``vit.TorchViT`` reads the token mean)."""
        return out

    @staticmethod
    def head_input(a):
        """What BP's head reads: the last block's output, flattened."""
        return a.flatten(1)
