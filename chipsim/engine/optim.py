"""Optimizers on master weights (the learning-rate schedules are in ``schedules``).

The optimizer works on float32 *values* of the master weights; the master
store (``chipsim.quant`` fixed point at ``update_bits``) rounds each update onto
its grid, which is what an on-chip fixed-point accumulator would do. State
(momentum, Adam moments) is what a core must keep in SRAM, so its size is
exposed to the trace through ``state_numel``.
"""
from __future__ import annotations

import numpy as np


class SGD:
    """SGD with optional momentum; momentum 0 keeps no state (cheapest on chip)."""

    def __init__(self, momentum: float = 0.0):
        self.momentum = momentum
        self.buf = {}

    def state_numel(self, numel: int) -> int:
        return numel if self.momentum > 0 else 0

    def delta(self, key, grad, lr):
        if self.momentum > 0:
            b = self.buf.get(key)
            b = grad.copy() if b is None else self.momentum * b + grad
            self.buf[key] = b
            grad = b
        return (-lr * grad).astype(np.float32)

    def state_dict(self):
        return {"buf": self.buf}

    def load_state_dict(self, d):
        self.buf = d["buf"]


class Adam:
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam with default betas."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m, self.v, self.t = {}, {}, {}

    def state_numel(self, numel: int) -> int:
        return 2 * numel

    def delta(self, key, grad, lr):
        t = self.t.get(key, 0) + 1
        self.t[key] = t
        m = self.m.get(key)
        v = self.v.get(key)
        g = grad.astype(np.float32)
        m = (1 - self.b1) * g if m is None else self.b1 * m + (1 - self.b1) * g
        v = (1 - self.b2) * g * g if v is None else self.b2 * v + (1 - self.b2) * g * g
        self.m[key], self.v[key] = m, v
        mhat = m / (1 - self.b1 ** t)
        vhat = v / (1 - self.b2 ** t)
        return (-lr * mhat / (np.sqrt(vhat) + self.eps)).astype(np.float32)

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, d):
        self.m, self.v, self.t = d["m"], d["v"], d["t"]


def make_optimizer(name: str, momentum: float):
    if name == "adam":
        return Adam()
    if name == "sgd":
        return SGD(momentum)
    raise ValueError(f"unknown optimizer {name!r}; allowed: adam, sgd")
