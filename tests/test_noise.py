"""Noise kinds: constants, monotone strength, seeding, per-core draws, restoration."""
import numpy as np
import pytest

from chipsim.config import Precision
from chipsim.engine.network import Network
from chipsim.modelspec import Block, ModelSpec
from chipsim.noise import (IMPULSE_AMOUNT, SHOT_C, NoiseSpec, corrupt_inputs, gradient_noise,
                           perturbed_weights)

X = np.random.default_rng(0).uniform(0, 1, (200, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("kind", ["shot", "impulse"])
def test_input_noise_grows_with_level_and_stays_in_range(kind):
    errs = []
    for level in range(6):
        y = corrupt_inputs(X, NoiseSpec(kind, level, "mnist-like", seed=3))
        assert y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
        errs.append(float(np.abs(y - X).mean()))
    assert errs[0] == 0.0
    assert all(a < b for a, b in zip(errs, errs[1:])), errs


def test_impulse_hits_the_documented_fraction():
    for level in (1, 5):
        y = corrupt_inputs(X, NoiseSpec("impulse", level, "cifar-like", seed=1))
        hit = ((y == 0) | (y == 1)) & (y != X)
        assert abs(hit.mean() - IMPULSE_AMOUNT["cifar-like"][level - 1]) < 0.01


def test_shot_noise_is_poisson_with_the_documented_photon_count():
    c = SHOT_C["mnist-like"][2]
    flat = np.full((1, 1, 200, 200), 0.5, np.float32)
    y = corrupt_inputs(flat, NoiseSpec("shot", 3, "mnist-like", seed=2))
    # Var[Poisson(0.5 c) / c] = 0.5 / c
    assert abs(y.var() - 0.5 / c) / (0.5 / c) < 0.1


def test_noise_is_seeded():
    a = corrupt_inputs(X, NoiseSpec("shot", 4, seed=7))
    b = corrupt_inputs(X, NoiseSpec("shot", 4, seed=7))
    c = corrupt_inputs(X, NoiseSpec("shot", 4, seed=8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_kind_or_level_is_refused():
    with pytest.raises(ValueError, match="allowed"):
        NoiseSpec("thermal", 1)
    with pytest.raises(ValueError, match="0-5"):
        NoiseSpec("shot", 6)


def test_mismatch_is_relative_per_core_and_has_fixed_gains():
    spec = NoiseSpec("mismatch", 3, gain_std=0.2, seed=0)
    hook = gradient_noise(spec, {0: [(0, 4), (4, 8)]})
    g = np.ones((8, 3), np.float32)
    rng = np.random.default_rng(0)
    a = hook(0, g, rng)
    noise_std = float((a - a.mean(axis=1, keepdims=True)).std())
    assert 1.0 < noise_std < 3.0                   # sigma = 2.0 x rms(g) = 2.0 at level 3
    zero = np.zeros((8, 3), np.float32)
    b, c = hook(0, g * 0 + 1, np.random.default_rng(5)), hook(0, g * 0 + 1, np.random.default_rng(5))
    assert np.array_equal(b, c)
    assert gradient_noise(NoiseSpec("mismatch", 0)) is None
    assert np.isfinite(hook(0, zero, rng)).all()


@pytest.mark.parametrize("kind", ["read", "stuck"])
def test_weight_noise_is_applied_on_codes_and_restored(kind):
    net = Network(ModelSpec(name="m", blocks=(Block(type="dense", units=6),)), (1, 4, 4), 3,
                  Precision(weight_bits=4), seed=0, with_label=True, with_head=False)
    before = net.blocks[0].wq.copy()
    with perturbed_weights(net, NoiseSpec(kind, 5, seed=1)):
        during = net.blocks[0].wq
        assert not np.array_equal(during, before)
        assert np.array_equal(during, np.rint(during)) and np.abs(during).max() <= 7   # still 4-bit codes
    assert np.array_equal(net.blocks[0].wq, before)
