"""The schedule as a Chrome trace-event file (issue 26): its structure is what ui.perfetto.dev and
chrome://tracing read, and it is the schedule gantt.png draws -- each core's busy time, each link's bytes."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from chipsim import perfetto
from chipsim.chip import simulate
from chipsim.config import load_config
from chipsim.runner import trace_one_step

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")


def _chip(*over):
    cfg = load_config(SMALL, ("training.batch_size=4",) + over)
    return simulate(trace_one_step(cfg), cfg.hw)


def check_structure(doc: dict) -> dict:
    """Validate a trace-event document; returns pid -> tid -> [X events]."""
    assert set(doc) >= {"traceEvents"} and isinstance(doc["traceEvents"], list)
    tracks = defaultdict(lambda: defaultdict(list))
    names = {}
    flows = defaultdict(list)
    for e in doc["traceEvents"]:
        assert isinstance(e.get("ph"), str) and isinstance(e.get("pid"), int) and isinstance(e.get("name"), str), e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index")
            assert isinstance(e["args"], dict)
            if e["name"] == "thread_name":
                names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "X":
            assert isinstance(e["tid"], int) and isinstance(e["ts"], float) and isinstance(e["dur"], float)
            assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["args"], dict)
            tracks[e["pid"]][e["tid"]].append(e)
        elif e["ph"] in ("s", "f"):
            assert isinstance(e["id"], int) and isinstance(e["ts"], float) and isinstance(e["tid"], int)
            flows[e["id"]].append(e)
        else:
            pytest.fail(f"unexpected phase {e['ph']}")
    for fid, pair in flows.items():                       # every arrow has one start and one finish, in order
        assert sorted(x["ph"] for x in pair) == ["f", "s"], fid
        s, f = sorted(pair, key=lambda x: x["ph"] != "s")
        assert s["ts"] <= f["ts"] and s["name"] == f["name"]
        for x in pair:                                    # each end lies inside a slice of its track
            assert any(sl["ts"] <= x["ts"] <= sl["ts"] + sl["dur"] for sl in tracks[x["pid"]][x["tid"]]), x
    for pid, by_tid in tracks.items():                    # every track is named, and its slices do not overlap
        for tid, evs in by_tid.items():
            assert (pid, tid) in names
            evs.sort(key=lambda x: x["ts"])
            for a, b in zip(evs, evs[1:]):
                assert a["ts"] + a["dur"] <= b["ts"] + 1e-6 * max(1.0, b["ts"]), (pid, tid, a, b)
    return {"tracks": tracks, "flows": flows, "names": names}


def test_trace_events_are_the_schedule_gantt_draws():
    chip = _chip()
    doc = json.loads(json.dumps(perfetto.events(chip, "t")))      # through JSON, as a viewer reads it
    got = check_structure(doc)
    cores = got["tracks"][perfetto.CORES_PID]
    # one track per core the mapping uses, and each core's summed slice time is its schedule busy time
    assert set(cores) == set(chip.busy())
    for core, busy in chip.busy().items():
        total_cycles = sum(e["args"]["cycles"] for e in cores[core])
        assert total_cycles == pytest.approx(busy, rel=1e-9), core
        assert sum(e["dur"] for e in cores[core]) == pytest.approx(chip.spec.cycles_to_us(busy), rel=1e-9)
    # ops carry MACs, bytes and pJ; summed over slices and instances the MACs are the trace's
    assert sum(e["args"]["macs"] for evs in cores.values() for e in evs) == pytest.approx(chip.trace.macs(), rel=1e-9)
    assert all(set(e["args"]) >= {"macs", "work_pj", "bytes_read", "bytes_written"} for evs in cores.values()
               for e in evs)
    # one track per NoC link that carried data, and each link's bytes are what the NoC model counted
    links = got["tracks"][perfetto.LINKS_PID]
    by_name = {got["names"][(perfetto.LINKS_PID, tid)]: sum(e["args"]["bytes"] for e in evs)
               for tid, evs in links.items()}
    expected = chip.link_bytes()
    assert set(by_name) == set(expected)
    for k, v in expected.items():
        assert by_name[k] == pytest.approx(v, rel=1e-9), k
    assert len(got["flows"]) > 0                           # transfers are arrows


def test_split_layers_reductions_are_on_the_links_too():
    chip = _chip("mapping.strategy=balanced")
    assert chip.tag_bytes().get("reduce", 0) > 0           # a split layer reduces its partials over the NoC
    got = check_structure(perfetto.events(chip))
    names = {got["names"][(perfetto.LINKS_PID, tid)]: sum(e["args"]["bytes"] for e in evs)
             for tid, evs in got["tracks"][perfetto.LINKS_PID].items()}
    assert names.keys() == chip.link_bytes().keys()
    assert sum(names.values()) == pytest.approx(sum(chip.link_bytes().values()), rel=1e-9)


def test_map_writes_the_perfetto_file_beside_gantt(tmp_path):
    from chipsim.runner import map as chip_map
    chip_map(SMALL, ("training.batch_size=4",), out_dir=str(tmp_path / "m"), progress=False)
    doc = json.loads((tmp_path / "m" / perfetto.NAME).read_text())
    check_structure(doc)
    assert doc["otherData"]["chip"] == "44core_4bit" and (tmp_path / "m" / "gantt.png").exists()
    assert perfetto.NAME in (tmp_path / "m" / "report.md").read_text()
