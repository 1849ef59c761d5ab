"""Loading an hwconfig: the YAML file, ``--set`` overrides, the shipped presets, the validated result.

Why a module of its own: everything here touches the outside world -- paths,
files, the command line -- and turns each way it can go wrong into one
:class:`~chipsim.errors.ConfigError` line, while the schema it validates
against (:mod:`chipsim.config.hwconfig`) stays pure data. The YAML itself is
parsed by :mod:`chipsim.safe_yaml` (which refuses duplicate keys and alias
bombs), through :func:`chipsim.schema.read_yaml_file`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass

from ..errors import ConfigError
from ..modelspec import ModelSpec, load_model
from ..safe_yaml import YamlSyntaxError, clip, parse
from ..schema import Where, build, field_names, read_yaml_file, to_plain
from .hwconfig import HwConfig, check_model, resolve_statistics
from .ignored import notes as ignored_notes
from .ignored import retire

# this file is chipsim/config/files.py: three dirnames up is the checkout, beside the package
PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "hwconfigs")
MODEL_DIR = os.path.join(os.path.dirname(PRESET_DIR), "models")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated hwconfig plus the model it names, and where both came from."""
    path: str
    hw: HwConfig
    model: ModelSpec
    overrides: tuple = ()
    notes: tuple = ()        # one line per key set but ignored, or retired (chipsim.config.ignored); not printed here

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    def to_dict(self) -> dict:
        return {"config_file": self.path, "overrides": list(self.overrides), **to_plain(self.hw),
                "model_spec": to_plain(self.model)}


def presets() -> list[str]:
    """The shipped chip presets (``hwconfigs/*.yaml`` beside the package), as paths relative to the cwd if shorter."""
    if not os.path.isdir(PRESET_DIR):
        return []
    out = []
    for name in sorted(os.listdir(PRESET_DIR)):
        if name.endswith(".yaml"):
            full = os.path.join(PRESET_DIR, name)
            rel = os.path.relpath(full)
            out.append(rel if len(rel) < len(full) else full)
    return out


def read_yaml(path: str) -> dict:
    """Read an hwconfig's YAML mapping; every failure is one ConfigError line."""
    if not os.path.exists(path):
        shipped = presets()
        hint = f"; presets: {', '.join(shipped)}" if shipped else ""
        raise ConfigError(f"{path}: file not found{hint}")
    data = read_yaml_file(path)
    if data is None:
        raise ConfigError(f"{path}: file is empty; expected a mapping with keys {', '.join(field_names(HwConfig))}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_override(data: dict, assignment: str, schema=HwConfig) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML.

    The key path is checked against the schema here (with a did-you-mean) so a
    typo in ``--set`` is reported as such, not as a confusing downstream error.
    """
    where = f"--set {clip(assignment, 80)}"
    if "=" not in assignment:
        raise ConfigError(f"{where}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{where}: expected key.path=value (the key path is empty)")
    try:
        value = parse(raw, where) if raw.strip() else None
    except YamlSyntaxError:
        value = raw          # not YAML: the schema reports it as a string of the wrong type
    parts = key.split(".")
    node, cls = data, schema
    for i, part in enumerate(parts):
        names = field_names(cls) if cls is not None and dataclasses.is_dataclass(cls) else None
        if names is None and part.lstrip("-").isdigit():
            part = int(part)  # keys of integer-keyed mappings, e.g. chip.core.macs_per_cycle.8
        if names is not None and part not in names:
            hint = difflib.get_close_matches(str(part)[:200], names, n=1)
            dym = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigError(f"{where}: {clip('.'.join(map(str, parts[:i + 1])))}: unknown key; {dym}"
                              f"allowed here: {', '.join(names)}")
        sub = None
        is_path = False
        if names is not None:
            tp = typing.get_type_hints(cls)[part]
            sub = tp if dataclasses.is_dataclass(tp) else None
            is_path = bool(next(f for f in dataclasses.fields(cls) if f.name == part).metadata.get("path"))
        if i == len(parts) - 1:
            if is_path and isinstance(value, str):
                # a path typed on the command line means what the shell means: relative to the cwd
                value = os.path.abspath(os.path.expanduser(value))
            if sub is not None:
                # a whole section: its keys merge into the preset's, never a silent reset of the others
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: {clip(key)} is a section; give its keys as a mapping, e.g. "
                                      f"--set '{clip(key)}={{{field_names(sub)[0]}: ...}}', or set one key with "
                                      f"--set {clip(key)}.{field_names(sub)[0]}=...")
                if isinstance(node.get(part), dict):
                    value = _merged(node[part], value)
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        cls = sub


def _merged(base: dict, extra: dict) -> dict:
    """``extra``'s keys over ``base``'s, nested mappings merged key by key (the schema then checks them)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str, overrides=()) -> LoadedConfig:
    """Load, override and validate an hwconfig and the model file it names.

    The result's ``notes`` name the keys it sets that its options ignore, and retired keys it dropped
    (:mod:`chipsim.config.ignored`); the commands print them (``chipsim.api``), the experiments' points do not."""
    path = os.path.abspath(path)
    data = copy.deepcopy(read_yaml(path))
    for assignment in overrides:
        apply_override(data, assignment)
    where = Where(path + (f" (with --set {', '.join(clip(o, 80) for o in overrides)})" if overrides else ""),
                  base_dir=os.path.dirname(path))
    said = retire(data, path)
    hw = build(HwConfig, data, "", where)
    model = load_model(hw.workload.model, origin=f"{path}: workload.model")
    hw = resolve_statistics(hw, model)            # mapping.statistics: auto, now that the model is known
    check_model(hw, model, hw.workload.model)
    said += ignored_notes(data, hw, model, path, overrides)
    return LoadedConfig(path=path, hw=hw, model=model, overrides=tuple(overrides), notes=tuple(said))
