"""One-pass inference: a linear softmax classifier on the last k blocks' activity.

Goodness decoding runs the network once per class (C passes). The one-pass
mode of Hinton, the Trifecta (Appendix H) and the Advancements paper runs it
once, under a neutral label (the mean of the label encodings), or with no
label at all for rules whose input carries none (CwC, contrastive rules),
concatenates the outputs of the last k blocks and reads the class off a
linear classifier trained alongside the blocks with cross-entropy.

The classifier learns locally: its error stops at its own weights, so no
gradient reaches the blocks, and it never changes what they learn. It is a
dense layer on the chip like any other, so it is BP's head block reused
(``QuantBlock`` with ``head=True``): weights at ``weight_bits`` with
fixed-point master weights at ``update_bits``, its input quantized to
``activation_bits``, its error to ``gradient_bits`` before the weight
gradient. The optimizer update is the trainer's, as for every layer
(``head.layer`` takes part like a block, under its own index).

Which features it is trained on is the caller's choice: rules without a
label pass the outputs of their training forward pass (``concat_features``);
rules with one need a forward pass under the neutral label
(``neutral_features``), since their training rows carry the true or a wrong
label, which the head would learn to read.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...modelspec import Block as BlockSpec
from .block import QuantBlock
from ..rules.losses import cross_entropy


class HeadStep(NamedTuple):
    loss: float          # mean cross-entropy over the batch
    grad: np.ndarray     # dL/dW of the head's weights (num_classes, n_features), float32
    logits: np.ndarray   # (M, num_classes), float32


def concat_features(outputs):
    """The head's input: block outputs (M, ...) each flattened, concatenated input to output: (M, F)."""
    outputs = list(outputs)
    m = outputs[0].shape[0]
    return np.concatenate([np.asarray(o, np.float32).reshape(m, -1) for o in outputs], axis=1)


class OnePassHead:
    """A linear classifier (no bias, as BP's head) on the outputs of the network's last ``last_k`` blocks."""

    def __init__(self, net, last_k: int, precision, seed: int):
        self.last_k = min(int(last_k), net.depth)
        if self.last_k < 1:
            raise ValueError(f"the head reads at least one block, got last_k={last_k}")
        self.blocks = tuple(range(net.depth - self.last_k, net.depth))
        self.n_features = int(sum(np.prod(net.blocks[i].out_shape) for i in self.blocks))
        self.num_classes = net.num_classes
        rng = np.random.default_rng([seed, 6])       # its own stream: adding a head moves no other draw
        spec = BlockSpec(type="dense", units=net.num_classes, norm="none")
        self.layer = QuantBlock(net.depth, spec, (self.n_features,), precision, rng, head=True)

    def select(self, outputs):
        """The head's input from all block outputs of a pass (a list, input to output)."""
        return concat_features(outputs[i] for i in self.blocks)

    def logits(self, features, train: bool = False):
        """Class scores (M, C) and the layer cache; ``train`` lets the input scale adapt."""
        return self.layer.forward(np.asarray(features, np.float32), train=train)

    def train_grad(self, features, labels, rng, tracer=None) -> HeadStep:
        """One training step's gradient (no update applied): forward, cross-entropy, weight gradient
        through the error quantized at ``gradient_bits`` (``rng``: stochastic rounding); each recorded by
        ``tracer`` when given (``rules.compose.head_step``)."""
        z, cache = self.logits(features, train=True)
        if tracer is not None:
            tracer.head_forward(self, cache)
        loss, g = cross_entropy(z, labels)
        if tracer is not None:
            tracer.loss(self.layer.index, g)
        gy = self.layer.backward_pre(g, cache)
        grad = self.layer.grad_weight(gy, cache, rng)
        if tracer is not None:
            tracer.grad_weight(self.layer, [self.layer.index])
        return HeadStep(loss, grad, z)

    def predict(self, features):
        return self.logits(features)[0].argmax(axis=1)

    def state(self):
        return self.layer.state()

    def load(self, s):
        self.layer.load(s)


def neutral_features(net, x, blocks, batch: int = 256):
    """Outputs of ``blocks`` (indices) for images ``x`` under the neutral label, one pass, eval-mode BN
    (the running statistics are read, not updated), concatenated per sample: (M, F) float32."""
    last = max(blocks)
    feats = []
    for s in range(0, x.shape[0], batch):
        a = net.input_with_label(x[s:s + batch], None)
        outs = []
        for blk in net.blocks[:last + 1]:
            a, _ = blk.forward(a, train=False)
            outs.append(a)
        feats.append(concat_features(outs[i] for i in blocks))
    return np.concatenate(feats)


def head_accuracy(net, head, x, y, batch: int = 256) -> float:
    """Test accuracy of one-pass inference."""
    pred = head.predict(neutral_features(net, x, head.blocks, batch))
    return float((pred == np.asarray(y)).mean())
