"""A bounded YAML loader: every config, model file and ``--set`` value is parsed here.

Why not plain ``yaml.safe_load``: it is safe against code, not against size or
ambiguity. It lets the last of two duplicate keys win silently, it expands a
few-KB "alias bomb" into billions of values (the first error message that
prints such a value never finishes), and it reads a file of any size. This
loader refuses all three with one line naming the source:

* a key given twice in one mapping (both lines are named; YAML merge keys
  ``<<`` may still be overridden, as the YAML spec intends);
* a document whose aliases expand to more than ``MAX_NODES`` values, or that
  refers to itself;
* a file larger than ``MAX_FILE_BYTES`` (configs and model files are a few KB)
  or nested deeper than Python can compose.

Keep it light: ``chipsim validate`` and ``--help`` import this module, so it
must not import numpy, torch or the engine.
"""
from __future__ import annotations

import os
import re

import yaml

from .errors import ConfigError

MAX_FILE_BYTES = 1 << 20          # 1 MiB: the largest shipped config or model file is about 3 KB
MAX_NODES = 100_000               # values after alias expansion (a 100-block model is about 2,000)
MAX_SHOWN = 60                    # characters of a user value quoted in an error message


def shorten(value, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long it was: a message stays one short line.

    ``repr`` of an alias-expanded structure can be astronomically long, so a
    container is summarised by its type and length before any repr is taken.
    """
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    return clip(repr(value), limit)


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all (as opposed to YAML that chipsim refuses)."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first_line: int, second_line: int):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _TooLarge(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and alias expansion beyond ``MAX_NODES``."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:          # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, first, line)
                seen[key] = line
        return super().construct_mapping(node, deep)


    def construct_yaml_int(self, node):
        # Python refuses to convert an integer of more than 4,300 digits (a ValueError deep in PyYAML), and
        # no config key means anything beyond 64 bits: refuse both here, naming the line
        line = node.start_mark.line + 1
        if len(node.value) > 40:
            raise _TooLarge(f"line {line}: the integer {clip(node.value, 20)} is too large")
        value = super().construct_yaml_int(node)
        if abs(value) >= 2 ** 63:
            raise _TooLarge(f"line {line}: the integer {clip(node.value, 20)} does not fit in 64 bits")
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
# YAML 1.1 (PyYAML) reads `1e-5` as a string because it has no dot; YAML 1.2 and every user read it as a
# number, and `--set training.lr=1e-5` must mean 0.00001
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                     re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                     list("-+0123456789"))


def _check_expanded_size(root) -> None:
    """Count the values a node graph expands to (aliases counted at every use), without expanding it.

    Memoised per node, so the cost is linear in the document, not in its
    expansion; iterative, so a deeply nested document cannot overflow the stack.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        nid = id(node)
        if children_done:
            on_path.discard(nid)
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            size[nid] = total
            if total > MAX_NODES:
                raise _TooLarge(f"its aliases expand to more than {MAX_NODES:,} values (an alias bomb?)")
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise _TooLarge("an alias refers to the value that contains it (a recursive document)")
        on_path.add(nid)
        stack.append((node, True))
        for k in _children(node):
            if id(k) not in size:
                if id(k) in on_path:
                    raise _TooLarge("an alias refers to the value that contains it (a recursive document)")
                stack.append((k, False))


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse(text: str, source: str):
    """Parse one YAML document from ``text``; every failure is one ConfigError line starting with ``source``."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        where = (f"lines {exc.first_line} and {exc.second_line}" if exc.first_line != exc.second_line
                 else f"both on line {exc.first_line}")
        raise ConfigError(f"{source}: key {shorten(exc.key)} is given twice ({where}); keep one") from None
    except _TooLarge as exc:
        raise ConfigError(f"{source}: refused: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: nested too deeply to be a chipsim config") from None
    except ValueError as exc:       # a scalar PyYAML cannot convert (e.g. a date out of range)
        raise ConfigError(f"{source}: refused: {clip(str(exc), 120)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlSyntaxError(f"{source}: YAML syntax error at {at}{clip(problem, 200)}") from None


def read_file(path: str, what: str = "file", who: str = ""):
    """Parse a YAML file; every I/O, size or syntax failure becomes one ConfigError line.

    ``what`` names the file in messages ("file", "model file"); ``who`` is a
    prefix saying which config key referred to it. Returns the parsed data
    (None for an empty file): the caller checks its shape.
    """
    prefix = f"{who}: " if who else ""
    if not os.path.exists(path):
        raise ConfigError(f"{prefix}{what} {path} not found" if who else f"{path}: {what} not found")
    if os.path.isdir(path):
        raise ConfigError(f"{prefix}{what} {path} is a directory, expected a YAML file" if who
                          else f"{path}: is a directory, expected a YAML file")
    from .safe_files import read_bytes
    # a regular file only (a FIFO would block, /dev/zero never end), within the cap; a symlink the user
    # named is followed to the regular file it names
    raw = read_bytes(path, what, MAX_FILE_BYTES, ConfigError, follow=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path)
