"""``simulate(trace, hw) -> ChipReport``: the chip model's one entry point.

Why one function: mapping, ledger, NoC, timing and energy must all see the same
mapping and the same schedule; ``simulate`` computes each once (the mapper's
last schedule is reused) and hands back one report object that the CLI, the
report writer and the tests read.
"""
from __future__ import annotations

from dataclasses import dataclass

from .energy import Energy, step_energy
from .ledger import Ledger, build_ledger
from .pool import PoolMemory, pytorch, whole_batch
from .mapping import Mapping, fit
from .noc import send_plan
from .spec import ChipSpec
from .timing import Schedule, op_cycles, schedule

GANTT_ROWS_IN_JSON = 20000


@dataclass
class ChipReport:
    spec: ChipSpec
    trace: object            # the chipsim.trace.Trace that was costed
    mapping: Mapping
    ledger: Ledger
    schedule: Schedule
    energy: Energy
    micro_batch: int
    pool: PoolMemory         # the chip-independent whole-batch demand of the same trace
    pool_pytorch: PoolMemory | None = None   # ... as a float32 framework holds it (None: unsized tensors)

    # ------------------------------------------------------------ timing
    @property
    def latency_cycles(self) -> float:
        return self.schedule.latency

    @property
    def latency_us(self) -> float:
        return self.spec.cycles_to_us(self.latency_cycles)

    @property
    def throughput(self) -> float:
        """Samples per second at ``clock_mhz`` when steps run back to back."""
        return self.trace.samples / (self.latency_us * 1e-6) if self.latency_cycles > 0 else float("inf")

    def busy(self) -> dict:
        """core -> busy cycles over the step (idle = latency - busy)."""
        return {c: self.schedule.busy.get(c, 0.0) for c in sorted(self.mapping.core_slice)}

    def idle(self) -> dict:
        return {c: self.latency_cycles - b for c, b in self.busy().items()}

    def critical_path(self) -> list:
        ops = self.trace.ops
        return [{"op": ops[d].name, "op_id": d, "layer": ops[d].layer, "kind": ops[d].kind,
                 "instance": None if ops[d].scope == "step" else i, "start": s, "end": e, "gated_by": g}
                for d, i, s, e, g in self.schedule.critical_path]

    def gantt_rows(self) -> list:
        """One row per (core, op instance): core, row, col, layer, op, op_id, kind, instance, start, end (cycles)."""
        rows, ops, S = [], self.trace.ops, self.trace.samples
        cyc = {}
        for layer in self.mapping.layers:
            sl = self.mapping.slices_of(layer.index)
            pos = self.mapping.layer_pos[layer.index]
            for d, i, t in self.schedule.tasks[pos]:
                o = ops[d]
                if d not in cyc:
                    cyc[d] = op_cycles(o, S, self.spec, self.mapping)
                if cyc[d] is None:
                    continue
                n = 1.0 if o.scope == "step" else self.schedule.groups[i]
                for s, per, fixed in zip(sl, *cyc[d]):
                    rows.append({"core": s.core, "row": s.coord[0], "col": s.coord[1], "layer": layer.index,
                                 "op": o.name, "op_id": d, "kind": o.kind,
                                 "instance": None if o.scope == "step" else i,
                                 "start": t, "end": t + per * n + fixed})
        return rows

    # ------------------------------------------------------------ NoC
    def link_bytes(self) -> dict:
        """'(r,c)->(r,c)' -> bytes carried over the step."""
        co = self.spec.coord
        return {f"{co(a)}->{co(b)}": v for (a, b), v in sorted(self.schedule.links.bytes.items())}

    def tag_bytes(self) -> dict:
        return dict(self.schedule.links.tag_bytes)

    @property
    def byte_hops(self) -> float:
        return self.schedule.links.byte_hops

    def activation_hops(self) -> int:
        """Hops of the forward activation traffic of one sample (sum over its transfers)."""
        return sum(self.spec.hops(sc, dc) for o in self.trace.ops if o.kind == "send" and o.tag == "activation"
                   for sc, dc, _ in send_plan(o, self.trace, self.mapping))

    # ------------------------------------------------------------ tables / JSON
    def mapping_table(self) -> list:
        """Rows for a compact console table, one per layer."""
        rows = []
        busy = self.busy()
        for layer in self.mapping.layers:
            sl = self.mapping.slices_of(layer.index)
            mems = [self.ledger.cores[s.core] for s in sl]
            worst = max(mems, key=lambda m: m.peak_bytes)
            top = sorted(worst.at_peak.items(), key=lambda kv: -kv[1])[:3]
            rows.append({"layer": layer.index, "name": layer.name, "units": layer.units, "slices": len(sl),
                         "cores": " ".join(str(s.core) for s in sl),
                         "coords": " ".join(f"{s.coord[0]},{s.coord[1]}" for s in sl),
                         "peak_kib": round(worst.peak_bytes / 1024, 1),
                         "sram_pct": round(100 * worst.peak_bytes / self.ledger.capacity, 1),
                         "top": ", ".join(f"{c} {v / 1024:.1f}" for c, v in top if v > 0),
                         "busy_pct": round(100 * max(busy.get(s.core, 0) for s in sl) / self.latency_cycles, 1)
                         if self.latency_cycles else 0.0})
        return rows

    def to_dict(self) -> dict:
        led = self.ledger
        gantt = self.gantt_rows()
        return {
            "chip": {"name": self.spec.name, "rows": self.spec.rows, "cols": self.spec.cols,
                     "clock_mhz": self.spec.clock_mhz, "sram_bytes": self.spec.sram_bytes},
            "samples": self.trace.samples, "micro_batch": self.micro_batch,
            "mapping": {"strategy": self.mapping.strategy, "cores_used": self.mapping.cores_used,
                        "iterations": self.mapping.iterations, "notes": self.mapping.notes,
                        "activation_hops_per_sample": self.activation_hops(),
                        "layers": [{"layer": l.index, "name": l.name, "units": l.units,
                                    "slices": [{"core": s.core, "coord": list(s.coord), "units": [s.lo, s.hi]}
                                               for s in self.mapping.slices_of(l.index)]}
                                   for l in self.mapping.layers]},
            "ledger": {"capacity_bytes": led.capacity, "peak_core": led.peak_core,
                       "peak_bytes": led.peak_bytes, "total_peak_bytes": led.total_peak_bytes(),
                       "totals_by_category": led.totals(),
                       "cores": {str(c): {"layer": m.layer, "slice": m.slice, "peak_bytes": m.peak_bytes,
                                          "peak_time": m.peak_time, "at_peak": m.at_peak,
                                          "max_by_category": m.max_by_category}
                                 for c, m in sorted(led.cores.items())}},
            "noc": {"link_bytes": self.link_bytes(), "tag_bytes": self.tag_bytes(), "byte_hops": self.byte_hops,
                    "transfers": self.schedule.links.transfers},
            "timing": {"latency_cycles": self.latency_cycles, "latency_us": self.latency_us,
                       "throughput_samples_per_s": self.throughput, "instances": self.schedule.n_inst,
                       "busy_cycles": {str(c): v for c, v in self.busy().items()},
                       "busy_cycles_by_op": dict(sorted(self.schedule.busy_by_kind.items(), key=lambda kv: -kv[1])),
                       "idle_cycles": {str(c): v for c, v in self.idle().items()},
                       "critical_path": self.critical_path(),
                       "gantt": gantt if len(gantt) <= GANTT_ROWS_IN_JSON else None,
                       "gantt_rows": len(gantt)},
            "energy": self.energy.to_dict(),
            "pool": {"whole_batch": self.pool.to_dict(), "pytorch": self.pool_pytorch.to_dict() if self.pool_pytorch else None},
        }


def simulate(trace, hw, spec: ChipSpec | None = None) -> ChipReport:
    """Map ``trace`` onto the chip of ``hw`` and cost one step. Raises MappingError if it cannot fit."""
    spec = spec or ChipSpec.from_hw(hw)
    mapping, sched, led = fit(trace, hw, spec)
    en = step_energy(trace, spec, mapping, sched.links, sched.n_inst)
    return ChipReport(spec=spec, trace=trace, mapping=mapping, ledger=led, schedule=sched, energy=en,
                      micro_batch=hw.mapping.micro_batch, pool=whole_batch(trace),
                      pool_pytorch=pytorch(trace))


def simulate_on(trace, hw, mapping: Mapping) -> ChipReport:
    """Cost ``trace`` on an existing ``mapping`` (e.g. an inference on the cores the training step was
    mapped to): schedule, ledger and energy, no fitting. Its layers must be layers of the mapping."""
    spec = mapping.spec
    sub = Mapping(spec=spec, layers=list(trace.layers), slices={l.index: mapping.slices_of(l.index)
                                                                 for l in trace.layers}, strategy=mapping.strategy)
    sched = schedule(trace, spec, sub, hw.mapping.micro_batch, hw.training.update)
    led = build_ledger(trace, sub, spec.sram_bytes, sched)
    en = step_energy(trace, spec, sub, sched.links, sched.n_inst)
    return ChipReport(spec=spec, trace=trace, mapping=sub, ledger=led, schedule=sched, energy=en,
                      micro_batch=hw.mapping.micro_batch, pool=whole_batch(trace),
                      pool_pytorch=pytorch(trace))
