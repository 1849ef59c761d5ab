"""The trace layers a layer puts on the chip and their persistent buffers, for every recorder.

One function for the training tracers and the inference recorder alike: each asks the layer for its
``trace_parts()`` (``layers.protocol``) and records, per part, its weights -- and when it trains, the
master copy, the optimizer state and the step's gradient accumulator -- per parameter group, then its
normalisation state and DF-R's kept feedback weights.
"""
from __future__ import annotations

from ...trace.roles import Role


def register_layer(rec, layer, optimizer=None, accumulators=None) -> dict:
    """Record ``layer``'s trace layers and persistent buffers: {part index: {key: buffer id}}. Keys:
    ``weights``, ``master``, ``opt``, ``gacc`` (+ the group's suffix), ``bn``, ``fb``. Without an
    ``optimizer`` (inference) only what the forward reads: the weights and the BN statistics."""
    out = {}
    for part in layer.trace_parts():
        rec.layer(part.index, part.name, part.units, part.kind)
        ids, i = {}, part.index
        for g in part.params:
            s = g.suffix
            ids["weights" + s] = rec.buffer(i, "weights" + s, "weights", g.weights_bytes, "persistent", g.split,
                                            g.values, Role.WEIGHTS)
            if optimizer is None:
                continue
            ids["master" + s] = rec.buffer(i, "master" + s, "master_weights", g.master_bytes, "persistent", g.split,
                                           g.values, Role.MASTER)
            ids["opt" + s] = rec.buffer(i, "optimizer" + s, "optimizer_state",
                                        sum(optimizer.state_bytes(k) for k in g.keys), "persistent", g.split,
                                        sum(optimizer.state_values(k) for k in g.keys), Role.OPTIMIZER_STATE)
            ids["gacc" + s] = rec.buffer(i, "grad_acc" + s, "gradients", sum(accumulators[k].nbytes for k in g.keys),
                                         "step", g.split, g.values, Role.GRADIENT_ACC)
        if part.norm:
            ids["bn"] = rec.buffer(i, "bn_stats", "bn_params", part.norm[0], "persistent", "replicated", part.norm[1],
                                   Role.NORM_PARAMS)
        if optimizer is not None and layer.feedback_bytes():
            ids["fb"] = rec.buffer(i, "feedback", "feedback_weights", layer.feedback_bytes(), "persistent", "units",
                                   part.params[0].values, Role.FEEDBACK)
        out[i] = ids
    return out
