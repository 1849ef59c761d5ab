"""Noise kinds: constants, monotone strength, seeding, per-core draws, restoration."""
import numpy as np
import pytest

from chipsim.config import Precision
from chipsim.engine.networks.network import Network
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
    """Each core (a slice of a layer's units) has its own fixed gain, and draws its own noise, of a std
    relative to the layer's gradient rms."""
    slices = {0: [(0, 300), (300, 600), (600, 1000)]}
    g = np.random.default_rng(1).normal(size=(1000, 3)).astype(np.float32)
    g[np.abs(g) < 0.1] = 0.5             # (a - b) / g below is float32 arithmetic: keep g away from 0
    with_gains = gradient_noise(NoiseSpec("mismatch", 3, gain_std=0.2, seed=0), slices)
    no_gains = gradient_noise(NoiseSpec("mismatch", 3, gain_std=0.0, seed=0), slices)
    # the same rng stream gives the same noise draws, so the difference is (gain_k - 1) * g on core k's units
    a, b = with_gains(0, g, np.random.default_rng(5)), no_gains(0, g, np.random.default_rng(5))
    gain = 1 + (a - b) / g
    per_core = [gain[lo:hi] for lo, hi in slices[0]]
    for k, part in enumerate(per_core):
        np.testing.assert_allclose(part, part.flat[0], rtol=1e-4, err_msg=f"core {k}: one gain for its units")
    values = [part.flat[0] for part in per_core]
    assert len(set(np.round(values, 6))) == 3 and all(v != 1.0 for v in values)     # a gain of its own each
    # fixed for the run: a later step (other noise) sees the same gains
    a2, b2 = with_gains(0, g, np.random.default_rng(8)), no_gains(0, g, np.random.default_rng(8))
    np.testing.assert_allclose(1 + (a2 - b2) / g, gain, rtol=1e-4)
    # the noise: sigma = 2.0 x rms(layer gradient) at level 3, the same std on every core, drawn per unit
    noise = b - g
    rms = float(np.sqrt(np.mean(g.astype(np.float64) ** 2)))
    for lo, hi in slices[0]:
        assert abs(noise[lo:hi].std() / (2.0 * rms) - 1) < 0.1
    assert len(np.unique(noise)) == noise.size                       # no draw shared between units or cores
    # relative: a 10x larger gradient gets 10x the noise from the same stream
    np.testing.assert_allclose(no_gains(0, 10 * g, np.random.default_rng(5)) - 10 * g, 10 * noise, rtol=1e-3,
                               atol=1e-3)
    # seeded, level 0 is off, and an all-zero gradient stays finite
    np.testing.assert_array_equal(with_gains(0, g, np.random.default_rng(5)), with_gains(0, g, np.random.default_rng(5)))
    assert gradient_noise(NoiseSpec("mismatch", 0)) is None
    assert np.isfinite(with_gains(0, np.zeros_like(g), np.random.default_rng(0))).all()


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
