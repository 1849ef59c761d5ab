"""Per-block losses on goodness, with their gradients written out by hand.

Each loss takes the positive goodness ``gp`` (B,) and the negative goodnesses
``gn`` (B, N) -- N wrong labels per positive -- and returns the mean loss over
the batch plus dL/dgp and dL/dgn. Hand-written gradients keep the engine free
of an autograd dependency; tests check them against torch autograd.

Arithmetic is float32, the width the chip's vector unit is costed at; each
loss is ``costed`` with its vector operations per goodness value (or logit).

CwC (channel-wise competitive, at the end) differs: it has no negatives, and
its goodness is one value per class group of a block's channels, so it works
on the block output itself and returns the gradient with respect to it.
"""
from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ...trace.work import costed

# vector operations per goodness value (per logit for cross-entropy), loss and gradient together
FF_OPS = 8        # softplus (exp, log1p, add) and sigmoid (exp, add, divide), subtract, scale
SYMBA_OPS = 8     # the same on the gap g+ - g-
# DF, per negative goodness: the hardest-negative compare (1), dhard * (active + lam) / b's multiply (1);
# per sample: hinge = margin + hard - gp (2), active = hinge > 0 (1), max(hinge, 0) + lam * hard (3), the
# mean's add (1), dgp = -active / b (1), active + lam (1), / b (1)
DF_OPS_PER_NEGATIVE = 2
DF_OPS_PER_SAMPLE = 10
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


def _df_ops(a, out) -> int:
    b, n = np.shape(a.gn)
    return b * (DF_OPS_PER_NEGATIVE * n + DF_OPS_PER_SAMPLE)


@costed("loss", count=_df_ops)
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


# ---------------------------------------------------------------- channel-wise competitive (CwC)
# Papachristodoulou et al. 2024 (AAAI), as summarised by Ortiz Torres et al., *On the Advancements
# of the Forward-Forward Algorithm*, Eq. 2-3. No label enters the input and there are no negative
# rows: a block's C output channels are cut into J class groups of S = C / J consecutive channels,
# and the groups compete through a softmax. One row per sample, so the cheapest rule in memory.
#
# Three functions, so a rule runs them where a core would (and each reports its own work):
#   G = cwc_goodness(out, J)               holistic goodness G[n, j]      (the squares: MAC array)
#   loss, dG = cwc_loss(G, labels)         softmax cross-entropy of G     (vector unit, J per row)
#   dout = cwc_goodness_backward(dG, out)  d loss / d out = dG[n, j(c)] * 2 out / (S * H * W)


def _cwc_groups(out, num_classes: int):
    """``out`` as (N, J, S * H * W): each class group's values in one row (a view, no copy)."""
    n, c = out.shape[0], out.shape[1]
    if c % num_classes:
        raise ValueError(f"CwC needs the channels ({c}) divisible by the classes ({num_classes})")
    return np.asarray(out).reshape(n, num_classes, -1)


@costed("goodness", count=lambda a, out: np.asarray(a.out).size, bits=lambda a, out: (a.bits, a.bits))
def cwc_goodness(out, num_classes: int, bits: int = 32):
    """G[n, j] = mean over class group j's channels and pixels of ``out`` squared: float32 (N, J).

    ``out`` is a block output (N, C, H, W), or (N, C) for a dense block (H = W = 1). Group j is
    channels j*S .. (j+1)*S - 1, S = C / J. Summed in float64, rounded once, as ``goodness`` is.
    ``bits`` is the width of the values squared (``goodness_bits``), for the work log only.
    """
    g = _cwc_groups(out, num_classes).astype(np.float64)
    return ((g * g).sum(axis=2) / g.shape[2]).astype(np.float32)


def cwc_loss(G, labels):
    """Channel-wise loss (Eq. 3): mean softmax cross-entropy of the goodnesses G (N, J) against the
    true classes. Returns (loss, dL/dG float32 (N, J)). :func:`cross_entropy` itself, whose logits
    here are goodnesses (it logs the work, as the per-block ``loss``)."""
    return cross_entropy(G, labels)


@costed("goodness_backward", count=lambda a, out: 2 * np.asarray(a.out).size)
def cwc_goodness_backward(dG, out):
    """dL/d out from dL/dG: each value's error is its group's dG times 2 out / (S * H * W). float32."""
    y = np.asarray(out, dtype=np.float32)
    grouped = _cwc_groups(y, dG.shape[1])
    scale = np.float32(2.0 / grouped.shape[2])
    d = (np.asarray(dG, np.float32)[:, :, None] * scale) * grouped
    return d.reshape(y.shape).astype(np.float32, copy=False)


def check_cwc_divisible(blocks, num_classes: int, origin: str = "model") -> None:
    """Raise a one-line ConfigError unless every block's outputs split into ``num_classes`` groups.

    ``blocks`` are ``chipsim.modelspec.Block`` specs (conv ``channels`` or dense ``units``);
    ``origin`` names the model file for the message.
    """
    for i, b in enumerate(blocks):
        c = b.out_features
        if c % num_classes:
            what = "channels" if b.type == "conv" else "units"
            lo, hi = (c // num_classes) * num_classes, (c // num_classes + 1) * num_classes
            near = f"{lo} or {hi}" if lo else f"{hi}"
            raise ConfigError(f"{origin}: blocks[{i}].{what}: {c} {what} do not split into {num_classes} class "
                              f"groups (CwC, learning.loss: cwc); use a multiple of {num_classes}, e.g. {near}")
