"""Hardware-related noise at levels L0 (clean) to L5, each seeded and documented.

Input corruptions follow Hendrycks & Dietterich (2019), with their constants
for CIFAR-like 32x32 data and MNIST-C's for MNIST-like data:

* ``shot`` (photon shot noise): x' = clip(Poisson(x * c) / c, 0, 1); fewer
  photons (smaller c) is noisier.
* ``impulse`` (salt-and-pepper sensor noise): a fraction ``amount`` of the
  values is set to 0 or 1 with equal odds (per value, i.e. per colour channel:
  the "colour analogue" of the DF paper).

Device noise acts on the chip itself:

* ``mismatch`` (device mismatch during training, the DF paper's Fig. 4C):
  Gaussian noise added to every layer's weight gradient, with standard
  deviation ``sigma * rms(gradient)`` -- relative, so a level means the same
  signal-to-noise ratio on every layer. Each core draws its own noise for its
  slice, and may have a fixed per-core gain error (``gain_std``): the gradient
  a core computes is scaled by its own N(1, gain_std) factor for the whole run.
* ``read`` (weight read noise at inference): each weight code read from SRAM
  gets N(0, sigma * max|w| of its channel).
* ``stuck`` (stuck-at faults at inference): a fraction of the weight cells,
  drawn per core, reads as 0 (stuck-at-zero) or as the largest code (stuck-at-one).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

KINDS = ("shot", "impulse", "mismatch", "read", "stuck")
LEVELS = (0, 1, 2, 3, 4, 5)

SHOT_C = {"mnist-like": (60, 25, 12, 5, 3), "cifar-like": (500, 250, 100, 75, 50)}
IMPULSE_AMOUNT = {"mnist-like": (0.03, 0.06, 0.09, 0.17, 0.27), "cifar-like": (0.01, 0.02, 0.03, 0.05, 0.07)}
# Our choices (the DF paper's Appendix A.3 with its values is not available):
MISMATCH_SIGMA = (0.5, 1.0, 2.0, 4.0, 8.0)      # x rms of the layer's gradient
READ_SIGMA = (0.02, 0.05, 0.1, 0.2, 0.3)        # x max|w| of the output channel
STUCK_FRACTION = (0.01, 0.02, 0.05, 0.1, 0.2)   # of weight cells


@dataclass(frozen=True)
class NoiseSpec:
    kind: str
    level: int
    data_kind: str = "mnist-like"
    seed: int = 0
    gain_std: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"noise kind {self.kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if self.level not in LEVELS:
            raise ValueError(f"noise level {self.level!r} is not allowed; allowed: 0-5")

    @property
    def applies_to(self) -> str:
        return {"shot": "test inputs", "impulse": "test inputs", "mismatch": "training gradients",
                "read": "inference weights", "stuck": "inference weights"}[self.kind]

    def parameters(self) -> dict:
        """The exact parameters with units, for reports."""
        if self.level == 0:
            return {"kind": self.kind, "level": 0, "description": "clean"}
        i = self.level - 1
        dk = self.data_kind if self.data_kind in SHOT_C else "cifar-like"
        p = {"kind": self.kind, "level": self.level, "seed": self.seed, "applies_to": self.applies_to}
        if self.kind == "shot":
            p.update(photons_per_unit_intensity=SHOT_C[dk][i], constants=dk)
        elif self.kind == "impulse":
            p.update(fraction_of_values=IMPULSE_AMOUNT[dk][i], constants=dk)
        elif self.kind == "mismatch":
            p.update(sigma_relative_to_gradient_rms=MISMATCH_SIGMA[i], per_core_gain_std=self.gain_std)
        elif self.kind == "read":
            p.update(sigma_relative_to_channel_max=READ_SIGMA[i])
        else:
            p.update(fraction_of_weight_cells=STUCK_FRACTION[i], stuck_values="0 or max code, 50/50")
        return p


def corrupt_inputs(x: np.ndarray, spec: NoiseSpec) -> np.ndarray:
    """Shot or impulse noise on images in [0,1]; other kinds and level 0 return x unchanged."""
    if spec.level == 0 or spec.kind not in ("shot", "impulse"):
        return x
    rng = np.random.default_rng([spec.seed, 11, spec.level])
    dk = spec.data_kind if spec.data_kind in SHOT_C else "cifar-like"
    i = spec.level - 1
    if spec.kind == "shot":
        c = SHOT_C[dk][i]
        return np.clip(rng.poisson(x.astype(np.float64) * c) / c, 0, 1).astype(np.float32)
    amount = IMPULSE_AMOUNT[dk][i]
    out = x.copy()
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def gradient_noise(spec: NoiseSpec, slices: dict | None = None):
    """A ``grad_noise(layer, grad, rng) -> grad`` hook for the trainer (device mismatch).

    ``slices`` maps layer -> list of (lo, hi) unit ranges, one per core (from the
    mapping); each core's range draws its own noise and has its own fixed gain.
    Without a mapping each layer counts as one core.
    """
    if spec.kind != "mismatch" or spec.level == 0:
        return None
    sigma = MISMATCH_SIGMA[spec.level - 1]
    gains = {}
    gain_rng = np.random.default_rng([spec.seed, 12])

    def hook(layer: int, grad: np.ndarray, rng) -> np.ndarray:
        ranges = (slices or {}).get(layer) or [(0, grad.shape[0])]
        out = grad.copy()
        rms = float(np.sqrt(np.mean(grad.astype(np.float64) ** 2))) or 1e-12
        for k, (lo, hi) in enumerate(ranges):
            if (layer, k) not in gains:
                gains[(layer, k)] = 1.0 + spec.gain_std * gain_rng.standard_normal() if spec.gain_std else 1.0
            part = out[lo:hi]
            out[lo:hi] = gains[(layer, k)] * part + rng.normal(0.0, sigma * rms, part.shape).astype(np.float32)
        return out

    return hook


@contextlib.contextmanager
def perturbed_weights(net, spec: NoiseSpec):
    """Temporarily perturb the compute weights (codes) for inference: read noise or stuck-at faults."""
    if spec.kind not in ("read", "stuck") or spec.level == 0:
        yield
        return
    rng = np.random.default_rng([spec.seed, 13, spec.level])
    saved = [(b, b.wq) for b in net.layers()]
    try:
        for b in net.layers():
            wq = b.wq.copy()
            flat = wq.reshape(wq.shape[0], -1)
            if spec.kind == "read":
                ch_max = np.abs(flat).max(axis=1, keepdims=True)
                flat += rng.normal(0, 1, flat.shape).astype(np.float32) * READ_SIGMA[spec.level - 1] * ch_max
            else:
                top = np.abs(flat).max() or 1.0
                hit = rng.random(flat.shape) < STUCK_FRACTION[spec.level - 1]
                one = rng.random(flat.shape) < 0.5
                flat[hit & one] = top
                flat[hit & ~one] = 0.0
            bits = b.prec.weight_bits
            if bits != 32:  # the read value is digitised back onto the code grid
                q = 2 ** (bits - 1) - 1
                flat = np.clip(np.rint(flat), -q, q)
            b.wq = flat.reshape(b.wq.shape).astype(np.float32)
        yield
    finally:
        for b, wq in saved:
            b.wq = wq
