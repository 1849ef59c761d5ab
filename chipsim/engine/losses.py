"""Per-block losses on goodness, with their gradients written out by hand.

Each loss takes the positive goodness ``gp`` (B,) and the negative goodnesses
``gn`` (B, N) -- N wrong labels per positive -- and returns the mean loss over
the batch plus dL/dgp and dL/dgn. Hand-written gradients keep the engine free
of an autograd dependency; tests check them against torch autograd.

Arithmetic is float32, the width the chip's vector unit is costed at; each
loss is ``costed`` with its vector operations per goodness value (or logit).
"""
from __future__ import annotations

import numpy as np

from ..work import costed

# vector operations per goodness value (per logit for cross-entropy), loss and gradient together
FF_OPS = 8        # softplus (exp, log1p, add) and sigmoid (exp, add, divide), subtract, scale
SYMBA_OPS = 8     # the same on the gap g+ - g-
DF_OPS = 6        # max over negatives (compare), hinge (subtract, add, max), lambda term, gradient
CE_OPS = 6        # max, subtract, exp, sum, divide, log; gradient (subtract one)


def _n_values(a, out) -> int:
    return np.size(a.gp) + np.size(a.gn)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@costed("loss", count=lambda a, out: FF_OPS * _n_values(a, out))
def ff_loss(gp, gn, theta: float):
    """Hinton's FF: push positive goodness above theta, negatives below it.

    L = softplus(theta - g+) + mean_k softplus(g-_k - theta)
    """
    gp = gp.astype(np.float32)
    gn = gn.astype(np.float32)
    b = gp.shape[0]
    loss = _softplus(theta - gp) + _softplus(gn - theta).mean(axis=1)
    dgp = -_sigmoid(theta - gp) / b
    dgn = _sigmoid(gn - theta) / (gn.shape[1] * b)
    return float(loss.mean()), dgp.astype(np.float32), dgn.astype(np.float32)


@costed("loss", count=lambda a, out: SYMBA_OPS * _n_values(a, out))
def symba_loss(gp, gn, alpha: float):
    """SymBa (Lee & Song 2023): one symmetric term on the gap, L = softplus(-alpha (g+ - g-))."""
    gp = gp.astype(np.float32)[:, None]
    gn = gn.astype(np.float32)
    b, n = gn.shape
    z = -alpha * (gp - gn)
    loss = _softplus(z).mean(axis=1)
    s = _sigmoid(z) * alpha / (n * b)
    return float(loss.mean()), (-s.sum(axis=1)).astype(np.float32), s.astype(np.float32)


@costed("loss", count=lambda a, out: DF_OPS * _n_values(a, out))
def df_loss(gp, gn, margin: float, lam: float, reduce: str = "max"):
    """DF N-pair margin loss (Wu et al. 2024, Eq. 7).

    L = max(m+ + max_k g-_k - g+, 0) + lam * max_k g-_k. The max picks the
    hardest negative (the support vector of the margin); ``reduce="avg"`` is
    the paper's ablation that averages the negatives instead.
    """
    gp = gp.astype(np.float32)
    gn = gn.astype(np.float32)
    b, n = gn.shape
    if reduce == "max":
        k = np.argmax(gn, axis=1)
        hard = gn[np.arange(b), k]
        dhard = np.zeros_like(gn)
        dhard[np.arange(b), k] = 1.0
    elif reduce == "avg":
        hard = gn.mean(axis=1)
        dhard = np.full_like(gn, 1.0 / n)
    else:
        raise ValueError(f"reduce must be 'max' or 'avg', got {reduce!r}")
    hinge = margin + hard - gp
    active = (hinge > 0).astype(np.float32)
    loss = np.maximum(hinge, 0.0) + lam * hard
    dgp = -active / b
    dgn = dhard * (active + lam)[:, None] / b
    return float(loss.mean()), dgp.astype(np.float32), dgn.astype(np.float32)


@costed("loss", count=lambda a, out: CE_OPS * np.size(a.logits))
def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits (BP baseline head)."""
    z = logits.astype(np.float32)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    b = logits.shape[0]
    loss = -np.log(p[np.arange(b), labels] + 1e-12).mean()
    g = p
    g[np.arange(b), labels] -= 1.0
    return float(loss), (g / b).astype(np.float32)


def goodness_loss(name: str, gp, gn, learning):
    """Dispatch by loss name with the hyper-parameters of a ``Learning`` config."""
    if name == "df":
        return df_loss(gp, gn, learning.margin, learning.reg_lambda, learning.negative_reduce)
    if name == "ff":
        return ff_loss(gp, gn, learning.ff_theta)
    if name == "symba":
        return symba_loss(gp, gn, learning.symba_alpha)
    raise ValueError(f"unknown goodness loss {name!r}")
