"""Accuracy on a validation split of mnist5k's training images: how chipsim's defaults are chosen.

The 4,000 training images are split 3,400 / 600 (class-stratified, fixed seed); a config trains on
the 3,400 and is scored on the 600. The test set never chooses anything.

Run: ``python benchmarks/validation.py HWCONFIG [--set k=v ...] [--seeds 0,1]`` -- prints one line per
seed with the final validation accuracy (and the one-pass head's, when the rule trains one).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from chipsim.config import load_config  # noqa: E402
from chipsim.data import Dataset, _stratified_pick, load_dataset  # noqa: E402
from chipsim.engine.trainer import Trainer  # noqa: E402

VALIDATION = 600
SPLIT_SEED = 12345


def validation_split() -> Dataset:
    full = load_dataset("mnist5k")
    val = np.sort(_stratified_pick(full.y_train, VALIDATION, np.random.default_rng(SPLIT_SEED)))
    train = np.setdiff1d(np.arange(len(full.y_train)), val)
    return Dataset("mnist5k-validation", full.x_train[train], full.y_train[train], full.x_train[val],
                   full.y_train[val], full.num_classes, full.kind)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--seeds", default="0")
    a = p.parse_args(argv)
    data = validation_split()
    for seed in (int(s) for s in a.seeds.split(",")):
        cfg = load_config(a.config, tuple(a.overrides) + (f"training.seed={seed}",))
        t0 = time.perf_counter()
        tr = Trainer(cfg.hw, cfg.model, data)
        tr.run(progress=False, record_trace=False)
        h = tr.history[-1]
        head = "" if h.head_accuracy is None else f" head {100 * h.head_accuracy:.1f}"
        print(f"validation {100 * h.test_accuracy:.1f}{head}  seed {seed}  epochs {h.epoch}  "
              f"{time.perf_counter() - t0:.0f} s  {' '.join(a.overrides)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
