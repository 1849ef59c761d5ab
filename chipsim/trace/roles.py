"""What each buffer of a trace holds: its declared role.

A buffer's *category* (``chipsim.trace.CATEGORIES``) is the line of the
memory budget it is charged to: who needs it (weights, the activations a block
keeps for its own update or for BP's backward, gradients, NoC staging). Its
*role* is what tensor it is, declared by the tracer that made it, so that
whatever needs to know the tensor rather than the budget line reads the role
and a tracer may name its buffers as it likes (names are for people: reports,
timelines); no name is ever matched. (The float32 "framework" pool that once
sized buffers by role is gone: framework memory is measured in PyTorch,
``chipsim.framework``.)

Roles are part of the trace format (``chipsim.trace.TRACE_VERSION``): a
tracer that adds a tensor picks one of these, or adds a role here.
"""
from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    """What a buffer holds. The value is what a serialised trace stores."""
    # ---- parameters and their state (persistent)
    WEIGHTS = "weights"                       # the compute copy, at weight_bits
    MASTER = "master_weights"                 # the copy the optimizer writes, at update_bits
    OPTIMIZER_STATE = "optimizer_state"       # momentum / Adam moments
    NORM_PARAMS = "norm_params"               # batch-norm affine parameters and running statistics
    LABEL_EMBEDDING = "label_embedding"       # the label channel: learned or fixed table, or label patches
    FEEDBACK = "feedback"                     # DF-R's fixed random feedback weights
    GRADIENT_ACC = "gradient_accumulator"     # a weight gradient summed over the step
    # ---- what arrives over the NoC
    SENSOR = "sensor_input"                   # the sensor's image, received once per sample
    RECEIVED = "received"                     # a copy of another layer's tensor (activation, features, goodness)
    # ---- what a layer's forward keeps or produces
    KEPT_INPUT = "kept_input"                 # the layer's input codes, kept for its backward
    MASK = "mask"                             # the ReLU's 1-bit mask
    POOL_INDEX = "pool_index"                 # max-pool argmax
    OUTPUT = "output"                         # the layer's output (sent on to the next layer)
    GOODNESS_INPUT = "goodness_input"         # the wider copy of the output that goodness squares (ViT: token mean)
    ACTIVATION = "activation"                 # any other tensor kept or produced (a ViT's LN state, Q/K/V, ...)
    PARTIAL = "partial"                       # a full-size partial of a split layer's output, reduced over slices
    GOODNESS = "goodness"                     # goodness or class scores
    # ---- the backward
    LOSS_GRAD = "loss_grad"                   # dL/dgoodness, dL/dlogits
    ERROR = "error"                           # an error at a layer's input or output (sent, received, partial)


#: the role a buffer gets when a hand-built trace gives only its category (the engine's tracers always
#: declare one): the category's generic tensor
CATEGORY_ROLE = {
    "weights": Role.WEIGHTS,
    "master_weights": Role.MASTER,
    "optimizer_state": Role.OPTIMIZER_STATE,
    "bn_params": Role.NORM_PARAMS,
    "label_embedding": Role.LABEL_EMBEDDING,
    "feedback_weights": Role.FEEDBACK,
    "act_update": Role.ACTIVATION,
    "act_backward": Role.ACTIVATION,
    "gradients": Role.ERROR,
    "noc_buffers": Role.RECEIVED,
}
