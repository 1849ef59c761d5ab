"""Which blocks each block's loss reaches, and which of them it updates.

The third of a local rule's three parts (``rules.LocalRule``), with the link
the errors travel through (the true ``W^T`` or a fixed random ``B``).

A loss at block l sends its error down to block ``lowest`` (through the
blocks in between) and updates the blocks in ``updates`` (a subset of
``lowest..l``). Greedy: every loss updates its own block only. OLU
(DF-O/DF-R): loss l also updates block l-1.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reach:
    lowest: int              # the lowest block the loss's error reaches
    updates: frozenset       # the blocks it updates


@dataclass(frozen=True)
class Routing:
    span: int = 1                        # blocks one loss reaches (1 = greedy, 2 = OLU)
    link: str = "true"                   # "true" (W^T) | "random" (fixed B)
    olu_schedule: str = "every-step"     # "every-step" | "alternate" (Trifecta's even/odd pairs)

    def plan(self, depth: int, step: int) -> list:
        """Reach of every block's loss at this step."""
        out = []
        for l in range(depth):
            active = self.olu_schedule == "every-step" or (l % 2) == (step % 2)
            lowest = max(0, l - self.span + 1) if active else l
            out.append(Reach(lowest, frozenset(range(lowest, l + 1))))
        return out
