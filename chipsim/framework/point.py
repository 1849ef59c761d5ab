"""The measured framework figure of one experiment point: a chipsim config and model -> measure_peak.

Used by ``compare`` (and through it the dataflow grid and ``reproduce``) and by ``run`` / ``map``
under ``mapping.memory_mode: pytorch``, so that their framework figure is a measurement, labelled with
the torch version and device, not a model of one.

A measurement runs one real PyTorch training step (a fraction of a second for the shipped small nets
on CPU, tens of seconds for a 2 GB one), and its peak depends only on what is built and run -- the
blocks, rule, variant, input shape, classes, batch, N, optimizer, momentum and device -- not on
weights or data values. So a process measures each such point once and reuses the figure. With
``timing=True`` (run / map) the dict also says how long the measurement took (``seconds``) and whether
it was measured earlier in this process (``reused``); compare's logged points leave both out, so a
point's record does not depend on the wall clock or on which process ran it.
"""
from __future__ import annotations

import time

from ..errors import ChipsimError
from .losses import LossParams
from .measure import NETS, for_dataset, measure_peak
from .steps import RULES

NOT_MEASURED = ("not measured: no framework implementation of {what} (chipsim.framework runs "
                + ", ".join(NETS) + " blocks)")


def measure_point(hw, model, device: str = "cpu", variant: str | None = None, timing: bool = False) -> dict:
    """``{"fits": True, "total_peak_bytes": ..., "label": "measured, torch X.Y, cpu", ...}`` for the
    config's rule, model, batch, N, optimizer and dataset; ``{"fits": False, "error": ...}`` where the
    framework has no implementation (a block kind or a rule it does not run) or the rule refuses the model.

    CFF's loss gets the config's temperature and its largest margin (a margin > 0 adds the clamp of the
    positive similarities to the graph; which value, and a per-block margin, do not change the peak)."""
    rule = hw.workload.rule
    if rule not in RULES:
        return {"fits": False, "error": NOT_MEASURED.format(what=f"rule {rule!r}")}
    kinds = sorted({b.type for b in model.blocks} - set(NETS))
    if kinds:
        return {"fits": False, "error": NOT_MEASURED.format(what=f"{', '.join(kinds)} blocks")}
    shape, classes = for_dataset(hw.workload.dataset)
    n = hw.learning.negatives or classes - 1
    hp = LossParams(temperature=hw.learning.temperature, contrastive_margin=max(hw.learning.contrastive_margin))
    key = (tuple(model.blocks), rule, variant, shape, classes, hw.training.batch_size, n, hw.training.optimizer,
           hw.training.momentum, device, hp.contrastive_margin > 0)
    if key in _MEASURED:
        fig, seconds = _MEASURED[key]
        return {**fig, "seconds": seconds, "reused": True} if timing else dict(fig)
    t0 = time.perf_counter()
    try:
        m = measure_peak(model, rule, hw.training.batch_size, n, hw.training.optimizer, shape, variant=variant,
                         device=device, num_classes=classes, momentum=hw.training.momentum, hp=hp)
    except (ChipsimError, RuntimeError) as exc:      # e.g. CwC on channels that do not split into classes
        return {"fits": False, "error": f"not measured: {str(exc).splitlines()[0]}"}
    fig = {"fits": True, "total_peak_bytes": m.bytes, **m.to_dict()}
    _MEASURED[key] = (fig, time.perf_counter() - t0)
    return {**fig, "seconds": _MEASURED[key][1], "reused": False} if timing else dict(fig)


#: (blocks, rule, variant, shape, classes, batch, N, optimizer, momentum, device, margin > 0) -> (figure, seconds)
_MEASURED: dict = {}
