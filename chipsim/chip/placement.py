"""The walks of the mesh that a mapping lays its slices along (``Mapping.placement``).

Why more than one: slices go down layer after layer along a boustrophedon, so
consecutive slices are one hop apart whichever way the walk turns, but the
shape of the cores a model uses is not: along the rows, a few layers fill a
band as wide as the mesh; along the columns, a block as tall as the mesh and a
few columns wide. The multicasts into a split layer and its reductions see
different hop counts on each, so ``mapping.strategy: search`` tries both.
Its own module so that the mapping and the search (which the mapping imports
lazily) both read the one list without importing each other.
"""
from __future__ import annotations

PLACEMENTS = ("row-snake", "column-snake")    # the first is every strategy's layout but search's choice


def walk(spec, placement: str = PLACEMENTS[0]) -> list:
    """Cores in the order ``placement`` lays slices along: a boustrophedon along the rows or the columns
    (consecutive entries one hop apart either way)."""
    if placement == "row-snake":
        return spec.snake_order()
    if placement == "column-snake":
        return [spec.core_at(r, c) for c in range(spec.cols)
                for r in (range(spec.rows) if c % 2 == 0 else range(spec.rows - 1, -1, -1))]
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
