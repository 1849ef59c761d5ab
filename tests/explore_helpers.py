"""Cheap stand-ins for a trial of ``chipsim explore`` (no training, no mapping), for tests/test_explore.py.

Module-level functions, so a subprocess (the kill test) can name them. The objective values are simple
functions of the settings, so a test can enumerate every point by hand.
"""
from __future__ import annotations

import os
import signal

RULES = ("bp", "df-r")
WEIGHT_BITS = (2, 4, 8)
ACT_BITS = (2, 4)


def cheap_values(rule: str, w: int, a: int) -> dict | None:
    """Objective values of one setting; None when it is "infeasible" (BP at W8/A4: too big, by fiat).

    accuracy rises with the widths and is 5 points higher for BP; energy grows as w*a and doubles for BP;
    peak SRAM grows with w and is 50 KiB higher for BP. So the front holds cheap narrow points and accurate
    wide ones.
    """
    if rule == "bp" and w == 8 and a == 4:
        return None
    bp = rule == "bp"
    return {"accuracy": 0.5 + 0.04 * w + 0.02 * a + (0.05 if bp else 0.0),
            "train_energy": float(w * a * (2 if bp else 1)),
            "peak_sram": 10.0 * w + (50.0 if bp else 0.0)}


def cheap_evaluate(point: dict) -> dict:
    p = point["params"]
    v = cheap_values(p["workload.rule"], p["precision.weight_bits"], p["precision.activation_bits"])
    if v is None:
        return {"status": "infeasible", "violation": "mapping: does not fit (test stand-in)", "seconds": 0.0}
    return {"status": "ok", "values": v, "seconds": 0.0}


def killing_evaluate(point: dict) -> dict:
    """``cheap_evaluate``, logging each call to $EXPLORE_CALLS; the $EXPLORE_KILL_AT-th call SIGKILLs the
    process in the middle of its trial (once: a marker file remembers it)."""
    log = os.environ["EXPLORE_CALLS"]
    with open(log, "a") as fh:
        fh.write(point["key"] + "\n")
    with open(log) as fh:
        calls = len(fh.read().split())
    marker = log + ".killed"
    if calls == int(os.environ["EXPLORE_KILL_AT"]) and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return cheap_evaluate(point)
