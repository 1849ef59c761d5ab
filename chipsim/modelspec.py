"""Model files (models/*.yaml): a list of blocks, each one unit of layer-local learning.

* ``conv`` / ``dense``: ``BN -> conv|dense -> ReLU -> [max-pool]``. The block
  order follows the Trifecta / DF papers: normalising *before* the weighted
  sum keeps each block's goodness from trivially passing the previous block's
  goodness up (the next block sees only the direction of its input).
* ``vit``: one pre-LN transformer encoder layer (LayerNorm, multi-head
  self-attention, LayerNorm, GELU MLP, two residuals) on ``dim``-wide tokens.
  The first ``vit`` block also cuts the image into ``patch`` x ``patch``
  patches, projects them to ``dim`` and adds a learnable position embedding
  (the CFF paper's first layer). A model is all conv/dense or all vit blocks;
  ``ViT[E H L]`` in the paper's notation is L vit blocks of ``dim`` E and
  ``heads`` H (``chipsim.engine.transformer``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple


from .errors import ConfigError
from .schema import Where, build, field_names, read_yaml_file, spec


@dataclass(frozen=True)
class Block:
    type: str = spec(doc="layer kind", choices=("conv", "dense", "vit"))
    channels: Optional[int] = spec(None, doc="output channels (conv)", min=1)
    units: Optional[int] = spec(None, doc="output neurons (dense)", min=1)
    kernel: int = spec(3, doc="square kernel size (conv)", min=1)
    stride: int = spec(1, doc="convolution stride (conv)", min=1)
    padding: int = spec(1, doc="zero padding on each side (conv)", min=0)
    pool: int = spec(0, doc="max-pool window and stride after ReLU; 0 = none", min=0)
    norm: str = spec("batch", doc="normalisation before the weighted sum (conv, dense)", choices=("batch", "none"))
    dim: Optional[int] = spec(None, doc="token width E (vit)", min=1)
    heads: Optional[int] = spec(None, doc="attention heads H; must divide dim (vit)", min=1)
    mlp_dim: Optional[int] = spec(None, doc="hidden width of the GELU MLP; null = 4 x dim (vit)", min=1)
    patch: Optional[int] = spec(None, doc="square patch size; only on the first vit block, which embeds the "
                                "image (vit)", min=1)

    def _validate(self, key, where):
        if self.type == "vit":
            self._validate_vit(key, where)
            return
        for name in ("dim", "heads", "mlp_dim", "patch"):
            if getattr(self, name) is not None:
                raise where.error(f"{key}.{name}", f"a {self.type} block takes no `{name}` (vit blocks do)")
        if self.type == "conv" and self.channels is None:
            raise where.error(f"{key}.channels", "missing: a conv block needs `channels`")
        if self.type == "dense" and self.units is None:
            raise where.error(f"{key}.units", "missing: a dense block needs `units`")
        if self.type == "conv" and self.units is not None:
            raise where.error(f"{key}.units", "a conv block takes `channels`, not `units`")
        if self.type == "dense" and self.channels is not None:
            raise where.error(f"{key}.channels", "a dense block takes `units`, not `channels`")
        if self.pool == 1:
            raise where.error(f"{key}.pool", "1 is a no-op; use 0 (no pool) or >= 2")

    def _validate_vit(self, key, where):
        for name in ("dim", "heads"):
            if getattr(self, name) is None:
                raise where.error(f"{key}.{name}", f"missing: a vit block needs `{name}`")
        for name in ("channels", "units"):
            if getattr(self, name) is not None:
                raise where.error(f"{key}.{name}", f"a vit block takes `dim`, not `{name}`")
        if self.dim % self.heads:
            raise where.error(f"{key}.heads", f"{self.heads} heads do not divide dim {self.dim}")
        if self.pool:
            raise where.error(f"{key}.pool", "a vit block has no pool (its tokens are averaged for the loss)")
        if self.norm != "batch":
            raise where.error(f"{key}.norm", "a vit block normalises with LayerNorm; `norm` is for conv and dense")

    @property
    def out_features(self) -> int:
        if self.type == "vit":
            return self.dim
        return self.channels if self.type == "conv" else self.units


@dataclass(frozen=True)
class ModelSpec:
    name: str = spec(doc="model name")
    blocks: Tuple[Block, ...] = spec(doc="the blocks, input to output")

    def _validate(self, key, where):
        if not self.blocks:
            raise where.error("blocks", "needs at least one block")
        if any(b.type == "vit" for b in self.blocks):
            self._validate_vit(where)
            return
        seen_dense = False
        for i, b in enumerate(self.blocks):
            if b.type == "dense":
                seen_dense = True
            elif seen_dense:
                raise where.error(f"blocks[{i}].type", "conv after dense is not supported; "
                                  "put all conv blocks first")

    def _validate_vit(self, where):
        dim = self.blocks[0].dim
        for i, b in enumerate(self.blocks):
            if b.type != "vit":
                raise where.error(f"blocks[{i}].type", "vit and conv/dense blocks do not mix; "
                                  "a model is all vit or all conv/dense")
            if i == 0 and b.patch is None:
                raise where.error("blocks[0].patch", "missing: the first vit block embeds the image and needs `patch`")
            if i > 0 and b.patch is not None:
                raise where.error(f"blocks[{i}].patch", "only the first vit block embeds patches")
            if b.dim != dim:
                raise where.error(f"blocks[{i}].dim", f"{b.dim} differs from blocks[0].dim = {dim}; "
                                  "the residual stream keeps one width")

    @property
    def is_transformer(self) -> bool:
        return self.blocks[0].type == "vit"

    @property
    def depth(self) -> int:
        return len(self.blocks)


def load_model(path: str, origin: str | None = None) -> ModelSpec:
    """Load and validate a model file; ``origin`` names who referred to it, for errors."""
    data = read_yaml_file(path, "model file", origin or "")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(field_names(ModelSpec))}")
    return build(ModelSpec, data, "", Where(path, os.path.dirname(path)))


def cnn_family(depth: int, width: int = 32, dense_units: int = 64, name: str | None = None) -> ModelSpec:
    """The depth family used by ``chipsim compare`` (the paper's Figure 4A-B sweeps depth).

    ``depth - 1`` conv3x3 blocks then one dense block. Pools sit after blocks 1
    and 2 (28 -> 14 -> 7) so that deep members stay cheap to simulate; channels
    double once after the first pool, as in the 10-layer CNNs of the DF paper.
    """
    if depth < 2:
        raise ValueError("cnn_family needs depth >= 2 (at least one conv and the dense block)")
    blocks = []
    for i in range(depth - 1):
        ch = width if i == 0 else 2 * width
        blocks.append(Block(type="conv", channels=ch, pool=2 if i in (0, 1) else 0))
    blocks.append(Block(type="dense", units=dense_units))
    return ModelSpec(name=name or f"cnn{depth}", blocks=tuple(blocks))
