"""What a block's forward keeps for its backward, by role: one table shared by every tracer.

Why a module: the step's tracer (``step``), the sequential passes' (``passes``) and the one-pass head's
(``head_records``) all size a block's kept tensors the same way.
"""
from __future__ import annotations

from ...trace.roles import Role

#: the role of each tensor a block's forward keeps, by its key in ``stored_bytes``
KEPT_ROLES = {"zq": Role.KEPT_INPUT, "mask": Role.MASK, "out": Role.OUTPUT, "argmax": Role.POOL_INDEX,
              "gsrc": Role.GOODNESS_INPUT}


def stored_elements(cache) -> dict:
    """Values of each tensor a block's forward keeps (``QuantBlock.stored_bytes`` gives their bytes):
    the input codes, the ReLU mask (one per pre-activation value), the output, pool index, goodness copy."""
    out = dict(zq=cache["zq"].size, mask=cache["y"].size, out=cache["out"].size)
    if cache.get("argmax") is not None:
        out["argmax"] = cache["argmax"].size
    if cache.get("gsrc") is not None:
        out["gsrc"] = cache["gsrc"].size
    return out
