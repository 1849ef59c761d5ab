"""Static power and area, the off-chip memory tier, and mapping.strategy search, on hand-built traces.

Expected values are literals derived in the comments from the toy chip of ``test_chip.hwconfig`` (100 MHz,
4-bit MACs 4/cycle, 16-bit 1/cycle, 2 B/cycle links, 1 cycle per hop) and the traces' own numbers.
"""
from __future__ import annotations

import itertools
import math

import pytest

from chipsim.chip import simulate, simulate_on
from chipsim.chip.mapping import map_trace, place
from chipsim.chip.spec import ChipSpec
from chipsim.errors import MappingError
from chipsim.trace import TraceRecorder

from test_chip import dense3_trace, hwconfig

LEAK = ("chip.core.leakage_uw=10", "chip.core.sram_leakage_uw_per_kib=2")
AREA = ("chip.core.area_mm2=0.5", "chip.core.sram_area_mm2_per_kib=0.25")
OFFCHIP = ("chip.offchip.capacity_mib=1", "chip.offchip.bandwidth_gb_s=0.4", "chip.offchip.latency_ns=50",
           "chip.offchip.energy_pj_per_byte=10")


# ----------------------------------------------------------------------------- static power and area
def test_static_energy_is_power_times_latency_with_and_without_gating():
    # dense3 on the 2x2 toy: latency 59 cycles = 0.59 µs, 3 of 4 cores used, dynamic 472 pJ (test_chip)
    # one core leaks 10 µW (logic) + 2 µW/KiB x 1 KiB (SRAM) = 12 µW; µW x µs = pJ
    rep = simulate(dense3_trace(), hwconfig(sets=LEAK + AREA))
    e = rep.energy
    assert rep.latency_cycles == 59 and e.dynamic_pj == 472
    # no gating: all 4 cores: logic 4 x 10 x 0.59 = 23.6, SRAM 4 x 2 x 0.59 = 4.72, 28.32 in all
    assert e.powered_cores == 4
    assert (e.static_logic_pj, e.static_sram_pj) == (pytest.approx(23.6), pytest.approx(4.72))
    assert e.total_pj == pytest.approx(472 + 28.32)
    assert sum(e.by_op.values()) == pytest.approx(e.total_pj)            # by_op still adds up to the total
    assert e.per_sample()["static_pj"] == pytest.approx(28.32 / 2)
    # area: 4 cores x (0.5 mm² logic + 1 KiB x 0.25 mm²/KiB) = 3 mm²
    d = rep.to_dict()["chip"]
    assert d["area_mm2"] == pytest.approx(3.0) and d["static_power_uw"] == pytest.approx(48)
    # idle cores gated: the 3 used cores only: 3 x 12 x 0.59 = 21.24 pJ
    gated = simulate(dense3_trace(), hwconfig(sets=LEAK + ("chip.power_gating=idle-cores",))).energy
    assert gated.powered_cores == 3
    assert gated.static_pj == pytest.approx(21.24) and gated.dynamic_pj == 472
    # without figures nothing leaks and there is no area: the dynamic figures of today
    plain = simulate(dense3_trace(), hwconfig())
    assert plain.energy.static_pj == 0 and plain.energy.total_pj == 472
    assert plain.to_dict()["chip"]["area_mm2"] is None


def test_leakage_needs_both_figures():
    from chipsim.errors import ConfigError
    with pytest.raises(ConfigError, match="sram_leakage_uw_per_kib"):
        hwconfig(sets=("chip.core.leakage_uw=10",))
    with pytest.raises(ConfigError, match="bandwidth_gb_s"):
        hwconfig(sets=("chip.offchip.capacity_mib=1",))


# ----------------------------------------------------------------------------- off-chip tier
def optimizer_trace():
    """Layer 0 (4 units) keeps 200 B of optimizer state that only its update touches; layer 1 is small."""
    r = TraceRecorder(samples=2)
    r.layer(0, "d0", 4, "dense")
    r.layer(1, "d1", 2, "dense")
    w0 = r.buffer(0, "w0", "weights", 16, "persistent", "units")
    s0 = r.buffer(0, "s0", "optimizer_state", 200, "persistent", "units")
    x0 = r.buffer(0, "x0", "act_update", 8, "sample", "replicated")
    y0 = r.buffer(0, "y0", "act_update", 8, "sample", "units")
    w1 = r.buffer(1, "w1", "weights", 8, "persistent", "units")
    x1 = r.buffer(1, "x1", "act_update", 8, "sample", "replicated")
    r.op(0, "fwd", "fwd0", 64, (4, 4), reads=(x0, w0), writes=(y0,))                   # op 0
    r.send(0, 1, "send0", y0, x1, 8, "activation")                                     # op 1
    r.op(1, "fwd", "fwd1", 16, (4, 4), reads=(x1, w1))                                 # op 2
    r.op(0, "update", "update0", 16, (16, 16), "step", reads=(s0, w0), writes=(s0, w0))   # op 3
    return r.trace


def test_offchip_tier_holds_what_sram_cannot_and_costs_its_traffic():
    tr = optimizer_trace()
    # 64 B of SRAM: s0 alone needs 200 B / 64 -> 4+ slices of layer 0, plus layer 1: more than 4 cores
    with pytest.raises(MappingError) as exc:
        map_trace(tr, hwconfig(sram_kib=64 / 1024))
    advised = {k for _, o in exc.value.fixes for k in o}
    assert "chip.offchip.capacity_mib" in advised           # an off-chip tier is advised, and was checked
    rep = simulate(tr, hwconfig(sram_kib=64 / 1024, sets=OFFCHIP))
    assert rep.mapping.offchip == {(0, "optimizer_state")} and rep.mapping.counts == [1, 1]
    assert rep.ledger.offchip_bytes == 200 and rep.ledger.cores[0].at_peak["optimizer_state"] == 0
    # traffic: update0 reads s0 (200 B) and writes it (200 B), once per step: 400 B x 10 pJ/B = 4000 pJ
    e = rep.energy
    assert (e.offchip_read_bytes, e.offchip_write_bytes, e.offchip_pj) == (200, 200, 4000)
    assert e.by_op["offchip"] == 4000 and sum(e.by_op.values()) == pytest.approx(e.total_pj)
    # time: 0.4 GB/s at 100 MHz = 4 B/cycle, 50 ns = 5 cycles: update0 stalls 400 / 4 + 5 = 105 cycles
    # beyond its 16 cycles of work (16 MACs at 16 bits, 1/cycle). It is the step's last op (it waits for
    # both samples' fwd0, and nothing waits for it), so the step is exactly 105 cycles longer.
    assert rep.latency_cycles - rep.latency_without_offchip == pytest.approx(105)
    up = [i for i, o in enumerate(tr.ops) if o.name == "update0"][0]
    assert rep.schedule.end[up, 0] - rep.schedule.start[up, 0] == pytest.approx(16 + 105)
    od = rep.offchip_dict()
    assert od["traffic_bytes"] == 400 and od["energy_share"] == pytest.approx(4000 / e.total_pj)
    assert od["latency_share"] == pytest.approx(105 / rep.latency_cycles)
    # with the section but SRAM enough, nothing moves off-chip and every figure is the tierless chip's
    big = simulate(tr, hwconfig(sram_kib=1, sets=OFFCHIP))
    ref = simulate(tr, hwconfig(sram_kib=1))
    assert not big.mapping.offchip and big.offchip_dict() is None
    assert (big.latency_cycles, big.energy.total_pj) == (ref.latency_cycles, ref.energy.total_pj)
    # a tier too small to hold the 200 B is refused, with the capacity named
    with pytest.raises(MappingError, match="capacity_mib"):
        simulate(tr, hwconfig(sram_kib=64 / 1024, sets=OFFCHIP[1:] + ("chip.offchip.capacity_mib=0.0001",)))


def test_refusal_advice_each_checked_by_a_remap():
    # 32 B of SRAM: dense3 fits one sample per core at a time (a probe: 28 B suffice), not micro-batch 2
    # (both samples' activations at once: 40 B needed). Every piece of advice must re-map to a fit.
    tr = dense3_trace()
    with pytest.raises(MappingError) as exc:
        map_trace(tr, hwconfig(sram_kib=32 / 1024, micro_batch=2))
    fixes = exc.value.fixes
    advised = {k: v for _, o in fixes for k, v in o.items()}
    assert advised.get("mapping.micro_batch") == 1, str(exc.value)
    assert advised["chip.core.sram_kib"] * 1024 == 40      # on the 4 B grain (1/8 of 32 B): 36 B fail
    for text, o in fixes:
        assert text in str(exc.value)
        map_trace(tr, hwconfig(sram_kib=32 / 1024, micro_batch=2, sets=[f"{k}={v}" for k, v in o.items()]))
    with pytest.raises(MappingError):
        map_trace(tr, hwconfig(sram_kib=36 / 1024, micro_batch=2))


# ----------------------------------------------------------------------------- search
def _objective(kind, rep):
    lat, en = rep.latency_cycles, rep.energy.total_pj
    return {"latency": lat, "energy": en, "edp": lat * en}[kind]


def norm3_trace():
    """dense3 (``test_chip``) with a normalisation in every forward: each layer normalises the whole input it
    received (64 vector ops, replicated: every slice holds the input whole) into a copy every slice keeps
    (``z``, replicated, 8 B per sample), then does its units' weighted sums -- the shape of the engine's
    BN -> quantise -> conv block, small enough to enumerate every layout of."""
    from chipsim.trace.work import Work
    r = TraceRecorder(samples=2)
    for l, units in enumerate((4, 4, 2)):
        r.layer(l, f"d{l}", units, "dense")
    w = [r.buffer(l, f"w{l}", "weights", 16, "persistent", "units") for l in range(3)]
    x = [r.buffer(l, f"x{l}", "act_update", 16 if l == 0 else 8, "sample", "replicated") for l in range(3)]
    z = [r.buffer(l, f"z{l}", "act_update", 16, "sample", "replicated") for l in range(3)]
    y = [r.buffer(l, f"y{l}", "act_update", 8, "sample", "units") for l in range(3)]
    acc = r.buffer(1, "acc1", "gradients", 16, "step", "units")
    norm = (Work("bn_forward", "bn", 64, (32,), "replicated"),)
    r.op(0, "fwd", "fwd0", 64, (4, 4), reads=(x[0], w[0]), writes=(z[0], y[0]), work=norm)
    r.send(0, 1, "send0", y[0], x[1], 8, "activation")
    r.op(1, "fwd", "fwd1", 64, (4, 4), reads=(x[1], w[1]), writes=(z[1], y[1]), work=norm)
    r.send(1, 2, "send1", y[1], x[2], 8, "activation")
    r.op(1, "grad_w", "grad_w1", 32, (8, 4), reads=(y[1], z[1], acc), writes=(acc,))
    r.op(1, "update", "update1", 16, (16, 16), "step", reads=(acc,), writes=(w[1],))
    r.op(2, "fwd", "fwd2", 32, (4, 4), reads=(x[2], w[2]), writes=(z[2], y[2]), work=norm)
    return r.trace


def test_replicated_work_once_is_paid_once_and_multicast():
    # norm3 on [1, 2, 1] slices: layer 1's forward normalises 64 ops x 0.5 pJ = 32 pJ per slice doing it
    tr = norm3_trace()
    hw = hwconfig(rows=2, cols=3, sram_kib=1)
    spec = ChipSpec.from_hw(hw)
    every = simulate_on(tr, hw, place(tr.layers, [1, 2, 1], spec))
    once = simulate_on(tr, hw, place(tr.layers, [1, 2, 1], spec, shared_work="once"))
    assert every.mapping.once == frozenset() and once.mapping.once == {2}     # fwd1: the only split layer's op
    assert every.energy.by_op["bn_forward"] == 3 * 32 + 32                     # layer 1 on both slices
    assert once.energy.by_op["bn_forward"] == 3 * 32                           # once on each layer
    # the multicast: z1 (16 B over the step) from layer 1's first slice to its second, one hop (row walk:
    # cores 1 and 2): 16 byte-hops more than on every slice
    assert once.byte_hops - every.byte_hops == 16
    # and slice 1 no longer normalises: 64 ops / 8 per cycle = 8 cycles per step less on its core
    core = once.mapping.slices_of(1)[1].core
    assert every.busy()[core] - once.busy()[core] == pytest.approx(8)


def test_column_walk_lays_slices_down_the_columns():
    spec = ChipSpec.from_hw(hwconfig(rows=2, cols=3))
    m = place(dense3_trace().layers, [2, 2, 2], spec, placement="column-snake")
    # 2x3 mesh, cores 0 1 2 / 3 4 5: column 0 down (0, 3), column 1 up (4, 1), column 2 down (2, 5)
    assert [[s.core for s in m.slices_of(l)] for l in range(3)] == [[0, 3], [4, 1], [2, 5]]


# (objective, SRAM KiB, the dimension that decides the best layout). At 1 KiB nothing must split (fit is
# [1, 1, 1]); at 0.04 KiB (41 B) layer 1 must split in two, so the energy objective cannot escape a split
# layer's replicated normalisation by not splitting, and the search should do it once.
@pytest.mark.parametrize("kind, sram_kib, decisive", [("latency", 1, "placement"), ("edp", 1, "placement"),
                                                       ("energy", 1, None), ("energy", 0.04, "shared_work")])
def test_search_finds_the_best_layout_of_an_exhaustive_enumeration(kind, sram_kib, decisive):
    sets = LEAK + (f"mapping.objective={kind}",)
    hw = hwconfig(rows=2, cols=3, sram_kib=sram_kib, strategy="search", sets=sets)
    tr = norm3_trace()
    rep = simulate(tr, hw)
    s = rep.mapping.search
    lo, hi = s["fit_counts"], s["balanced_counts"]
    assert lo == ([1, 1, 1] if sram_kib == 1 else [1, 2, 1]) and sum(hi) == 6   # balanced: the 6 cores
    # the test's own enumeration: every layout between fit and balanced, each where the replicated work runs
    # (every slice, or once where a layer is split) and each walk, costed on its own mapping
    spec = ChipSpec.from_hw(hw)
    costs, tried = {}, 0
    for counts in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi))):
        for shared in (("every-slice", "once") if max(counts) > 1 else ("every-slice",)):
            for walk in ("row-snake", "column-snake"):
                tried += 1
                r = simulate_on(tr, hw, place(tr.layers, list(counts), spec, placement=walk, shared_work=shared))
                if not r.ledger.overflowing():
                    costs[counts, shared, walk] = _objective(kind, r)
    assert s["exhaustive"] and s["layouts"] == tried == s["space"]
    assert _objective(kind, rep) == pytest.approx(min(costs.values()))
    best = min(costs, key=costs.get)
    assert costs[tuple(s["counts"]), s["shared_work"], s["placement"]] == pytest.approx(costs[best])
    assert (rep.mapping.shared_work, rep.mapping.placement) == (s["shared_work"], s["placement"])
    assert rep.mapping.strategy == "search" and s["seconds"] >= 0
    # the new dimensions matter here: today's layouts alone (every slice, row walk) would miss the best
    today = min(v for (c, sh, w), v in costs.items() if sh == "every-slice" and w == "row-snake")
    if decisive == "placement":
        assert rep.mapping.placement == "column-snake" and costs[best] < today
    elif decisive == "shared_work":
        assert rep.mapping.shared_work == "once" and costs[best] < today
    else:
        assert costs[best] == today


def test_search_within_a_small_budget_is_no_worse_than_fit_or_balanced():
    tr = dense3_trace()
    out = {}
    for strategy in ("fit", "balanced", "search"):
        hw = hwconfig(rows=2, cols=4, sram_kib=1, strategy=strategy, sets=LEAK + ("mapping.search_layouts=5",))
        out[strategy] = simulate(tr, hw)
    s = out["search"].mapping.search
    assert s["layouts"] <= 5 and not s["exhaustive"] and s["stopped_by"] == "layouts"
    edp = {k: _objective("edp", r) for k, r in out.items()}
    assert edp["search"] <= min(edp["fit"], edp["balanced"])


def test_compare_costs_each_rule_at_its_searched_layout_and_says_so(tmp_path):
    from chipsim.experiments.compare import compare
    big = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "hwconfigs" / "176core_512k.yaml")
    t = compare(big, ("bp", "df-r"), (3,), overrides=("learning.negatives=1", "training.batch_size=4"), width=8,
                out_dir=str(tmp_path / "search"), jobs=1, progress=False)
    assert t["settings"]["mapping"] == "search, objective edp"
    assert "mapping search, objective edp" in (tmp_path / "search" / "compare.md").read_text()
    # asked for fit, it is fit
    f = compare(big, ("bp",), (3,), overrides=("learning.negatives=1", "training.batch_size=4",
                                               "mapping.strategy=fit"), width=8,
                out_dir=str(tmp_path / "fit"), jobs=1, progress=False)
    assert f["settings"]["mapping"] == "fit"


def test_compare_and_the_verdict_table_give_the_ratios_under_each_strategy(tmp_path):
    from chipsim.experiments.compare import compare
    from chipsim.experiments.reproduce import PLANS
    from chipsim.experiments.reproduce_report import _memory_section, scale_of
    big = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "hwconfigs" / "176core_512k.yaml")
    t = compare(big, ("bp", "df-r"), (3,), overrides=("learning.negatives=1", "training.batch_size=4"), width=8,
                out_dir=str(tmp_path / "c"), jobs=1, progress=False)
    rows = {r["rule"]: r for r in t["rows"]}
    for r in rows.values():
        st = r["strategies"]
        assert set(st) == {"fit", "balanced", "search"} and all(v["fits"] for v in st.values())
        # the table's own strategy (search) is the streaming figure itself
        assert st["search"]["latency_us"] == r["streaming"]["latency_us"]
        assert st["search"]["energy_per_sample_pj"] == r["streaming"]["energy_per_sample_pj"]
        assert st["search"]["layouts"] >= 1 and st["fit"]["cores_used"] <= st["balanced"]["cores_used"]
    sr = t["strategy_ratios"]
    for s in ("fit", "balanced", "search"):
        for metric in ("latency_us", "energy_per_sample_pj"):
            want = rows["df-r"]["strategies"][s][metric] / rows["bp"]["strategies"][s][metric]
            assert sr[f"{s}:{metric}:df-r"][3] == pytest.approx(want)
    cell = " / ".join(f"{sr[f'{s}:latency_us:df-r'][3]:.2f}" for s in ("fit", "balanced", "search"))
    assert f"| 3 | df-r | {cell} |" in (tmp_path / "c" / "compare.md").read_text()
    # the committed verdict table (reproduce's section 2) carries the same cells, and names its command
    plan = PLANS["quick"]
    res = {"compare": t, "compare_n1": t}
    text = "\n".join(_memory_section(res, plan, scale_of(plan)))
    assert "step latency (fit / balanced / search)" in text and "`chipsim reproduce`" in text
    assert f"| {cell} |" in text
