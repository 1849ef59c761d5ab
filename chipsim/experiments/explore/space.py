"""The search space of ``chipsim explore``: config keys with their choices or ranges, from a YAML file.

A space file maps config key paths (the keys ``--set`` takes) to a spec::

    workload.rule: {choices: [bp, ff, df-o, df-r]}
    precision.weight_bits: {choices: [2, 3, 4, 8]}
    chip.core.sram_kib: {low: 64, high: 1024, type: int, log: true}
    training.lr: {low: 0.0001, high: 0.01, type: float, log: true}

Why validate it all up front: a search runs for hours; a typo in a key or a value the config refuses must be
one line naming the file, the key and what is allowed, before the first trial -- not trial 37's crash.
A space that searches ``chip.mesh.rows`` or ``cols`` gets ``chip.cores`` set to their product.
Every choice and both ends of every range are loaded into the base config one at a time, so a value the
config would refuse is caught here. A *combination* of valid values that the chip cannot hold is not an
error: the search records it as a constraint violation (see ``objectives``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ...errors import ConfigError
from ...safe_yaml import clip, read_file

SPEC_KEYS = {"choices", "low", "high", "type", "log", "step"}
TYPES = ("int", "float")


@dataclass(frozen=True)
class Param:
    """One searched key: categorical (``choices``) or a numeric range (``low``..``high``, maybe log scale)."""
    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    type: str = "float"
    log: bool = False
    step: float | None = None

    def distribution(self):
        import optuna
        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log,
                                                      step=self.step)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.key} {self.type} in [{self.low}, {self.high}]{' (log)' if self.log else ''}"

    def values(self) -> list | None:
        """Every value of a finite space (choices, or an int range), else None."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None


@dataclass(frozen=True)
class Space:
    path: str
    params: tuple

    @property
    def keys(self) -> list:
        return [p.key for p in self.params]

    def distributions(self) -> dict:
        return {p.key: p.distribution() for p in self.params}

    def size(self) -> int | None:
        """Number of points if every parameter is finite, else None."""
        n = 1
        for p in self.params:
            v = p.values()
            if v is None:
                return None
            n *= len(v)
        return n

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.params)


def _number(value, path, key, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: {key}.{field}: {clip(repr(value), 40)} is not a finite number")
    return value


def _param(path: str, key, spec) -> Param:
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
        raise ConfigError(f"{path}: {clip(repr(key), 60)} is not a config key path; write keys like "
                          "precision.weight_bits (the keys --set takes)")
    if isinstance(spec, list):                      # shorthand: key: [a, b, c]
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: {key}: expected a list of choices or a mapping with choices, or low and "
                          f"high; got {clip(repr(spec), 60)}")
    unknown = sorted(set(map(str, spec)) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{path}: {key}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise ConfigError(f"{path}: {key}: choices cannot be combined with {', '.join(extra)}; give choices, "
                              "or low and high")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{path}: {key}.choices: give a non-empty list of values")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ConfigError(f"{path}: {key}.choices: {clip(repr(c), 40)} is not a plain value (number, "
                                  "string, true/false or null)")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{path}: {key}.choices: a value is given twice; give each once")
        return Param(key, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{path}: {key}: give choices: [...], or low and high (with type int or float)")
    low, high = _number(spec["low"], path, key, "low"), _number(spec["high"], path, key, "high")
    kind = spec.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in TYPES:
        raise ConfigError(f"{path}: {key}.type: {clip(repr(kind), 40)} is not allowed; allowed: {', '.join(TYPES)}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{path}: {key}: type int needs integer low and high")
    if low >= high:
        raise ConfigError(f"{path}: {key}: low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}: {key}.log: expected true or false")
    if log and low <= 0:
        raise ConfigError(f"{path}: {key}: log scale needs low > 0")
    step = spec.get("step")
    if step is not None:
        step = _number(step, path, key, "step")
        if step <= 0 or log:
            raise ConfigError(f"{path}: {key}.step: must be > 0 and cannot be combined with log: true")
    return Param(key, low=low, high=high, type=kind, log=log, step=step)


def load_space(path: str, config_path: str, base_overrides=()) -> Space:
    """Read and check a space file; every value is tried in the base config, one key at a time."""
    from ...config import load_config
    path = os.fspath(path)
    base_hw = load_config(config_path, tuple(base_overrides)).hw
    data = read_file(path, "space file")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a space file is a mapping of config keys to choices or ranges, e.g. "
                          "precision.weight_bits: {choices: [2, 4, 8]}")
    if set(data) == {"params"} and isinstance(data["params"], dict):
        data = data["params"]
    params = tuple(_param(path, k, v) for k, v in data.items())
    for p in params:
        probes = list(p.choices) if p.choices is not None else [p.low, p.high]
        for v in probes:
            if p.type == "int" and p.choices is None:
                v = int(v)
            try:
                load_config(config_path, tuple(base_overrides) + tuple(overrides({p.key: v}, base_hw)))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {p.key}: value {clip(repr(v), 40)} is refused by the config: "
                                  f"{exc}") from None
    return Space(path, params)


def overrides(params: dict, base_hw=None) -> list:
    """A trial's parameters as ``--set`` strings, in the space's order.

    ``chip.cores`` must equal rows x cols; a space that searches the mesh does not name it, so it is
    derived here from the trial's rows and cols (the base config's where the space leaves one fixed).
    """
    from ...api import _yaml_value
    out = [f"{k}={_yaml_value(v)}" for k, v in params.items()]
    mesh = {"chip.mesh.rows", "chip.mesh.cols"}
    if mesh & set(params) and "chip.cores" not in params and base_hw is not None:
        rows = params.get("chip.mesh.rows", base_hw.chip.mesh.rows)
        cols = params.get("chip.mesh.cols", base_hw.chip.mesh.cols)
        out.append(f"chip.cores={int(rows) * int(cols)}")
    return out
