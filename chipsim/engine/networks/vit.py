"""The network of a ``vit`` model: transformer blocks, FF's label patch, BP's average-pooling head.

The counterpart of ``networks.network.Network`` for vision transformers, with the same
interface the rules, the trainer and inference use (``blocks``, ``layers()``,
``input_with_label``, ``head``, ``state``/``load``):

* the blocks are ``layers.vit.block.TransformerBlock`` s over the layers
  ``transformer.build_encoder`` makes from the model file;
* a rule that carries the label in its input (FF, SymBa, DF) gets it the way
  the CFF paper extends FF to a ViT (its Algorithm 1, right): one extra patch
  per image, of the patch's size, a fixed random pattern per class (uniform
  in [0, 1), like pixels; drawn once from the seed and never trained, as
  SymBa's fixed label patch), through the same projection as the image's
  patches and with its own position embedding. The neutral label (the linear
  probe's pass) is a zero patch, as in the paper. ``learning.label_encoding``
  does not apply. Such a rule also divides each token of a layer's input by
  its L2 norm (the paper's ``x = f / norm2(f)``), so a layer cannot read its
  goodness off the residual stream of the layer below;
* BP's head is a linear classifier on the token mean of the last layer's
  output (``layers.vit.block.TokenMeanHead``);
* rows are never dropped: ``bn_backward`` is not ``fixed-stats``, so the step
  gives every row its error (a layer norm's rows are independent, so a chip
  could drop them, but the transformer's cache is not cut by rows).

Trace layer ids: block l's MLP sub-layer is layer l (its output and losses
live there, as a conv block's), BP's head (or the probe) is layer L, and
block l's attention sub-layer is layer L + 1 + l.
"""
from __future__ import annotations

import copy

import numpy as np

from ...trace import nbytes_of
from ..layers.vit.transformer import TransformerWidths, build_encoder
from ..layers.vit.block import LabelledImages, TokenMeanHead, TransformerBlock


class TransformerNetwork:
    is_transformer = True
    bn_backward = "every-row"      # not "fixed-stats": the step keeps every row (module docstring)
    embedding = None               # no learned label table (FF's label patch is fixed: label_patches)
    label_table = None

    def __init__(self, model, input_shape, num_classes, precision, seed: int, with_label: bool, with_head: bool,
                 normalise_inputs: bool = False, recompute: bool = False,
                 widths: TransformerWidths = TransformerWidths()):
        rng = np.random.default_rng([seed, 1])
        c, h, w = input_shape
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.prec = precision
        self.with_label = with_label
        self.label_encoding = "patch" if with_label else None
        layers = build_encoder(model.blocks, input_shape, precision, rng, widths, extra_tokens=int(with_label))
        depth = len(layers)
        self.blocks = [TransformerBlock(layer, attn_index=depth + 1 + i, normalise_input=normalise_inputs and i > 0,
                                        sends_error=with_head and i > 0, recompute=recompute)
                       for i, layer in enumerate(layers)]
        patch = model.blocks[0].patch
        self.label_patches = rng.random((num_classes, c * patch * patch), dtype=np.float32) if with_label else None
        last = self.blocks[-1]
        self.head = TokenMeanHead(depth, last.tokens, last.dim, num_classes, precision, rng) if with_head else None

    @property
    def depth(self) -> int:
        return len(self.blocks)

    label_trainable = False

    def layers(self):
        return self.blocks + ([self.head] if self.head is not None else [])

    def input_with_label(self, x, labels):
        """Images ``x`` with each row's label patch (``labels`` None: the zero patch); unchanged without labels."""
        if self.label_patches is None:
            return x
        if labels is None:
            patches = np.zeros((len(x), self.label_patches.shape[1]), np.float32)
        else:
            patches = self.label_patches[np.asarray(labels)]
        return LabelledImages(np.asarray(x, np.float32), patches[:, None, :])

    def label_grad(self, g_input, labels):
        return None

    def label_input(self):
        """(name, bytes, values) of FF's fixed label patches, at the patch projection's input width (None:
        no label)."""
        if self.label_patches is None:
            return None
        return ("label_patches", nbytes_of(self.label_patches.size, self.blocks[0].layer.embed.in_bits),
                int(self.label_patches.size))

    def state(self):
        return dict(blocks=[b.state() for b in self.layers()], label_patches=self.label_patches)

    def load(self, s):
        for b, bs in zip(self.layers(), s["blocks"]):
            b.load(bs)
        self.label_patches = copy.deepcopy(s["label_patches"])


def check_rule_model(hw, model) -> None:
    """One ConfigError line for a rule the model's kind cannot run (transformer layers train on their own
    loss, span 1, or by BP; CFF's loss reads a transformer layer's token mean)."""
    from ...errors import ConfigError
    if hw.loss == "contrastive" and not model.is_transformer:
        raise ConfigError(f"workload.rule: cff trains vit models (its loss reads a transformer layer's token mean); "
                          f"{model.name} has {model.blocks[0].type} blocks: set workload.model=models/vit_tiny.yaml")
    if not model.is_transformer:
        return
    if hw.loss == "cwc":
        raise ConfigError(f"workload.rule: cwc needs conv/dense channel groups; {model.name} is a vit model "
                          "(allowed on it: cff, ff, symba, df, bp)")
    if hw.strategy != "bp" and hw.span != 1:
        raise ConfigError(f"learning.span: {hw.span} (strategy {hw.strategy}): a vit model trains each encoder "
                          "layer on its own loss (span 1: rules cff, ff, symba, df) or by bp; errors between "
                          "transformer layers (df-o, df-r) are not implemented")
