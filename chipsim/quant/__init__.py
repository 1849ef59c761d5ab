"""Quantization of weights, activations, errors and master weights.

The simulated chip stores every tensor as small integers plus a scale.  This
package turns float tensors into those integers ("codes") and back.  Codes are
kept in float32 arrays holding exact integers, because the kernels in
:mod:`chipsim.kernels` consume float arrays and can prove (from the code range)
that a float GEMM over them is exact. Where the int8 unit runs the products
(``kernels.use_int8()``), the activation and error codes that fit int8 are made
as int8 instead (``as_int8``), the same integers in the type the unit reads;
the optimizer's stored state (``QuantStore``) is made in its own integer type.

The package is cut along state:

* ``codes``: the stateless functions (bit checks, code ranges, scale search,
  rounding, ``quantize_*``, ``to_fixed_point``);
* ``stores``: the state a core keeps between steps (``ClippedScale``,
  ``FixedPoint``, ``QuantStore``), built on ``codes``.

Everything public is re-exported here, so callers write
``from chipsim.quant import ...`` as before.

Conventions
-----------
* ``bits`` must be one of :data:`ALLOWED_BITS`; ``bits == 32`` means "no
  quantization" (plain float32) everywhere, so callers never special-case it.
* Signed tensors (weights, errors) use a *symmetric* range
  ``[-(2**(b-1)-1), 2**(b-1)-1]``: dropping the lone most-negative code keeps
  negation exact and zero exactly representable.
* Unsigned tensors (post-ReLU activations) use ``[0, 2**b - 1]``.
* ``scale_mode="pow2"`` rounds a scale *up* to a power of two so the hardware
  can rescale with a shift; rounding up (never down) guarantees the largest
  magnitude still fits without clipping.
* ``rounding="nearest"`` uses numpy's round-half-to-even; ``"stochastic"``
  rounds ``v`` to ``floor(v + u)``, ``u ~ U[0, 1)``, which is unbiased
  (``E[floor(v + u)] = v``) and reproducible given the caller's seeded
  :class:`numpy.random.Generator`.
"""
from __future__ import annotations

from .codes import (
    ALLOWED_BITS,
    check_bits,
    quantize_activations,
    quantize_signed,
    quantize_unsigned,
    quantize_weights,
    signed_max,
    to_fixed_point,
    unsigned_max,
)
# outside __all__, as before, but imported from here: the cost constants (engine.layers.vit.mhsa, tests/test_costs.py),
# the choice tuples, and private helpers (engine.layers.feedback: _uniform; tests/test_fused_kernels.py: the rest)
from .codes import MASTER_OPS, ROUND_OPS, ROUNDINGS, SCALE_MODES, SCALE_SEARCH_OPS, STOCHASTIC_OPS  # noqa: F401
from .codes import _divide_round_clip, _mean_square  # noqa: F401
from .passes import _absmax, _uniform  # noqa: F401
from .stores import ACIQ_GAUSS_ALPHA, ClippedScale, FixedPoint, QuantStore

__all__ = [
    "ALLOWED_BITS", "check_bits", "signed_max", "unsigned_max",
    "quantize_weights", "quantize_activations", "ClippedScale", "ACIQ_GAUSS_ALPHA",
    "quantize_signed", "quantize_unsigned", "to_fixed_point", "FixedPoint", "QuantStore",
]
