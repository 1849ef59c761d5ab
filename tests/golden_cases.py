"""The golden cases: every shipped model x every rule that applies, two real training steps each.

Shared by ``tests/test_golden_steps.py`` (which compares) and
``tests/golden/make_golden.py`` (which writes ``tests/golden/steps.json``).

What a case records, and why:

* ``trace``: totals of the first step's trace -- ops and MACs per op kind,
  kernel operations per (kernel, operand widths), buffer bytes per category
  and scope, bytes sent per tag. Totals, not names: a refactor may rename a
  buffer, but it must not change what the engine executed or holds.
* ``cost``: what the chip model makes of that trace on the largest preset
  (energy, critical-path cycles, peak SRAM, cores used).
* ``state``: a SHA-256 of every array the trainer holds after two steps
  (weights, master weights, optimizer state, accumulators, head, RNG
  states). The presets run 4-bit weights and activations, whose weighted
  sums are integer-exact, so the digest does not depend on the BLAS's
  summation order.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "steps.json"
PRESET = REPO / "hwconfigs" / "256core_4m.yaml"
BATCH = 2


def cases() -> list[tuple[str, str, str]]:
    """(model file stem, rule, dataset) for every shipped model and every rule that applies to it."""
    from test_models import MODELS, applies, dataset_for
    from chipsim.config import RULES
    from chipsim.modelspec import load_model
    out = []
    for m in MODELS:
        model = load_model(str(m))
        for r in RULES:
            if applies(model, r):
                out.append((m.stem, r, dataset_for(model)))
    return out


def _digest(obj, h) -> None:
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d" % len(obj))
        for v in obj:
            _digest(v, h)
    elif isinstance(obj, np.ndarray):
        h.update(f"{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(repr(obj).encode())


def trace_totals(trace) -> dict:
    ops, macs, work, buffers, sent = (defaultdict(int) for _ in range(5))
    for op in trace.ops:
        ops[op.kind] += 1
        macs[op.kind] += op.macs
        for w in op.work:
            work[f"{w.kind}:{w.bits}:{w.split}"] += w.count
        if op.kind == "send":
            sent[op.tag or ""] += op.nbytes
    for b in trace.buffers:
        buffers[f"{b.category}:{b.scope}:{b.split}"] += b.nbytes
    return {name: dict(sorted(d.items())) for name, d in
            (("ops", ops), ("macs", macs), ("work", work), ("buffers", buffers), ("sent", sent))}


def two_steps(cfg) -> tuple:
    """(trainer, the first step's trace, SHA-256 of the trainer's state after a second step)."""
    from chipsim.runner import _one_step
    tr = _one_step(cfg)
    trace = tr.trace
    tr.train_step(tr.data.x_train, tr.data.y_train)
    state = tr.state()
    state.pop("trace"), state.pop("history")
    h = hashlib.sha256()
    _digest(state, h)
    return tr, trace, h.hexdigest()


def run_case(model_stem: str, rule: str, dataset: str) -> dict:
    """Two training steps (the first traced) and the chip's cost of that trace."""
    from chipsim.chip import simulate
    from chipsim.config import load_config
    cfg = load_config(str(PRESET), (f"workload.model={REPO / 'models' / (model_stem + '.yaml')}",
                                    f"workload.dataset={dataset}", f"workload.rule={rule}",
                                    f"training.batch_size={BATCH}"))
    tr, trace, digest = two_steps(cfg)
    chip = simulate(trace, cfg.hw)
    cost = {"energy_pj": round(float(chip.energy.total_pj), 3), "latency_cycles": round(float(chip.latency_cycles), 3),
            "peak_bytes": int(chip.ledger.peak_bytes), "cores_used": int(chip.mapping.cores_used)}
    return {"trace": trace_totals(trace), "cost": cost, "state": digest}


def as_json(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
