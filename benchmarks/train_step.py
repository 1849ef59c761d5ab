"""Training-step throughput: chipsim's 4-bit integer engine vs the same rule in torch float32 (DF-R, BP, CwC).

Same model (models/cnn_small.yaml; CwC on models/cwc_mnist.yaml, whose
channels split into the 10 classes' groups), same batch (the preset's
``training.batch_size``, 32 samples), same rule:

* DF-R: each sample as 1 positive + 9 negatives; DF loss at every block,
  DF-R random feedback into the block below, BN backward as the config's
  ``learning.bn_backward``. Autograd runs the backward pass on every row;
  with ``fixed-stats`` chipsim runs it only on the rows DF's loss gives an
  error (the positive and the hardest negatives), and the output says how
  many that was.
* BP: the blocks, a linear head (no bias) on the last block's output, softmax
  cross-entropy, the error back through every block.
* CwC: greedy; each block's channels form 10 groups, the group means of the
  squared outputs are the class scores of a softmax cross-entropy.

The torch sides are written from the rules' definitions, not from chipsim's
code: the block of ``tests/torch_reference.py`` (the one the rule tests check
the engine's gradients against; a custom Function carries DF-R's random
feedback), Adam over every weight.

Both use the same torch threads (2 unless ``--threads``). After a warm-up all
sides are timed in many short rounds (``benchmarks/rounds.py``): each round
runs a block of steps of each side, back to back, so the throughput ratio of
a round compares two sides that saw the same load. The output gives, per
rule, the median ratio with its spread, the ratio of process CPU times next
to it, and how many rounds reached the target (issue 25: DF-R >= 2.5x, BP >=
1.5x; CwC has none), then where one engine step of each rule spends its time
(``benchmarks/step_breakdown.py``), and ends with one summary line per rule.

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
from rounds import interleaved, machine_load, pin_torch_threads, ratios, spread  # noqa: E402
from step_breakdown import breakdown, print_breakdown  # noqa: E402

REPO = os.path.join(os.path.dirname(__file__), "..")
TARGETS = {"df-r": 2.5, "bp": 1.5, "cwc": None}     # issue 25: throughput over torch float32's
MODELS = {"df-r": "cnn_small.yaml", "bp": "cnn_small.yaml", "cwc": "cwc_mnist.yaml"}


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


class TorchBP:
    """BP on float32 torch tensors: the blocks, a linear head on the last block's output, cross-entropy."""

    def __init__(self, model, in_ch, num_classes, hw, hw_size):
        g = torch.Generator().manual_seed(0)
        self.specs = model.blocks
        self.ws = _weights(model, in_ch, hw_size, g)
        feat = _out_features(model, in_ch, hw_size)
        self.head = ((torch.rand((num_classes, feat), generator=g) * 2 - 1) / feat ** 0.5).requires_grad_()
        self.opt = torch.optim.Adam(self.ws + [self.head], lr=hw.training.lr)
        self.fixed_stats = hw.learning.bn_backward == "fixed-stats"

    def step(self, x, labels, negatives=None):
        self.opt.zero_grad(set_to_none=True)
        a = x
        for spec, w in zip(self.specs, self.ws):
            a = torch_block(a, w, spec, fixed_stats=self.fixed_stats)
        loss = torch.nn.functional.cross_entropy(a.reshape(a.shape[0], -1) @ self.head.t(), labels)
        loss.backward()
        self.opt.step()


class TorchCwC:
    """CwC on float32 torch tensors: greedy blocks, each scored by its channel groups' mean squares."""

    def __init__(self, model, in_ch, num_classes, hw, hw_size):
        g = torch.Generator().manual_seed(0)
        self.specs = model.blocks
        self.ws = _weights(model, in_ch, hw_size, g)
        self.j = num_classes
        self.opt = torch.optim.Adam(self.ws, lr=hw.training.lr)
        self.fixed_stats = hw.learning.bn_backward == "fixed-stats"

    def step(self, x, labels, negatives=None):
        self.opt.zero_grad(set_to_none=True)
        a = x
        for spec, w in zip(self.specs, self.ws):
            out = torch_block(a.detach(), w, spec, fixed_stats=self.fixed_stats)
            scores = out.reshape(out.shape[0], self.j, -1).pow(2).mean(2)   # groups of consecutive channels
            torch.nn.functional.cross_entropy(scores, labels).backward()
            a = out
        self.opt.step()


def _weights(model, in_ch, hw_size, g):
    ws, c, h = [], in_ch, hw_size
    for s in model.blocks:
        if s.type == "conv":
            shape = (s.channels, c, s.kernel, s.kernel)
            h = (h + 2 * s.padding - s.kernel) // s.stride + 1
            c, h = s.channels, (h // s.pool if s.pool else h)
        else:
            shape = (s.units, c * h * h if h else c)
            c, h = s.units, 0
        fan = int(np.prod(shape[1:]))
        ws.append(((torch.rand(shape, generator=g) * 2 - 1) * (6 / fan) ** 0.5).requires_grad_())
    return ws


def _out_features(model, in_ch, hw_size):
    c, h = in_ch, hw_size
    for s in model.blocks:
        if s.type == "conv":
            h = (h + 2 * s.padding - s.kernel) // s.stride + 1
            c, h = s.channels, (h // s.pool if s.pool else h)
        else:
            c, h = s.units, 0
    return c * h * h if h else c


def _rows_backpropagated(trainer, x, y, rows):
    """Rows each block's weight gradient ran on, read off the trace of one more (untimed) step."""
    trainer.train_step(x, y, record=True)
    tr = trainer.trace
    return [round(tr.macs("grad_w", l) * rows / tr.macs("fwd", l)) for l in range(len(trainer.net.blocks))]


def _sides(rule, args, d, n_batches=16):
    """(engine step, torch step, cfg) closures for ``rule``, each cycling over the same batches."""
    cfg = load_config(os.path.join(REPO, "hwconfigs", "44core_4bit.yaml"),
                      [f"workload.rule={rule}", f"workload.model={os.path.join(REPO, 'models', MODELS[rule])}"]
                      + args.set)
    bs = cfg.hw.training.batch_size
    xs = [d.x_train[i * bs:(i + 1) * bs] for i in range(n_batches)]
    ys = [d.y_train[i * bs:(i + 1) * bs] for i in range(n_batches)]
    ours = Trainer(cfg.hw, cfg.model, d)
    ref = {"df-r": TorchDFR, "bp": TorchBP, "cwc": TorchCwC}[rule](cfg.model, 1, 10, cfg.hw, 28)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(x), torch.from_numpy(y).long(),
                torch.from_numpy(sample_negatives(y, 9, 10, rng)).long()) for x, y in zip(xs, ys)]
    next_ours, next_ref = itertools.cycle(range(n_batches)), itertools.cycle(range(n_batches))

    def step_ours():
        i = next(next_ours)
        ours.train_step(xs[i], ys[i])

    threads = getattr(args, "threads", None)

    def step_ref():
        if threads is not None and torch.get_num_threads() != threads:     # see rounds.pin_torch_threads
            raise RuntimeError(f"torch runs on {torch.get_num_threads()} threads, not {threads}")
        ref.step(*batches[next(next_ref)])
    return step_ours, step_ref, cfg, ours, (xs[0], ys[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    ap.add_argument("--steps", type=int, default=2,
                    help="timed steps per side per round, after one untimed step (default 2)")
    ap.add_argument("--profile-steps", type=int, default=5,
                    help="engine steps the time breakdown is averaged over (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both sides (default 2)")
    ap.add_argument("--rules", default="df-r,bp,cwc", help="comma-separated subset of df-r,bp,cwc")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a key of hwconfigs/44core_4bit.yaml, e.g. learning.bn_backward=batch-stats")
    args = ap.parse_args()
    pin_torch_threads(args.threads)
    from chipsim.kernels import kernel_path
    d = load_dataset("mnist5k")
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    sides, made = {}, {}
    for rule in rules:
        step_ours, step_ref, cfg, ours, first = _sides(rule, args, d)
        for _ in range(2):                      # warm-up: numba JIT, BLAS and OpenMP thread pools
            step_ours()
            step_ref()
        sides[rule, "chipsim"], sides[rule, "torch"] = step_ours, step_ref
        made[rule] = (cfg, ours, first, step_ours)
    load_before = machine_load()
    t = interleaved(sides, args.rounds, args.steps)
    load_after = machine_load()
    print(f"GEMM unit: {kernel_path()}; torch threads {torch.get_num_threads()}; {args.rounds} rounds of "
          f"{args.steps} steps per side, every rule's sides in every round")
    print(f"machine: {load_before} before, {load_after} after")
    summary = []
    for rule in rules:
        cfg, ours, first, step_ours = made[rule]
        target = TARGETS[rule]
        bs = cfg.hw.training.batch_size
        wall = spread(ratios(t[rule, "torch"], t[rule, "chipsim"]), target)
        cpu = spread(ratios(t[rule, "torch"], t[rule, "chipsim"], "cpu"), target)
        print(f"\n{rule}: model {cfg.model.name}, batch {bs} samples, bn_backward {cfg.hw.learning.bn_backward}")
        if rule == "df-r":
            rows = bs * 10
            kept = _rows_backpropagated(ours, *first, rows)
            print(f"  {rows} rows (x 10 label variants); rows back-propagated per block (chipsim): "
                  + ", ".join(str(k) for k in kept) + f" of {rows}; torch: all")
        print(f"  {'implementation':<34}{'s/step (median, IQR)':>26}{'samples/s':>11}{'CPU s/step':>12}")
        for name, label in (("chipsim", "chipsim 4-bit integer (W4 A4 G8)"), ("torch", "torch float32 autograd")):
            w = spread([b.wall for b in t[rule, name]])
            c = spread([b.cpu for b in t[rule, name]])
            print(f"  {label:<34}{w.median:>10.3f} ({w.q1:.3f}-{w.q3:.3f}){bs / w.median:>11.1f}{c.median:>12.3f}")
        print(f"  throughput ratio chipsim / torch, wall time: {wall.text()}")
        print(f"  throughput ratio chipsim / torch, CPU time:  {cpu.text()}")
        met = "no target" if target is None else (f"{wall.hits}/{wall.n} rounds >= {target:.1f}x "
                                                  f"(CPU time: {cpu.hits}/{cpu.n})")
        summary.append(f"{rule} {wall.median:.2f}x (IQR {wall.q1:.2f}-{wall.q3:.2f}, CPU {cpu.median:.2f}x; {met})")
    for rule in rules:
        parts = breakdown(made[rule][3], args.profile_steps)
        print_breakdown(parts, f"\none chipsim {rule.upper()} step, mean of {args.profile_steps} (timing wrappers, "
                               "exclusive times):")
    print("summary: train_step chipsim/torch throughput " + "; ".join(summary)
          + f"; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
