"""vit blocks in model files: the shipped models load, malformed ones fail with one line naming the key
(training a vit model through `chipsim run` is tests/test_vit_chip.py's)."""
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
