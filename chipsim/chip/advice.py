"""What would make a refused step fit: changes of the chip, each checked by re-mapping the same trace.

Why checked: a refusal that advises a change which changes nothing (a smaller
batch for a model whose per-core peak is its weights and optimizer state)
sends a designer down a dead end. Every piece of advice here is a ``--set``
override that was applied and re-mapped before it is offered. Changes of the
workload (batch size, bit widths, optimizer) change the trace itself, which
only the engine can produce again; they are not offered, and the refusal says so.
"""
from __future__ import annotations

import dataclasses
import math

from ..errors import MappingError

#: the off-chip tier the advice tries when a chip has none: an LPDDR4X-class x32 device
#: (as 176core_512k.yaml: 4266 MT/s x 4 B = 17 GB/s; ~100 ns; ~40 pJ/B for device and PHY, estimates)
EXAMPLE_OFFCHIP = {"capacity_mib": 2048, "bandwidth_gb_s": 17.0, "latency_ns": 100, "energy_pj_per_byte": 40.0}
SRAM_GRAIN_KIB = 64          # advised SRAM sizes are multiples of this (or of an eighth of a smaller SRAM)
SRAM_DOUBLINGS = 6           # up to 64x the configured SRAM


def with_overrides(hw, overrides: dict):
    """A copy of ``hw`` with dotted keys replaced (``chip.core.sram_kib`` -> value); nested sections are
    dataclasses, replaced from the leaf up."""
    for key, value in overrides.items():
        parts = key.split(".")

        def put(obj, i):
            if i == len(parts) - 1:
                return dataclasses.replace(obj, **{parts[i]: value})
            return dataclasses.replace(obj, **{parts[i]: put(getattr(obj, parts[i]), i + 1)})
        hw = put(hw, 0)
    return hw


def _fits(trace, hw, fit) -> bool:
    hw = with_overrides(hw, {"mapping.strategy": "fit"})
    try:
        fit(trace, hw, advise=False)
        return True
    except MappingError:
        return False


def _set(overrides: dict) -> str:
    return " ".join(f"--set {k}={v}" for k, v in overrides.items())


def advice(trace, hw, spec, nofit, fit) -> list:
    """[(sentence, {dotted key: value})] of chip changes that were re-mapped and fit.

    ``fit``: the mapper (``mapping.fit``) each change is re-mapped with; passed in, so this module does not
    import the mapping that imports it."""
    out = []
    if hw.mapping.micro_batch > 1:
        o = {"mapping.micro_batch": 1}
        if _fits(trace, with_overrides(hw, o), fit):
            out.append((f"one sample per core at a time ({_set(o)})", o))
    if not spec.has_offchip:
        o = {f"chip.offchip.{k}": v for k, v in EXAMPLE_OFFCHIP.items()}
        if _fits(trace, with_overrides(hw, o), fit):
            out.append((f"an off-chip memory tier, e.g. an LPDDR4X-class device ({_set(o)})", o))
    kib = hw.chip.core.sram_kib
    grain = min(SRAM_GRAIN_KIB, kib / 8)
    hi = None
    for k in range(1, SRAM_DOUBLINGS + 1):
        trial = math.ceil(kib * 2 ** k / grain) * grain
        if _fits(trace, with_overrides(hw, {"chip.core.sram_kib": trial}), fit):
            hi = trial
            break
    if hi is not None:
        lo = max(kib, hi / 2)
        for _ in range(4):                                # narrow it down, on the 64 KiB grain
            mid = math.ceil((lo + hi) / 2 / grain) * grain
            if mid >= hi or mid <= lo:
                break
            if _fits(trace, with_overrides(hw, {"chip.core.sram_kib": mid}), fit):
                hi = mid
            else:
                lo = mid
        o = {"chip.core.sram_kib": hi}
        out.append((f"{hi:g} KiB of SRAM per core ({_set(o)})", o))
    if nofit.cores_needed is not None:
        rows = hw.chip.mesh.rows
        for growth in (1.0, 1.25, 1.5, 2.0):
            cols = max(hw.chip.mesh.cols + 1, math.ceil(nofit.cores_needed * growth / rows))
            o = {"chip.mesh.cols": cols}
            if hw.chip.cores is not None:
                o["chip.cores"] = rows * cols
            if _fits(trace, with_overrides(hw, o), fit):
                out.append((f"a {rows}x{cols} mesh ({rows * cols} cores; {_set(o)})", o))
                break
    return out
