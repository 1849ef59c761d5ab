"""The one gate every verdict in a report goes through: judge a claim only where the data can carry it.

Why one module: a report that says "**Holds here**" after one seed of a
400-image, one-epoch smoke run misleads, and a verdict computed in six places
is gated in five. Every sentence that calls a claim held, not held,
reproduced, better or best is built by ``verdict`` (or ``ranked``) here, and
the rule is the same everywhere:

* a claim about a *measured* quantity that varies with the seed (accuracy,
  robustness) is judged only with at least ``MIN_SEEDS`` seeds and only when
  every difference it rests on is larger than its spread over seeds;
* a claim about an *exact* quantity (a chip cost of one engine step: memory,
  latency, energy -- the seed does not change them) is judged from its number;
* nothing is judged at a smoke scale (``Scale.judge`` is False: ``reproduce
  --quick``): every claim then reads "not judged at this scale".

Each verdict states the scale it was judged at, so a reader can tell a
3-seed, 3-epoch verdict from a paper's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SEEDS = 2
HOLDS = "**Holds here**"
FAILS = "**Does not hold here**"
NOT_JUDGED = "**Not judged at this scale**"


@dataclass(frozen=True)
class Scale:
    """What the numbers were measured at, in words, and whether any verdict may be drawn at all."""
    text: str
    judge: bool = True


SMOKE = Scale("a smoke test", judge=False)


@dataclass(frozen=True)
class Gap:
    """One difference a claim rests on (in the quantity's own units) and its spread over seeds."""
    difference: float
    spread: float

    @property
    def clear(self) -> bool:
        """Larger than its spread (a zero difference never is, whatever the spread)."""
        return (math.isfinite(self.difference) and math.isfinite(self.spread)
                and abs(self.difference) > max(self.spread, 0.0))


def judgeable(gaps, seeds: int, scale: Scale, exact: bool = False, unit: tuple = (100.0, "points")) -> str | None:
    """None when a verdict may be drawn; otherwise why not, in words (for the sentence). ``unit``: (factor,
    name) to state a difference in (accuracies are fractions, said in points)."""
    if not scale.judge:
        return f"{scale.text}; no verdicts at this scale"
    if exact:
        return None
    if seeds < MIN_SEEDS:
        return f"{seeds} seed{'s' if seeds != 1 else ''}: no spread to judge a difference by"
    weak = [g for g in gaps if not g.clear]
    if weak:
        g = weak[0]
        k, name = unit
        return (f"a difference of {k * g.difference:+.2f} {name} is not larger than its spread over seeds "
                f"({k * g.spread:.2f})")
    return None


def verdict(holds: bool, text: str, *, scale: Scale, seeds: int = 0, gaps=(), exact: bool = False,
            scale_words: bool = True, unit: tuple = (100.0, "points")) -> str:
    """``**Holds here** (scale). text``, ``**Does not hold here** ...`` or ``**Not judged at this scale**
    (why). text``.

    ``gaps``: the differences the claim rests on, each with its spread over seeds (``Gap``); ``seeds``:
    how many seeds each side of them has (the fewest); ``exact``: the claim is about a seed-independent
    cost, which needs no seeds (but still no verdict at a smoke scale); ``unit``: as for ``judgeable``.
    """
    why = judgeable(list(gaps), seeds, scale, exact, unit)
    if why is not None:
        return f"{NOT_JUDGED} ({why}). {text}"
    where = f" ({scale.text})" if scale_words and scale.text else ""
    return f"{HOLDS if holds else FAILS}{where}. {text}"


def gap_words(a: float, b: float, name_a: str, name_b: str, spread: float, seeds: int, scale: Scale,
              unit: float = 100.0, what: str = "points") -> str:
    """'A − B = +1.2 points, more than the spread over seeds (0.4)' -- or why the gap is not judged."""
    d = unit * (a - b)
    base = f"{name_a} − {name_b} = {d:+.1f} {what}"
    if not scale.judge:
        return base
    if seeds < MIN_SEEDS:
        return f"{base} ({seeds} seed{'s' if seeds != 1 else ''}: no spread to judge the gap by)"
    rel = "more" if Gap(a - b, spread).clear else "not more"
    return f"{base}, {rel} than the spread over seeds ({unit * spread:.1f})"


def ranked(rows, value, spread, seeds, name, scale: Scale, higher_better: bool = True,
           unit: tuple = (100.0, "points")):
    """(winner's row, or None when the data cannot single one out, and the reason in words).

    The best row wins only if it beats the runner-up by more than the larger of their spreads with at
    least ``MIN_SEEDS`` seeds (``verdict``'s rule); otherwise no row is named best.
    """
    rows = list(rows)
    if not rows:
        return None, "no rows"
    order = sorted(rows, key=value, reverse=higher_better)
    if len(order) == 1:
        return order[0], ""
    best, second = order[0], order[1]
    g = Gap(value(best) - value(second), max(spread(best), spread(second)))
    why = judgeable([g], min(seeds(best), seeds(second)), scale, unit=unit)
    if why is not None:
        return None, f"{name(best)} and {name(second)} are not told apart, {why}"
    return best, ""
