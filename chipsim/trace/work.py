"""Work accounting: every kernel call the engine makes, with its count and operand widths.

Why the kernels report themselves: chipsim's costs must come from what the
engine executed. If the rule code had to remember a tracer call for every
kernel it runs, a forgotten call would be an op the chip never pays for, and
nothing would notice. Instead each kernel is wrapped by :func:`costed`; while
a :class:`WorkLog` is open (the first, traced step of a run, or a costed
inference) every call appends one :class:`Work` item -- its kind, the kernel's
name, the operations it performed and the widths of its operands -- and the
tracer attaches the items logged since its last record to the trace op it
writes next. With no log open (every other step) the wrapper costs one
global lookup.

Counts:

* ``mac`` kinds (weighted sums, attention products, goodness squares) count
  multiply-accumulates, the mathematical ones: ``rows x outputs x reduction``;
* ``vector`` kinds (normalisation, activation functions, pooling,
  quantisation, losses, optimizer arithmetic, PRNG draws) count elementwise
  operations, ``elements x operations per element``; each kernel states its
  operations per element where it is wrapped.

Where the work runs on a layer split across cores (``chipsim.chip.mapping``
splits a layer by output units): ``units`` work is shared among the slices
in proportion to their units (a weighted sum, ReLU on the slice's outputs);
``replicated`` work is done in full by every slice (normalising the input
that every slice holds whole, finishing a full-size partial error before it
is reduced). The engine says which, around the calls, with :func:`split`.

Widths are what the engine really computed on: the bound a weighted sum
proved exact (``int_bound``, see ``chipsim.kernels.exact``) gives its operand
widths; a float operand is 32 bits, or on the vector unit the width
``precision.vector_bits`` makes it compute at (``chipsim.trace.vector``); a
kernel fed quantized values says so with its ``bits`` argument. :data:`KINDS` is the one table that maps each
kind to the unit of a core that executes it; ``chipsim.chip`` prices the
units and never needs to know a rule.
"""
from __future__ import annotations

import functools
import inspect
import math
from contextlib import contextmanager
from types import SimpleNamespace
from typing import NamedTuple

from . import vector

MAC, VECTOR = "mac", "vector"

# kind -> (unit, what it is). Names say what they are: reports group energy and cycles by kind.
KINDS = {
    # weighted sums on the MAC array
    "conv_forward": (MAC, "convolution forward"),
    "conv_grad_weight": (MAC, "convolution weight gradient"),
    "conv_grad_input": (MAC, "convolution input gradient (error to the block below)"),
    "dense_forward": (MAC, "dense forward"),
    "dense_grad_weight": (MAC, "dense weight gradient"),
    "dense_grad_input": (MAC, "dense input gradient (error to the block below)"),
    "goodness": (MAC, "goodness: sum of squares of a block output"),
    "mac": (MAC, "multiply-accumulates of a hand-built trace (no kernel behind them)"),
    # transformer weighted sums (chipsim.kernels.tokens / attention)
    "patch_embed": (MAC, "patch embedding: patchify and project each patch to the token width"),
    "patch_embed_grad_weight": (MAC, "patch embedding weight gradient"),
    "token_dense_forward": (MAC, "token-wise dense: Q/K/V, attention output and MLP projections"),
    "token_dense_grad_weight": (MAC, "token-wise dense weight gradient"),
    "token_dense_grad_input": (MAC, "token-wise dense input gradient"),
    "attn_scores": (MAC, "attention scores Q K^T, per head"),
    "attn_scores_grad": (MAC, "attention scores backward: dQ = dS K and dK = dS^T Q"),
    "attn_values": (MAC, "attention-weighted values P V, per head"),
    "attn_values_grad": (MAC, "attention values backward: dP = dO V^T and dV = P^T dO"),
    "contrastive_similarity": (MAC, "contrastive loss: Gram matrix of normalised features and its gradient"),
    # vector unit
    "bn_forward": (VECTOR, "batch norm, training: batch statistics and normalisation"),
    "bn_eval": (VECTOR, "batch norm with running statistics"),
    "bn_backward": (VECTOR, "batch norm backward"),
    "bn_running_stats": (VECTOR, "batch norm running-statistics update"),
    "relu": (VECTOR, "ReLU"),
    "relu_backward": (VECTOR, "ReLU backward (mask)"),
    "maxpool": (VECTOR, "max-pool forward (compares)"),
    "maxpool_backward": (VECTOR, "max-pool backward (scatter by index)"),
    "goodness_backward": (VECTOR, "goodness gradient 2*out/D"),
    "quantize_scale": (VECTOR, "quantisation scale search (clipping threshold or max)"),
    "quantize": (VECTOR, "quantisation: scale, round to nearest, clip"),
    "quantize_stochastic": (VECTOR, "quantisation with stochastic rounding (one PRNG draw per element)"),
    "quantize_weights": (VECTOR, "weight requantisation from the master copy (per-channel scale)"),
    "dequantize": (VECTOR, "integer accumulator or stored codes times their scale"),
    "loss": (VECTOR, "per-block loss and its gradient"),
    "accumulate": (VECTOR, "a sample's weight gradient rescaled and added into its accumulator"),
    "update_optimizer": (VECTOR, "optimizer arithmetic (momentum / Adam moments)"),
    "update_master": (VECTOR, "fixed-point master-weight update with rounding"),
    "embedding_grad_scatter": (VECTOR, "label-embedding gradient: scatter-add of rows by label"),
    "error_sum": (VECTOR, "sum of the errors several losses send to one block output"),
    "running_max": (VECTOR, "sequential negatives: a row's goodness against the hardest negative kept so far"),
    "decode": (VECTOR, "inference decision: argmax over the class scores"),
    "feedback_regenerate": (VECTOR, "DF-R feedback weights regenerated from a seed (PRNG draws)"),
    # transformer vector ops
    "softmax": (VECTOR, "softmax over attention scores (max, subtract, exp, sum, divide)"),
    "softmax_backward": (VECTOR, "softmax backward p * (g - sum(g p))"),
    "layernorm": (VECTOR, "layer norm over each token: statistics, normalisation, affine"),
    "layernorm_backward": (VECTOR, "layer norm backward, through the token statistics"),
    "gelu": (VECTOR, "GELU activation (erf form)"),
    "gelu_backward": (VECTOR, "GELU backward"),
    "token_mean": (VECTOR, "average pooling over tokens"),
    "token_mean_backward": (VECTOR, "average pooling over tokens, backward (broadcast / T)"),
    "bias_add": (VECTOR, "bias or position-embedding add"),
    "bias_grad": (VECTOR, "bias or position-embedding gradient: sum of errors over rows"),
    "residual_add": (VECTOR, "residual connection add"),
    "token_l2norm": (VECTOR, "L2 normalisation of each token (FF's layer input on a vision transformer)"),
    "augment": (VECTOR, "an augmented view of an input: its random offset drawn, the shifted window copied"),
}


SPLITS = ("units", "replicated")


class Work(NamedTuple):
    """One kernel call: ``count`` operations of ``kind`` on operands of widths ``bits``.

    ``split``: how the work lands on a split layer's slices (see the module docstring).

    ``per_instance``: the count is paid once per execution of the op (per
    micro-batch instance on the chip), not shared among its samples -- e.g.
    regenerating a feedback matrix, whose size does not depend on how many
    samples then use it.
    """
    kind: str
    kernel: str
    count: int
    bits: tuple
    split: str = "units"
    per_instance: bool = False

    @property
    def unit(self) -> str:
        return KINDS[self.kind][0]


class WorkLog:
    """The kernel calls since the tracer last took them."""

    def __init__(self):
        self.items: list = []

    def take(self) -> tuple:
        out, self.items = tuple(self.items), []
        return out


_ACTIVE: WorkLog | None = None
_SPLIT = "units"
REGISTRY: dict = {}          # kernel name -> kind, of every function wrapped by ``costed``


_NEW = object()


@contextmanager
def open_log(log=_NEW):
    """Log every costed kernel call inside the block into ``log`` (a new WorkLog by default);
    ``None``: log nothing (an untraced step)."""
    global _ACTIVE
    log = WorkLog() if log is _NEW else log
    prev, _ACTIVE = _ACTIVE, log
    try:
        yield log
    finally:
        _ACTIVE = prev


def logged() -> int:
    """How many items the open log holds (0 when none).

    A layer whose one call is the work of two cores (a transformer layer's attention and MLP halves,
    ``chipsim.engine.layers.vit.block``) notes this between them, so the tracer can cut the call's work there."""
    return len(_ACTIVE.items) if _ACTIVE is not None else 0


@contextmanager
def split(how: str):
    """Work logged inside the block is done ``how`` on a split layer (``units`` or ``replicated``)."""
    global _SPLIT
    assert how in SPLITS, how
    prev, _SPLIT = _SPLIT, how
    try:
        yield
    finally:
        _SPLIT = prev


def record(kind: str, kernel: str, count: int, bits=None, per_instance: bool = False) -> None:
    """Log work that is not one wrapped function call (an engine step written inline); ``bits`` None: the
    engine's float width (:func:`float_bits`)."""
    if _ACTIVE is not None and count:
        assert kind in KINDS, kind
        bits = (float_bits(kind),) if bits is None else bits
        _ACTIVE.items.append(Work(kind, kernel, int(count), tuple(int(b) for b in bits), _SPLIT, per_instance))


def float_bits(kind: str) -> int:
    """Width of a float operand of ``kind``: the vector unit's active width (``precision.vector_bits``,
    :mod:`chipsim.trace.vector`) for vector work, 32 (float32) on the MAC array."""
    return vector.width() if KINDS[kind][0] == VECTOR else 32


def bits_of_bound(int_bound) -> tuple:
    """Operand widths of a weighted sum from the bound the kernel proved: ``|a| <= ma`` needs
    ``ceil(log2(ma + 1)) + 1`` signed bits (7 -> 4 bits, 127 -> 8); no bound means float32."""
    if int_bound is None:
        return (32, 32)
    return tuple(int(math.ceil(math.log2(float(m) + 1.0))) + 1 for m in int_bound)


def costed(kind: str, count, bits=None, per_instance: bool = False):
    """Wrap a kernel so that each call is logged while a :class:`WorkLog` is open.

    ``count(a, out)`` and ``bits(a, out)`` receive the call's arguments as
    attributes of ``a`` (defaults applied) and its return value ``out``.
    ``bits`` defaults to the engine's float width (:func:`float_bits`): 32, or the vector unit's width
    for vector work while ``precision.vector_bits`` is below 32 -- and then a vector kernel runs at that
    width (:func:`chipsim.trace.vector.run_at_width`: its float inputs and results rounded to it).
    """
    assert kind in KINDS, kind
    is_vector = KINDS[kind][0] == VECTOR

    def deco(fn):
        sig = inspect.signature(fn)
        name = fn.__name__
        REGISTRY[name] = kind

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if is_vector and vector._WIDTH != 32:
                out = vector.run_at_width(fn, kind, args, kwargs)
            else:
                out = fn(*args, **kwargs)
            log = _ACTIVE
            if log is not None:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                a = SimpleNamespace(**bound.arguments)
                n = int(count(a, out))
                if n == 0:                    # an identity (e.g. 32-bit quantisation): nothing executed
                    return out
                w = bits(a, out) if bits is not None else float_bits(kind)
                w = tuple(int(b) for b in (w if isinstance(w, tuple) else (w,)))
                log.items.append(Work(kind, name, n, w, _SPLIT, per_instance))
            return out
        return wrapper
    return deco
