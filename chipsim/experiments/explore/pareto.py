"""Pareto fronts and hypervolume, on objective vectors already turned to *minimise* every component.

Own code rather than Optuna's private helpers (``optuna._hypervolume``): the numbers in a report must not
change with a dependency's internals, and the test checks this one against a hand-computed literal.
The hypervolume is exact (the "hypervolume by slicing objectives" recursion): fronts here have tens of
points and up to six objectives, where it takes milliseconds.
"""
from __future__ import annotations

import math


def dominates(a, b) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front_indices(vectors: list) -> list:
    """Indices of the non-dominated vectors; of equal vectors only the first is kept."""
    out = []
    for i, v in enumerate(vectors):
        if any(dominates(w, v) for w in vectors):
            continue
        if any(tuple(vectors[j]) == tuple(v) for j in out):
            continue
        out.append(i)
    return out


def hypervolume(points: list, reference) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (every objective minimised).

    Points not strictly better than the reference in every objective add nothing and are dropped.
    """
    ref = tuple(float(r) for r in reference)
    pts = [tuple(float(x) for x in p) for p in points if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    pts = [pts[i] for i in front_indices(pts)]
    return _hv(pts, ref)


def _hv(pts: list, ref: tuple) -> float:
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        area, prev_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < prev_y:
                area += (ref[0] - x) * (prev_y - y)
                prev_y = y
        return area
    # slice along the last objective: between consecutive values, the points at or below the slice
    # form a front of one dimension fewer
    pts = sorted(pts, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][-1] if i + 1 < len(pts) else ref[-1]
        depth = upper - p[-1]
        if depth <= 0:
            continue
        sub = [q[:-1] for q in pts[:i + 1]]
        sub = [sub[j] for j in front_indices(sub)]
        total += depth * _hv(sub, ref[:-1])
    return total


def reference_point(vectors: list, margin: float = 0.1) -> tuple:
    """The worst value of each objective over ``vectors`` plus ``margin`` of its range (a nadir point pushed
    outwards, so the extreme points of the front add volume too); a flat objective gets +margin*|value| or
    +margin."""
    ref = []
    for k in range(len(vectors[0])):
        col = [v[k] for v in vectors if math.isfinite(v[k])]
        lo, hi = min(col), max(col)
        span = hi - lo if hi > lo else (abs(hi) or 1.0)
        ref.append(hi + margin * span)
    return tuple(ref)
