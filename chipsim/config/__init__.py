"""The hwconfig schema (chip + precision + workload + training) and its loader.

The key paths here (``chip.mesh.rows``, ``chip.core.sram_kib``,
``precision.weight_bits``, ``workload.rule`` ...) are chipsim's public schema:
users' YAML files and scripts write them, so extend but never rename.

The package is cut along what touches files:

* ``hwconfig``: the schema, as frozen dataclasses with their specs and
  cross-field validation, and ``check_model`` (a model against a config);
* ``chip_schema``: the chip's sections of that schema (``Chip``, ``Mesh``,
  ``Core``, ``Noc``, ``OffChip`` ...), re-exported by ``hwconfig``;
* ``files``: reading a YAML hwconfig, ``--set`` overrides, the shipped presets
  (``PRESET_DIR``, ``MODEL_DIR``) and ``load_config``.

Everything is re-exported here, so callers write ``from chipsim.config import ...`` as before.
"""
from __future__ import annotations

from .files import MODEL_DIR, PRESET_DIR, LoadedConfig, apply_override, load_config, presets, read_yaml
from .hwconfig import (
    ALLOWED_BITS,
    DATASET_NAMES,
    DATASET_SHAPES,
    RULES,
    Chip,
    Core,
    CoreEnergy,
    HwConfig,
    Learning,
    Mapping,
    Mesh,
    Noc,
    NocEnergy,
    Precision,
    Training,
    Workload,
    check_model,
)

__all__ = [
    "ALLOWED_BITS", "RULES", "DATASET_NAMES", "DATASET_SHAPES",
    "Mesh", "CoreEnergy", "Core", "NocEnergy", "Noc", "Chip", "Precision", "Workload", "Training", "Learning",
    "Mapping", "HwConfig", "check_model",
    "PRESET_DIR", "MODEL_DIR", "LoadedConfig", "presets", "read_yaml", "apply_override", "load_config",
]
