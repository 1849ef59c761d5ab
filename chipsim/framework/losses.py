"""The per-block objectives of the local rules and BP's loss, in PyTorch (autograd differentiates them).

Goodness rules see ``out`` of (B * (N + 1), ...) rows, each sample's positive row first and its N
negatives after; CwC sees one row per sample. The formulas are the papers' (and ``engine/losses.py``'s):

* DF (Wu et al. 2024, Eq. 7): max(m + max_k g-_k - g+, 0) + lambda max_k g-_k;
* FF (Hinton 2022): softplus(theta - g+) + mean_k softplus(g-_k - theta);
* SymBa (Lee & Song 2023): mean_k softplus(-alpha (g+ - g-_k));
* CwC (Papachristodoulou et al. 2024, Eq. 2-3): cross-entropy of the class groups' mean squares;
* CFF (Aghagolzadeh & Ezoji, Eq. 3 and 15): the supervised contrastive loss of the L2-normalised rows
  (a ViT block's token means, both views of every sample; ``labels`` are the rows' labels, ``reps`` 1),
  averaged over anchors; with a margin m > 0 every positive similarity a.b becomes min(a.b + m, 1).

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
    temperature: float = 0.1          # CFF's tau (``learning.temperature``)
    contrastive_margin: float = 0.0   # CFF's m, one for every block (``learning.contrastive_margin``)


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


def contrastive_loss(out, labels, reps, hp, num_classes):
    """Eq. 3 (margin 0) / Eq. 15: -mean_i 1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(Q(z_i, z_a) / tau)[p]."""
    z = F.normalize(out.flatten(1), dim=1)
    sim = z @ z.t()
    eye = torch.eye(len(labels), dtype=torch.bool, device=out.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    if hp.contrastive_margin > 0:
        sim = torch.where(pos, torch.clamp(sim + hp.contrastive_margin, max=1.0), sim)
    log_prob = torch.log_softmax((sim / hp.temperature).masked_fill(eye, float("-inf")), dim=1)
    return (-(log_prob.masked_fill(~pos, 0.0)).sum(1) / pos.sum(1)).mean()


OBJECTIVES = {"df": df_loss, "ff": ff_loss, "symba": symba_loss, "cwc": cwc_loss, "contrastive": contrastive_loss}
