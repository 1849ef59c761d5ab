"""One colour and one marker per learning rule, for every figure chipsim draws.

Why a table of its own: when each plot picks colours by the order of its
series, blue is BP in one figure and DF-O in the next, and a reader comparing
two figures compares the wrong curves. Every plot asks ``rule_style`` for a
series named after a rule (or a rule-table variant such as ``df-r span 3``,
which takes its base rule's colour and marker), so a rule looks the same in
every figure. Names that are not rules get a neutral style from ``OTHER``.
"""
from __future__ import annotations

from typing import NamedTuple


class Style(NamedTuple):
    color: str
    marker: str


#: rule (and the named variants of the rule table and the ViT table) -> its colour and marker, everywhere
RULE_STYLES = {
    "bp": Style("#C44E52", "o"),
    "ff": Style("#8172B2", "s"),
    "symba": Style("#937860", "^"),
    "df": Style("#7F7F7F", "v"),
    "df-o": Style("#4C72B0", "D"),
    "df-r": Style("#55A868", "P"),
    "cwc": Style("#DD8452", "X"),
    "cff": Style("#DA8BC3", "*"),
    "cff+m": Style("#CCB974", "h"),
    "trifecta": Style("#64B5CD", "<"),
}
#: the rule-table variants whose first word is not their rule
ALIASES = {"df greedy": "df"}
OTHER = (Style("#333333", ">"), Style("#A0A0A0", "d"), Style("#17BECF", "p"), Style("#BCBD22", "8"))


def base_rule(name: str) -> str | None:
    """``df-r span 3`` -> ``df-r``; ``cwc + head`` -> ``cwc``; a name that is no rule -> None."""
    key = str(name).strip().lower()
    if key in RULE_STYLES:
        return key
    if key in ALIASES:
        return ALIASES[key]
    first = key.split(" ")[0]
    return first if first in RULE_STYLES else None


def rule_style(name: str, index: int = 0) -> Style:
    """The style of a series named ``name``: its rule's, or the ``index``-th neutral one."""
    rule = base_rule(name)
    return RULE_STYLES[rule] if rule else OTHER[index % len(OTHER)]


def numeric_order(values) -> list:
    """Axis values in numeric order, words (``avg``) after the numbers: ``[32, 8, 4, 2]`` -> ``[2, 4, 8, 32]``
    (sorting as text put 32 before 4)."""
    def key(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))
    return sorted(values, key=key)
