"""Accuracy on a validation split of mnist5k's training images: how chipsim's defaults are chosen.

The 4,000 training images are split 3,400 / 600 (class-stratified, fixed seed); a config trains on
the 3,400 and is scored on the 600. The test set never chooses anything.

Run: ``python benchmarks/validation.py HWCONFIG [--set k=v ...] [--seeds 0,1]`` -- prints one line per
seed with the final validation accuracy (and the one-pass head's, when the rule trains one).

``python benchmarks/validation.py HWCONFIG --table [--seeds 0,1] [--jobs 2] [--rules df-o,df-r,bp]``
trains every row of :data:`TABLE` under DF-O and DF-R (or ``--rules``) and each seed, one BLAS thread
per job (so the 32-bit rows do not depend on ``--jobs``), and prints the Markdown table that
docs/defaults.md quotes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from chipsim.config import load_config  # noqa: E402
from chipsim.errors import ChipsimError  # noqa: E402
from chipsim.data import Dataset, _stratified_pick, load_dataset  # noqa: E402
from chipsim.engine.training.trainer import Trainer  # noqa: E402

VALIDATION = 600
SPLIT_SEED = 12345
FLOAT32 = tuple(f"precision.{k}_bits=32" for k in
                ("weight", "activation", "gradient", "update", "goodness", "optimizer", "accumulator"))
#: (what the row changes against the preset, its overrides); the first row is the preset itself
TABLE = (
    ("**the defaults** (λ = 0.01, last block decodes, goodness at 8 bits, optimizer and accumulators at 16)", ()),
    ("everything float32 (no quantization)", FLOAT32),
    ("goodness squares the 4-bit output", ("precision.goodness_bits=4",)),
    ("goodness at 16 bits", ("precision.goodness_bits=16",)),
    ("λ = 0.1", ("learning.reg_lambda=0.1",)),
    ("λ = 0", ("learning.reg_lambda=0",)),
    ("decoded by the last 3 blocks", ("learning.decode_last_k=3",)),
    ("optimizer state and accumulators in float32",
     ("precision.optimizer_bits=32", "precision.accumulator_bits=32")),
    ("optimizer state at 8 bits", ("precision.optimizer_bits=8",)),
    ("accumulators at 8 bits", ("precision.accumulator_bits=8",)),
    ("vector unit at 16 bits (bfloat16: batch norm, quantisation scaling, losses, optimizer)",
     ("precision.vector_bits=16",)),
)
TABLE_RULES = ("df-o", "df-r")
#: ``--statistics``: where BN's statistics and the quantisation scales come from (mapping.statistics); the
#: micro-batch row takes 8 samples per micro-batch (at 1, a dense layer's BN over one BP row is all zeros)
STATISTICS_TABLE = (
    ("batch: the batch's statistics (a barrier per batch-coupled value)", ("mapping.statistics=batch",)),
    ("running: per-row running estimates, scales latched per step", ("mapping.statistics=running",)),
    ("micro-batch of 8 samples", ("mapping.statistics=micro-batch", "mapping.micro_batch=8")),
)
STATISTICS_RULES = ("df-o", "df-r", "bp")


def validation_split() -> Dataset:
    full = load_dataset("mnist5k")
    val = np.sort(_stratified_pick(full.y_train, VALIDATION, np.random.default_rng(SPLIT_SEED)))
    train = np.setdiff1d(np.arange(len(full.y_train)), val)
    return Dataset("mnist5k-validation", full.x_train[train], full.y_train[train], full.x_train[val],
                   full.y_train[val], full.num_classes, full.kind)


def score(config: str, overrides: tuple, seed: int, data: Dataset | None = None) -> tuple:
    """One training on the 3,400 / 600 split: (its last epoch's record, seconds)."""
    cfg = load_config(config, tuple(overrides) + (f"training.seed={seed}",))
    t0 = time.perf_counter()
    tr = Trainer(cfg.hw, cfg.model, data if data is not None else validation_split())
    tr.run(progress=False, record_trace=False)
    return tr.history[-1], time.perf_counter() - t0


def _one_thread() -> None:
    from chipsim.experiments.jobs import limit_threads
    limit_threads(1)


def table(config: str, jobs: int, seeds: list, rows=TABLE, rules=TABLE_RULES, extra=()) -> str:
    """Every row of ``rows`` under each of ``rules`` and seed, as a Markdown table: the mean validation
    accuracy (%) over the seeds, with each seed's in brackets. ``extra``: overrides every cell takes."""
    cells = [(i, rule, seed) for i in range(len(rows)) for rule in rules for seed in seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as ex:
        futures = {c: ex.submit(score, config, rows[c[0]][1] + tuple(extra) + (f"workload.rule={c[1]}",), c[2])
                   for c in cells}
        acc = {}
        for c, f in futures.items():
            try:
                acc[c] = 100 * f.result()[0].test_accuracy
            except ChipsimError as e:       # a diverged training is a result of the table, not its end
                acc[c] = float("nan")
                print(f"  {rows[c[0]][0]} / {c[1]} / seed {c[2]}: {e}", file=sys.stderr, flush=True)
                continue
            print(f"  {rows[c[0]][0]} / {c[1]} / seed {c[2]}: {acc[c]:.1f}", file=sys.stderr, flush=True)

    def cell(i, rule):
        vals = [acc[i, rule, s] for s in seeds]
        each = f" ({' / '.join(f'{v:.1f}' for v in vals)})" if len(vals) > 1 else ""
        return f"{np.mean(vals):.1f}{each}"

    lines = ["| setting | " + " | ".join(r.upper() for r in rules) + " |",
             "|---|" + "---|" * len(rules)]
    for i, (name, overrides) in enumerate(rows):
        sets = " ".join(f"`{o}`" for o in overrides) or "none"
        lines.append(f"| {name} ({sets}) | " + " | ".join(cell(i, r) for r in rules) + " |")
    if extra:
        lines.append(f"\nEvery cell also sets {' '.join(f'`{o}`' for o in extra)}.")
    lines.append(f"\n{len(cells)} trainings, seeds {', '.join(map(str, seeds))} (mean, then each seed), "
                 f"{(time.perf_counter() - t0) / 60:.0f} min with {jobs} jobs.")
    return "\n".join(lines)


def _rules(given, default) -> tuple:
    return default if given is None else tuple(r for r in given.split(",") if r)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--seeds", default="0")
    p.add_argument("--table", action="store_true", help="train every row of TABLE under DF-O and DF-R")
    p.add_argument("--rules", default=None, help="--table and --statistics: the rules, comma-separated "
                   f"(e.g. df-o,df-r,bp; default {','.join(TABLE_RULES)} with --table, "
                   f"{','.join(STATISTICS_RULES)} with --statistics)")
    p.add_argument("--statistics", action="store_true", help="train every row of STATISTICS_TABLE "
                   "(mapping.statistics) under DF-O, DF-R and BP (or --rules); --set applies to every cell")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="--table: trainings in parallel")
    a = p.parse_args(argv)
    if a.table:
        if a.overrides:
            p.error("--table trains the preset's own rows; --set does not combine with it")
        print(table(a.config, max(1, a.jobs), [int(x) for x in a.seeds.split(",")],
                    rules=_rules(a.rules, TABLE_RULES)))
        return 0
    if a.statistics:
        print(table(a.config, max(1, a.jobs), [int(x) for x in a.seeds.split(",")], STATISTICS_TABLE,
                    _rules(a.rules, STATISTICS_RULES), tuple(a.overrides)))
        return 0
    data = validation_split()
    for seed in (int(s) for s in a.seeds.split(",")):
        h, seconds = score(a.config, tuple(a.overrides), seed, data)
        head = "" if h.head_accuracy is None else f" head {100 * h.head_accuracy:.1f}"
        print(f"validation {100 * h.test_accuracy:.1f}{head}  seed {seed}  epochs {h.epoch}  "
              f"{seconds:.0f} s  {' '.join(a.overrides)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
