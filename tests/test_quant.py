"""Tests for chipsim.quant: ranges, scales, rounding, fixed-point storage."""
import numpy as np
import pytest

from chipsim import quant as Q

LOW_BITS = [2, 3, 4, 5, 6, 7, 8, 16]


def _is_pow2(s):
    s = np.asarray(s, dtype=np.float64)
    m, _ = np.frexp(s)
    return bool(np.all(m == 0.5))


@pytest.mark.parametrize("bad", [0, 1, 9, 10, 12, 15, 24, 33, 64, 8.0, "8", None, True])
def test_invalid_bits_raise_with_allowed_set(bad):
    fns = [
        lambda: Q.quantize_weights(np.ones((2, 3)), bad),
        lambda: Q.quantize_activations(np.ones(3), bad, 1.0),
        lambda: Q.quantize_signed(np.ones(3), bad),
        lambda: Q.ClippedScale(bad, signed=True),
        lambda: Q.FixedPoint(np.ones(3), bad),
        lambda: Q.to_fixed_point(np.ones(3), bad, 4),
    ]
    for fn in fns:
        with pytest.raises(ValueError, match=r"\(2, 3, 4, 5, 6, 7, 8, 16, 32\)"):
            fn()


@pytest.mark.parametrize("bits", LOW_BITS)
@pytest.mark.parametrize("mode", ["float", "pow2"])
def test_quantize_weights_range_and_per_channel_scale(bits, mode):
    rng = np.random.default_rng(bits)
    # channels with very different magnitudes
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    w *= np.array([1e-3, 0.1, 1.0, 10.0, 300.0], np.float32)[:, None, None, None]
    w_int, scale = Q.quantize_weights(w, bits, mode)
    qmax = 2 ** (bits - 1) - 1
    assert w_int.dtype == np.float32 and scale.dtype == np.float32
    assert scale.shape == (5,)
    assert np.array_equal(w_int, np.round(w_int))
    assert w_int.min() >= -qmax and w_int.max() <= qmax
    max_abs = np.abs(w.reshape(5, -1)).max(1)
    if mode == "float":
        np.testing.assert_allclose(scale, max_abs / qmax, rtol=1e-6)
        assert np.all(np.abs(w_int).reshape(5, -1).max(1) == qmax)
    else:
        assert _is_pow2(scale)
        assert np.all(scale >= max_abs / qmax * (1 - 1e-6))   # rounded UP
        assert np.all(scale < 2 * max_abs / qmax)
    deq = w_int * scale[:, None, None, None]
    assert np.all(np.abs(deq - w) <= scale[:, None, None, None] * 0.5 * (1 + 1e-5))


def test_quantize_weights_zero_channel_and_32_bits():
    w = np.zeros((2, 4), np.float32)
    w[1] = [1, -2, 3, 0.5]
    w_int, scale = Q.quantize_weights(w, 4, "pow2")
    assert np.all(w_int[0] == 0) and scale[0] == 1.0
    w32, s32 = Q.quantize_weights(w, 32)
    assert np.array_equal(w32, w) and np.array_equal(s32, np.ones(2, np.float32))


def test_pow2_exact_powers_are_kept():
    # max |w| / qmax exactly a power of two must not be doubled
    w = np.array([[7 * 0.25, -1.0]], np.float32)
    _, scale = Q.quantize_weights(w, 4, "pow2")
    assert scale[0] == 0.25


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_quantize_activations_unsigned_range(bits):
    x = np.linspace(0, 10, 101).astype(np.float32)
    qmax = 2 ** bits - 1
    scale = 5.0 / qmax                          # values above 5 saturate
    x_int = Q.quantize_activations(x, bits, scale)
    assert x_int.dtype == np.float32
    assert x_int.min() == 0 and x_int.max() == qmax
    assert np.array_equal(x_int, np.clip(np.round(x / np.float32(scale)), 0, qmax))
    assert np.array_equal(Q.quantize_activations(x, 32, scale), x)


def test_clipped_scale_is_aciq_optimal_and_an_ema():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(200_000)
    s = Q.ClippedScale(4, signed=True)
    codes, scale = s.quantize(z, update=True)             # first batch initialises the threshold
    np.testing.assert_allclose(scale, 2.55 * z.std() / 7, rtol=1e-2)
    assert codes.min() == -7 and codes.max() == 7 and np.array_equal(codes, np.rint(codes))
    # for Gaussian data the ACIQ clip beats a max-based scale on mean-square error
    mse_clip = np.mean((codes * scale - z) ** 2)
    max_scale = np.abs(z).max() / 7
    mse_max = np.mean((np.clip(np.rint(z / max_scale), -7, 7) * max_scale - z) ** 2)
    assert mse_clip < 0.5 * mse_max
    first = s.running
    s.quantize(100 * z, update=True)                      # one outlier batch moves it by 1 - momentum
    assert s.running == pytest.approx(0.9 * first + 0.1 * 100 * first, rel=1e-3)
    u = Q.ClippedScale(4, signed=False)                   # post-ReLU: sigma = sqrt(2) * rms
    r = np.maximum(z, 0)
    _, us = u.quantize(r, update=True)
    np.testing.assert_allclose(us, 2.55 * np.sqrt(2) * np.sqrt(np.mean(r ** 2)) / 15, rtol=1e-6)
    wide = Q.ClippedScale(16, signed=True)                # above 8 bits the max is kept
    _, ws = wide.quantize(z, update=True)
    np.testing.assert_allclose(ws, np.abs(z).max() / 32767, rtol=1e-6)
    p = Q.ClippedScale(4, signed=True, scale_mode="pow2")
    _, ps = p.quantize(z, update=True)
    assert _is_pow2(ps) and ps >= 2.55 * z.std() / 7 * 0.99
    x = np.array([1.25, 7.0], np.float32)
    assert np.array_equal(Q.ClippedScale(32, signed=False).quantize(x, update=True)[0], x)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_quantize_signed_range(bits, rounding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    x_int, scale = Q.quantize_signed(x, bits, rounding, rng)
    qmax = 2 ** (bits - 1) - 1
    assert x_int.min() >= -qmax and x_int.max() <= qmax
    assert np.array_equal(x_int, np.round(x_int))
    np.testing.assert_allclose(scale, np.abs(x).max() / qmax, rtol=1e-6)
    assert np.all(np.abs(x_int * scale - x) <= scale * (1 + 1e-5))
    _, s2 = Q.quantize_signed(x, bits, rounding, rng, scale_mode="pow2")
    assert _is_pow2(s2)


def test_stochastic_rounding_unbiased_and_reproducible():
    x = np.array([1.0, 0.3, -0.55, 0.01, -0.999, 0.5], np.float32)
    rng = np.random.default_rng(123)
    draws = np.stack([Q.quantize_signed(x, 4, "stochastic", rng)[0]
                      for _ in range(4000)])
    scale = np.abs(x).max() / 7
    # mean of floor(v + u) is v; std of the mean <= 0.5/sqrt(4000) ~ 0.008
    np.testing.assert_allclose(draws.mean(0), x / scale, atol=0.04)
    a = Q.quantize_signed(x, 4, "stochastic", np.random.default_rng(7))[0]
    b = Q.quantize_signed(x, 4, "stochastic", np.random.default_rng(7))[0]
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="rng"):
        Q.quantize_signed(x, 4, "stochastic", None)
    with pytest.raises(ValueError, match="rounding"):
        Q.quantize_signed(x, 4, "up", None)
    x32, s32 = Q.quantize_signed(x, 32, "stochastic", None)
    assert np.array_equal(x32, x) and s32 == 1.0


def test_to_fixed_point_grid_and_saturation():
    w = np.array([0.1, -0.26, 3.0, -9.0, 0.0], np.float32)
    q = Q.to_fixed_point(w, 4, frac_bits=2)         # step 0.25, max 7*0.25
    assert q.tolist() == [0.0, -0.25, 1.75, -1.75, 0.0]
    assert np.array_equal(Q.to_fixed_point(w, 32, 2), w)


def test_fixed_point_master_weights():
    w0 = np.array([0.5, -0.3, 0.1], np.float32)
    fp = Q.FixedPoint(w0, 8, headroom=4.0)
    assert _is_pow2(fp.step)
    assert fp.step >= 4 * 0.5 / 127 and fp.step < 2 * 4 * 0.5 / 127
    assert fp.frac_bits == -int(np.log2(fp.step))
    np.testing.assert_allclose(fp.value, w0, atol=fp.step / 2)
    v = fp.value.copy()
    # nearest: updates below half a step are lost, above are rounded
    fp.apply(np.full(3, 0.4 * fp.step, np.float32))
    assert np.array_equal(fp.value, v)
    fp.apply(np.full(3, 1.6 * fp.step, np.float32))
    np.testing.assert_array_equal(fp.value, v + 2 * np.float32(fp.step))
    # saturation at +-127 steps
    fp.apply(np.array([1e6, -1e6, 0], np.float32))
    assert fp.value[0] == 127 * fp.step and fp.value[1] == -127 * fp.step
    # stochastic: a 0.25-step update moves the weight by 0.25 steps on average
    rng = np.random.default_rng(0)
    fs = Q.FixedPoint(np.zeros(2000, np.float32), 16)
    for _ in range(20):
        fs.apply(np.full(2000, 0.25 * fs.step, np.float32), "stochastic", rng)
    assert fs.value.mean() / fs.step == pytest.approx(5.0, abs=0.15)
    # 32 bits: plain float32 add
    f32 = Q.FixedPoint(w0, 32)
    f32.apply(np.array([1e-7, 0, 0], np.float32))
    assert f32.value.dtype == np.float32
    assert f32.value[0] == np.float32(0.5) + np.float32(1e-7)
