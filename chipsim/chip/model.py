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
from .pool import PoolMemory, whole_batch
from .mapping import Mapping, fit
from .noc import send_plan
from .offchip import categories, describe
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
    latency_without_offchip: float | None = None   # cycles of the same step if off-chip accesses took no time

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

    # ------------------------------------------------------------ static power, area, off-chip
    def chip_dict(self) -> dict:
        sp = self.spec
        return {"name": sp.name, "rows": sp.rows, "cols": sp.cols, "clock_mhz": sp.clock_mhz,
                "sram_bytes": sp.sram_bytes, "power_gating": sp.power_gating,
                "area_mm2": sp.area_mm2 if sp.area_given else None,
                "area_breakdown_mm2": {"logic": sp.n_cores * sp.core_area_mm2,
                                       "sram": sp.n_cores * sp.sram_area_mm2_per_kib * sp.sram_kib}
                if sp.area_given else None,
                "static_power_uw": self.energy.powered_cores * sp.core_static_uw if sp.leakage_given else None,
                "powered_cores": self.energy.powered_cores,
                "offchip": {"capacity_bytes": sp.offchip_bytes,
                            "bytes_per_cycle": sp.offchip_bytes_per_cycle,
                            "latency_cycles": sp.offchip_latency_cycles,
                            "pj_per_byte": sp.offchip_pj_per_byte} if sp.has_offchip else None}

    def offchip_dict(self) -> dict | None:
        """What the off-chip tier holds and carries, and its share of the step's energy and latency."""
        if not self.mapping.offchip:
            return None
        e, lat = self.energy, self.latency_cycles
        free = self.latency_without_offchip
        return {"categories": categories(self.mapping.offchip), "placed": describe(self.mapping.offchip),
                "held_bytes": self.ledger.offchip_bytes, "held_by_category": dict(self.ledger.offchip_by_category),
                "traffic_bytes": e.offchip_read_bytes + e.offchip_write_bytes,
                "read_bytes": e.offchip_read_bytes, "write_bytes": e.offchip_write_bytes,
                "energy_pj": e.offchip_pj, "energy_share": e.offchip_pj / e.total_pj if e.total_pj else 0.0,
                "latency_without_offchip_cycles": free,
                "latency_share": (lat - free) / lat if lat and free is not None else None,
                "bandwidth_floor_cycles": self.schedule.offchip_floor}

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
            "chip": self.chip_dict(),
            "samples": self.trace.samples, "micro_batch": self.micro_batch,
            "mapping": {"strategy": self.mapping.strategy, "cores_used": self.mapping.cores_used,
                        "iterations": self.mapping.iterations, "notes": self.mapping.notes,
                        "offchip": [list(p) for p in sorted(self.mapping.offchip)], "search": self.mapping.search,
                        "placement": self.mapping.placement, "shared_work": self.mapping.shared_work,
                        "shared_work_once_ops": len(self.mapping.once),
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
            "offchip": self.offchip_dict(),
            "pool": {"whole_batch": self.pool.to_dict()},
        }


def simulate(trace, hw, spec: ChipSpec | None = None) -> ChipReport:
    """Map ``trace`` onto the chip of ``hw`` and cost one step. Raises MappingError if it cannot fit."""
    spec = spec or ChipSpec.from_hw(hw)
    mapping, sched, led = fit(trace, hw, spec)
    en = step_energy(trace, spec, mapping, sched.links, sched.n_inst, sched.latency)
    return ChipReport(spec=spec, trace=trace, mapping=mapping, ledger=led, schedule=sched, energy=en,
                      micro_batch=hw.mapping.micro_batch, pool=whole_batch(trace),
                      latency_without_offchip=_free(trace, hw, spec, mapping))


def _free(trace, hw, spec, mapping):
    """The step's latency on ``mapping`` had its off-chip accesses taken no time (None: nothing off-chip)."""
    if not mapping.offchip:
        return None
    lat = schedule(trace, spec, mapping, hw.mapping.micro_batch, hw.training.update, offchip_time=False).latency
    schedule(trace, spec, mapping, hw.mapping.micro_batch, hw.training.update)   # restore the op stalls
    return lat


def simulate_on(trace, hw, mapping: Mapping) -> ChipReport:
    """Cost ``trace`` on an existing ``mapping`` (e.g. an inference on the cores the training step was
    mapped to): schedule, ledger and energy, no fitting. Its layers must be layers of the mapping."""
    spec = mapping.spec
    sub = Mapping(spec=spec, layers=list(trace.layers), slices={l.index: mapping.slices_of(l.index)
                                                                 for l in trace.layers}, strategy=mapping.strategy,
                  offchip=mapping.offchip, placement=mapping.placement, shared_work=mapping.shared_work)
    sched = schedule(trace, spec, sub, hw.mapping.micro_batch, hw.training.update)
    led = build_ledger(trace, sub, spec.sram_bytes, sched)
    en = step_energy(trace, spec, sub, sched.links, sched.n_inst, sched.latency)
    return ChipReport(spec=spec, trace=trace, mapping=sub, ledger=led, schedule=sched, energy=en,
                      micro_batch=hw.mapping.micro_batch, pool=whole_batch(trace),
                      latency_without_offchip=_free(trace, hw, spec, sub))
