"""The per-block objectives of the local rules and BP's loss, in PyTorch (autograd differentiates them).

Goodness rules see ``out`` of (B * (N + 1), ...) rows, each sample's positive row first and its N
negatives after; CwC sees one row per sample. The formulas are the papers' (and ``engine/losses.py``'s):

* DF (Wu et al. 2024, Eq. 7): max(m + max_k g-_k - g+, 0) + lambda max_k g-_k;
* FF (Hinton 2022): softplus(theta - g+) + mean_k softplus(g-_k - theta);
* SymBa (Lee & Song 2023): mean_k softplus(-alpha (g+ - g-_k));
* CwC (Papachristodoulou et al. 2024, Eq. 2-3): cross-entropy of the class groups' mean squares.

A table, not a branch on the rule: ``OBJECTIVES[name](out, labels, reps, hp, num_classes)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossParams:
    """The hyper-parameters of the losses (chipsim's ``learning.*`` defaults)."""
    margin: float = 1.0
    reg_lambda: float = 0.01
    ff_theta: float = 2.0
    symba_alpha: float = 4.0


def _goodness(out, reps):
    """(B * reps, ...) -> (B, reps): each row's mean of squares."""
    return out.flatten(1).pow(2).mean(1).view(-1, reps)


def df_loss(out, labels, reps, hp, num_classes):
    g = _goodness(out, reps)
    hard = g[:, 1:].max(1).values
    return (torch.clamp(hp.margin + hard - g[:, 0], min=0) + hp.reg_lambda * hard).mean()


def ff_loss(out, labels, reps, hp, num_classes):
    g = _goodness(out, reps)
    return (F.softplus(hp.ff_theta - g[:, 0]) + F.softplus(g[:, 1:] - hp.ff_theta).mean(1)).mean()


def symba_loss(out, labels, reps, hp, num_classes):
    g = _goodness(out, reps)
    return F.softplus(-hp.symba_alpha * (g[:, :1] - g[:, 1:])).mean()


def cwc_loss(out, labels, reps, hp, num_classes):
    """Eq. 2: G[n, j] = mean of squares over class group j's channels and pixels; Eq. 3: CE(G, label)."""
    g = out.reshape(out.shape[0], num_classes, -1).pow(2).mean(2)
    return F.cross_entropy(g, labels)


OBJECTIVES = {"df": df_loss, "ff": ff_loss, "symba": symba_loss, "cwc": cwc_loss}
