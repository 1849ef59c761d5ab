"""Learning-rate schedules: the learning rate of each optimizer step (``training.schedule``).

* ``cosine``: decay from the peak to 0 over all steps (the DF paper).
* ``constant``: the peak throughout.
* ``multistep``: the peak times gamma for every milestone passed (the
  Advancements paper: gamma 0.1 at two milestones, or 3-5 milestones with
  gamma 0.1 or 0.2). Milestones are in epochs, as torch's ``MultiStepLR``
  stepped once per epoch: the drop takes effect from the first step of epoch
  ``m``. A fractional milestone drops the rate within an epoch, at step
  ``ceil(m * steps_per_epoch)``, which is ``MultiStepLR`` stepped once per step
  with its milestones in steps.
"""
from __future__ import annotations

import bisect
import math


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over total_steps (the DF paper's schedule)."""
    if total_steps <= 1:
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def multistep_lr(base_lr: float, epoch: float, milestones, gamma: float) -> float:
    """base_lr * gamma ** (number of milestones <= epoch); ``epoch`` counts from 0 and may be fractional."""
    return base_lr * gamma ** bisect.bisect_right(sorted(milestones), epoch)


def learning_rate(training, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under a ``Training`` config."""
    if training.schedule == "cosine":
        return cosine_lr(training.lr, step, training.epochs * steps_per_epoch)
    if training.schedule == "constant":
        return training.lr
    if training.schedule == "multistep":
        return multistep_lr(training.lr, step / steps_per_epoch, training.milestones, training.gamma)
    raise ValueError(f"unknown schedule {training.schedule!r}; allowed: cosine, constant, multistep")
