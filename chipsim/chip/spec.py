"""ChipSpec: the hwconfig's ``chip`` section as lookups the chip model needs.

Why a separate object: the mapping, NoC, timing and energy models all ask the
same questions (where is core k, which links does a packet from a to b cross,
how many MACs per cycle at b bits, how many pJ per MAC). Answering them in one
place keeps the conventions (row-major core ids, XY routing, next-wider bit
width) identical everywhere.

Conventions:
* core id = row * cols + col (row-major); coordinates are (row, col).
* XY routing: a packet first travels along its row (X = column index) to the
  destination column, then along that column (Y = row index).
* a directed link is the pair (from_core, to_core) of neighbouring cores.
* a bit width missing from a per-width table uses the next wider entry (a
  3-bit multiply runs on the 4-bit datapath); wider than every entry is an
  error, since no datapath could execute it.
* a core has two units: the MAC array (``macs_per_cycle``, ``energy_pj.mac``)
  and the vector unit (``vector_ops_per_cycle``, ``energy_pj.vector_op``);
  ``chipsim.trace.work.KINDS`` says which unit runs each kind of work, and the
  widest operand of a work item picks the table entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..errors import MappingError
from ..trace.work import MAC


@dataclass(frozen=True)
class ChipSpec:
    name: str
    rows: int
    cols: int
    clock_mhz: float
    sram_bytes: int
    macs_per_cycle: tuple          # sorted ((bits, MAC/cycle), ...)
    mac_pj: tuple                  # sorted ((bits, pJ), ...)
    vector_per_cycle: tuple        # sorted ((bits, op/cycle), ...)
    vector_pj: tuple               # sorted ((bits, pJ), ...)
    sram_read_pj: float            # per byte
    sram_write_pj: float           # per byte
    link_bytes_per_cycle: float
    hop_latency_cycles: float
    byte_hop_pj: float
    # static power and area (0: not modelled, the config gave no figure)
    core_leak_uw: float = 0.0             # logic leakage of one core
    sram_leak_uw_per_kib: float = 0.0     # leakage of one KiB of SRAM
    core_area_mm2: float = 0.0            # logic area of one core
    sram_area_mm2_per_kib: float = 0.0    # area of one KiB of SRAM
    leakage_given: bool = False
    area_given: bool = False
    power_gating: str = "none"            # "none": every core draws static power; "idle-cores": used cores only
    input_port: tuple = (0, 0)            # (row, col) of the router where the sensor's image enters
    # the off-chip tier (offchip_bytes 0: none)
    offchip_bytes: float = 0.0
    offchip_bytes_per_cycle: float = 0.0  # the interface's bandwidth at clock_mhz
    offchip_latency_cycles: float = 0.0
    offchip_pj_per_byte: float = 0.0

    @classmethod
    def from_hw(cls, hw) -> "ChipSpec":
        """Build from a ``HwConfig`` (or directly from its ``chip`` section)."""
        chip = getattr(hw, "chip", hw)
        core, noc = chip.core, chip.noc
        return cls(name=chip.name, rows=chip.mesh.rows, cols=chip.mesh.cols,
                   clock_mhz=float(chip.clock_mhz), sram_bytes=int(round(core.sram_kib * 1024)),
                   macs_per_cycle=tuple(sorted((int(k), float(v)) for k, v in core.macs_per_cycle.items())),
                   mac_pj=tuple(sorted((int(k), float(v)) for k, v in core.energy_pj.mac.items())),
                   vector_per_cycle=tuple(sorted((int(k), float(v)) for k, v in core.vector_ops_per_cycle.items())),
                   vector_pj=tuple(sorted((int(k), float(v)) for k, v in core.energy_pj.vector_op.items())),
                   sram_read_pj=float(core.energy_pj.sram_read_byte),
                   sram_write_pj=float(core.energy_pj.sram_write_byte),
                   link_bytes_per_cycle=float(noc.link_bytes_per_cycle),
                   hop_latency_cycles=float(noc.hop_latency_cycles),
                   byte_hop_pj=float(noc.energy_pj.byte_hop),
                   core_leak_uw=float(getattr(core, "leakage_uw", None) or 0.0),
                   sram_leak_uw_per_kib=float(getattr(core, "sram_leakage_uw_per_kib", None) or 0.0),
                   core_area_mm2=float(getattr(core, "area_mm2", None) or 0.0),
                   sram_area_mm2_per_kib=float(getattr(core, "sram_area_mm2_per_kib", None) or 0.0),
                   leakage_given=getattr(core, "leakage_uw", None) is not None,
                   area_given=getattr(core, "area_mm2", None) is not None,
                   power_gating=getattr(chip, "power_gating", "none"),
                   input_port=_input_port(getattr(noc, "input_port", (0, 0))),
                   **_offchip(getattr(chip, "offchip", None), float(chip.clock_mhz)))

    # ---------------------------------------------------------------- static power, area, off-chip
    @property
    def sram_kib(self) -> float:
        return self.sram_bytes / 1024.0

    @property
    def core_static_uw(self) -> float:
        """Static power of one powered core: its logic plus its SRAM (µW)."""
        return self.core_leak_uw + self.sram_leak_uw_per_kib * self.sram_kib

    def powered_cores(self, cores_used: int) -> int:
        """Cores that draw static power over a step: all of them, or only the used ones when idle cores
        are power-gated (``chip.power_gating: idle-cores``)."""
        return int(cores_used) if self.power_gating == "idle-cores" else self.n_cores

    @property
    def area_mm2(self) -> float:
        """Silicon area of the cores (logic + SRAM) of the whole mesh; 0 when the config gives no figures."""
        return self.n_cores * (self.core_area_mm2 + self.sram_area_mm2_per_kib * self.sram_kib)

    @property
    def has_offchip(self) -> bool:
        return self.offchip_bytes > 0

    def offchip_cycles(self, nbytes: float) -> float:
        """Cycles to move ``nbytes`` through the off-chip interface (bandwidth only, no latency)."""
        return nbytes / self.offchip_bytes_per_cycle if self.offchip_bytes_per_cycle else 0.0

    # ---------------------------------------------------------------- geometry
    @property
    def n_cores(self) -> int:
        return self.rows * self.cols

    def coord(self, core: int) -> tuple:
        return divmod(int(core), self.cols)

    def core_at(self, row: int, col: int) -> int:
        return row * self.cols + col

    def snake_order(self) -> list:
        """Cores in boustrophedon order: consecutive entries are always 1 hop apart."""
        out = []
        for r in range(self.rows):
            cols = range(self.cols) if r % 2 == 0 else range(self.cols - 1, -1, -1)
            out.extend(self.core_at(r, c) for c in cols)
        return out

    @property
    def input_core(self) -> int:
        """The core whose router the sensor's image enters by (``chip.noc.input_port``)."""
        return self.core_at(*self.input_port)

    def hops(self, a: int, b: int) -> int:
        (ra, ca), (rb, cb) = self.coord(a), self.coord(b)
        return abs(ra - rb) + abs(ca - cb)

    def route(self, a: int, b: int) -> tuple:
        """Directed links (from, to) an XY-routed packet from core a to core b crosses."""
        return _route(self.cols, int(a), int(b))

    # ---------------------------------------------------------------- per-width lookups
    def _lookup(self, table: tuple, bits: int, what: str) -> float:
        for b, v in table:
            if b >= bits:
                return v
        raise MappingError(f"chip {self.name}: no {what} entry for {bits}-bit operands "
                           f"(widest is {table[-1][0]} bits); add one to chip.core")

    def mpc(self, bits) -> float:
        """MACs per cycle for operands of widths ``bits`` (the widest operand decides)."""
        return self._lookup(self.macs_per_cycle, max(bits), "macs_per_cycle")

    def mac_energy(self, bits) -> float:
        """pJ per MAC for operands of widths ``bits`` (the widest operand decides)."""
        return self._lookup(self.mac_pj, max(bits), "energy_pj.mac")

    def rate(self, unit: str, bits) -> float:
        """Operations per cycle of ``unit`` ("mac" | "vector") on operands of widths ``bits``."""
        if unit == MAC:
            return self.mpc(bits)
        return self._lookup(self.vector_per_cycle, max(bits), "vector_ops_per_cycle")

    def op_energy(self, unit: str, bits) -> float:
        """pJ per operation of ``unit`` on operands of widths ``bits``."""
        if unit == MAC:
            return self.mac_energy(bits)
        return self._lookup(self.vector_pj, max(bits), "energy_pj.vector_op")

    def work_cycles(self, w) -> float:
        """Cycles of one ``chipsim.trace.work.Work`` item on one core (all of its count)."""
        return w.count / self.rate(w.unit, w.bits)

    def work_energy(self, w) -> float:
        """pJ of one ``chipsim.trace.work.Work`` item (all of its count, once)."""
        return w.count * self.op_energy(w.unit, w.bits)

    def cycles_to_us(self, cycles: float) -> float:
        return cycles / self.clock_mhz


def _offchip(off, clock_mhz: float) -> dict:
    """ChipSpec fields of a ``chip.offchip`` section (none: no tier). 1 GB/s = 1e9 B/s; a cycle is
    1 / (clock_mhz * 1e6) s, so B/cycle = GB/s * 1e3 / clock_mhz; ns -> cycles = ns * clock_mhz / 1e3."""
    if off is None or getattr(off, "capacity_mib", None) is None:
        return {}
    return {"offchip_bytes": float(off.capacity_mib) * 1024 * 1024,
            "offchip_bytes_per_cycle": float(off.bandwidth_gb_s) * 1e3 / clock_mhz,
            "offchip_latency_cycles": float(off.latency_ns) * clock_mhz / 1e3,
            "offchip_pj_per_byte": float(off.energy_pj_per_byte)}


@lru_cache(maxsize=1 << 16)
def _input_port(xy) -> tuple:
    """(row, col) of ``chip.noc.input_port``, which the config gives as [x, y] = [column, row]."""
    x, y = (int(v) for v in xy)
    return (y, x)


def _route(cols: int, a: int, b: int) -> tuple:
    ra, ca = divmod(a, cols)
    rb, cb = divmod(b, cols)
    links, cur = [], a
    step = 1 if cb > ca else -1
    for c in range(ca, cb, step):          # X first: along the row
        nxt = ra * cols + c + step
        links.append((cur, nxt))
        cur = nxt
    step = 1 if rb > ra else -1
    for r in range(ra, rb, step):          # then Y: along the column
        nxt = (r + step) * cols + cb
        links.append((cur, nxt))
        cur = nxt
    return tuple(links)
