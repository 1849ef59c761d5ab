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
import math
import os
import typing
from typing import Iterable, Mapping, Union

from . import api_args as a
from .config import HwConfig, LoadedConfig, load_config
from .errors import ConfigError
from .modelspec import Block, ModelSpec
from .schema import reference

__all__ = ["validate", "config_reference", "run", "map", "compare", "sweep", "table", "reproduce", "explore"]

#: ``--set key=value`` strings, or a mapping ``{"training.epochs": 2, ...}`` of the same keys to values
Overrides = Union[Iterable[str], Mapping[str, object]]


def _yaml_value(value) -> str:
    """A Python value as the YAML text ``--set`` would take: ``2``, ``0.001``, ``.nan``, ``true``, ``[1, 2]``."""
    import json
    if isinstance(value, str):
        return value if _yaml_reads_as(value) else json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if value != value else (".inf" if value > 0 else "-.inf")
    return json.dumps(value, allow_nan=False) if not isinstance(value, float) else repr(value)


def _yaml_reads_as(text: str) -> bool:
    from .errors import ConfigError
    from .safe_yaml import parse
    try:
        return parse(text, "") == text
    except ConfigError:
        return False


def overrides_list(overrides: Overrides = (), rule: str | None = None, model: str | None = None) -> tuple:
    """Overrides as ``key=value`` strings: from strings or a mapping, plus the CLI's shorthands.

    ``rule="DF-R"`` is ``workload.rule=df-r`` (rules are lower case; the
    shorthand accepts any case); ``model="models/x.yaml"`` is ``workload.model=...``,
    a path relative to the working directory, as on the command line. A
    shorthand that contradicts an override of the same key is an error, not a
    silent winner. Mapping values may be numpy scalars or paths.
    """
    if overrides is None:
        overrides = ()
    if isinstance(overrides, (str, os.PathLike)):
        overrides = (os.fspath(overrides),)
    if isinstance(overrides, Mapping):
        out = []
        for k, v in overrides.items():
            if not isinstance(k, str):
                raise ConfigError(f"overrides: key {k!r} is not a key path like 'training.epochs'")
            out.append(f"{k}={_yaml_value(a.plain(v))}")
    else:
        try:
            items = list(overrides)
        except TypeError:
            raise ConfigError(f"overrides: expected 'key.path=value' strings or a mapping, got "
                              f"{type(overrides).__name__}") from None
        bad = [o for o in items if not isinstance(o, str)]
        if bad:
            raise ConfigError(f"overrides: {bad[0]!r} is not a 'key.path=value' string")
        out = list(items)
    given = {o.split("=", 1)[0].strip(): o.split("=", 1)[1].strip() for o in out if "=" in o}
    if rule is not None:
        rule = a.text(rule, "rule").strip().lower()
        if "workload.rule" in given and given["workload.rule"].strip("'\"").lower() != rule:
            raise ConfigError(f"rule={rule!r} contradicts the override workload.rule={given['workload.rule']}; "
                              "give the rule once")
        out.append(f"workload.rule={rule}")
    if model is not None:
        model = a.path(model, "model")
        if "workload.model" in given and os.path.abspath(os.path.expanduser(given["workload.model"].strip("'\""))) \
                != os.path.abspath(os.path.expanduser(model)):
            raise ConfigError(f"model={model!r} contradicts the override workload.model={given['workload.model']}; "
                              "give the model once")
        out.append(f"workload.model={model}")
    return tuple(out)


def validate(path: str | os.PathLike, overrides: Overrides = (), *, rule: str | None = None,
             model: str | None = None) -> LoadedConfig:
    """Load and validate an hwconfig file and the model file it names.

    ``overrides`` are ``key.path=value`` strings (the CLI's ``--set``, values
    parsed as YAML) or a mapping of key paths to values, applied before
    validation; ``rule`` and ``model`` are the CLI's ``--rule`` / ``--model``.
    Raises ``ConfigError`` with a one-line message naming the file (or
    ``--set``), the key path and what is allowed.
    """
    return _said(load_config(a.path(path, "path"), overrides_list(overrides, rule, model)))


def _said(cfg: LoadedConfig) -> LoadedConfig:
    """Print the config's notes (keys set but ignored by its options, retired keys) on stderr, one line each.

    Here, not in ``load_config``: a command prints them once for the config it was given, while the
    experiments' points, which load configs of their own, stay quiet."""
    import sys
    for line in cfg.notes:
        print(f"chipsim: {line}", file=sys.stderr)
    return cfg


def _load(config, overrides, rule, model):
    """A path (loaded with the overrides) or an already loaded config (then no overrides may be given)."""
    if isinstance(config, LoadedConfig):
        extra = overrides_list(overrides, rule, model)
        return _said(load_config(config.path, tuple(config.overrides) + extra)) if extra else config
    return _said(load_config(a.path(config, "config"), overrides_list(overrides, rule, model)))


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
    lines = ["# Configuration reference", "",
             "Generated by `chipsim validate --reference > docs/config.md`; a test keeps docs/config.md "
             "identical to that output.", "",
             "## Hardware config (`hwconfigs/*.yaml`)", "",
             "Keys marked (required) must be given; every other key has the default shown. "
             "Override any key on the command line with `--set key.path=value`.", "",
             "A key that the file or `--set` sets but that the chosen options ignore (`training.momentum` under "
             "Adam, `learning.reg_lambda` under FF, ...) is named in one `chipsim: note:` line on stderr with the "
             "reason; defaults are never named. The rules are the table in `chipsim/config/ignored.py`. "
             "`chip.noc.routing` is no longer a key (the NoC routes XY): files that carry it load with a note.",
             ""]
    lines += _md_table(reference(HwConfig), _required_sections(HwConfig))
    lines += ["", "## Model file (`models/*.yaml`, named by `workload.model`)", "",
              "Each conv or dense block is BN -> conv|dense -> ReLU -> optional max-pool; "
              "all conv blocks come before the dense blocks. A vit model is vit blocks only, each a "
              "pre-LN transformer encoder layer; the first also embeds `patch` x `patch` patches.", ""]
    lines += _md_table(model_rows)
    return "\n".join(lines) + "\n"


def run(config, overrides: Overrides = (), out_dir: str | None = None, progress: bool = True,
        resume: str | None = None, write: bool = True, *, rule: str | None = None, model: str | None = None):
    """Train on the modelled chip and cost it: see ``chipsim.runner.run``. Returns a ``RunResult``.

    ``chipsim.run("hwconfigs/44core_4bit.yaml", {"training.epochs": 1}, rule="bp")`` is
    ``chipsim run hwconfigs/44core_4bit.yaml --set training.epochs=1 --rule bp``.
    """
    from .runner import run as _run
    return _run(_load(config, overrides, rule, model), out_dir=a.path(out_dir, "out_dir", True),
                progress=a.flag(progress, "progress"), resume=a.path(resume, "resume", True),
                write=a.flag(write, "write"))


def map(config, overrides: Overrides = (), out_dir: str | None = None, write: bool = True,  # noqa: A001
        progress: bool = True, *, rule: str | None = None, model: str | None = None):
    """Map the model onto the chip and cost one step, no training: see ``chipsim.runner.map``."""
    from .runner import map as _map
    return _map(_load(config, overrides, rule, model), out_dir=a.path(out_dir, "out_dir", True),
                write=a.flag(write, "write"), progress=a.flag(progress, "progress"))


def compare(config, rules=("bp", "df-o", "df-r"), depths=(5, 8, 11, 15, 20, 25), overrides: Overrides = (),
            width: int = 32, out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
            own_model: bool = False, cluster=None, pools=(0, 1), *, model: str | None = None,
            device: str | None = "cpu"):
    """BP vs local rules over a depth family (or on the config's own model): memory, latency, NoC, energy.
    See ``chipsim.experiments.compare``. ``cluster``: a Dask scheduler address (``tcp://host:8786``),
    ``"local"`` or a ``distributed.Client`` to run the points on (default: a local process pool).
    ``device``: where the measured framework figure is taken (``cpu``, ``cuda``; None: not measured)."""
    from .experiments.compare import compare as _compare
    return _compare(_load(config, overrides, None, model), a.values(rules, "rules"), a.values(depths, "depths"),
                    width=a.integer(width, "width", False), out_dir=a.path(out_dir, "out_dir", True),
                    jobs=a.integer(jobs, "jobs"), progress=a.flag(progress, "progress"),
                    own_model=a.flag(own_model, "own_model"), cluster=_cluster(cluster),
                    pools=[] if isinstance(pools, tuple) and not pools else a.values(pools, "pools"),
                    device=None if device is None else a.plain(device))


def sweep(config, rules=("bp", "df-o"), noise=(), levels=(0, 1, 2, 3, 4, 5), bits=(), negatives=(), seeds=(0,),
          overrides: Overrides = (), out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
          gain_std: float = 0.0, cluster=None, *, model: str | None = None):
    """Accuracy vs noise level, bit width or number of negatives. See ``chipsim.experiments.sweep``.
    ``cluster``: as for :func:`compare`."""
    from .experiments.sweep import sweep as _sweep
    lists = {name: ([] if isinstance(v, tuple) and not v else a.values(v, name))
             for name, v in (("noise", noise), ("levels", levels), ("bits", bits), ("negatives", negatives))}
    return _sweep(_load(config, overrides, None, model), a.values(rules, "rules"), lists["noise"], lists["levels"],
                  lists["bits"], lists["negatives"], a.values(seeds, "seeds"), out_dir=a.path(out_dir, "out_dir", True),
                  jobs=a.integer(jobs, "jobs"), progress=a.flag(progress, "progress"),
                  gain_std=a.number(gain_std, "gain_std"), cluster=_cluster(cluster))


def table(config, rules=("bp", "df-o", "df-r"), seeds=(0, 1, 2), overrides: Overrides = (),
          out_dir: str | None = None, jobs: int | None = None, progress: bool = True, cluster=None, *,
          model: str | None = None):
    """Train each rule over the seeds on one model and chip: accuracy (mean ± sd) beside SRAM, latency and
    energy. See ``chipsim.experiments.table``. ``cluster``: as for :func:`compare`."""
    from .experiments.table import table as _table
    return _table(_load(config, overrides, None, model), a.values(rules, "rules"), a.values(seeds, "seeds"),
                  out_dir=a.path(out_dir, "out_dir", True), jobs=a.integer(jobs, "jobs"),
                  progress=a.flag(progress, "progress"), cluster=_cluster(cluster))


def reproduce(out_dir: str = "reports", quick: bool = False, jobs: int | None = None, progress: bool = True,
              cluster=None, ladder: bool = True, skip=(), ladder_epochs=None):
    """Regenerate every table and figure of the paper's evaluation. See ``chipsim.experiments.reproduce``.
    ``cluster``: as for :func:`compare`, opened once for every experiment. ``ladder=False`` or ``skip``
    (names among noise, bits, negatives, vit, explore) leave those parts out; the report says so."""
    from .experiments.reproduce import reproduce as _reproduce
    return _reproduce(out_dir=a.path(out_dir, "out_dir"), quick=a.flag(quick, "quick"), jobs=a.integer(jobs, "jobs"),
                      progress=a.flag(progress, "progress"), cluster=_cluster(cluster), ladder=a.flag(ladder, "ladder"),
                      skip=tuple(a.values(skip, "skip")) if skip else (),
                      ladder_epochs=None if ladder_epochs is None else tuple(
                          a.integer(e, "ladder_epochs") for e in a.values(ladder_epochs, "ladder_epochs")))


def _cluster(cluster):
    """``cluster``: None, ``"local"``, an address (str, or a numpy string) or a ``distributed.Client``."""
    cluster = a.plain(cluster)
    from .experiments.cluster import check_cluster
    check_cluster(cluster)
    return cluster


def explore(config, space, objectives=("accuracy", "train_energy", "peak_sram"), sampler: str = "nsga2",
            trials: int = 24, overrides: Overrides = (), out_dir: str | None = None, jobs: int | None = None,
            progress: bool = True, cluster=None, *, model: str | None = None, **options):
    """Search the keys of a space file for the Pareto front of ``objectives`` (Optuna; NSGA-II by default,
    with random search at the same budget as its baseline). See ``chipsim.experiments.explore``.

    ``chipsim.explore("hwconfigs/44core_4bit.yaml", "spaces/rules_bits.yaml", trials=16, train_limit=500,
    epochs=1)`` is ``chipsim explore hwconfigs/44core_4bit.yaml --space spaces/rules_bits.yaml --trials 16
    --train-limit 500 --epochs 1``. ``options``: ``search_seeds``, ``baseline``, ``population``,
    ``train_limit``, ``test_limit``, ``epochs``, ``seeds``, ``noise`` ("shot:3"), ``prune_margin``,
    ``reeval_seeds``, ``storage`` (an RDB URL), ``evaluate`` (a cheap stand-in for a trial, for tests).
    """
    from .experiments.explore import explore as _explore
    return _explore(_load(config, overrides, None, model), a.path(space, "space"),
                    objectives if isinstance(objectives, str) else a.values(objectives, "objectives"),
                    sampler, a.integer(trials, "trials", False), out_dir=a.path(out_dir, "out_dir", True),
                    jobs=a.integer(jobs, "jobs"), progress=a.flag(progress, "progress"), cluster=_cluster(cluster),
                    **options)
