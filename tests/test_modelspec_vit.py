"""vit blocks in model files: the shipped models load, malformed ones fail with one line naming the key,
`chipsim run` refuses a vit model cleanly, and the standalone CFF trainer runs end to end."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chipsim.errors import ConfigError
from chipsim.modelspec import load_model

REPO = Path(__file__).resolve().parents[1]
VIT = "  - {type: vit, patch: 7, dim: 64, heads: 4}\n"


def test_shipped_models_load():
    vit = load_model(str(REPO / "models" / "vit_tiny.yaml"))
    assert vit.is_transformer and vit.depth == 4
    assert [b.dim for b in vit.blocks] == [64] * 4 and [b.heads for b in vit.blocks] == [4] * 4
    assert vit.blocks[0].patch == 7 and all(b.patch is None for b in vit.blocks[1:])
    mlp = load_model(str(REPO / "models" / "mlp800x4.yaml"))
    assert not mlp.is_transformer and [b.units for b in mlp.blocks] == [800] * 4
    assert all(b.type == "dense" for b in mlp.blocks)


@pytest.mark.parametrize("blocks,key,fragment", [
    ("  - {type: vit, patch: 7, heads: 4}\n", "blocks[0].dim", "needs `dim`"),
    ("  - {type: vit, patch: 7, dim: 64}\n", "blocks[0].heads", "needs `heads`"),
    ("  - {type: vit, patch: 7, dim: 64, heads: 5}\n", "blocks[0].heads", "do not divide dim 64"),
    ("  - {type: vit, dim: 64, heads: 4}\n", "blocks[0].patch", "needs `patch`"),
    (VIT + "  - {type: vit, patch: 7, dim: 64, heads: 4}\n", "blocks[1].patch", "only the first vit block"),
    (VIT + "  - {type: vit, dim: 32, heads: 4}\n", "blocks[1].dim", "one width"),
    (VIT + "  - {type: dense, units: 10}\n", "blocks[1].type", "do not mix"),
    ("  - {type: vit, patch: 7, dim: 64, heads: 4, units: 3}\n", "blocks[0].units", "takes `dim`"),
    ("  - {type: vit, patch: 7, dim: 64, heads: 4, pool: 2}\n", "blocks[0].pool", "no pool"),
    ("  - {type: vit, patch: 7, dim: 64, heads: 4, norm: none}\n", "blocks[0].norm", "LayerNorm"),
    ("  - {type: dense, units: 10, heads: 2}\n", "blocks[0].heads", "takes no `heads`"),
    ("  - {type: conv, channels: 8, patch: 2}\n", "blocks[0].patch", "takes no `patch`"),
])
def test_bad_vit_models_fail_with_one_line(tmp_path, blocks, key, fragment):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nblocks:\n" + blocks)
    with pytest.raises(ConfigError) as exc:
        load_model(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and key in msg and fragment in msg


def _cli(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_chipsim_run_refuses_vit_models_in_one_line():
    r = _cli("-m", "chipsim.cli", "map", "hwconfigs/44core_4bit.yaml", "--set", "workload.model=models/vit_tiny.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cff_standalone" in r.stderr


def test_standalone_cff_trainer_runs(tmp_path):
    out = tmp_path / "cff.json"
    r = _cli("-m", "chipsim.engine.cff_standalone", "hwconfigs/44core_4bit.yaml",
             "--set", "workload.model=models/vit_tiny.yaml", "--set", "training.epochs=1",
             "--set", "workload.train_limit=96", "--set", "workload.test_limit=50", "--head-epochs", "2",
             "--margin", "0.4", "0.3", "0.2", "0.1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["margins"] == [0.4, 0.3, 0.2, 0.1] and len(res["epochs"]) == 1 and len(res["head_curve"]) == 2
    assert all(v > 0 for v in res["epochs"][0]["loss"]) and 0.0 <= res["test_accuracy"] <= 1.0
    for args, fragment in ((("--margin", "0.1", "0.2"), "--margin"), ((), "no vit blocks")):
        model = () if fragment == "no vit blocks" else ("--set", "workload.model=models/vit_tiny.yaml")
        bad = _cli("-m", "chipsim.engine.cff_standalone", "hwconfigs/44core_4bit.yaml", *model, *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and fragment in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
