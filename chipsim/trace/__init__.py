"""The trace contract: the only thing the chip model (``chipsim.chip``) knows about the engine.

(The contract is described in full in :mod:`chipsim.trace.trace`; this package docstring is expanded below.)
"""
from .trace import (CATEGORIES, KINDS, NO_WORK, SCOPES, SPLITS, TAGS, TRACE_VERSION, Buffer, Layer, Op, Trace,
                    TraceRecorder, nbytes_of)

__all__ = ["CATEGORIES", "KINDS", "NO_WORK", "SCOPES", "SPLITS", "TAGS", "TRACE_VERSION", "Buffer", "Layer", "Op",
           "Trace", "TraceRecorder", "nbytes_of"]
