"""The measured framework figure of one experiment point: a chipsim config and model -> measure_peak.

Used by ``compare`` (and through it the dataflow grid and ``reproduce``) so that their framework
figure is a measurement, labelled with the torch version and device, not a model of one.
"""
from __future__ import annotations

from ..errors import ChipsimError
from .measure import for_dataset, measure_peak
from .steps import RULES

NOT_MEASURED = "not measured: no framework implementation of {what} (chipsim.framework runs conv and dense blocks)"


def measure_point(hw, model, device: str = "cpu", variant: str | None = None) -> dict:
    """``{"fits": True, "total_peak_bytes": ..., "label": "measured, torch X.Y, cpu", ...}`` for the
    config's rule, model, batch, N, optimizer and dataset; ``{"fits": False, "error": ...}`` where the
    framework has no implementation (vit blocks, a rule it does not run) or the rule refuses the model."""
    rule = hw.workload.rule
    if rule not in RULES:
        return {"fits": False, "error": NOT_MEASURED.format(what=f"rule {rule!r}")}
    if any(b.type not in ("conv", "dense") for b in model.blocks):
        return {"fits": False, "error": NOT_MEASURED.format(what="vit blocks")}
    shape, classes = for_dataset(hw.workload.dataset)
    n = hw.learning.negatives or classes - 1
    try:
        m = measure_peak(model, rule, hw.training.batch_size, n, hw.training.optimizer, shape, variant=variant,
                         device=device, num_classes=classes, momentum=hw.training.momentum)
    except (ChipsimError, RuntimeError) as exc:      # e.g. CwC on channels that do not split into classes
        return {"fits": False, "error": f"not measured: {str(exc).splitlines()[0]}"}
    return {"fits": True, "total_peak_bytes": m.bytes, **m.to_dict()}
