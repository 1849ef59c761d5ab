"""benchmarks/samplers.py replays searches on the committed exhaustive grid through the driver's own ask and
tell: the grid must hold every setting of the space once, and a replayed study must behave as a search does
(distinct configurations, violations told as such), or the benchmark's figures say nothing about
``chipsim explore``."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import samplers  # noqa: E402

from chipsim.config import load_config  # noqa: E402
from chipsim.experiments.explore.space import load_space  # noqa: E402
from chipsim.experiments.explore.studies import trial_key  # noqa: E402


def _ctx(grid):
    g = grid["table"]
    config = str(REPO / "hwconfigs" / "44core_4bit.yaml")
    base = list(g["base_overrides"])
    space = str(REPO / "spaces" / Path(g["space"]["path"]).name)
    return {"space": load_space(space, config, tuple(base)), "scale": g["scale"],
            "cfg": load_config(config, tuple(base)), "base": base}


@pytest.mark.parametrize("name, size", [
    ("grid-rules_bits_dataflow", 5 * 3 * 2 * 3 * 3),          # rules x weight x activation x N x dataflow
    ("grid-rules_bits", 5 * 4 * 3 * 2),                        # rules x weight x activation x gradient bits
])
def test_a_grid_holds_every_setting_of_its_space_once(name, size):
    grid = samplers.load_grid(str(REPO / "benchmarks" / "data" / name))
    space = _ctx(grid)["space"]
    every = {json.dumps(dict(zip(space.keys, combo)), sort_keys=True)
             for combo in itertools.product(*(p.values() for p in space.params))}
    assert len(every) == size
    assert set(grid["rows"]) == every
    assert len(grid["table"]["rows"]) == len(every)


def test_a_replayed_study_finishes_its_trials_and_bp_settings_are_six_configurations():
    grid = samplers.load_grid(samplers.DEFAULT_GRID)
    ctx = _ctx(grid)
    objectives = grid["table"]["objectives"]
    for sampler in ("random", "nsga2"):
        results = samplers.replay(sampler, 0, 48, 12, ctx, grid["rows"], objectives)
        assert len(results) == 48
        assert {r["status"] for r in results} <= {"ok", "infeasible"}
    # identities as the driver makes them: the 54 BP settings are 6 configurations (BP reads neither N nor
    # its dataflow: 3 weight widths x 2 activation widths)
    bp = {trial_key(ctx, json.loads(k), ctx["scale"]) for k in grid["rows"] if '"workload.rule": "bp"' in k}
    assert len(bp) == 6
    ref = samplers.reference_point({"rows": list(grid["rows"].values()), "objectives": objectives})
    assert samplers.final_hypervolume(results, ref, objectives) > 0
