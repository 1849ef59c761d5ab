"""Throughput of the quantized conv kernels against torch float32 on CPU.

Run: ``python benchmarks/kernels.py [--repeats R] [--rounds B]``

For each conv layer of the default model (batch 64, 3x3, pad 1) it times one
training step of the layer, forward + grad_w + grad_input:

* ours at 4 and 8 bits (integer codes, ``int_bound`` set, so the exact
  accumulation path is used; the path taken is printed), called as the
  engine calls them (``keep_cols``: grad_w reuses the forward's im2col),
* torch float32 ``F.conv2d`` forward + autograd backward (both grads),

and prints milliseconds (median of R timed calls, taken in B alternating
blocks after a warm-up that also triggers the numba JIT), GFLOP/s (3 GEMM-equivalents of 2*N*O*P*C*k*k flops
each) and the ratio ours/torch (speed, >1 = faster).  The measured numpy
sgemm rate at 1024^3 is printed as the machine's float32 ceiling.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from chipsim import kernels as K  # noqa: E402
from chipsim.quant import signed_max, unsigned_max  # noqa: E402

KS, STRIDE, PAD = 3, 1, 1


def default_model_layers(batch: int = 64):
    """(name, N, C, H, W, O) of the conv layers of models/cnn_small.yaml (3x3, pad 1), read from the file.

    Input 28x28 with 2 channels: the image plus the label-embedding channel.
    """
    from chipsim.modelspec import load_model
    model = load_model(os.path.join(os.path.dirname(__file__), "..", "models", "cnn_small.yaml"))
    layers, c, h = [], 2, 28
    for i, b in enumerate(model.blocks):
        if b.type != "conv":
            break
        assert (b.kernel, b.stride, b.padding) == (KS, STRIDE, PAD), "benchmark assumes 3x3 stride 1 pad 1"
        layers.append((f"conv{i + 1} {c}->{b.channels} @{h}x{h}", batch, c, h, h, b.channels))
        c, h = b.channels, (h // b.pool if b.pool else h)
    return layers


LAYERS = default_model_layers()


def _median_time(fn, repeats):
    return _median_times([fn], repeats)[0]


def _median_times(fns, repeats, rounds=3):
    """Median wall time of each closure.

    Each closure runs in blocks (a warm-up call, whose time is dropped, then
    ``repeats // rounds`` timed calls) rather than interleaved call by call:
    torch's OpenMP threads and OpenBLAS's workers both keep spinning for a
    while after they finish, and interleaving would charge each one for the
    other's spinning; a short sleep before each block lets the previous
    block's threads park.  The blocks are cycled ``rounds`` times so that
    load from other processes on a shared machine hits all closures alike.
    """
    per_round = max(1, repeats // rounds)
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            time.sleep(0.3)
            fn()  # warm-up: JIT on the first round, thread pools after
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def sgemm_rate(n=1024, repeats=5):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return 2 * n ** 3 / _median_time(lambda: np.dot(a, a), repeats) / 1e9


def ours_step(bits, n, c, h, w, o, rng):
    """Closure running fwd + grad_w + grad_in at ``bits`` on random codes."""
    amax, wmax, gmax = unsigned_max(bits), signed_max(bits), signed_max(bits)
    x = rng.integers(0, amax + 1, (n, c, h, w)).astype(np.float32)
    wt = rng.integers(-wmax, wmax + 1, (o, c, KS, KS)).astype(np.float32)
    gy = rng.integers(-gmax, gmax + 1, (n, o, h, w)).astype(np.float32)

    def step():
        # as the engine calls them: the forward's im2col columns serve grad_w
        _, cols = K.conv2d_forward(x, wt, STRIDE, PAD, int_bound=(amax, wmax), keep_cols=True)
        K.conv2d_grad_weight(x, gy, (KS, KS), STRIDE, PAD,
                             int_bound=(amax, gmax), cols=cols)
        K.conv2d_grad_input(gy, wt, x.shape, STRIDE, PAD,
                            int_bound=(gmax, wmax))
    return step


def torch_step(n, c, h, w, o, rng):
    x = torch.tensor(rng.standard_normal((n, c, h, w)), dtype=torch.float32,
                     requires_grad=True)
    wt = torch.tensor(rng.standard_normal((o, c, KS, KS)),
                      dtype=torch.float32, requires_grad=True)
    gy = torch.tensor(rng.standard_normal((n, o, h, w)), dtype=torch.float32)

    def step():
        x.grad = None
        wt.grad = None
        y = F.conv2d(x, wt, stride=STRIDE, padding=PAD)
        y.backward(gy)
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30,
                    help="timed calls per implementation and layer (default 30)")
    ap.add_argument("--rounds", type=int, default=6,
                    help="alternating blocks the calls are split into; on a shared "
                         "machine more rounds average out slow spells (default 6)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"numpy sgemm 1024^3: {sgemm_rate():.1f} GFLOP/s   "
          f"(torch threads {torch.get_num_threads()}, "
          f"numba threads {K.numba_threads()})")
    hdr = (f"{'layer':<22}{'impl':<10}{'paths fwd/gw/gi':<20}"
           f"{'ms':>8}{'GFLOP/s':>9}{'vs torch':>10}")
    print(hdr)
    print("-" * len(hdr))
    for name, n, c, h, w, o in LAYERS:
        flops = 3 * 2 * n * o * h * w * c * KS * KS
        paths = {}
        steps = [torch_step(n, c, h, w, o, rng)]
        for bits in (4, 8):
            steps.append(ours_step(bits, n, c, h, w, o, rng))
            steps[-1]()
            paths[bits] = "/".join(K.LAST_PATH[f] for f in (
                "conv2d_forward", "conv2d_grad_weight", "conv2d_grad_input"))
        t_torch, t4, t8 = _median_times(steps, args.repeats, args.rounds)
        rows = [("torch f32", "-", t_torch), ("ours 4b", paths[4], t4),
                ("ours 8b", paths[8], t8)]
        for impl, paths, t in rows:
            print(f"{name:<22}{impl:<10}{paths:<20}{t * 1e3:8.2f}"
                  f"{flops / t / 1e9:9.1f}{t_torch / t:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
