"""Error routing of the local rules, as pure logic: which blocks each block's loss reaches.

A local rule puts a loss on every block's output. The routing says, at each
training step, which of those losses are used and which blocks each one
updates; it does no arithmetic, so a rule's step (rows, per-block loss, this
routing) stays a composition rather than a thicket of branches, and the
tables here are tested by hand.

Settings (``learning.*`` in the config):

* ``span`` n: how many blocks one loss reaches -- its own block and the n-1
  below it. 1 is greedy; 2 is DF-O/DF-R's two-block groups (Trifecta's OLU).
* ``grouping``:

  - ``overlapping``: every block's loss reaches the n blocks ending at it, so
    consecutive groups share n-1 blocks (DF's Figure S2 with n > 2; the
    Advancements paper's "overlapping local update"). Depth 5, span 3::

        loss 0: [0]
        loss 1: [0 1]
        loss 2: [0 1 2]
        loss 3:   [1 2 3]
        loss 4:     [2 3 4]

  - ``chunked``: the blocks are cut into consecutive chunks of n that share no
    block, and only the loss at the top of each chunk is used; it updates its
    whole chunk (the Advancements paper's "chunked local update"; the top
    partial chunk keeps its own top loss). Depth 5, span 2::

        loss 1: [0 1]     loss 3: [2 3]     loss 4: [4]

* ``schedule`` (overlapping groups; ``learning.olu_schedule``):

  - ``every-step``: every loss, every step (the DF paper; Trifecta's
    "approach 2").
  - ``alternate``: the Trifecta's "approach 1". At step t only the losses l
    with (l + 1 - t) divisible by n are used, so the groups used in one step
    tile the network and each block is updated by exactly one loss: over n
    steps it is the last block of its group once (updated by its own loss)
    and, for n = 2, the first block once (updated by the next block's loss).
    For n = 2 this is the Trifecta's even/odd objectives, in its code's phase
    (step 0 uses losses 1, 3, 5, ...). Depth 5, span 2::

        step 0:  loss 1: [0 1]   loss 3: [2 3]            (block 4: no update)
        step 1:  loss 0: [0]     loss 2: [1 2]   loss 4: [3 4]

* ``chunk_alternate`` (chunked groups): the chunk boundaries move by n // 2
  blocks on odd steps, so no block stays at the top of a chunk (where it
  never sends an error down) for good. The Advancements paper's "chunked
  local updates that alternate in between iterations". Depth 5, span 2::

        even steps:  loss 1: [0 1]   loss 3: [2 3]   loss 4: [4]
        odd steps:   loss 0: [0]     loss 2: [1 2]   loss 4: [3 4]

* ``link``: how an error crosses from block j to block j-1: ``weights`` (the
  true W_j^T, DF-O; BP within the group) or ``feedback`` (a fixed random B_j
  of W_j's shape, DF-R: block j never waits on its own weights). The routing
  only carries it. The step from block 0 into a learned label embedding
  always goes through W_0 (there is no B_0).

A rule consumes a :class:`RoutePlan` per step: :meth:`RoutePlan.updated_by`
gives the losses whose errors block j's weight gradient sums,
:meth:`RoutePlan.sends_down` the ones block j must pass to block j-1 (those
also reaching j-1), and :meth:`RoutePlan.finish_after` the loss after which
block j has every error it will get, so its activations can be dropped.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Tuple

GROUPINGS = ("overlapping", "chunked")
SCHEDULES = ("every-step", "alternate")
LINKS = ("weights", "feedback")


@dataclass(frozen=True)
class RoutePlan:
    """The routing of one step. ``reach[l]`` lists, ascending, the blocks loss l updates; () when
    loss l is not used at this step. Every group is a contiguous run of blocks ending at its loss."""
    depth: int
    link: str
    reach: Tuple[Tuple[int, ...], ...]

    def __post_init__(self):
        by = [[] for _ in range(self.depth)]
        down = [[] for _ in range(self.depth)]
        for l, blocks in enumerate(self.reach):
            for j in blocks:
                by[j].append(l)
                if j - 1 in blocks:
                    down[j].append(l)
        object.__setattr__(self, "_by", tuple(tuple(v) for v in by))
        object.__setattr__(self, "_down", tuple(tuple(v) for v in down))

    # ------------------------------------------------------------ per loss
    def active(self, loss: int) -> bool:
        """Is block ``loss``'s loss used at this step? (An unused loss need not even be computed.)"""
        return bool(self.reach[loss])

    def reaches(self, loss: int) -> Tuple[int, ...]:
        """The blocks this loss updates, ascending (empty when it is not used)."""
        return self.reach[loss]

    # ------------------------------------------------------------ per block
    def updated_by(self, block: int) -> Tuple[int, ...]:
        """The losses whose errors reach this block (its weight gradient is their sum), ascending."""
        return self._by[block]

    def sends_down(self, block: int) -> Tuple[int, ...]:
        """The losses whose error this block passes on to ``block - 1`` through its link."""
        return self._down[block]

    def finish_after(self, block: int) -> int:
        """The loss after which this block has all its errors: the highest loss updating it, or the
        block itself when nothing updates it (its activations are dead once the next block has run)."""
        by = self._by[block]
        return by[-1] if by else block

    @property
    def uses_feedback(self) -> bool:
        return self.link == "feedback"


@dataclass(frozen=True)
class Routing:
    """The routing settings of a rule; :meth:`plan` gives the plan of a step."""
    depth: int
    span: int = 1
    grouping: str = "overlapping"
    schedule: str = "every-step"
    chunk_alternate: bool = False
    link: str = "weights"

    def __post_init__(self):
        if self.depth < 1 or self.span < 1:
            raise ValueError(f"routing needs depth >= 1 and span >= 1, got {self.depth} and {self.span}")
        for value, allowed, what in ((self.grouping, GROUPINGS, "grouping"), (self.schedule, SCHEDULES, "schedule"),
                                     (self.link, LINKS, "link")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        if self.schedule == "alternate" and self.grouping != "overlapping":
            raise ValueError("schedule 'alternate' applies to overlapping groups; chunked ones use chunk_alternate")
        if self.chunk_alternate and self.grouping != "chunked":
            raise ValueError("chunk_alternate applies to chunked groups; overlapping ones use schedule 'alternate'")

    @property
    def period(self) -> int:
        """Plans repeat with this period in the step number."""
        if self.grouping == "overlapping":
            return self.span if self.schedule == "alternate" else 1
        return 2 if self.chunk_alternate and self.span // 2 else 1

    def plan(self, step: int) -> RoutePlan:
        return _plan(self, step % self.period)

    @classmethod
    def from_config(cls, hw, depth: int) -> "Routing":
        """The routing of an ``HwConfig`` (its resolved ``span`` and ``strategy``) on ``depth`` blocks."""
        if hw.span is None:
            raise ValueError("BP back-propagates through every block: it has no local routing")
        lr = hw.learning
        return cls(depth=depth, span=hw.span, grouping=lr.grouping,
                   schedule=lr.olu_schedule if lr.grouping == "overlapping" else "every-step",
                   chunk_alternate=lr.chunk_alternate,
                   link="feedback" if hw.strategy == "df-r" else "weights")


def _window(l: int, span: int) -> Tuple[int, ...]:
    return tuple(range(max(0, l - span + 1), l + 1))


@functools.lru_cache(maxsize=256)
def _plan(r: Routing, phase: int) -> RoutePlan:
    n, L = r.span, r.depth
    if r.grouping == "overlapping":
        used = (lambda l: True) if r.schedule == "every-step" else (lambda l: (l + 1 - phase) % n == 0)
        reach = tuple(_window(l, n) if used(l) else () for l in range(L))
    else:
        offset = n // 2 if phase == 1 else 0
        tops = {min(top, L - 1) for top in range(offset - 1, L - 1 + n, n) if top >= 0}
        reach, start = [], 0
        for l in range(L):
            if l in tops:
                reach.append(tuple(range(start, l + 1)))
                start = l + 1
            else:
                reach.append(())
        reach = tuple(reach)
    return RoutePlan(depth=L, link=r.link, reach=reach)
