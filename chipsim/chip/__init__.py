"""The chip model: costs one training step's trace on a many-core mesh chip.

Why a package of small modules: each concern (where layers live, what SRAM
holds, what crosses the NoC, when things run, what it costs in energy) is a
separate, testable function of the trace and the mapping; ``model.simulate``
is the only place that wires them together.

Public entry points::

    simulate(trace, hw) -> ChipReport     # chipsim.chip.model
    simulate_on(trace, hw, mapping)       # ... on a given mapping (an inference on the training cores)
    whole_batch(trace) -> PoolMemory      # chipsim.chip.pool: the chip-independent memory demand
    map_trace(trace, hw) -> Mapping       # chipsim.chip.mapping
    ChipSpec.from_hw(hw)                  # chipsim.chip.spec
"""
from .spec import ChipSpec
from .mapping import Mapping, Slice, map_trace, split_units
from .model import ChipReport, simulate, simulate_on
from .pool import PoolMemory, whole_batch

__all__ = ["ChipSpec", "Mapping", "Slice", "map_trace", "split_units", "ChipReport", "simulate", "simulate_on",
           "PoolMemory", "whole_batch"]
