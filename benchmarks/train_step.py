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
the hardest negatives), and the output says how many that was.

Both use 2 threads. After a warm-up the two sides are timed in many short
rounds (``benchmarks/rounds.py``): each round runs a block of steps of each
side, back to back, so the throughput ratio of a round compares two sides
that saw the same load. The output gives the median ratio with its spread,
the ratio of process CPU times next to it, and how many rounds reached the
target (1.0x), then where one engine step spends its time
(``benchmarks/step_breakdown.py``), and ends with one summary line.

    python benchmarks/train_step.py [--rounds 20] [--steps 2] [--set learning.bn_backward=batch-stats]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from chipsim.config import load_config  # noqa: E402
from chipsim.data import load_dataset  # noqa: E402
from chipsim.engine.training.trainer import Trainer, sample_negatives  # noqa: E402
from torch_reference import torch_block  # noqa: E402  (the tests' independent torch block)

sys.path.insert(0, os.path.dirname(__file__))
from rounds import interleaved, machine_load, ratios, spread  # noqa: E402
from step_breakdown import breakdown, print_breakdown  # noqa: E402

REPO = os.path.join(os.path.dirname(__file__), "..")
TARGET = 1.0          # issue 17: one DF-R step at >= 1.0x torch float32's throughput


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
        below = None                  # block l-1's output, still attached to block l-1's graph
        for l in range(len(self.specs)):
            inp = a if l == 0 else below.detach().requires_grad_()
            out = self.block(inp, l, feedback=l > 0)
            g = out.reshape(out.shape[0], -1).pow(2).mean(1).reshape(-1, reps)
            hard = g[:, 1:].max(1).values
            loss = (torch.clamp(self.m + hard - g[:, 0], min=0) + self.lam * hard).mean()
            loss.backward(retain_graph=True)      # block l's graph is used again at l + 1
            if l > 0:                      # DF-R: the error reached block l-1's output through B_l
                below.backward(inp.grad)
            below = out
        self.opt.step()


def _rows_backpropagated(trainer, x, y, rows):
    """Rows each block's weight gradient ran on, read off the trace of one more (untimed) step."""
    trainer.train_step(x, y, record=True)
    tr = trainer.trace
    return [round(tr.macs("grad_w", l) * rows / tr.macs("fwd", l)) for l in range(len(trainer.net.blocks))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    ap.add_argument("--steps", type=int, default=2,
                    help="timed steps per side per round, after one untimed step (default 2)")
    ap.add_argument("--profile-steps", type=int, default=5,
                    help="engine steps the time breakdown is averaged over (default 5)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a key of hwconfigs/44core_4bit.yaml, e.g. learning.bn_backward=batch-stats")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(os.path.join(REPO, "hwconfigs", "44core_4bit.yaml"), args.set)
    d = load_dataset("mnist5k")
    bs = cfg.hw.training.batch_size
    n_batches = 16
    xs = [d.x_train[i * bs:(i + 1) * bs] for i in range(n_batches)]
    ys = [d.y_train[i * bs:(i + 1) * bs] for i in range(n_batches)]

    ours = Trainer(cfg.hw, cfg.model, d)
    ref = TorchDFR(cfg.model, 1, 10, cfg.hw, 28)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(sample_negatives(y, 9, 10, rng)))
               for x, y in zip(xs, ys)]
    next_ours, next_ref = itertools.cycle(range(n_batches)), itertools.cycle(range(n_batches))

    def step_ours():
        i = next(next_ours)
        ours.train_step(xs[i], ys[i])

    def step_ref():
        ref.step(*batches[next(next_ref)])

    for _ in range(2):                      # warm-up: numba JIT, BLAS and OpenMP thread pools
        step_ours()
        step_ref()
    load_before = machine_load()
    t = interleaved({"chipsim": step_ours, "torch": step_ref}, args.rounds, args.steps)
    load_after = machine_load()
    wall = spread(ratios(t["torch"], t["chipsim"]), TARGET)
    cpu = spread(ratios(t["torch"], t["chipsim"], "cpu"), TARGET)

    rows = bs * 10
    print(f"model {cfg.model.name}, batch {bs} samples x 10 label variants = {rows} rows, DF-R, "
          f"bn_backward {cfg.hw.learning.bn_backward}; {args.rounds} rounds of {args.steps} steps per side")
    kept = _rows_backpropagated(ours, xs[0], ys[0], rows)
    print("rows back-propagated per block (chipsim): " + ", ".join(str(k) for k in kept) + f" of {rows}; torch: all")
    print(f"machine: {load_before} before, {load_after} after")
    print(f"{'implementation':<34}{'s/step (median, IQR)':>26}{'samples/s':>11}{'CPU s/step':>12}")
    for name, label in (("chipsim", "chipsim 4-bit integer (W4 A4 G8)"), ("torch", "torch float32 autograd")):
        w = spread([b.wall for b in t[name]])
        c = spread([b.cpu for b in t[name]])
        print(f"{label:<34}{w.median:>10.3f} ({w.q1:.3f}-{w.q3:.3f}){bs / w.median:>11.1f}{c.median:>12.3f}")
    print(f"throughput ratio chipsim / torch, wall time: {wall.text()}")
    print(f"throughput ratio chipsim / torch, CPU time:  {cpu.text()}")

    parts = breakdown(step_ours, args.profile_steps)
    print_breakdown(parts, f"one chipsim DF-R step, mean of {args.profile_steps} (timing wrappers, exclusive times):")
    print(f"summary: train_step chipsim/torch throughput {wall.median:.2f}x median (IQR {wall.q1:.2f}-{wall.q3:.2f}), "
          f"CPU-time ratio {cpu.median:.2f}x; {wall.hits}/{wall.n} rounds >= {TARGET:.1f}x "
          f"(CPU time: {cpu.hits}/{cpu.n}); load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
