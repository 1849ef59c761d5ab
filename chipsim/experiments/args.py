"""Checks of the experiment commands' own arguments (``--rules``, ``--depths``, ``--jobs`` ...).

The Python API takes the same arguments as the command line, so the checks
live here, below both: an empty ``--rules``, ``--jobs -1`` or ``--width 0`` is
one line naming the argument and what it allows, from ``chipsim compare`` and
from ``chipsim.compare(...)`` alike -- never an IndexError or a
ZeroDivisionError from deep inside.
"""
from __future__ import annotations

import math

from ..config import RULES
from ..errors import ConfigError


def rules(values, arg: str = "--rules") -> list:
    """Rule names, lower-cased, each known, at least one, no repeats."""
    out = [str(r).strip().lower() for r in values]
    if not out:
        raise ConfigError(f"{arg}: give at least one rule; allowed: {', '.join(RULES)}")
    bad = [r for r in out if r not in RULES]
    if bad:
        raise ConfigError(f"{arg}: {bad[0]!r} is not a rule; allowed: {', '.join(RULES)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"{arg}: {', '.join(out)} names a rule twice; give each once")
    return out


def integers(values, arg: str, lo: int, what: str, allow_empty: bool = False, hi: int | None = None) -> list:
    """Integers >= ``lo`` (and <= ``hi``); bools and fractions are refused."""
    out = list(values)
    if not out and not allow_empty:
        raise ConfigError(f"{arg}: give at least one {what}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{arg}: {v!r} is not an integer; expected {what}s >= {lo}")
        if v < lo or (hi is not None and v > hi):
            limit = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise ConfigError(f"{arg}: {v} is out of range; every {what} must be {limit}")
    return out


def positive_int(value, arg: str, what: str, allow_none: bool = True):
    """``None`` (when allowed) or an integer >= 1."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{arg} {value!r}: must be an integer >= 1 ({what})")
    return value


def jobs(value):
    return positive_int(value, "--jobs", "parallel processes; leave it out to use every core")


def finite_nonnegative(value, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{arg} {value!r}: must be a finite number >= 0")
    return float(value)
