"""Layer types by the ``type`` a model file gives a block: the one place a conv/dense network looks them up.

``networks.network.Network`` builds each block of a model with :func:`build_layer`; a new layer type is a
class implementing ``layers.protocol.Layer`` registered here under its type name (and allowed by
``chipsim.modelspec.Block.type``). The vision transformer's layers are built by ``networks.vit``, which
stacks encoder layers rather than blocks.
"""
from __future__ import annotations

from .block import QuantBlock

#: block type -> constructor ``(index, spec, in_shape, precision, rng, **options) -> Layer``
LAYER_TYPES = {"conv": QuantBlock, "dense": QuantBlock}


def build_layer(index: int, spec, in_shape, precision, rng, **options):
    """The layer for block ``index`` of a model (``spec``: its ``modelspec.Block``), reading ``in_shape``."""
    try:
        make = LAYER_TYPES[spec.type]
    except KeyError:
        raise ValueError(f"block {index}: no layer type {spec.type!r} (registered: {', '.join(LAYER_TYPES)})") \
            from None
    return make(index, spec, in_shape, precision, rng, **options)
