"""Where one engine training step spends its wall time: timing wrappers installed only while profiling.

The engine is not changed: :class:`StepProfile` replaces, for the duration of
a ``with`` block, every binding of the functions below (module attributes,
names imported with ``from ... import``, class methods) by a wrapper that
times the call, and restores them afterwards. Times are *exclusive*: a
wrapper subtracts the time of the wrapped calls made inside it, so a conv
kernel's im2col counts as data movement while the GEMM it calls counts as
GEMM. Whatever no wrapper covers is bookkeeping; the part of it spent inside
a block's own methods (rescaling GEMM accumulators by the quantisation
scales, casts) is shown apart from the rest (rule, trainer, numpy glue).
"""
from __future__ import annotations

import functools
import sys
import time
from contextlib import contextmanager

GEMM = "GEMM"
MOVE = "data movement (im2col, col2im, layouts, row select)"
QUANT = "quantisation"
BN = "batch norm"
OTHER = "other kernels (ReLU, pool, goodness, losses, optimizer)"
BLOCK = "bookkeeping inside blocks (rescaling, casts)"
REST = "bookkeeping: rule, trainer, numpy glue"
ORDER = (GEMM, MOVE, QUANT, BN, OTHER, BLOCK, REST)


def _targets():
    """(category, owner, attribute name) of everything timed; imported lazily, after chipsim is on the path."""
    from chipsim import kernels as K
    from chipsim import quant
    from chipsim.engine.layers import block
    from chipsim.engine.rules import losses
    from chipsim.engine.networks import network
    from chipsim.engine.training import optim
    from chipsim.kernels import exact
    from chipsim.kernels import int8
    funcs = [(GEMM, exact, "_matmul"), (GEMM, int8, "int8_gemm")]
    funcs += [(MOVE, K, n) for n in ("conv2d_forward", "conv2d_grad_weight", "conv2d_grad_input",
                                     "dense_forward", "dense_grad_weight", "dense_grad_input")]
    funcs += [(BN, K, n) for n in ("batchnorm_train_forward", "batchnorm_eval_forward", "batchnorm_backward",
                                   "batchnorm_backward_fixed_stats")]
    from chipsim.kernels import norm_stream          # mapping.statistics running / micro-batch
    funcs += [(BN, norm_stream, n) for n in ("batchnorm_stream_forward", "batchnorm_micro_forward",
                                             "batchnorm_backward_rows")]
    funcs += [(OTHER, K, n) for n in ("relu_forward", "relu_backward", "maxpool2d_forward", "maxpool2d_backward",
                                      "goodness", "goodness_backward")]
    funcs += [(OTHER, losses, "goodness_loss")]
    funcs += [(QUANT, quant, n) for n in ("quantize_signed", "quantize_weights", "quantize_activations")]
    from chipsim.quant import streaming              # the scales mapping.statistics running / micro-batch use
    methods = [(QUANT, quant.ClippedScale, "quantize"), (QUANT, streaming.StreamScale, "quantize"),
               (QUANT, streaming.StreamErrorScale, "quantize"), (QUANT, quant.QuantStore, "store"),
               (QUANT, quant.QuantStore, "load"), (OTHER, quant.FixedPoint, "apply"),
               (OTHER, optim.Adam, "delta"), (OTHER, optim.SGD, "delta"),
               (MOVE, block.QuantBlock, "select"), (MOVE, network.Network, "input_with_label")]
    methods += [(BLOCK, block.QuantBlock, n) for n in ("forward", "backward_pre", "grad_weight", "grad_input")]
    return funcs, methods


class StepProfile:
    """Exclusive seconds per category over the calls made while installed (``with StepProfile() as prof``)."""

    def __init__(self):
        self.seconds = dict.fromkeys(ORDER, 0.0)
        self.by_function = {}     # (category, qualified name) -> exclusive seconds
        self._stack = []          # child time accumulated by each open wrapped call
        self._undo = []

    def _wrap(self, category, fn):
        name = fn.__qualname__

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.perf_counter() - t0
                own = total - self._stack.pop()
                self.seconds[category] += own
                self.by_function[category, name] = self.by_function.get((category, name), 0.0) + own
                if self._stack:
                    self._stack[-1] += total
        return timed

    def __enter__(self):
        funcs, methods = _targets()
        for category, owner, name in funcs:
            original = getattr(owner, name)
            wrapper = self._wrap(category, original)
            # every binding: `from .exact import _matmul` in conv.py and dense.py, and the blocks'
            # `from ...quant import quantize_signed, ...`
            for mod in [m for n, m in sys.modules.items() if n.startswith("chipsim") and m is not None]:
                for attr, value in list(vars(mod).items()):
                    if value is original:
                        self._undo.append((mod, attr, value))
                        setattr(mod, attr, wrapper)
        for category, cls, name in methods:
            original = cls.__dict__[name]
            self._undo.append((cls, name, original))
            setattr(cls, name, self._wrap(category, original))
        return self

    def __exit__(self, *exc):
        for owner, attr, value in reversed(self._undo):
            setattr(owner, attr, value)
        self._undo.clear()
        return False


@contextmanager
def profiled_steps(step_seconds: list):
    """A StepProfile whose REST category is filled in on exit from the steps' total wall times."""
    with StepProfile() as prof:
        yield prof
    prof.seconds[REST] = sum(step_seconds) - sum(v for k, v in prof.seconds.items() if k != REST)


def breakdown(step, steps: int) -> dict:
    """category -> mean seconds per step over ``steps`` calls of ``step()``, plus "step" (the mean step)
    and "functions" ({(category, function): mean exclusive seconds per step})."""
    walls = []
    with profiled_steps(walls) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t0)
    out = {k: v / steps for k, v in prof.seconds.items()}
    out["step"] = sum(walls) / steps
    out["functions"] = {k: v / steps for k, v in prof.by_function.items()}
    return out


def print_breakdown(parts: dict, title: str, top: int = 8) -> None:
    total = parts["step"]
    print(title)
    for k in ORDER:
        print(f"  {k:<56}{parts[k] * 1e3:8.1f} ms {100 * parts[k] / total:5.1f}%")
    print(f"  {'whole step':<56}{total * 1e3:8.1f} ms")
    if top:
        print(f"  the {top} most expensive wrapped functions (exclusive):")
        for (cat, name), sec in sorted(parts["functions"].items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {name:<40}{sec * 1e3:8.1f} ms {100 * sec / total:5.1f}%  ({cat.split(' (')[0]})")
