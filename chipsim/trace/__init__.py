"""The trace contract: the one interface between the engine and the chip model.

The engine (``chipsim.engine``) executes a training step or an inference and
records what it executed here; the chip model (``chipsim.chip``) costs that
record and nothing else. Neither imports the other
(``tests/test_import_boundaries.py``). The package has three modules:

* :mod:`.trace` -- the record: ``Trace`` (layers, buffers, ops), its
  ``TraceRecorder``, its serialised form (``to_dict``/``from_dict``, version
  ``TRACE_VERSION``; checkpoints store it, another version is a clear error);
* :mod:`.work` -- what one op executed: ``Work`` items (kernel kind, count,
  operand widths, split), logged by the kernels themselves, and ``KINDS``,
  the table of which core unit runs each kind;
* :mod:`.roles` -- ``Role``: what tensor each buffer holds.

What the chip may rely on (and the engine guarantees):

* layers: ``index`` (dense ids), ``units`` (the split axis), ``kind``;
* buffers: ``nbytes`` at the widths the chip stores them, ``elements`` (the
  tensor's value count), ``category`` (budget line), ``role`` (what tensor),
  ``scope`` and ``split`` as :mod:`.trace` defines them; liveness comes only
  from the ops that read and write a buffer;
* ops: program order, ``kind`` in ``KINDS``, their ``work`` (every kernel call
  belongs to exactly one op: the tracer checks that none is left over), and
  their ``reads``/``writes``; a ``send`` moves ``nbytes`` from ``layer`` to
  ``dst_layer``.

What it must not rely on: buffer and op ``name`` s (for people: reports and
timelines), the order of buffers, or anything about the rule or model that
produced the trace.
"""
from .roles import CATEGORY_ROLE, Role
from .trace import (CATEGORIES, KINDS, NO_WORK, SCOPES, SPLITS, TAGS, TRACE_VERSION, Buffer, Layer, Op, Trace,
                    TraceRecorder, TraceVersionError, nbytes_of)

__all__ = ["CATEGORIES", "CATEGORY_ROLE", "KINDS", "NO_WORK", "Role", "SCOPES", "SPLITS", "TAGS", "TRACE_VERSION",
           "Buffer", "Layer", "Op", "Trace", "TraceRecorder", "TraceVersionError", "nbytes_of"]
