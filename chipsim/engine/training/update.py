"""Applying one step's gradients: accumulator, optimizer, master weights, compute copy.

What a core does with the weight gradient it accumulated over the step, in
order (each part costed by the kernels it calls, and recorded as the layer's
``update`` op): the gradient as the accumulator holds it
(``precision.accumulator_bits``), the optimizer's arithmetic on its stored
state (``precision.optimizer_bits``), the rounded add into the fixed-point
master weights (``update_bits``), and the requantised compute copy
(``weight_bits``). The learned label embedding goes the same way.

A transformer layer's gradient is a dict, one array per tensor: each tensor
has its own accumulator and optimizer state (its own scales, as a core keeps
them; ``tensor_keys``), and the layer is updated sub-layer by sub-layer
(``layers.vit.block.SubLayer``; ``layers.protocol``: each layer lists its tensors part by part in ``param_tensors``), each an ``update`` op of its own trace layer; a
tensor every slice holds whole is updated by every slice (replicated work).
"""
from __future__ import annotations

import numpy as np

from ...errors import TrainingDiverged
from ...kernels.update import finite_absmax
from ...trace.work import split


def tensor_keys(layer) -> list:
    """(optimizer / accumulator key, shape) of each weight tensor of ``layer``: ``w<index>`` for a conv or
    dense block, ``w<index>.<name>`` per tensor of a transformer layer (``param_tensors``)."""
    return [(key, master.value.shape) for _, key, _, master, _ in layer.param_tensors()]


def _update(key, g, lr, master, opt, acc, precision, rng):
    store = acc[key]
    store.store(g, rng)                          # the step's gradient as the core accumulated it
    delta = opt.delta(key, store.load(), lr, rng)
    check_update(key, delta, master, lr)
    master.apply(delta, precision.rounding, rng)


def check_update(key: str, delta, master, lr) -> None:
    """Refuse an update that is not finite, or that alone spans more than the whole range the master
    weights' width holds (``update_bits``): such a step is not learning but saturation, and a training
    that goes on from it ends at chance with no sign of why (``training.lr=1e30``)."""
    d = np.asarray(delta)
    if d.dtype == np.float32 and d.size:
        finite, big = finite_absmax(np.ascontiguousarray(d).reshape(-1))    # both checks in one pass
    else:
        finite, big = bool(np.isfinite(d).all()), float(np.max(np.abs(d))) if d.size else 0.0
    if not finite:
        raise TrainingDiverged(f"training diverged: the update of {key} is not finite (lr {lr:g}); lower "
                               "training.lr")
    big = float(big)
    if getattr(master, "bits", 32) == 32 or not d.size:
        limit = float(np.finfo(np.float32).max) / 4
        if d.size and big > limit:
            raise TrainingDiverged(f"training diverged: an update of {key} of {big:.3g} "
                                   f"nears float32's range (lr {lr:g}); lower training.lr")
        return
    span = 2.0 * master.qmax * master.step
    if big > span:
        raise TrainingDiverged(f"training diverged: an update of {key} of {big:.3g} exceeds the whole range "
                               f"(±{span / 2:.3g}) of its {master.bits}-bit master weights (precision.update_bits) "
                               f"at lr {lr:g}; lower training.lr")


def apply_gradients(net, grads, lr, opt, acc, precision, rng, tracer, grad_noise=None, rng_noise=None):
    """Update every layer of ``net`` (and its label embedding) from ``grads`` (a ``StepResult.grads``).

    ``grad_noise(layer, grad, rng) -> grad``: device mismatch, added to the gradient before it is
    accumulated (a disturbance model, not chip work: it is not costed).
    """
    for layer, g in zip(net.layers(), grads["blocks"]):
        _update_layer(layer, g, lr, opt, acc, precision, rng, tracer, grad_noise, rng_noise)
    for layer, g in grads.get("extra", ()):        # layers outside the network, e.g. a one-pass head
        _update_layer(layer, g, lr, opt, acc, precision, rng, tracer, None, None)
    if grads["embedding"] is not None:
        with split("replicated"):          # every slice of a split first layer holds, and updates, the table
            _update("emb", grads["embedding"], lr, net.embedding, opt, acc, precision, rng)
        tracer.embedding_update()


def _update_layer(layer, grads, lr, opt, acc, precision, rng, tracer, grad_noise, rng_noise):
    """A layer's tensors, part by part (``layers.protocol``), each part an update op of its own."""
    parts = []
    for part, key, name, master, how in layer.param_tensors():
        if not parts or parts[-1][0] is not part:
            parts.append((part, []))
        parts[-1][1].append((key, name, master, how))
    for part, tensors in parts:
        for key, name, master, how in tensors:
            g = grads if name is None else grads[name]
            if grad_noise is not None:
                g = grad_noise(layer.index, g, rng_noise)
            with split(how):
                _update(key, g, lr, master, opt, acc, precision, rng)
        layer.requantize(part)
        tracer.update(part)
