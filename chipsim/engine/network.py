"""The network the engine trains: a label embedding, the blocks, and BP's head.

Built from a ``ModelSpec`` and a dataset's input shape. Local rules (FF,
SymBa, DF) feed the image with a learnable label embedding appended as one
extra input channel of the image's size (Trifecta, DF); the BP baseline sees
the image alone and adds a linear classifier head.
"""
from __future__ import annotations

import numpy as np

from ..modelspec import Block as BlockSpec
from ..quant import FixedPoint
from .block import QuantBlock


class Network:
    def __init__(self, model, input_shape, num_classes, precision, seed: int, with_label: bool, with_head: bool,
                 bn_backward: str = "fixed-stats"):
        rng = np.random.default_rng([seed, 1])
        c, h, w = input_shape
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.prec = precision
        self.with_label = with_label
        self.bn_backward = bn_backward
        self.blocks = []
        shape = (c + 1, h, w) if with_label else (c, h, w)
        for i, spec in enumerate(model.blocks):
            if spec.type == "dense" and len(shape) == 3:
                shape = (int(np.prod(shape)),)
            blk = QuantBlock(i, spec, shape, precision, rng, bn_backward=bn_backward,
                             goodness=not with_head)          # BP decodes with its head, not goodness
            self.blocks.append(blk)
            shape = blk.out_shape
        self.embedding = None
        if with_label:
            # small random init: the label channel starts as weak, distinct patterns
            e0 = rng.normal(0, 0.5, size=(num_classes, h, w)).astype(np.float32)
            self.embedding = FixedPoint(e0, precision.update_bits)
        self.head = None
        if with_head:
            feat = int(np.prod(shape))
            self.head = QuantBlock(len(self.blocks), BlockSpec(type="dense", units=num_classes, norm="none"),
                                   (feat,), precision, rng, head=True)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def layers(self):
        """Every trainable layer in order (blocks, then the head if any)."""
        return self.blocks + ([self.head] if self.head is not None else [])

    def input_with_label(self, x, labels):
        """Append the embedding of ``labels`` as one more channel (x is (M,C,H,W))."""
        emb = self.embedding.value[labels]
        return np.concatenate([x, emb[:, None]], axis=1)

    def state(self):
        """Plain data (``chipsim.checkpoint``)."""
        return dict(blocks=[b.state() for b in self.layers()],
                    embedding=None if self.embedding is None else self.embedding.to_state())

    def load(self, s):
        for b, bs in zip(self.layers(), s["blocks"]):
            b.load(bs)
        self.embedding = None if s["embedding"] is None else FixedPoint.from_state(s["embedding"])
