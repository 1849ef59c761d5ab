"""The network the engine trains: the label encoding, the blocks, and BP's head.

Built from a ``ModelSpec`` and a dataset's input shape. Local rules that
overlay a label (FF, SymBa, DF) feed the image with it, encoded as
``learning.label_encoding`` says:

* ``learned``: one extra input channel of the image's size, a trained table
  of one map per class (Trifecta with OLU, DF);
* ``random``: the same channel, fixed at its random initial value and never
  updated (the Trifecta's choice without OLU);
* ``onehot``: Hinton's overlay, no extra channel: the first C values of the
  flattened image are replaced by the label's one-hot vector. Meant for dense
  models: in a conv model only the kernels over the image's first row see it
  (the Trifecta's footnote 3).

:meth:`Network.input_with_label` is the one entry point: the rows part of a
rule passes the images and their labels (or ``None`` for the neutral label of
one-pass inference) whatever the encoding, and a network without a label (BP,
CwC) returns the images unchanged. The BP baseline adds a linear classifier
head.
"""
from __future__ import annotations

import numpy as np

from ...modelspec import Block as BlockSpec
from ...quant import FixedPoint
from ...trace import nbytes_of
from ...trace.work import costed
from ..layers.block import QuantBlock
from ..layers.registry import build_layer

LABEL_ENCODINGS = ("learned", "random", "onehot")


@costed("embedding_grad_scatter", count=lambda a, out: np.asarray(a.g_label).size)
def scatter_label_grad(g_label, labels, num_classes: int):
    """Gradient of a (C, H, W) label table from the error on each row's label channel (M, H, W).

    Each row adds its error to its label's map; a neutral row (``labels`` None: the channel is the
    mean of the C maps) adds 1/C of its error to every map.
    """
    g_label = np.asarray(g_label, np.float32)
    grad = np.zeros((num_classes,) + g_label.shape[1:], np.float32)
    if labels is None:
        grad += g_label.sum(axis=0) / np.float32(num_classes)
    else:
        np.add.at(grad, np.asarray(labels), g_label)
    return grad


class Network:
    def __init__(self, model, input_shape, num_classes, precision, seed: int, with_label: bool, with_head: bool,
                 bn_backward: str = "fixed-stats", label_encoding: str = "learned"):
        if label_encoding not in LABEL_ENCODINGS:
            raise ValueError(f"label_encoding must be one of {', '.join(LABEL_ENCODINGS)}, got {label_encoding!r}")
        rng = np.random.default_rng([seed, 1])
        c, h, w = input_shape
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.prec = precision
        self.with_label = with_label
        self.label_encoding = label_encoding if with_label else None
        if self.label_encoding == "onehot" and c * h * w < num_classes:
            raise ValueError(f"onehot labels need at least {num_classes} input values, the input has {c * h * w}")
        self.bn_backward = bn_backward
        self.blocks = []
        shape = (c + 1, h, w) if self.label_encoding in ("learned", "random") else (c, h, w)
        for i, spec in enumerate(model.blocks):
            if spec.type == "dense" and len(shape) == 3:
                shape = (int(np.prod(shape)),)
            blk = build_layer(i, spec, shape, precision, rng, bn_backward=bn_backward,
                              goodness=not with_head)         # BP decodes with its head, not goodness
            self.blocks.append(blk)
            shape = blk.out_shape
        self.embedding = None        # the trained label table (``learned``): a FixedPoint at update_bits
        self.label_table = None      # the fixed one (``random``): float32 (C, H, W)
        if self.label_encoding in ("learned", "random"):
            # small random init: the label channel starts as weak, distinct patterns; ``random`` keeps
            # exactly this start (same seed, same values), so the two differ only in the learning
            e0 = rng.normal(0, 0.5, size=(num_classes, h, w)).astype(np.float32)
            e0 = FixedPoint(e0, precision.update_bits)
            if self.label_encoding == "learned":
                self.embedding = e0
            else:
                self.label_table = e0.value.copy()
        self.head = None
        if with_head:
            feat = int(np.prod(shape))
            self.head = QuantBlock(len(self.blocks), BlockSpec(type="dense", units=num_classes, norm="none"),
                                   (feat,), precision, rng, head=True)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def label_trainable(self) -> bool:
        """Does a rule owe the label encoding a gradient (and the optimizer an update)?"""
        return self.label_encoding == "learned"

    def layers(self):
        """Every trainable layer in order (blocks, then the head if any)."""
        return self.blocks + ([self.head] if self.head is not None else [])

    def label_input(self):
        """(name, bytes, values) of the label table the first layer reads with the image (None: no table):
        the learned or fixed label channel, as FixedPoint values at update_bits."""
        maps = self._label_maps()
        if maps is None:
            return None
        return "label_embedding", nbytes_of(maps.size, self.prec.update_bits), int(maps.size)

    def _label_maps(self):
        return self.embedding.value if self.embedding is not None else self.label_table

    def input_with_label(self, x, labels):
        """The rows the first block sees: images ``x`` (M, C, H, W) with ``labels`` (M,) overlaid.

        ``labels=None`` overlays the neutral label, the mean of the C encodings (one-pass
        inference). Without a label (BP, CwC) the images are returned as they are.
        """
        if self.label_encoding is None:
            return x
        m = x.shape[0]
        if self.label_encoding == "onehot":
            k = self.num_classes
            out = np.array(x, dtype=np.float32, copy=True)
            flat = out.reshape(m, -1)
            flat[:, :k] = np.float32(1.0 / k) if labels is None else np.float32(0.0)
            if labels is not None:
                flat[np.arange(m), np.asarray(labels)] = np.float32(1.0)
            return out
        maps = self._label_maps()
        chan = np.broadcast_to(maps.mean(axis=0), (m,) + maps.shape[1:]) if labels is None else maps[labels]
        return np.concatenate([x, chan[:, None].astype(x.dtype, copy=False)], axis=1)

    def label_grad(self, g_input, labels):
        """Gradient of the learned label table from the error at the first block's input (M, C+1, H, W),
        or flattened to (M, (C+1)*H*W) for a dense first block:
        the label channel's error scattered to each row's class. None when the encoding is not trained."""
        if not self.label_trainable:
            return None
        c, h, w = self.input_shape           # a dense first block sees the rows flattened
        return scatter_label_grad(np.asarray(g_input).reshape(len(g_input), c + 1, h, w)[:, -1], labels,
                                  self.num_classes)

    def state(self):
        """Plain data (``chipsim.checkpoint``)."""
        return dict(blocks=[b.state() for b in self.layers()],
                    embedding=None if self.embedding is None else self.embedding.to_state(),
                    label_table=self.label_table)

    def load(self, s):
        for b, bs in zip(self.layers(), s["blocks"]):
            b.load(bs)
        self.embedding = None if s["embedding"] is None else FixedPoint.from_state(s["embedding"])
        if s.get("label_table") is not None:
            self.label_table = s["label_table"]
