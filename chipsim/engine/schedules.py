"""Learning-rate schedules over the steps of a run."""
from __future__ import annotations

import math


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over total_steps (the DF paper's schedule)."""
    if total_steps <= 1:
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
