"""What the chip accounting costs: `chipsim run hwconfigs/44core_4bit.yaml` with and without it.

Accounting = recording the trace of the first training step + costing it on
the chip (mapping, schedule, ledger, NoC, energy). Both variants train the
same epochs with the same seed in this one process, one after the other, and
the overhead is printed as a share of the run's wall time. Target: <= 5%.

    python benchmarks/accounting.py [--epochs 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from chipsim.chip import simulate  # noqa: E402
from chipsim.config import load_config  # noqa: E402
from chipsim.data import load_dataset  # noqa: E402
from chipsim.engine.training.trainer import Trainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    path = os.path.join(os.path.dirname(__file__), "..", "hwconfigs", "44core_4bit.yaml")
    cfg = load_config(path, (f"training.epochs={args.epochs}",))
    data = load_dataset("mnist5k")
    Trainer(cfg.hw, cfg.model, data).train_step(data.x_train[:64], data.y_train[:64])   # JIT warm-up

    t0 = time.perf_counter()
    Trainer(cfg.hw, cfg.model, data).run(progress=False, record_trace=False)
    bare = time.perf_counter() - t0

    t0 = time.perf_counter()
    tr = Trainer(cfg.hw, cfg.model, data)
    res = tr.run(progress=False, record_trace=True)
    t1 = time.perf_counter()
    chip = simulate(res.trace, cfg.hw)
    accounted = time.perf_counter() - t0
    sim = time.perf_counter() - t1

    print(f"{cfg.name}: {args.epochs} epoch(s) of {cfg.hw.workload.rule} on mnist5k, {res.steps} steps")
    print(f"{'training only (no trace, no chip model)':<44}{bare:>8.1f} s")
    print(f"{'training + trace + chip model':<44}{accounted:>8.1f} s  (chip model alone {sim:.2f} s)")
    print(f"accounting overhead: {100 * (accounted - bare) / bare:+.1f}% of the run's wall time (target <= 5%)")
    print(f"chip: {chip.mapping.cores_used} cores, peak {chip.ledger.peak_bytes / 1024:.0f} KiB, "
          f"step {chip.latency_us:.0f} us")


if __name__ == "__main__":
    main()
