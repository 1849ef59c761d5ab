"""What a layer must provide: the one interface the networks, rules, inference and tracers use.

A *layer* is one trainable stage of a network (a conv or dense block, a
classifier head, a transformer encoder layer). The rules drive every layer
the same way -- ``forward``, the objective on what it reads, ``backward_pre``,
``grad_weight``, ``grad_input``, ``select`` -- and the tracers record every
layer through the same description of what it puts on the chip
(:meth:`Layer.trace_parts`, :meth:`Layer.trace_outputs`). Nothing outside a
layer's own module asks which kind of layer it is.

**On the chip a layer is one or more trace layers** (:class:`TracePart`):
each has cores of its own and is split on its own axis by the mapper. A conv
or dense block is one part; a transformer layer two (its attention half and
its MLP half, ``layers.vit.block``). The first part receives the layer's
input, the last (whose index is the layer's ``index``) produces its output,
its loss and the errors it sends down. Each part holds parameters
(:class:`ParamGroup`) split by its units or replicated on every slice. When
one ``forward`` (or ``grad_weight``) call runs the work of several parts,
the layer notes where each part's kernels end (``work.logged()``) in
``work_cuts``, so the tracer can attribute each part's work to its own part.

Adding a layer type: a module under ``layers/`` with a class that provides
everything below, and its construction where the network is built (see
``docs/extending.md``); ``tests/test_layer_protocol.py`` checks that each
kind implements this protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ParamGroup:
    """Parameter tensors a trace part holds, all laid on its slices the same way."""
    suffix: str           # "" or "_shared": what the tracer appends to its buffers' keys and names
    split: str            # "units" (divided among the slices) | "replicated" (every slice holds all)
    weights_bytes: int    # the compute copy (codes and scales, float32 tensors) as a core holds it
    master_bytes: int     # the master copy at update_bits
    values: int           # parameter values in the group
    keys: tuple           # optimizer / accumulator keys of its tensors (``training.update.tensor_keys``)


@dataclass(frozen=True)
class TracePart:
    """One layer of the trace that a layer of the engine puts on the chip."""
    index: int            # its layer id in the trace
    name: str             # for people (reports, timelines): ``conv0``, ``attn1``, ``head4``
    units: int            # its split axis (output channels, neurons, heads, MLP hidden units)
    kind: str             # trace layer kind: "conv" | "dense" | "head" | "attn" | "mlp" | ...
    op_name: str          # the name of its forward op ("forward", "attention", "mlp")
    params: tuple         # its ParamGroups
    norm: tuple = ()      # (bytes, values) of its normalisation state (BN running statistics), if any


@runtime_checkable
class Layer(Protocol):
    """The interface of a layer (see the module docstring). Shapes are per sample."""
    index: int            # its index in the network (the trace id of its last part)
    kind: str             # the layer type, for messages and the trace ("conv", "dense", "vit", ...)
    head: bool            # a classifier head (BP's, or a local rule's one-pass head)
    use_bn: bool          # holds batch-norm state
    in_shape: tuple
    out_shape: tuple
    goodness_bits: int    # width of what the objectives read (``cache["gsrc"]``)
    work_cuts: tuple      # log positions between its parts' work in the last forward / grad_weight call
    error_in_split: str   # how an error arriving at its output lands on its last part's slices

    @property
    def units(self) -> int:
        """The split axis of its last part."""

    # ---- the forward and the backward parts
    def forward(self, a, train: bool):
        """Input rows -> (output rows, cache). The cache holds what the backward and the tracer read."""

    def backward_pre(self, err, cache):
        """The error at what the objective read -> the error at the layer's output."""

    def grad_weight(self, gy, cache, rng):
        """The weight gradient from the error at the output (an array, or a dict by tensor name)."""

    def grad_input(self, gy, cache, rng, use_feedback: bool = False):
        """The error at the layer's input (through W, or DF-R's fixed feedback when ``use_feedback``)."""

    def send_error(self, gx, rng):
        """The error at its input as it goes down the NoC (a ``layers.sent_error.SentError``): quantised by
        this layer, the sender, or the float32 it holds; the trace sizes the send at that width."""

    def select(self, cache, rows):
        """Keep only ``rows`` of what the cache holds for the backward (the rows an error reaches)."""

    # ---- parameters and their update
    def param_tensors(self) -> tuple:
        """(part, optimizer key, name in the gradient or None, master ``FixedPoint``, split) per weight tensor,
        part by part; ``part.index`` is the trace part whose update op applies it."""

    def requantize(self, part=None) -> None:
        """Refresh the compute copies from the masters (of one part's tensors only, when given)."""

    # ---- storage, at the widths a core holds it
    def stored_bytes(self, cache) -> dict:
        """Bytes of what ``forward`` kept, by tensor."""

    def param_bytes(self) -> dict:
        """Bytes of its persistent state (``weights``, ``master``, ...)."""

    def feedback_bytes(self) -> int:
        """Bytes of DF-R's kept feedback weights (0: none, or regenerated)."""

    # ---- checkpoint
    def state(self):
        """Plain data (``chipsim.checkpoint``)."""

    def load(self, s) -> None:
        """Restore what :meth:`state` returned."""

    # ---- what it puts on the chip
    def trace_parts(self) -> tuple:
        """Its :class:`TracePart` s, first (receives the input) to last (its output; index ``index``)."""

    def trace_outputs(self, out, cache) -> tuple:
        """Per part, (bytes, values) of what the part's forward produces and sends on (inference)."""

    def trace_forward(self, tracer, cache, goodness: bool) -> None:
        """Record the training forward just run (a one-part block: ``tracer.block_forward``)."""

    def trace_grad_weight(self, tracer, losses) -> None:
        """Record the weight gradient just computed (a one-part block: ``tracer.block_grad_weight``)."""

    def trace_error_down(self, tracer, below, rows, use_feedback: bool, loss: int) -> None:
        """Record the error sent to layer ``below`` (a one-part block: ``tracer.block_error_down``)."""
