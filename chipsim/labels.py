"""What every experiment figure and table says it was made with: chip, model, N, batch, dataflow, mapping,
precision and scale.

Why one function: a ratio plot that does not name its chip, N or batch can be
read against the wrong table, and when each writer picks its own words one of
them forgets the dataflow. ``settings`` reads them from a loaded config,
``line`` puts them in words; sweep, compare, table and reproduce all call it.
"""
from __future__ import annotations

from .config import DATASET_SHAPES

FIELDS = ("chip", "model", "negatives", "batch", "dataflow", "mapping", "precision", "scale")


def precision_words(p) -> str:
    """``W4/A4/G8/U16`` of a precision section (an object or a dict)."""
    g = (lambda k: p[k]) if isinstance(p, dict) else (lambda k: getattr(p, k))
    return f"W{g('weight_bits')}/A{g('activation_bits')}/G{g('gradient_bits')}/U{g('update_bits')}"


def settings(cfg, model: str | None = None, scale: str = "", precision: str | None = None) -> dict:
    """The eight settings of a config, as words; ``model``/``precision`` override the config's where an
    experiment varies them (a depth family, a bit-width sweep)."""
    hw = cfg.hw
    n = hw.learning.negatives
    classes = DATASET_SHAPES[hw.workload.dataset][3]
    neg = f"{classes - 1 if n is None else n}" + (" (averaged)" if hw.learning.negative_reduce == "avg" else "")
    return {"chip": f"{hw.chip.name} ({hw.chip.mesh.rows}x{hw.chip.mesh.cols} cores)",
            "model": model or cfg.model.name, "negatives": neg, "batch": str(hw.training.batch_size),
            "dataflow": f"negatives {hw.mapping.negatives}, {hw.training.update} update",
            "mapping": f"{hw.mapping.strategy}" + (f", objective {hw.mapping.objective}"
                                                   if hw.mapping.strategy == "search" else "")
                       + f", micro-batch {hw.mapping.micro_batch}, statistics {hw.mapping.statistics}",
            "precision": precision or precision_words(hw.precision), "scale": scale}


def line(s: dict) -> str:
    """``chip X, model Y, N = 9, batch 16, dataflow ..., mapping ..., W4/A4/G8/U16; scale: ...``."""
    n = f"N = {s['negatives']} negatives" if str(s["negatives"])[:1].isdigit() else f"N = {s['negatives']}"
    text = (f"chip {s['chip']}, model {s['model']}, {n}, batch {s['batch']}, "
            f"dataflow {s['dataflow']}, mapping {s['mapping']}, {s['precision']}")
    return text + (f"; {s['scale']}" if s.get("scale") else "")


def title_lines(s: dict) -> str:
    """The same, split over two lines for a figure title."""
    return (f"chip {s['chip']}, model {s['model']}, N = {s['negatives']}, batch {s['batch']}, {s['precision']}\n"
            f"dataflow {s['dataflow']}, mapping {s['mapping']}" + (f"; {s['scale']}" if s.get("scale") else ""))
