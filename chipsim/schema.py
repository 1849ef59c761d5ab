"""Generic YAML -> frozen dataclass conversion with user-facing errors.

Why a hand-rolled converter: every config error must be ONE line naming the
file, the dotted key path and what is allowed (with a did-you-mean for typos).
Field metadata (``doc``, ``unit``, ``choices``, ``min``/``max``) drives both the
validation here and the config reference printed by ``chipsim validate
--reference``, so the documentation cannot drift from what is enforced.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any

from .errors import ConfigError

_MISSING = dataclasses.MISSING


def spec(default=_MISSING, *, doc: str, unit: str | None = None, choices=None,
         min: float | None = None, max: float | None = None, min_exclusive: bool = False,
         path: bool = False, scalar_list: bool = False):
    """A dataclass field with the metadata the converter validates and documents.

    ``scalar_list``: a list field that also takes one value, meaning a one-element list."""
    meta = dict(doc=doc, unit=unit, choices=tuple(choices) if choices else None,
                min=min, max=max, min_exclusive=min_exclusive, path=path, scalar_list=scalar_list)
    if isinstance(default, (dict, list)):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Where:
    """Names the source of a value for error messages: a file, or a --set override."""

    def __init__(self, source: str, base_dir: str | None = None):
        self.source = source
        self.base_dir = base_dir

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} -> {_type_name(v)}"
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def _convert_scalar(value, tp, key: str, where: Where):
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema programming error
        raise TypeError(f"unsupported schema type {tp}")
    raise where.error(key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _check_meta(value, meta, key: str, where: Where):
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        dym = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise where.error(key, f"{value!r} is not allowed; allowed: {', '.join(map(str, choices))}{dym}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
            op = ">" if meta.get("min_exclusive") else ">="
            raise where.error(key, f"{value!r} is out of range; must be {op} {lo}")
        if hi is not None and value > hi:
            raise where.error(key, f"{value!r} is out of range; must be <= {hi}")
    if meta.get("path") and isinstance(value, str):
        value = os.path.expanduser(value)
        if where.base_dir and not os.path.isabs(value):
            value = os.path.normpath(os.path.join(where.base_dir, value))
    return value


def convert(tp, value, key: str, where: Where, meta: dict | None = None):
    """Convert a YAML value to schema type ``tp`` or raise a one-line ConfigError."""
    meta = meta or {}
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert(args[0], value, key, where, meta)
    if value is None:
        raise where.error(key, f"expected {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, where)
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise where.error(key, f"expected {_type_name(tp)}, got {value!r}")
        out = {}
        for k, v in value.items():
            kk = _convert_scalar(k, ktp, f"{key}.{k}", where)
            _check_meta(kk, {"choices": meta.get("choices")}, f"{key}.{k}", where)
            vv = _convert_scalar(v, vtp, f"{key}.{k}", where)
            _check_meta(vv, {"min": meta.get("min"), "min_exclusive": meta.get("min_exclusive")},
                        f"{key}.{k}", where)
            out[kk] = vv
        return out
    if origin is tuple:
        (etp, *_rest) = typing.get_args(tp)
        if meta.get("scalar_list") and not isinstance(value, (list, dict)):
            value = [value]
        if not isinstance(value, list):
            raise where.error(key, f"expected {_type_name(tp)}, got {value!r}")
        return tuple(convert(etp, v, f"{key}[{i}]", where) for i, v in enumerate(value))
    value = _convert_scalar(value, tp, key, where)
    return _check_meta(value, meta, key, where)


def build(cls, data: Any, key: str, where: Where):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a did-you-mean."""
    if not isinstance(data, dict):
        raise where.error(key, f"expected a mapping with keys {', '.join(field_names(cls))}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    for k in data:
        if k not in names:
            hint = difflib.get_close_matches(str(k), names, n=1)
            dym = f"did you mean {hint[0]!r}? " if hint else ""
            full = f"{key}.{k}" if key else str(k)
            raise where.error(full, f"unknown key; {dym}allowed here: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{key}.{f.name}" if key else f.name
        if f.name in data:
            kwargs[f.name] = convert(hints[f.name], data[f.name], full, where, dict(f.metadata))
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise where.error(full, f"missing required key; expected {_type_name(hints[f.name])} "
                                    f"({f.metadata.get('doc', '')})")
    obj = cls(**kwargs)
    check = getattr(obj, "_validate", None)
    if check is not None:
        check(key, where)
    return obj


def read_yaml_file(path: str, what: str = "file", who: str = ""):
    """Parse a YAML file; every I/O or syntax failure becomes one ConfigError line.

    ``what`` names the file in messages ("file", "model file"); ``who`` is a
    prefix saying which config key referred to it. Returns the parsed data
    (possibly None for an empty file): the caller checks its shape.
    """
    import yaml
    prefix = f"{who}: " if who else ""
    if not os.path.exists(path):
        raise ConfigError(f"{prefix}{what} {path} not found" if who else f"{path}: {what} not found")
    if os.path.isdir(path):
        raise ConfigError(f"{prefix}{what} {path} is a directory, expected a YAML file" if who
                          else f"{path}: is a directory, expected a YAML file")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error at {at}{problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def reference(cls, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """Rows (key, type, default, unit/allowed, doc) describing every key of ``cls``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((full, "mapping", "", "", f.metadata.get("doc", "")))
            rows.extend(reference(tp, full))
            continue
        if isinstance(f.default, tuple):
            default = "[" + ", ".join(map(str, f.default)) + "]"   # as YAML writes a list
        elif f.default is not _MISSING:
            default = "null" if f.default is None else str(f.default)
        elif f.default_factory is not _MISSING:
            default = str(f.default_factory())
        else:
            default = "(required)"
        allowed = []
        m = f.metadata
        if m.get("unit"):
            allowed.append(m["unit"])
        if m.get("choices"):
            allowed.append(" | ".join(map(str, m["choices"])))
        if m.get("min") is not None:
            allowed.append((">" if m.get("min_exclusive") else ">=") + f" {m['min']}")
        if m.get("max") is not None:
            allowed.append(f"<= {m['max']}")
        kind = _type_name(tp) + (" (or one value)" if m.get("scalar_list") else "")
        rows.append((full, kind, default, "; ".join(allowed), m.get("doc", "")))
    return rows


def to_plain(obj):
    """A dataclass tree as plain dicts/lists (for JSON reports and `validate` output)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
