"""An independent pure-torch CwC training of a chipsim model file, as evidence for the model and loss.

Written from the papers, not from chipsim's engine: each block is BN (no affine; batch statistics
in training, running statistics at test) -> conv|dense -> ReLU -> max-pool, He-uniform weights and
no bias (chipsim's blocks); each block's C outputs form J = 10 class groups of C / J consecutive
channels, G[n, j] is the mean of the squared outputs of group j (Eq. 2 of the Advancements paper)
and the block's loss is the softmax cross-entropy of G against the label (Eq. 3). Greedy: every
block learns from its own loss only (its input is detached), with its own Adam. A sample is one
row: no label in the input, no negatives. Decoding: argmax of G at the last block, or summed over
the last k blocks. Only chipsim's data loader and model-file parser are used.

    python benchmarks/cwc_torch.py [--model models/cwc_mnist.yaml] [--epochs 1] [--lr 1e-3] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from chipsim.data import load_dataset  # noqa: E402
from chipsim.modelspec import load_model  # noqa: E402

REPO = os.path.join(os.path.dirname(__file__), "..")


class Block(torch.nn.Module):
    def __init__(self, spec, in_shape):
        super().__init__()
        self.spec = spec
        if spec.type == "conv":
            c = in_shape[0]
            self.bn = torch.nn.BatchNorm2d(c, affine=False, momentum=0.1, eps=1e-5)
            w_shape = (spec.channels, c, spec.kernel, spec.kernel)
        else:
            k = int(np.prod(in_shape))
            self.bn = torch.nn.BatchNorm1d(k, affine=False, momentum=0.1, eps=1e-5)
            w_shape = (spec.units, k)
        fan_in = int(np.prod(w_shape[1:]))
        bound = math.sqrt(6.0 / fan_in)
        self.w = torch.nn.Parameter(torch.empty(w_shape).uniform_(-bound, bound))

    def forward(self, a):
        if self.spec.type == "dense":
            a = a.reshape(a.shape[0], -1)
        z = self.bn(a)
        if self.spec.type == "conv":
            y = F.conv2d(z, self.w, stride=self.spec.stride, padding=self.spec.padding)
        else:
            y = z @ self.w.t()
        r = F.relu(y)
        return F.max_pool2d(r, self.spec.pool) if self.spec.pool else r


def class_goodness(out, j):
    """Eq. 2: (N, C, ...) -> (N, J), mean of squares over each group of C / J consecutive channels."""
    return out.reshape(out.shape[0], j, -1).pow(2).mean(dim=2)


def build(model, in_shape, seed):
    torch.manual_seed(seed)
    blocks, shape = [], tuple(in_shape)
    with torch.no_grad():
        for spec in model.blocks:
            b = Block(spec, shape)
            blocks.append(b)
            shape = tuple(b(torch.zeros((2,) + shape)).shape[1:])
    for b in blocks:   # the shape probe ran BN in training mode: start its running statistics afresh
        b.bn.reset_running_stats()
    return blocks


def train_and_test(model, data, epochs, lr, batch, seed, last_ks):
    j = data.num_classes
    blocks = build(model, data.input_shape, seed)
    opts = [torch.optim.Adam(b.parameters(), lr=lr) for b in blocks]
    n = len(data.y_train)
    steps = epochs * math.ceil(n / batch)
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.0) for o in opts]
    gen = np.random.default_rng(seed)
    xtr, ytr = torch.tensor(data.x_train), torch.tensor(data.y_train)
    for _ in range(epochs):
        order = torch.tensor(gen.permutation(n))
        for b in blocks:
            b.train()
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            a, y = xtr[idx], ytr[idx]
            for blk, opt, sch in zip(blocks, opts, scheds):
                out = blk(a.detach())
                loss = F.cross_entropy(class_goodness(out, j), y)   # Eq. 3
                opt.zero_grad()
                loss.backward()
                opt.step()
                sch.step()
                a = out
    for b in blocks:
        b.eval()
    with torch.no_grad():
        a = torch.tensor(data.x_test)
        gs = []
        for b in blocks:
            a = b(a)
            gs.append(class_goodness(a, j))
    y = torch.tensor(data.y_test)
    per_block = [float((g.argmax(1) == y).float().mean()) for g in gs]
    decoded = {k: float((torch.stack(gs[-k:]).sum(0).argmax(1) == y).float().mean()) for k in last_ks}
    return per_block, decoded


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(REPO, "models", "cwc_mnist.yaml"))
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    data = load_dataset(args.dataset)
    print(f"{model.name} on {args.dataset}: {len(data.y_train)} training / {len(data.y_test)} test images, "
          f"{args.epochs} epoch(s), batch {args.batch}, Adam lr {args.lr} (cosine), greedy CwC")
    ks = sorted({1, 2, model.depth})
    accs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        per_block, decoded = train_and_test(model, data, args.epochs, args.lr, args.batch, seed, ks)
        accs.append(decoded[1])
        print(f"seed {seed}: test accuracy {100 * decoded[1]:.1f}% (last block); "
              + ", ".join(f"last {k}: {100 * v:.1f}%" for k, v in decoded.items() if k > 1)
              + "; per block " + " / ".join(f"{100 * v:.1f}" for v in per_block)
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if len(accs) > 1:
        print(f"mean over {len(accs)} seeds: {100 * np.mean(accs):.1f}%")


if __name__ == "__main__":
    main()
