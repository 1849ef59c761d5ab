"""Two checkouts of chipsim side by side: a training step, or a whole ``chipsim run``, interleaved.

Run: ``python benchmarks/ab_checkouts.py DIR_A DIR_B step [--rule df-r] [--rounds 21] [--steps 3]``
     ``python benchmarks/ab_checkouts.py DIR_A DIR_B run [--rounds 3] [--set key=value ...]``

DIR_A and DIR_B are two checkouts (``git worktree add /tmp/before COMMIT`` makes one). Why: a speed-up is
a ratio of two versions of the engine, and these machines drift by 2x within minutes, so the two must be
timed in turns, not one after the other.

* ``step``: one process per checkout, each importing its own ``chipsim`` and building the training step
  of ``benchmarks/train_step.py`` (the 44-core 4-bit preset, the rule's model, batch 32). The processes
  take turns, ``--steps`` steps each per round, the order alternating, so each round's ratio compares
  the two under the same load. Prints each side's median ms a step, the median ratio A/B of the times
  with its IQR, and how many rounds B was the faster.
* ``run``: ``chipsim run hwconfigs/44core_4bit.yaml`` of each checkout as a whole process, in turns
  (A B, then B A, ...), each into a fresh directory under a temporary folder. Prints each side's median
  wall time and its training time (``train_seconds`` from the run's ``summary.json``), the test accuracy,
  and whether the first runs' checkpoints hold the same arrays: two checkouts whose changes keep the
  numbers must train the same weights.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from rounds import spread  # noqa: E402


def _step_worker(path, rule, conn):
    """Build ``path``'s training step and time blocks of steps on request (None ends it)."""
    for sub in ("tests", "benchmarks", ""):
        sys.path.insert(0, os.path.join(path, sub))
    import torch
    torch.set_num_threads(1)
    import train_step
    from chipsim.data import load_dataset
    step = train_step._sides(rule, argparse.Namespace(set=[]), load_dataset("mnist5k"))[0]
    for _ in range(3):                      # warm-up: numba's compiled kernels, torch's thread pool
        step()
    conn.send("ready")
    while (n := conn.recv()) is not None:
        t = time.perf_counter()
        for _ in range(n):
            step()
        conn.send((time.perf_counter() - t) / n)


def ab_step(a, b, rule, rounds, steps):
    ctx = mp.get_context("spawn")
    sides = {}
    for name, path in (("A", a), ("B", b)):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_step_worker, args=(os.path.abspath(path), rule, theirs))
        proc.start()
        sides[name] = (proc, mine)
    for _, conn in sides.values():
        assert conn.recv() == "ready"
    times = {"A": [], "B": []}
    for r in range(rounds):
        for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
            sides[name][1].send(steps)
            times[name].append(sides[name][1].recv())
    for proc, conn in sides.values():
        conn.send(None)
        proc.join()
    ratios = [ta / tb for ta, tb in zip(times["A"], times["B"])]
    r = spread(ratios)
    print(f"{rule} step: A {1e3 * statistics.median(times['A']):.1f} ms, B {1e3 * statistics.median(times['B']):.1f} ms; "
          f"time A/B median {r.median:.3f} (IQR {r.q1:.3f}-{r.q3:.3f}); B faster in "
          f"{sum(x > 1 for x in ratios)} of {rounds} rounds")


def ab_run(a, b, rounds, overrides):
    out = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="chipsim-ab-") as tmp:
        for r in range(rounds):
            for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
                path = os.path.abspath(a if name == "A" else b)
                run_dir = os.path.join(tmp, f"{name}{r}")
                cmd = [sys.executable, "-c", "from chipsim.cli import main; main()", "run",
                       os.path.join(path, "hwconfigs", "44core_4bit.yaml"), "--out", run_dir]
                for kv in overrides:
                    cmd += ["--set", kv]
                t = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": path})
                wall = time.perf_counter() - t
                with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
                    training = json.load(f)["training"]
                out[name].append((wall, training["train_seconds"], training["test_accuracy"]))
        same = _same_arrays(os.path.join(tmp, "A0", "checkpoint.npz"), os.path.join(tmp, "B0", "checkpoint.npz"))
    for name in ("A", "B"):
        walls, trains, accs = zip(*out[name])
        print(f"{name}: chipsim run {statistics.median(walls):.1f} s median ({min(walls):.1f}-{max(walls):.1f}), "
              f"training {statistics.median(trains):.1f} s, test accuracy {sorted(set(accs))}")
    ratios = [wa / wb for (wa, _, _), (wb, _, _) in zip(out["A"], out["B"])]
    print(f"wall time A/B median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}), {rounds} rounds")
    print("the two checkouts' checkpoints hold " + ("the same arrays, bit for bit" if same else "different arrays")
          + " (the header, which names the code and the time, aside)")


def _same_arrays(a, b) -> bool:
    """Every array of checkpoint ``a`` equals ``b``'s, bit for bit, the header (``__doc__``) aside."""
    import numpy as np
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        keys = set(x.files) - {"__doc__"}
        return keys == set(y.files) - {"__doc__"} and all(
            x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and x[k].tobytes() == y[k].tobytes() for k in keys)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="checkout A")
    ap.add_argument("b", help="checkout B")
    ap.add_argument("what", choices=("step", "run"), help="a training step, or a whole chipsim run")
    ap.add_argument("--rule", default="df-r", help="step: df-r | bp | cwc (default df-r)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 21 for step, 3 for run)")
    ap.add_argument("--steps", type=int, default=3, help="step: steps per side per round (default 3)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run: a config override")
    args = ap.parse_args(argv)
    for path in (args.a, args.b):
        if not os.path.isfile(os.path.join(path, "chipsim", "__init__.py")):
            ap.error(f"{path}: not a chipsim checkout (no chipsim/__init__.py)")
    if args.what == "step":
        ab_step(args.a, args.b, args.rule, args.rounds or 21, args.steps)
    else:
        ab_run(args.a, args.b, args.rounds or 3, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
