"""Energy of one step: MACs, SRAM accesses, NoC byte-hops.

Why counted from the trace's reads/writes: an op touches exactly the buffers it
names, so a rule that re-reads kept activations or streams feedback weights
pays for it without a per-rule term.

* MACs: ``macs * pJ(bits)`` (the widest operand picks the entry, next wider if
  the exact width is missing).
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


@dataclass
class Energy:
    mac_pj: float
    sram_read_pj: float
    sram_write_pj: float
    noc_pj: float
    samples: int
    sram_read_bytes: float
    sram_write_bytes: float

    @property
    def sram_pj(self) -> float:
        return self.sram_read_pj + self.sram_write_pj

    @property
    def total_pj(self) -> float:
        return self.mac_pj + self.sram_pj + self.noc_pj

    def per_sample(self) -> dict:
        s = max(self.samples, 1)
        return {"mac_pj": self.mac_pj / s, "sram_pj": self.sram_pj / s, "noc_pj": self.noc_pj / s,
                "total_pj": self.total_pj / s}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(sram_pj=self.sram_pj, total_pj=self.total_pj, per_sample=self.per_sample())
        return d


def _moved(op, buf, n_inst: int) -> float:
    if op.scope == "step" or buf.scope == "sample":
        return float(buf.nbytes)
    return float(buf.nbytes) * n_inst


def step_energy(trace, spec, mapping, links, n_inst: int) -> Energy:
    mac = 0.0
    rd = wr = 0.0
    B = trace.buffers
    for o in trace.ops:
        if o.kind == "select":          # kept rows stay in place: nothing is read or written
            continue
        if o.macs:
            mac += o.macs * spec.mac_energy(o.bits)
        for bid in o.reads:
            b = B[bid]
            copies = 1 if (b.split == "units" or o.kind == "send") else len(mapping.slices_of(b.layer))
            rd += _moved(o, b, n_inst) * copies
        for bid in o.writes:
            b = B[bid]
            copies = len(mapping.slices_of(b.layer)) if b.split == "replicated" or (
                b.split == "reduce" and o.kind != "send") else 1
            wr += _moved(o, b, n_inst) * copies
    return Energy(mac_pj=mac, sram_read_pj=rd * spec.sram_read_pj, sram_write_pj=wr * spec.sram_write_pj,
                  noc_pj=links.byte_hops * spec.byte_hop_pj, samples=trace.samples,
                  sram_read_bytes=rd, sram_write_bytes=wr)
