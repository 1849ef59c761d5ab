"""Stage 2 of a vision transformer trained layer-locally: a linear probe on the frozen encoder.

CFF (and supervised contrastive learning before it) trains the encoder in
stage 1 and only then a linear classifier on it (the CFF paper's Sec. 3.2 and
Fig. 1c): the encoder is frozen, every training image is encoded once (eval
mode, no augmentation, the neutral zero label patch for rules that carry a
label), and the head -- a linear classifier on the token mean of the last
layer's output, batch norm without affine in front (the usual linear probe:
it standardises the frozen features) -- is trained with cross-entropy for
``learning.head_epochs`` passes over those features. That is cheap (one
E x C product per image), so it is run long enough to converge: Adam at
``PROBE_LR`` with a cosine decay, batches of ``PROBE_BATCH``.

Why not beside the encoder, as ``layers.head.OnePassHead`` is for the FF family: the
encoder's features move every step of stage 1, so a head trained alongside
for three epochs chases them; the paper's two stages give it fixed features.

The probe is refit after every epoch, from the same seeded start, so the
accuracy after each epoch (the paper's convergence comparison) is what the
encoder of that epoch supports; the last fit is the model's head, whose
inference ``tracing.inference.trace_inference`` costs (one pass plus the head). The
weights, widths and optimizer state are the chip's (``weight_bits``,
``update_bits``, ``optimizer_bits``), as for any other layer.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from ...trace.work import logged
from ..rules.losses import cross_entropy
from .optim import make_optimizer
from .schedules import cosine_lr
from ..layers.vit.block import TokenMeanHead

PROBE_LR = 1e-2
PROBE_BATCH = 64
KEY = "probe"


class LinearProbe:
    """A linear classifier on the frozen encoder's last token mean, refit by :meth:`fit`."""
    alongside = False           # not trained in the step (``rules.head_step``), but in stage 2

    def __init__(self, net, precision, seed: int, epochs: int):
        last = net.blocks[-1]
        self.net, self.prec, self.seed, self.epochs = net, precision, int(seed), int(epochs)
        self.blocks = (net.depth - 1,)
        self.layer = TokenMeanHead(net.depth, last.tokens, last.dim, net.num_classes, precision,
                                   np.random.default_rng([seed, 7]), norm="batch")
        self._start = self.layer.state()
        self.fitted = None          # the training step whose encoder the current fit is of (None: never fit)
        self.curve = []             # training loss after each pass of the last fit

    def features(self, x, batch: int = 500) -> np.ndarray:
        """Token means (M, E) of the last layer's output for images ``x``: eval mode, the neutral label."""
        net, out = self.net, []
        for s in range(0, len(x), batch):
            a = net.input_with_label(x[s:s + batch], None)
            for blk in net.blocks:
                a, _ = blk.forward(a, train=False)
            out.append(self.layer.pooled(a))
        return np.concatenate(out)

    def fit(self, x, y, step=None) -> None:
        """Train the probe from its seeded start on the features of ``x`` for ``epochs`` passes."""
        self.layer.load(copy.deepcopy(self._start))   # load keeps the BN statistics' arrays, which training updates
        f, y = self.features(x), np.asarray(y)
        opt = self.new_optimizer()
        rng = np.random.default_rng([self.seed, 8])
        n = len(y)
        steps = math.ceil(n / PROBE_BATCH)
        total = self.epochs * steps
        self.curve = []
        for e in range(self.epochs):
            order, losses = rng.permutation(n), []
            for s in range(steps):
                idx = order[s * PROBE_BATCH:(s + 1) * PROBE_BATCH]
                losses.append(self.step(f[idx], y[idx], opt, cosine_lr(PROBE_LR, e * steps + s, total), rng))
            self.curve.append(float(np.mean(losses)))
        self.fitted = step

    def new_optimizer(self, key: str = KEY):
        """The probe's optimizer (Adam on the chip's ``optimizer_bits``), its state registered under ``key``."""
        p = self.prec
        opt = make_optimizer("adam", 0.0, p.optimizer_bits, p.rounding, p.scale)
        opt.register(key, self.layer.w_shape)
        return opt

    def step(self, features, labels, opt, lr, rng, key: str = KEY, marks=None) -> float:
        """One probe training step on a batch of token means: forward, cross-entropy, weight gradient,
        Adam update of the master weights, requantised compute copy. Returns the loss. ``marks`` (a list):
        the work log's position after each of the four (``tracing.probe`` puts each on its own op)."""
        mark = (lambda: marks.append(logged())) if marks is not None else (lambda: None)
        z, cache = self.logits(features, train=True)
        mark()
        loss, g = cross_entropy(z, labels)
        mark()
        gw = self.layer.grad_weight(self.layer.backward_pre(g, cache), cache, rng)
        mark()
        self.layer.master.apply(opt.delta(key, gw, lr, rng), self.prec.rounding, rng)
        self.layer.requantize()
        mark()
        return loss

    def logits(self, features, train: bool = False):
        """Class scores of token means (M, E) and the head's cache."""
        return super(TokenMeanHead, self.layer).forward(np.asarray(features, np.float32), train)

    def predict_features(self, features) -> np.ndarray:
        return self.logits(features)[0].argmax(axis=1)

    def accuracy(self, x, y) -> float:
        return float((self.predict_features(self.features(x)) == np.asarray(y)).mean())

    def state(self):
        return dict(layer=self.layer.state(), fitted=self.fitted)

    def load(self, s):
        self.layer.load(s["layer"])
        self.fitted = s["fitted"]
