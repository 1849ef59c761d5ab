"""The Python API's arguments as Python users pass them: numpy scalars, ``pathlib.Path``, tuples, one value.

Why: ``chipsim.sweep(cfg, seeds=np.arange(3))`` or ``chipsim.run(Path(...), {"training.lr": np.float32(1e-3)})``
used to fail deep inside (a YAML dump of a numpy scalar, ``len()`` of an int). Each public function now
normalises its arguments here first: numpy scalars become the Python number they hold, a path-like becomes
its string, a single value where a list belongs becomes a one-element list; anything else is one
``ConfigError`` naming the argument and what it accepts. numpy is never imported (``import chipsim`` stays
light): a numpy scalar is recognised by its type's module and its ``item()``.
"""
from __future__ import annotations

import os
from typing import Mapping

from .errors import ConfigError


def _is_numpy(x) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "item")


def plain(x):
    """A numpy scalar (np.int64, np.float32, np.bool_, np.str_) as the Python value it holds; a 0-d array too;
    a path-like as its string; lists and tuples (and 1-d arrays) element by element; anything else as it is."""
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if _is_numpy(x):
        if getattr(x, "ndim", 0) == 0:
            return x.item()
        return [plain(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, Mapping):
        return {plain(k): plain(v) for k, v in x.items()}
    return x


def path(x, arg: str, allow_none: bool = False):
    """A file or directory argument: str or path-like (``pathlib.Path``); None only where allowed."""
    if x is None and allow_none:
        return None
    if isinstance(x, (str, os.PathLike)):
        p = os.fspath(x)
        if isinstance(p, bytes):
            raise ConfigError(f"{arg}: a bytes path; give it as str or pathlib.Path")
        if not p or "\x00" in p:
            raise ConfigError(f"{arg}: {p!r} is not a usable path")
        return p
    raise ConfigError(f"{arg}: expected a path (str or pathlib.Path), got {type(x).__name__}")


def values(x, arg: str) -> list:
    """A list argument (``rules``, ``seeds``, ``bits`` ...): a list, tuple, range, set-free iterable or 1-d
    array, or a single value (one item). Items come back as plain Python values."""
    x = plain(x)
    if x is None:
        raise ConfigError(f"{arg}: expected a value or a list of values, got None")
    if isinstance(x, (str, int, float, bool)):
        return [x]
    if isinstance(x, (set, frozenset, Mapping)):
        raise ConfigError(f"{arg}: expected a list or tuple (an ordered sequence), got {type(x).__name__}")
    try:
        return [plain(v) for v in x]
    except TypeError:
        raise ConfigError(f"{arg}: expected a value or a list of values, got {type(x).__name__}") from None


def integer(x, arg: str, allow_none: bool = True):
    """An integer argument (np.int64 included; not a bool, not a float)."""
    x = plain(x)
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, int):
        raise ConfigError(f"{arg} {x!r}: expected an integer, got {type(x).__name__}")
    return x


def number(x, arg: str) -> float:
    x = plain(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ConfigError(f"{arg} {x!r}: expected a number, got {type(x).__name__}")
    return x


def flag(x, arg: str) -> bool:
    x = plain(x)
    if not isinstance(x, bool):
        raise ConfigError(f"{arg} {x!r}: expected True or False, got {type(x).__name__}")
    return x


def text(x, arg: str, allow_none: bool = True):
    x = plain(x)
    if x is None and allow_none:
        return None
    if not isinstance(x, str):
        raise ConfigError(f"{arg} {x!r}: expected a string, got {type(x).__name__}")
    return x
