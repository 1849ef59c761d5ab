"""Keys of experiment points: a point's key names everything that determines its result.

Why: ``points.jsonl`` lets a rerun skip the points already done. When the key
was only ``rule-seed-level``, a rerun into the same ``--out`` with another
config (say another ``workload.train_limit``) reused the old numbers under the
new settings. Now the key ends in a hash of the point's fully resolved config
-- every hwconfig key after defaults and overrides, and the model's content
(its blocks, not its file name) -- plus the point's own parameters (noise
level, depth ...). Any change recomputes the point; the same settings reuse it.

Left out of the hash, because they do not change a result: absolute paths
(``workload.model`` -- its content is in -- and ``workload.data_root``), and
how many threads a worker uses.
"""
from __future__ import annotations

import hashlib
import json

from ..schema import to_plain

HASH_CHARS = 12


def resolved(cfg, model=None) -> dict:
    """The settings that determine a result: the resolved hwconfig without paths, and the model's content."""
    hw = to_plain(cfg.hw)
    hw["workload"] = {k: v for k, v in hw["workload"].items() if k not in ("model", "data_root")}
    return {"hw": hw, "model": to_plain(model if model is not None else cfg.model)}


def digest(doc) -> str:
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def point_key(label: str, cfg, model=None, **params) -> str:
    """``label-<hash>``: ``label`` for people (``bp-s0-clean``), the hash for correctness."""
    return f"{label}-{digest({'config': resolved(cfg, model), 'point': params})}"
