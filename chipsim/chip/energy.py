"""Energy of one step: the work of every op, SRAM accesses, NoC byte-hops.

Why counted from the trace's reads/writes: an op touches exactly the buffers it
names, so a rule that re-reads kept activations or streams feedback weights
pays for it without a per-rule term.

* Work: each ``chipsim.trace.work.Work`` item of an op costs ``count * pJ(unit, bits)``
  (the MAC array's or the vector unit's table; the widest operand picks the
  entry, next wider if the exact width is missing), once for ``units`` work
  and once per slice for ``replicated`` work (once when the mapping runs it
  on the first slice only, ``chipsim.chip.replicas``); a ``per_instance`` item of a
  sample-scope op is paid once per micro-batch instance. ``by_op`` sums the
  work by kind, plus the SRAM and NoC terms, so it adds up to the total.
* SRAM: each op reads every buffer it reads and writes every buffer it writes,
  whole. A sample-scope op touching a sample buffer moves that buffer's nbytes
  over the step (its per-sample share, once per sample); touching a persistent
  or step buffer (weights, accumulators) it moves the whole buffer once per
  micro-batch instance. A step-scope op moves each buffer once. Replicated and
  reduce buffers exist on every slice, so every slice pays; a ``send`` reads its
  source once (the sending slices' shares) and writes one copy per receiving
  slice that holds it in full.
* NoC: ``bytes * hops * byte_hop`` summed over every transfer (incl. reductions).
* Off-chip: the bytes of buffers whose category the mapping placed off-chip
  (``offchip``: (layer, category) pairs) cost ``chip.offchip.energy_pj_per_byte`` instead of SRAM.
* Static: every powered core (all of them, or the used ones under
  ``chip.power_gating: idle-cores``) leaks its logic's and its SRAM's power
  over the step's latency: ``powered * (leakage_uw + sram_kib *
  sram_leakage_uw_per_kib) * latency_us`` (µW x µs = pJ).

``total_pj`` is dynamic plus static energy; ``dynamic_pj`` and ``static_pj``
are its two parts, and ``by_op`` carries ``static_logic``, ``static_sram`` and
``offchip`` rows so that it still adds up to the total.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..trace.work import MAC, VECTOR
from .offchip import moved, op_offchip_bytes, read_copies, write_copies
from .replicas import copies


@dataclass
class Energy:
    mac_pj: float            # work on the MAC array
    vector_pj: float         # work on the vector unit
    sram_read_pj: float
    sram_write_pj: float
    noc_pj: float
    samples: int
    sram_read_bytes: float
    sram_write_bytes: float
    by_op: dict              # work kind (and sram_read, sram_write, noc, offchip, static_*) -> pJ over the step
    offchip_pj: float = 0.0
    offchip_read_bytes: float = 0.0
    offchip_write_bytes: float = 0.0
    static_logic_pj: float = 0.0
    static_sram_pj: float = 0.0
    powered_cores: int = 0

    @property
    def sram_pj(self) -> float:
        return self.sram_read_pj + self.sram_write_pj

    @property
    def static_pj(self) -> float:
        return self.static_logic_pj + self.static_sram_pj

    @property
    def dynamic_pj(self) -> float:
        return self.mac_pj + self.vector_pj + self.sram_pj + self.noc_pj + self.offchip_pj

    @property
    def total_pj(self) -> float:
        return self.dynamic_pj + self.static_pj

    def per_sample(self) -> dict:
        s = max(self.samples, 1)
        return {"mac_pj": self.mac_pj / s, "vector_pj": self.vector_pj / s, "sram_pj": self.sram_pj / s,
                "noc_pj": self.noc_pj / s, "offchip_pj": self.offchip_pj / s, "dynamic_pj": self.dynamic_pj / s,
                "static_pj": self.static_pj / s, "total_pj": self.total_pj / s}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(sram_pj=self.sram_pj, static_pj=self.static_pj, dynamic_pj=self.dynamic_pj,
                 total_pj=self.total_pj, per_sample=self.per_sample())
        return d


def static_energy(spec, cores_used: int, latency_cycles: float) -> tuple:
    """(logic pJ, SRAM pJ, powered cores) of the leakage over one step of ``latency_cycles``."""
    powered = spec.powered_cores(cores_used)
    us = spec.cycles_to_us(latency_cycles)
    return (powered * spec.core_leak_uw * us, powered * spec.sram_leak_uw_per_kib * spec.sram_kib * us, powered)


def step_energy(trace, spec, mapping, links, n_inst: int, latency_cycles: float = 0.0) -> Energy:
    """Energy of one step on ``mapping``; ``latency_cycles`` (the schedule's) prices the static power."""
    unit_pj = {MAC: 0.0, VECTOR: 0.0}
    by_op = {}
    rd = wr = 0.0
    B = trace.buffers
    off = mapping.offchip
    for o in trace.ops:
        n_sl = len(mapping.slices_of(o.layer))
        once = o.id in mapping.once
        for w in o.work:
            pj = spec.work_energy(w) * copies(w, n_sl, once)
            if w.per_instance and o.scope != "step":
                pj *= n_inst
            unit_pj[w.unit] += pj
            by_op[w.kind] = by_op.get(w.kind, 0.0) + pj
        if o.kind == "select":          # kept rows stay in place: nothing is read or written
            continue
        for bid in o.reads:
            b = B[bid]
            if (b.layer, b.category) not in off:
                rd += moved(o, b, n_inst) * read_copies(o, b, mapping)
        for bid in o.writes:
            b = B[bid]
            if (b.layer, b.category) not in off:
                wr += moved(o, b, n_inst) * write_copies(o, b, mapping)
    ord_ = owr = 0.0
    if off:
        for o in trace.ops:
            r, w = op_offchip_bytes(o, trace, mapping, n_inst)
            ord_, owr = ord_ + r, owr + w
    logic, sram, powered = static_energy(spec, mapping.cores_used, latency_cycles)
    by_op.update(sram_read=rd * spec.sram_read_pj, sram_write=wr * spec.sram_write_pj,
                 noc=links.byte_hops * spec.byte_hop_pj)
    if off:
        by_op["offchip"] = (ord_ + owr) * spec.offchip_pj_per_byte
    if spec.leakage_given:
        by_op.update(static_logic=logic, static_sram=sram)
    return Energy(mac_pj=unit_pj[MAC], vector_pj=unit_pj[VECTOR], sram_read_pj=by_op["sram_read"],
                  sram_write_pj=by_op["sram_write"], noc_pj=by_op["noc"], samples=trace.samples,
                  sram_read_bytes=rd, sram_write_bytes=wr, by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
                  offchip_pj=by_op.get("offchip", 0.0), offchip_read_bytes=ord_, offchip_write_bytes=owr,
                  static_logic_pj=logic, static_sram_pj=sram, powered_cores=powered)
