"""The chip sections of the hwconfig schema (mesh, cores, NoC, off-chip memory): their own module because
they describe the hardware alone, while ``hwconfig`` holds the run settings and the checks across both."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..schema import spec

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)


# ---------------------------------------------------------------- chip
@dataclass(frozen=True)
class Mesh:
    rows: int = spec(doc="rows of the core mesh", unit="cores", min=1, max=1024)
    cols: int = spec(doc="columns of the core mesh", unit="cores", min=1, max=1024)


@dataclass(frozen=True)
class CoreEnergy:
    mac: Dict[int, float] = spec(doc="energy of one multiply-accumulate per operand bit width",
                                 unit="pJ", choices=ALLOWED_BITS, min=0, max=1e6)
    vector_op: Dict[int, float] = spec(doc="energy of one vector-unit operation (normalisation, activation "
                                       "functions, pooling, quantisation, losses, optimizer arithmetic, PRNG "
                                       "draws) per operand bit width", unit="pJ", choices=ALLOWED_BITS, min=0,
                                       max=1e6)
    sram_read_byte: float = spec(doc="energy to read one byte of core SRAM", unit="pJ", min=0, max=1e6)
    sram_write_byte: float = spec(doc="energy to write one byte of core SRAM", unit="pJ", min=0, max=1e6)


@dataclass(frozen=True)
class Core:
    sram_kib: float = spec(doc="SRAM per core", unit="KiB", min=0, min_exclusive=True, max=2 ** 30)
    macs_per_cycle: Dict[int, int] = spec(doc="MAC throughput per operand bit width",
                                          unit="MAC/cycle", choices=ALLOWED_BITS, min=0,
                                          min_exclusive=True, max=10 ** 9)
    vector_ops_per_cycle: Dict[int, int] = spec(doc="vector-unit throughput (elementwise operations per cycle) "
                                                "per operand bit width", unit="op/cycle", choices=ALLOWED_BITS,
                                                min=0, min_exclusive=True, max=10 ** 9)
    energy_pj: CoreEnergy = spec(doc="per-operation energy of a core")
    leakage_uw: Optional[float] = spec(None, doc="static (leakage) power of one core's logic -- MAC array, vector "
                                       "unit, control and router -- while powered; with sram_leakage_uw_per_kib it "
                                       "gives the static energy a step pays over its latency (chip.power_gating "
                                       "says which cores are powered); null = static power not modelled",
                                       unit="µW", min=0, max=1e9)
    sram_leakage_uw_per_kib: Optional[float] = spec(None, doc="static (leakage) power of one KiB of core SRAM "
                                                    "while powered; null = static power not modelled",
                                                    unit="µW/KiB", min=0, max=1e9)
    area_mm2: Optional[float] = spec(None, doc="silicon area of one core's logic (MAC array, vector unit, control, "
                                     "router), without its SRAM; null = no area figure", unit="mm²", min=0, max=1e6)
    sram_area_mm2_per_kib: Optional[float] = spec(None, doc="silicon area of one KiB of core SRAM (macro, "
                                                  "periphery included); null = no area figure", unit="mm²/KiB",
                                                  min=0, max=1e6)

    def _validate(self, key, where):
        path = (key + ".") if key else ""
        for a, b in (("leakage_uw", "sram_leakage_uw_per_kib"), ("area_mm2", "sram_area_mm2_per_kib")):
            if (getattr(self, a) is None) != (getattr(self, b) is None):
                given, missing = (a, b) if getattr(self, b) is None else (b, a)
                raise where.error(f"{path}{missing}", f"missing while {given} is given; give both (logic and "
                                  "SRAM) or neither")


@dataclass(frozen=True)
class NocEnergy:
    byte_hop: float = spec(doc="energy to move one byte across one link (router + wire)", unit="pJ", min=0,
                           max=1e6)


@dataclass(frozen=True)
class Noc:
    link_bytes_per_cycle: float = spec(doc="bandwidth of one mesh link", unit="B/cycle", min=0,
                                       min_exclusive=True, max=1e9)
    hop_latency_cycles: float = spec(doc="router + link latency per hop", unit="cycles", min=0, max=1e9)
    energy_pj: NocEnergy = spec(doc="per-byte energy of the network-on-chip")
    input_port: Tuple[int, ...] = spec((0, 0), doc="[x, y]: the mesh router (column x, row y) where the sensor's "
                                       "image enters the chip; every sample's image is a transfer from there to "
                                       "every slice of the first layer", unit="[column, row]")
    # chip.noc.routing was a key read nowhere (the NoC always routes XY): old files that carry it load with
    # a note (chipsim.config.ignored.RETIRED)


@dataclass(frozen=True)
class OffChip:
    capacity_mib: Optional[float] = spec(None, doc="capacity of the off-chip memory (e.g. an LPDDR device); null = "
                                         "the chip has no off-chip tier and a model whose categories SRAM cannot "
                                         "hold is refused", unit="MiB", min=0, min_exclusive=True, max=2 ** 30)
    bandwidth_gb_s: Optional[float] = spec(None, doc="bandwidth of the off-chip interface, shared by every core",
                                           unit="GB/s", min=0, min_exclusive=True, max=1e6)
    latency_ns: Optional[float] = spec(None, doc="latency of one off-chip access (an op's reads or writes of an "
                                       "off-chip buffer pay it once per op instance)", unit="ns", min=0, max=1e9)
    energy_pj_per_byte: Optional[float] = spec(None, doc="energy to move one byte between a core and the off-chip "
                                               "memory (interface, PHY and device), read or write", unit="pJ/B",
                                               min=0, max=1e6)

    @property
    def present(self) -> bool:
        return self.capacity_mib is not None

    def _validate(self, key, where):
        path = (key + ".") if key else ""
        given = {f: getattr(self, f) is not None for f in ("capacity_mib", "bandwidth_gb_s", "latency_ns",
                                                           "energy_pj_per_byte")}
        if any(given.values()) and not all(given.values()):
            missing = [f for f, g in given.items() if not g]
            raise where.error(f"{path}{missing[0]}", "missing; an off-chip tier needs capacity_mib, bandwidth_gb_s, "
                              "latency_ns and energy_pj_per_byte (or none of them: no off-chip tier)")


@dataclass(frozen=True)
class Chip:
    name: str = spec(doc="the chip's name in messages, the start line and summary.json (chip.name); run "
                     "directories are named after the config file, not this")
    mesh: Mesh = spec(doc="2-D mesh of cores (XY routing)")
    clock_mhz: float = spec(doc="core and NoC clock", unit="MHz", min=0, min_exclusive=True, max=1e6)
    core: Core = spec(doc="one core (all cores are identical)")
    noc: Noc = spec(doc="the mesh network-on-chip")
    cores: Optional[int] = spec(None, doc="number of cores; if given must equal rows x cols", unit="cores", min=1)
    power_gating: str = spec("none", doc="which cores draw static power over a step: none = every core of the "
                             "mesh (no power gating), idle-cores = only the cores the mapping uses (unused cores "
                             "are gated off)", choices=("none", "idle-cores"))
    offchip: OffChip = spec(OffChip, doc="an off-chip memory tier: when SRAM cannot hold a category (optimizer "
                            "state, master weights, kept activations ...) the mapper may place it there, and the "
                            "step's reads and writes of it cost off-chip traffic, energy and time")

    def _validate(self, key, where):
        n = self.mesh.rows * self.mesh.cols
        port = self.noc.input_port
        if len(port) != 2 or not (0 <= port[0] < self.mesh.cols and 0 <= port[1] < self.mesh.rows):
            raise where.error(f"{key}.noc.input_port", f"{list(port)} is not a router of the "
                              f"{self.mesh.rows} x {self.mesh.cols} mesh; give [x, y] with x (column) in "
                              f"0..{self.mesh.cols - 1} and y (row) in 0..{self.mesh.rows - 1}")
        if self.cores is not None and self.cores != n:
            raise where.error(f"{key}.cores", f"{self.cores} cores but mesh is {self.mesh.rows} x "
                              f"{self.mesh.cols} = {n}; make them agree")
