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
  ``heads`` H (``chipsim.engine.layers.vit.transformer``).
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


# ---------------------------------------------------------------- shapes and host memory, before allocation
EVAL_BATCH = 256          # test samples per forward pass in ``engine.rules.goodness_scores`` (each x classes rows)
_GIB = 1024 ** 3


@dataclass(frozen=True)
class BlockShape:
    """What one block of a model becomes on a given input: its input, pre-activation and output shapes."""
    index: int
    in_shape: tuple
    pre_shape: tuple
    out_shape: tuple
    weight_numel: int
    cols_per_row: int          # im2col values per input row (conv), 0 for dense

    def train_bytes(self, rows: int) -> int:
        """float32 arrays a training step keeps for this block: the quantized input, pre-activation,
        output, goodness copy and (conv) the im2col columns the weight gradient reads."""
        return 4 * rows * (_numel(self.in_shape) + _numel(self.pre_shape) + 2 * _numel(self.out_shape)
                           + self.cols_per_row)

    def eval_bytes(self, rows: int) -> int:
        """float32 arrays of one inference forward pass through this block (nothing is kept after it)."""
        return 4 * rows * (_numel(self.in_shape) + _numel(self.pre_shape) + _numel(self.out_shape)
                           + self.cols_per_row)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def block_shapes(model: ModelSpec, input_shape, with_label: bool, source: str) -> list:
    """Each block's shapes on ``input_shape`` (C, H, W); a block that cannot run is one ConfigError line.

    The same arithmetic as ``engine.layers.block.QuantBlock`` (which keeps it as an
    internal assertion), done first and in plain integers, so that a kernel
    larger than its input or a pool that shrinks the map to nothing is refused
    before any array exists, naming the model file, the block and the limit.
    """
    c, h, w = input_shape
    shape = (c + 1, h, w) if with_label else (c, h, w)
    out = []
    tokens = None
    for i, b in enumerate(model.blocks):
        key = f"{source}: blocks[{i}]"
        if b.type == "vit":
            if b.patch is not None:                  # the first layer cuts the image into patches
                if b.patch > min(h, w) or h % b.patch or w % b.patch:
                    raise ConfigError(f"{key}.patch: {b.patch} does not tile block {i}'s {h}x{w} input; allowed: "
                                      f"a divisor of both sides, e.g. {_divisors(h, w)}")
                tokens = (h // b.patch) * (w // b.patch) + (1 if with_label else 0)
                embed = c * b.patch * b.patch * b.dim + tokens * b.dim
            else:
                embed = 0
            widest = max(3 * b.dim, b.mlp_dim, b.heads * tokens)        # QKV, MLP hidden, attention rows
            out.append(BlockShape(i, (tokens, b.dim), (tokens, widest), (tokens, b.dim),
                                  embed + 4 * b.dim * b.dim + 2 * b.dim * b.mlp_dim, 0))
            shape = (tokens, b.dim)
            continue
        if b.type == "dense":
            if len(shape) == 3:
                shape = (_numel(shape),)
            pre = (b.units,)
            out.append(BlockShape(i, shape, pre, pre, b.units * shape[0], 0))
            shape = pre
            continue
        ci, hi, wi = shape
        span_h, span_w = hi + 2 * b.padding, wi + 2 * b.padding
        if b.kernel > min(span_h, span_w):
            raise ConfigError(f"{key}.kernel: {b.kernel} does not fit block {i}'s {hi}x{wi} input with padding "
                              f"{b.padding}; allowed: kernel <= {min(span_h, span_w)}")
        ho, wo = (span_h - b.kernel) // b.stride + 1, (span_w - b.kernel) // b.stride + 1
        pre = (b.channels, ho, wo)
        if b.pool:
            if b.pool > min(ho, wo):
                raise ConfigError(f"{key}.pool: {b.pool} does not fit block {i}'s {ho}x{wo} output (it would "
                                  f"shrink the map to nothing); allowed: 0 or 2..{min(ho, wo)}"
                                  if min(ho, wo) >= 2 else
                                  f"{key}.pool: {b.pool} does not fit block {i}'s {ho}x{wo} output (it would "
                                  "shrink the map to nothing); allowed: 0 (no pool)")
            post = (b.channels, ho // b.pool, wo // b.pool)
        else:
            post = pre
        out.append(BlockShape(i, shape, pre, post, b.channels * ci * b.kernel ** 2, ci * b.kernel ** 2 * ho * wo))
        shape = post
    return out


def _divisors(h: int, w: int) -> str:
    return ", ".join(str(d) for d in range(2, min(h, w) + 1) if h % d == 0 and w % d == 0) or "1"


def host_memory_bytes() -> int | None:
    """Memory this process may use: physical RAM, or a smaller cgroup limit; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check_fits_host(model: ModelSpec, input_shape, classes: int, batch: int, negatives: int | None,
                    with_label: bool, source: str, available: int | None = None) -> list:
    """Shapes of every block, after refusing a model whose arrays could not fit this machine's memory.

    The estimate is a lower bound of what the engine allocates: a training step
    keeps every block's float32 arrays for ``batch x (1 + negatives)`` rows
    (BP: ``batch`` rows), evaluation runs ``EVAL_BATCH x classes`` rows through
    one block at a time, and every weight has its master copy, integer codes,
    compute copy and two optimizer moments. Absurd sizes (padding 100000, a
    hundred thousand channels) then fail here in milliseconds with the size
    they would need, instead of in a MemoryError minutes later.
    """
    shapes = block_shapes(model, input_shape, with_label, source)
    rows = batch * (1 + (negatives if negatives is not None else classes - 1)) if with_label else batch
    eval_rows = EVAL_BATCH * classes if with_label else 2 * EVAL_BATCH
    weights = 24 * sum(s.weight_numel for s in shapes)
    train = [s.train_bytes(rows) for s in shapes]
    need = weights + max(sum(train), max(s.eval_bytes(eval_rows) for s in shapes))
    available = host_memory_bytes() if available is None else available
    if available is not None and need > available:
        worst = max(range(len(shapes)), key=lambda i: max(train[i], shapes[i].eval_bytes(eval_rows)))
        raise ConfigError(f"{source}: one training step would need at least {need / _GIB:,.1f} GiB of host memory "
                          f"(block {worst} makes {'x'.join(map(str, shapes[worst].pre_shape))} values per row, for "
                          f"{rows} rows); this machine has {available / _GIB:,.1f} GiB; make the model smaller "
                          "or lower training.batch_size")
    return shapes


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
