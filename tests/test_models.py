"""Every shipped model maps with every rule that applies to it (models/*.yaml x rules).

The models and presets are discovered, not listed, so a new preset is tested
the day it is added. For each model the test picks

* a dataset whose input it can run on (the first whose image shape its blocks
  accept: a 28x28 model gets mnist5k, a 32x32 one cifar10);
* the largest shipped chip (most SRAM in all), with a batch of 2, so even
  the deepest model maps in a second or two;
* every rule that applies: all of them, except DF-O / DF-R on a one-block
  model (they send block l's error to block l-1, so they need two blocks),
  and CwC on a model whose blocks do not split into class groups.

``chipsim map`` then executes one real training step of the engine and maps
its trace: the local rules with the label embedding, BP with its head.
"""
from pathlib import Path

import pytest

import chipsim
from chipsim.config import DATASET_NAMES, DATASET_SHAPES, RULES, load_config
from chipsim.errors import ConfigError
from chipsim.modelspec import block_shapes, load_model

REPO = Path(__file__).resolve().parents[1]
MODELS = sorted((REPO / "models").glob("*.yaml"))
PRESETS = sorted((REPO / "hwconfigs").glob("*.yaml"))


def _largest_preset() -> Path:
    def sram(p):
        chip = load_config(str(p)).hw.chip
        return chip.mesh.rows * chip.mesh.cols * chip.core.sram_kib
    return max(PRESETS, key=sram)


def dataset_for(model) -> str | None:
    for name in DATASET_NAMES:
        c, h, w, _ = DATASET_SHAPES[name]
        try:
            block_shapes(model, (c, h, w), with_label=True, source=model.name)
            return name
        except ConfigError:
            continue
    return None


def applies(model, rule: str) -> bool:
    """DF-O / DF-R need two blocks; CwC needs every block's outputs to split into the 10 classes' groups;
    a ViT runs BP and the greedy rules (CFF, FF, SymBa, DF), CFF runs only on a ViT."""
    if model.is_transformer:
        return rule in ("bp", "cff", "ff", "symba", "df")
    if rule == "cff":
        return False
    if rule == "cwc":
        return all(b.out_features % 10 == 0 for b in model.blocks)
    return not (rule in ("df-o", "df-r") and model.depth < 2)


CASES = [(m, r) for m in MODELS for r in RULES if applies(load_model(str(m)), r)]


def test_models_and_presets_are_found():
    assert len(MODELS) >= 3 and len(PRESETS) >= 4
    assert {m.stem for m in MODELS} >= {"cnn_small", "cnn10", "dense3"}


@pytest.mark.parametrize("model_file,rule", CASES, ids=[f"{m.stem}-{r}" for m, r in CASES])
def test_every_shipped_model_maps_with_every_rule_that_applies(model_file, rule):
    model = load_model(str(model_file))
    dataset = dataset_for(model)
    assert dataset is not None, f"{model_file.name} runs on no dataset's input shape"
    res = chipsim.map(str(_largest_preset()), {"workload.model": str(model_file), "workload.dataset": dataset,
                                               "training.batch_size": 2}, rule=rule, write=False, progress=False)
    chip = res.chip
    layers = {layer.index for layer in chip.mapping.layers}
    assert layers >= set(range(model.depth)), "a block got no core"
    if not model.is_transformer:       # (a ViT layer is two trace layers, its attention half under its own id)
        assert (rule == "bp") == (model.depth in layers)      # BP adds its classifier head as one more layer
    assert chip.mapping.cores_used <= chip.spec.n_cores
    assert chip.ledger.peak_bytes <= chip.ledger.capacity
    tr = chip.trace
    assert all(tr.macs(kind="fwd", layer=i) > 0 for i in range(model.depth))
    has_label = any(b.category == "label_embedding" for b in tr.buffers)
    assert has_label == (rule not in ("bp", "cwc", "cff")), "label rules carry their label encoding, others do not"
    assert tr.macs(kind="grad_w") > 0 and chip.latency_cycles > 0
