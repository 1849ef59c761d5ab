"""Model files (models/*.yaml): a list of blocks ``BN -> conv|dense -> ReLU -> [max-pool]``.

The block order follows the Trifecta / DF papers: normalising *before* the
weighted sum keeps each block's goodness from trivially passing the previous
block's goodness up (the next block sees only the direction of its input).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple


from .errors import ConfigError
from .schema import Where, build, field_names, read_yaml_file, spec


@dataclass(frozen=True)
class Block:
    type: str = spec(doc="layer kind", choices=("conv", "dense"))
    channels: Optional[int] = spec(None, doc="output channels (conv)", min=1)
    units: Optional[int] = spec(None, doc="output neurons (dense)", min=1)
    kernel: int = spec(3, doc="square kernel size (conv)", min=1)
    stride: int = spec(1, doc="convolution stride (conv)", min=1)
    padding: int = spec(1, doc="zero padding on each side (conv)", min=0)
    pool: int = spec(0, doc="max-pool window and stride after ReLU; 0 = none", min=0)
    norm: str = spec("batch", doc="normalisation before the weighted sum", choices=("batch", "none"))

    def _validate(self, key, where):
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

    @property
    def out_features(self) -> int:
        return self.channels if self.type == "conv" else self.units


@dataclass(frozen=True)
class ModelSpec:
    name: str = spec(doc="model name")
    blocks: Tuple[Block, ...] = spec(doc="the blocks, input to output")

    def _validate(self, key, where):
        if not self.blocks:
            raise where.error("blocks", "needs at least one block")
        seen_dense = False
        for i, b in enumerate(self.blocks):
            if b.type == "dense":
                seen_dense = True
            elif seen_dense:
                raise where.error(f"blocks[{i}].type", "conv after dense is not supported; "
                                  "put all conv blocks first")

    @property
    def depth(self) -> int:
        return len(self.blocks)


def load_model(path: str, origin: str | None = None) -> ModelSpec:
    """Load and validate a model file; ``origin`` names who referred to it, for errors."""
    data = read_yaml_file(path, "model file", origin or "")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(field_names(ModelSpec))}")
    return build(ModelSpec, data, "", Where(path, os.path.dirname(path)))


def cnn_family(depth: int, width: int = 32, dense_units: int = 64, name: str | None = None,
               pools=(0, 1)) -> ModelSpec:
    """The depth family used by ``chipsim compare`` (the paper's Figure 4A-B sweeps depth).

    ``depth - 1`` conv3x3 blocks then one dense block. By default 2x2 pools sit after blocks 0 and 1
    (28 -> 14 -> 7 on MNIST, 32 -> 16 -> 8 on CIFAR-10) so that deep members stay cheap to simulate;
    ``pools`` lists the conv blocks followed by one (the input shape comes from the dataset, so a pool
    position must leave a map to pool). Channels double once after the first block, as in the 10-layer
    CNNs of the DF paper.
    """
    if depth < 2:
        raise ValueError("cnn_family needs depth >= 2 (at least one conv and the dense block)")
    pools = set(int(p) for p in pools)
    bad = sorted(p for p in pools if not 0 <= p < depth - 1)
    if bad:
        raise ValueError(f"pool position {bad[0]} is not a conv block of a depth-{depth} family "
                         f"(conv blocks 0..{depth - 2})")
    blocks = []
    for i in range(depth - 1):
        ch = width if i == 0 else 2 * width
        blocks.append(Block(type="conv", channels=ch, pool=2 if i in pools else 0))
    blocks.append(Block(type="dense", units=dense_units))
    return ModelSpec(name=name or f"cnn{depth}", blocks=tuple(blocks))
