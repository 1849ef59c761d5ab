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
import math
import os
import typing
from typing import Any

from .errors import ConfigError
from .safe_yaml import clip, read_file, shorten

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
    if isinstance(value, float) and not math.isfinite(value) and tp in (int, float):
        # one check for every number of every config: NaN trains to chance, inf divides to 0 or nan
        raise where.error(key, f"{value} is not allowed; every number in a config must be finite")
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
            bad = next((c for c in value if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029"), None)
            if bad is not None:
                # a name with a newline would write its own headings into report.md, a path one would not be
                # the file the user sees
                raise where.error(key, f"{shorten(value)} holds the control character {bad!r}; names and paths "
                                       "must be one line of printable text")
            return value
    else:  # pragma: no cover - schema programming error
        raise TypeError(f"unsupported schema type {tp}")
    raise where.error(key, f"expected {_type_name(tp)}, got {shorten(value)} ({type(value).__name__})")


def _num(v) -> str:
    """A bound as people write it: 1000000, not 1000000.0."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _check_meta(value, meta, key: str, where: Where):
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        names = [str(c) for c in choices]
        text = str(value)[:200]
        hint = ([n for n in names if n.lower() == text.lower()]
                or difflib.get_close_matches(text.lower(), [n.lower() for n in names], n=1))
        dym = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise where.error(key, f"{shorten(value)} is not allowed; allowed: {', '.join(names)}{dym}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
            op = ">" if meta.get("min_exclusive") else ">="
            raise where.error(key, f"{shorten(value)} is out of range; must be {op} {_num(lo)}")
        if hi is not None and value > hi:
            raise where.error(key, f"{shorten(value)} is out of range; must be <= {_num(hi)}")
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
            raise where.error(key, f"expected {_type_name(tp)}, got {shorten(value)}")
        out = {}
        for k, v in value.items():
            sub = f"{key}.{clip(str(k))}"
            kk = _convert_scalar(k, ktp, sub, where)
            _check_meta(kk, {"choices": meta.get("choices")}, sub, where)
            vv = _convert_scalar(v, vtp, sub, where)
            _check_meta(vv, {"min": meta.get("min"), "min_exclusive": meta.get("min_exclusive"),
                             "max": meta.get("max")}, sub, where)
            out[kk] = vv
        return out
    if origin is tuple:
        (etp, *_rest) = typing.get_args(tp)
        if meta.get("scalar_list") and not isinstance(value, (list, dict)):
            value = [value]
        if not isinstance(value, list):
            raise where.error(key, f"expected {_type_name(tp)}, got {shorten(value)}")
        return tuple(convert(etp, v, f"{key}[{i}]", where) for i, v in enumerate(value))
    value = _convert_scalar(value, tp, key, where)
    return _check_meta(value, meta, key, where)


def build(cls, data: Any, key: str, where: Where):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a did-you-mean."""
    if not isinstance(data, dict):
        raise where.error(key, f"expected a mapping with keys {', '.join(field_names(cls))}, got {shorten(data)}")
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    for k in data:
        if k not in names:
            hint = difflib.get_close_matches(str(k)[:200], names, n=1)
            dym = f"did you mean {hint[0]!r}? " if hint else ""
            full = f"{key}.{clip(str(k))}" if key else clip(str(k))
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
    """Parse a YAML file through the bounded loader (``chipsim.safe_yaml``); errors are one ConfigError line."""
    return read_file(path, what, who)


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
            allowed.append((">" if m.get("min_exclusive") else ">=") + f" {_num(m['min'])}")
        if m.get("max") is not None:
            allowed.append(f"<= {_num(m['max'])}")
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
