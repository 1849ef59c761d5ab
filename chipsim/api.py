"""chipsim's public Python API: one function per ``chipsim <command>``.

The command line (``chipsim/cli.py``) is a thin layer over these functions:
it parses arguments, calls the function of the same name and prints the
result. Errors meant for the user are raised as ``chipsim.errors.ChipsimError``
subclasses with a complete one-line message.

Keep module-level imports light (no torch, numba or the engine here): this
module is imported by ``import chipsim`` and by every ``chipsim`` invocation,
including ``chipsim --help`` and ``chipsim validate``. Import heavy modules
inside the functions that need them.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from typing import Iterable

from .config import HwConfig, LoadedConfig, load_config
from .modelspec import Block, ModelSpec
from .schema import reference

__all__ = ["validate", "config_reference", "run", "map", "compare", "sweep", "reproduce"]


def validate(path: str | os.PathLike, overrides: Iterable[str] = ()) -> LoadedConfig:
    """Load and validate an hwconfig file and the model file it names.

    ``overrides`` are ``key.path=value`` strings (the CLI's ``--set``), applied
    before validation; values are parsed as YAML. Raises ``ConfigError`` with a
    one-line message naming the file (or ``--set``), the key path and what is
    allowed.
    """
    return load_config(os.fspath(path), tuple(overrides))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _required_sections(cls, prefix: str = "") -> set[str]:
    """Key paths of nested sections (dataclass fields) that have no default."""
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            full = f"{prefix}.{f.name}" if prefix else f.name
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.add(full)
            out |= _required_sections(tp, full)
    return out


def _md_table(rows, required=frozenset()) -> list[str]:
    lines = ["| Key | Type | Default | Unit / allowed | Description |",
             "|---|---|---|---|---|"]
    for key, tp, default, allowed, doc in rows:
        if key in required:
            default = "(required)"
        default = {"True": "true", "False": "false"}.get(default, default)
        cells = [f"`{key}`", tp, f"`{default}`" if default not in ("", "(required)") else default,
                 allowed, doc]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def config_reference() -> str:
    """The config reference as Markdown: every hwconfig key and every model-file key.

    Generated from the schema's field metadata (``chipsim.schema.reference``),
    so it always matches what ``validate`` enforces.
    """
    model_rows = [r for r in reference(ModelSpec)] + reference(Block, "blocks[]")
    lines = ["### Hardware config (`hwconfigs/*.yaml`)", "",
             "Keys marked (required) must be given; every other key has the default shown. "
             "Override any key on the command line with `--set key.path=value`.", ""]
    lines += _md_table(reference(HwConfig), _required_sections(HwConfig))
    lines += ["", "### Model file (`models/*.yaml`, named by `workload.model`)", "",
              "Each block is BN -> conv|dense -> ReLU -> optional max-pool; "
              "all conv blocks come before the dense blocks.", ""]
    lines += _md_table(model_rows)
    return "\n".join(lines) + "\n"


def run(config, overrides: Iterable[str] = (), out_dir: str | None = None, progress: bool = True,
        resume: str | None = None, write: bool = True):
    """Train on the modelled chip and cost it: see ``chipsim.runner.run``. Returns a ``RunResult``."""
    from .runner import run as _run
    return _run(config, tuple(overrides), out_dir=out_dir, progress=progress, resume=resume, write=write)


def map(config, overrides: Iterable[str] = (), out_dir: str | None = None, write: bool = True):  # noqa: A001
    """Map the model onto the chip and cost one step, no training: see ``chipsim.runner.map``."""
    from .runner import map as _map
    return _map(config, tuple(overrides), out_dir=out_dir, write=write)


def compare(config, rules=("bp", "df-o", "df-r"), depths=(5, 8, 11, 15, 20, 25), overrides: Iterable[str] = (),
            width: int = 32, out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
            own_model: bool = False, pools=(0, 1)):
    """BP vs local rules over a depth family (or on the config's own model): memory, latency, NoC, energy.
    See ``chipsim.experiments.compare``."""
    from .experiments.compare import compare as _compare
    return _compare(config, rules, depths, tuple(overrides), width=width, out_dir=out_dir, jobs=jobs,
                    progress=progress, own_model=own_model, pools=pools)


def sweep(config, rules=("bp", "df-o"), noise=(), levels=(0, 1, 2, 3, 4, 5), bits=(), negatives=(), seeds=(0,),
          overrides: Iterable[str] = (), out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
          gain_std: float = 0.0):
    """Accuracy vs noise level, bit width or number of negatives. See ``chipsim.experiments.sweep``."""
    from .experiments.sweep import sweep as _sweep
    return _sweep(config, rules, noise, levels, bits, negatives, seeds, tuple(overrides), out_dir=out_dir,
                  jobs=jobs, progress=progress, gain_std=gain_std)


def reproduce(out_dir: str = "reports", quick: bool = False, jobs: int | None = None, progress: bool = True):
    """Regenerate every table and figure of the paper's evaluation. See ``chipsim.experiments.reproduce``."""
    from .experiments.reproduce import reproduce as _reproduce
    return _reproduce(out_dir=out_dir, quick=quick, jobs=jobs, progress=progress)
