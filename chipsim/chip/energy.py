"""Energy of one step: the work of every op, SRAM accesses, NoC byte-hops.

Why counted from the trace's reads/writes: an op touches exactly the buffers it
names, so a rule that re-reads kept activations or streams feedback weights
pays for it without a per-rule term.

* Work: each ``chipsim.trace.work.Work`` item of an op costs ``count * pJ(unit, bits)``
  (the MAC array's or the vector unit's table; the widest operand picks the
  entry, next wider if the exact width is missing), once for ``units`` work
  and once per slice for ``replicated`` work; a ``per_instance`` item of a
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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..trace.work import MAC, VECTOR


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
    by_op: dict              # work kind (and sram_read, sram_write, noc) -> pJ over the step

    @property
    def sram_pj(self) -> float:
        return self.sram_read_pj + self.sram_write_pj

    @property
    def total_pj(self) -> float:
        return self.mac_pj + self.vector_pj + self.sram_pj + self.noc_pj

    def per_sample(self) -> dict:
        s = max(self.samples, 1)
        return {"mac_pj": self.mac_pj / s, "vector_pj": self.vector_pj / s, "sram_pj": self.sram_pj / s,
                "noc_pj": self.noc_pj / s, "total_pj": self.total_pj / s}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(sram_pj=self.sram_pj, total_pj=self.total_pj, per_sample=self.per_sample())
        return d


def _moved(op, buf, n_inst: int) -> float:
    if op.scope == "step" or buf.scope == "sample":
        return float(buf.nbytes)
    return float(buf.nbytes) * n_inst


def step_energy(trace, spec, mapping, links, n_inst: int) -> Energy:
    unit_pj = {MAC: 0.0, VECTOR: 0.0}
    by_op = {}
    rd = wr = 0.0
    B = trace.buffers
    for o in trace.ops:
        n_sl = len(mapping.slices_of(o.layer))
        for w in o.work:
            pj = spec.work_energy(w) * (n_sl if w.split == "replicated" else 1)
            if w.per_instance and o.scope != "step":
                pj *= n_inst
            unit_pj[w.unit] += pj
            by_op[w.kind] = by_op.get(w.kind, 0.0) + pj
        if o.kind == "select":          # kept rows stay in place: nothing is read or written
            continue
        for bid in o.reads:
            b = B[bid]
            copies = 1 if (b.split == "units" or o.kind == "send") else len(mapping.slices_of(b.layer))
            rd += _moved(o, b, n_inst) * copies
        for bid in o.writes:
            b = B[bid]
            copies = len(mapping.slices_of(b.layer)) if b.split == "replicated" or (
                b.split == "reduce" and o.kind != "send") else 1
            wr += _moved(o, b, n_inst) * copies
    by_op.update(sram_read=rd * spec.sram_read_pj, sram_write=wr * spec.sram_write_pj,
                 noc=links.byte_hops * spec.byte_hop_pj)
    return Energy(mac_pj=unit_pj[MAC], vector_pj=unit_pj[VECTOR], sram_read_pj=by_op["sram_read"],
                  sram_write_pj=by_op["sram_write"], noc_pj=by_op["noc"], samples=trace.samples,
                  sram_read_bytes=rd, sram_write_bytes=wr, by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])))
