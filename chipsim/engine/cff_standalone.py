"""Contrastive Forward-Forward on a ViT, trained layer-locally -- a standalone loop for evidence.

Not the ``chipsim run`` path (the rule composition will host CFF there); this
proves the numbers of the transformer layers and the contrastive loss before
that wiring exists, with the same config files::

    python -m chipsim.engine.cff_standalone hwconfigs/44core_4bit.yaml \\
        --set workload.model=models/vit_tiny.yaml [--float] [--json out.json]

Per step (the paper's Algorithm 1, left): two seeded random translations of
the batch are stacked (2B rows); layer l runs forward on them, its contrastive
loss on the token means (``cache["pooled"]``) gives the error at its output,
its own parameters take an Adam step, and its output -- computed before the
update, a plain array, so detached -- is layer l+1's input. Learning rate,
batch size, epochs, optimizer, schedule, seed and every width come from the
hwconfig (``training.*``, ``precision.*``).

Stage 2: the encoder is frozen, every training image is encoded once (eval
mode, no augmentation) and a linear head -- a ``QuantBlock`` dense head at the
configured widths, batch-norm in front -- is trained with cross-entropy for
``--head-epochs`` passes over those features (cheap: a 64 x 10 product per
row); test accuracy is the head's argmax over the test images' features.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from .. import kernels as K
from ..augment import two_views
from ..config import load_config
from ..data import load_dataset
from ..errors import ChipsimError
from ..modelspec import Block
from .block import QuantBlock
from .contrastive import contrastive_loss
from .losses import cross_entropy
from .optim import make_optimizer
from .schedules import cosine_lr
from .transformer import TransformerWidths, build_encoder

FLOAT_BITS = ("weight_bits", "activation_bits", "gradient_bits", "update_bits", "goodness_bits")


def _lr(tr, step, total):
    return cosine_lr(tr.lr, step, total) if tr.schedule == "cosine" else tr.lr


def _delta(opt, key, grad, lr, rng):
    """The optimizer's step for ``key`` (its state registered on first use)."""
    if key not in opt.stores:
        opt.register(key, grad.shape)
    return opt.delta(key, grad, lr, rng)


def _update(layer, grads, opt, lr, prec, rng, key):
    for name, master in layer.masters().items():
        master.apply(_delta(opt, f"{key}.{name}", grads[name], lr, rng), prec.rounding, rng)
    layer.requantize()


def encode(layers, x, batch: int = 500):
    """Token-mean features of the last layer, eval mode (running scales, no updates)."""
    feats = []
    for i in range(0, len(x), batch):
        h = x[i:i + batch]
        for layer in layers:
            h, cache = layer.forward(h, train=False)
        feats.append(cache["pooled"])
    return np.concatenate(feats)


def calibrate(layers, x):
    """Set the running activation scales from one training-mode forward pass, updating no weight.

    Without it an untrained encoder quantizes with the scale-1 fallback (measured: 33% instead of 57%
    test accuracy at 4 bits), which is no baseline for a trained one.
    """
    h = x
    for layer in layers:
        h, _ = layer.forward(h, train=True)


def train_encoder(layers, data, hw, temperature, margins, max_shift, log=print):
    """Stage 1: layer-local CFF. Returns per-epoch dicts (mean loss per layer, seconds)."""
    tr, prec = hw.training, hw.precision
    opt = make_optimizer(tr.optimizer, tr.momentum)
    rng_data = np.random.default_rng([tr.seed, 2])
    rng_round = np.random.default_rng([tr.seed, 3])
    rng_aug = np.random.default_rng([tr.seed, 6])
    n = len(data.y_train)
    steps = math.ceil(n / tr.batch_size)
    total, step, history = tr.epochs * steps, 0, []
    for epoch in range(tr.epochs):
        t0 = time.perf_counter()
        order = rng_data.permutation(n)
        losses = np.zeros(len(layers))
        for s in range(steps):
            idx = order[s * tr.batch_size:(s + 1) * tr.batch_size]
            if len(idx) < 2:
                continue                                   # a lone sample has no positive
            v1, v2 = two_views(data.x_train[idx], rng_aug, max_shift)
            h = np.concatenate([v1, v2])
            y = np.concatenate([data.y_train[idx]] * 2)
            lr = _lr(tr, step, total)
            for l, layer in enumerate(layers):
                out, cache = layer.forward(h, train=True)
                loss, dpooled = contrastive_loss(cache["pooled"], y, temperature, margins[l])
                if not np.isfinite(loss):
                    raise ChipsimError(f"CFF loss of layer {l} is {loss} at step {step}; lower training.lr")
                grads, _ = layer.backward(K.token_mean_backward(dpooled, out.shape[1]), cache, rng_round)
                _update(layer, grads, opt, lr, prec, rng_round, l)
                losses[l] += loss
                h = out                                    # the next layer's input: detached
            step += 1
        sec = time.perf_counter() - t0
        history.append(dict(epoch=epoch + 1, loss=[round(float(v) / steps, 4) for v in losses], seconds=round(sec, 1)))
        log(f"epoch {epoch + 1}: loss per layer {history[-1]['loss']}  {sec:.1f} s")
    return history


def train_head(f_train, y_train, f_test, y_test, hw, classes, epochs, batch=64, lr=1e-2):
    """Stage 2: a linear head with cross-entropy on frozen features; returns (test accuracy, per-epoch accs)."""
    prec, seed = hw.precision, hw.training.seed
    head = QuantBlock(0, Block(type="dense", units=classes), (f_train.shape[1],), prec,
                      np.random.default_rng([seed, 7]), head=True)
    opt = make_optimizer("adam", 0.0)
    rng = np.random.default_rng([seed, 8])
    n = len(y_train)
    steps = math.ceil(n / batch)
    accs = []
    for epoch in range(epochs):
        order = rng.permutation(n)
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            logits, cache = head.forward(f_train[idx], train=True)
            _, g = cross_entropy(logits, y_train[idx])
            gw = head.grad_weight(head.backward_pre(g, cache), cache, rng)
            head.master.apply(_delta(opt, "head", gw, cosine_lr(lr, epoch * steps + s, epochs * steps), rng),
                              prec.rounding, rng)
            head.requantize()
        logits, _ = head.forward(f_test, train=False)
        accs.append(float((logits.argmax(axis=1) == y_test).mean()))
    return accs[-1], accs


def _limit_threads(n: int):
    """Small per-call tensors: thread hand-offs cost more than they save, and the cores are shared."""
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, n)))
    threadpool_limits(limits=max(1, n))


def run(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m chipsim.engine.cff_standalone", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="hwconfig YAML (e.g. hwconfigs/44core_4bit.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--float", action="store_true", help="all precision widths 32 (the float reference)")
    ap.add_argument("--temperature", type=float, default=0.1, help="contrastive temperature tau")
    ap.add_argument("--margin", type=float, nargs="+", default=[0.0],
                    help="marginal-contrastive margin m per layer (one value: every layer)")
    ap.add_argument("--max-shift", type=int, default=2, help="random translation of each view, pixels")
    ap.add_argument("--softmax-bits", type=int, default=TransformerWidths.softmax_bits)
    ap.add_argument("--attn-bits", type=int, default=None, help="Q/K/V operand width (default activation_bits)")
    ap.add_argument("--output-bits", type=int, default=None, help="layer output width (default activation_bits)")
    ap.add_argument("--input-bits", type=int, default=TransformerWidths.input_bits,
                    help="pixel width, the patch projection's operand")
    ap.add_argument("--head-epochs", type=int, default=100)
    ap.add_argument("--untrained", action="store_true", help="skip stage 1: the random-encoder baseline")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and numba threads (1: fastest on a shared 2-core box, measured 15x)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    _limit_threads(a.threads)
    overrides = list(a.set) + ([f"precision.{k}=32" for k in FLOAT_BITS] if a.float else [])
    cfg = load_config(a.config, overrides)
    hw, model = cfg.hw, cfg.model
    if not model.is_transformer:
        raise ChipsimError(f"{a.config}: workload.model: {model.name} has no vit blocks; "
                           "use --set workload.model=models/vit_tiny.yaml")
    if len(a.margin) not in (1, model.depth):
        raise ChipsimError(f"--margin: give 1 value or {model.depth} (one per layer), got {len(a.margin)}")
    margins = a.margin * model.depth if len(a.margin) == 1 else a.margin
    wl = hw.workload
    data = load_dataset(wl.dataset, wl.data_root, wl.download, wl.train_limit, wl.test_limit, hw.training.seed)
    widths = TransformerWidths(a.softmax_bits, a.attn_bits, a.output_bits, a.input_bits)
    layers = build_encoder(model.blocks, data.input_shape, hw.precision,
                           np.random.default_rng([hw.training.seed, 1]), widths)
    print(f"{model.name} on {data.name} ({len(data.y_train)} train), widths {layers[0].widths}, "
          f"W{hw.precision.weight_bits}/A{hw.precision.activation_bits}/G{hw.precision.gradient_bits}", flush=True)
    if a.untrained:
        calibrate(layers, data.x_train[:2 * hw.training.batch_size])
        history = []
    else:
        history = train_encoder(layers, data, hw, a.temperature, margins, a.max_shift,
                                log=lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    f_tr, f_te = encode(layers, data.x_train), encode(layers, data.x_test)
    acc, curve = train_head(f_tr, data.y_train, f_te, data.y_test, hw, data.num_classes, a.head_epochs)
    out = dict(model=model.name, config=cfg.path, overrides=overrides, widths=str(layers[0].widths),
               temperature=a.temperature, margins=margins, max_shift=a.max_shift, epochs=history,
               head_epochs=a.head_epochs, head_curve=[round(c, 4) for c in curve], test_accuracy=acc,
               head_seconds=round(time.perf_counter() - t0, 1))
    print(f"test accuracy {acc:.4f} (head after epochs 1/5/10/last: "
          f"{[round(curve[i], 4) for i in (0, 4, 9) if i < len(curve)]} / {curve[-1]:.4f})", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return out


def main(argv=None) -> int:
    try:
        run(argv)
    except ChipsimError as exc:
        print(f"cff_standalone: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
