"""Interleaved timing for the side-by-side benchmarks: many short rounds, every side in each round.

Why: on the shared 2-core machines a figure drifts by 2x within minutes, and
contention does not slow the two sides alike (torch's OpenMP threads and
OpenBLAS's workers react differently to losing a core). So each round times
a short block of every side back to back, alternating which goes first, and
a ratio is taken *within* a round, where both sides saw the same load. The
report is the median of those ratios with their spread, the same ratio of
process CPU times (``time.process_time``: every thread of this process,
whatever else the machine runs), and how many rounds reached the target.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """One side's block of calls in one round: seconds per call, wall clock and process CPU."""
    wall: float
    cpu: float


def time_block(fn, calls: int, warm: int = 1) -> Block:
    """``warm`` untimed calls (thread pools waking up, caches), then the mean of ``calls`` timed ones."""
    for _ in range(warm):
        fn()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return Block((time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls)


def interleaved(sides: dict, rounds: int, calls: int, warm: int = 1, pause: float = 0.2) -> dict:
    """name -> [Block per round] for every ``sides[name]()`` closure.

    Each block starts after a ``pause``, so that the previous side's
    spinning threads (BLAS, OpenMP) have parked and are not charged to the
    next; the order of the sides is reversed every other round.
    """
    names = list(sides)
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            time.sleep(pause)
            out[n].append(time_block(sides[n], calls, warm))
    return out


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and range of per-round values; ``hits``: rounds at or above the target."""
    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int
    hits: int | None = None

    def text(self, unit: str = "x") -> str:
        return (f"{self.median:.2f}{unit} (IQR {self.q1:.2f}-{self.q3:.2f}, range {self.lo:.2f}-{self.hi:.2f}, "
                f"{self.n} rounds)")


def spread(values, target: float | None = None) -> Spread:
    v = sorted(values)
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0],) * 3
    hits = None if target is None else sum(x >= target for x in v)
    return Spread(statistics.median(v), q1, q3, v[0], v[-1], len(v), hits)


def ratios(num: list, den: list, field: str = "wall") -> list:
    """Per-round ``num / den`` of seconds per call: a throughput ratio of ``den``'s side over ``num``'s."""
    return [getattr(a, field) / getattr(b, field) for a, b in zip(num, den)]


def machine_load() -> str:
    """The load averages, so that a reader can tell a quiet run from a contended one."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def pin_torch_threads(n: int) -> None:
    """Set torch's intra-op threads to ``n`` for the rest of the run, after numba's threading layer has
    started. numba starts it on OpenMP, in torch's own libgomp, and sets OpenMP's thread count to its own
    as it does: measured, ``torch.set_num_threads(1)`` then ``numba.get_num_threads()`` left
    ``torch.get_num_threads()`` at 2, so a torch side asked for 1 thread ran on 2 (``kernels.py`` printed
    "torch threads 1" before starting numba's layer, and its torch steps took 1.3 ms instead of 2.3). A side
    that checks ``torch.get_num_threads()`` as it runs catches any later change."""
    import numba
    import torch
    numba.get_num_threads()
    torch.set_num_threads(n)
