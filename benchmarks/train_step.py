"""DF-R training-step throughput: chipsim's 4-bit integer engine vs the same rule in torch float32.

Same model (models/cnn_small.yaml), same batch (the preset's
``training.batch_size``, 32 samples, each as 1 positive + 9 negatives), same
rule: DF loss at every block, DF-R random feedback into the block below, BN
backward as the config's ``learning.bn_backward``. The torch side is written
from the rule's definition, not from chipsim's code: the step here, and the
block of ``tests/torch_reference.py`` (the one the rule tests check the
engine's gradients against; a custom Function carries the random feedback).
Autograd runs the backward pass on every row; with ``fixed-stats``
chipsim runs it only on the rows DF's loss gives an error (the positive and
the hardest negatives), and the output says how many that was. Both use 2
threads; each is warmed up, then timed in blocks of steps that alternate
between the two sides, each block after a short sleep (alternating step by
step would charge each for the other's spinning BLAS threads; alternating
blocks spreads slow spells of a shared machine over both). The median step
of each side is reported.

    python benchmarks/train_step.py [--steps 12] [--rounds 4] [--set learning.bn_backward=batch-stats]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from chipsim.config import load_config  # noqa: E402
from chipsim.data import load_dataset  # noqa: E402
from chipsim.engine.trainer import Trainer, sample_negatives  # noqa: E402
from torch_reference import torch_block  # noqa: E402  (the tests' independent torch block)

REPO = os.path.join(os.path.dirname(__file__), "..")


class TorchDFR:
    """DF-R on float32 torch tensors: per block, own-loss gradient plus random feedback from above."""

    def __init__(self, model, in_ch, num_classes, hw, hw_size):
        g = torch.Generator().manual_seed(0)
        self.specs = model.blocks
        self.ws, self.bs = [], []
        c, h = in_ch + 1, hw_size
        for s in self.specs:
            if s.type == "conv":
                shape = (s.channels, c, s.kernel, s.kernel)
                c, h = s.channels, (h // s.pool if s.pool else h)
            else:
                shape = (s.units, c * h * h if h else c)
                c, h = s.units, 0
            fan = int(np.prod(shape[1:]))
            self.ws.append(((torch.rand(shape, generator=g) * 2 - 1) * (6 / fan) ** 0.5).requires_grad_())
            self.bs.append((torch.rand(shape, generator=g) * 2 - 1) * (6 / fan) ** 0.5)
        self.emb = torch.randn(num_classes, hw_size, hw_size, generator=g).requires_grad_()
        self.opt = torch.optim.Adam(self.ws + [self.emb], lr=hw.training.lr)
        self.m, self.lam = hw.learning.margin, hw.learning.reg_lambda
        self.fixed_stats = hw.learning.bn_backward == "fixed-stats"

    def block(self, a, l, feedback):
        return torch_block(a, self.ws[l], self.specs[l], feedback=self.bs[l] if feedback else None,
                           fixed_stats=self.fixed_stats)

    def step(self, x, labels, negatives):
        reps = negatives.shape[1] + 1
        lab = torch.cat([labels[:, None], negatives], 1).reshape(-1)
        a = torch.cat([x.repeat_interleave(reps, 0), self.emb[lab][:, None]], 1)
        self.opt.zero_grad(set_to_none=True)
        prev_in, prev_out = a, None
        for l in range(len(self.specs)):
            inp = prev_in if l == 0 else prev_in.detach().requires_grad_()
            out = self.block(inp, l, feedback=l > 0)
            g = out.reshape(out.shape[0], -1).pow(2).mean(1).reshape(-1, reps)
            hard = g[:, 1:].max(1).values
            loss = (torch.clamp(self.m + hard - g[:, 0], min=0) + self.lam * hard).mean()
            loss.backward(retain_graph=True)      # block l-1's graph is used again below
            if l > 0:                      # DF-R: the error reached block l-1's output through B_l
                prev_out.backward(inp.grad)
            prev_in, prev_out = out, out
        self.opt.step()


def _rows_backpropagated(trainer, x, y, rows):
    """Rows each block's weight gradient ran on, read off the trace of one more (untimed) step."""
    trainer.train_step(x, y, record=True)
    tr = trainer.trace
    return [round(tr.macs("grad_w", l) * rows / tr.macs("fwd", l)) for l in range(len(trainer.net.blocks))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="steps timed per side, over distinct batches (default 12)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternating blocks per side; each block times steps/rounds steps (default 4)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a key of hwconfigs/44core_4bit.yaml, e.g. learning.bn_backward=batch-stats")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(os.path.join(REPO, "hwconfigs", "44core_4bit.yaml"), args.set)
    d = load_dataset("mnist5k")
    bs = cfg.hw.training.batch_size
    xs = [d.x_train[i * bs:(i + 1) * bs] for i in range(args.steps + 2)]
    ys = [d.y_train[i * bs:(i + 1) * bs] for i in range(args.steps + 2)]

    ours = Trainer(cfg.hw, cfg.model, d)
    ref = TorchDFR(cfg.model, 1, 10, cfg.hw, 28)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(sample_negatives(y, 9, 10, rng)))
               for x, y in zip(xs, ys)]
    for i in range(2):                      # warm-up: numba JIT, BLAS and OpenMP thread pools
        ours.train_step(xs[i], ys[i])
        ref.step(*batches[i])
    # Alternate blocks of steps, a short sleep before each so that the other side's
    # spinning threads have parked; the median step over all blocks is reported.
    per_block = max(1, args.steps // args.rounds)
    t_ours, t_ref = [], []
    for r in range(args.rounds):
        for fn, out in ((lambda i: ours.train_step(xs[i], ys[i]), t_ours),
                        (lambda i: ref.step(*batches[i]), t_ref)):
            time.sleep(0.3)
            for k in range(per_block):
                i = 2 + (r * per_block + k) % args.steps
                t0 = time.perf_counter()
                fn(i)
                out.append(time.perf_counter() - t0)
    t_ours, t_torch = float(np.median(t_ours)), float(np.median(t_ref))

    rows = bs * 10
    print(f"model {cfg.model.name}, batch {bs} samples x 10 label variants = {rows} rows, DF-R, {args.steps} steps, "
          f"bn_backward {cfg.hw.learning.bn_backward}")
    kept = _rows_backpropagated(ours, xs[0], ys[0], rows)
    print("rows back-propagated per block (chipsim): " + ", ".join(str(k) for k in kept) + f" of {rows}; torch: all")
    print(f"{'implementation':<34}{'s/step':>8}{'samples/s':>11}")
    print(f"{'chipsim 4-bit integer (W4 A4 G8)':<34}{t_ours:>8.3f}{bs / t_ours:>11.1f}")
    print(f"{'torch float32 autograd':<34}{t_torch:>8.3f}{bs / t_torch:>11.1f}")
    print(f"ratio chipsim / torch throughput: {t_torch / t_ours:.2f}x  (floor 0.5x, aim 1.0x)")


if __name__ == "__main__":
    main()
