"""The update's fused kernels (chipsim.kernels.update, quant.passes._fixed_point_add) give the bits of the
numpy expressions they replaced, written out here as the optimizer and the master store had them."""
import numpy as np
import pytest

from chipsim.kernels.update import adam_moments, adam_step, finite_absmax
from chipsim.quant import FixedPoint
from chipsim.quant.codes import _round
from chipsim.quant.passes import _fixed_point_add


def _spread(rng, n):
    """float32 values over many binades, zeros and negative zeros among them."""
    x = (rng.standard_normal(n) * np.exp2(rng.uniform(-30, 10, n))).astype(np.float32)
    x[::17] = 0.0
    x[5::23] = -0.0
    return x


def _same(a, b) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("t", [1, 2, 1000])
@pytest.mark.parametrize("b1, b2, eps, lr", [(0.9, 0.999, 1e-8, 1e-3), (0.5, 0.9, 0.0, 0.37), (0.0, 0.0, 1e-8, 2)])
def test_adam_kernels_are_the_numpy_expressions(t, b1, b2, eps, lr):
    """Python-float scalars against float32 arrays: numpy computes in float32 (each scalar cast once);
    the kernels get those float32 scalars. eps = 0 with v = 0 divides 0 by 0: NaN on both sides."""
    rng = np.random.default_rng(t)
    n = 5003
    g, m_old = _spread(rng, n), _spread(rng, n)
    s = np.abs(_spread(rng, n))
    g[7], m_old[7], s[7] = 0.0, 0.0, 0.0                     # v = 0 here
    m_np = b1 * m_old + (1 - b1) * g
    v_np = b2 * s * s + (1 - b2) * g * g
    with np.errstate(divide="ignore", invalid="ignore"):
        step_np = (-lr * (m_np / (1 - b1 ** t)) / (np.sqrt(v_np / (1 - b2 ** t)) + eps)).astype(np.float32)
    m, v, sv, out = (np.empty(n, np.float32) for _ in range(4))
    f32 = np.float32
    adam_moments(g, m_old, s, f32(b1), f32(1 - b1), f32(b2), f32(1 - b2), m, v, sv)
    adam_step(m, v, f32(1 - b1 ** t), f32(1 - b2 ** t), f32(-lr), f32(eps), out)
    assert _same(m, m_np) and _same(v, v_np) and _same(sv, np.sqrt(v_np))
    assert _same(out, step_np)
    assert (eps == 0) == bool(np.isnan(out[7]))


def test_finite_absmax_is_isfinite_and_max_abs():
    rng = np.random.default_rng(3)
    d = _spread(rng, 1001)
    assert finite_absmax(d) == (True, np.max(np.abs(d)))
    for bad in (np.nan, np.inf, -np.inf):
        e = d.copy()
        e[500] = bad
        assert finite_absmax(e)[0] is False


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_fixed_point_add_is_the_numpy_update(rounding):
    """``clip(q + round(float64(delta) / step), -qmax, qmax)`` and its float32 value, the uniforms of a
    stochastic rounding drawn from the same seed; some weights pushed past +-qmax to saturate."""
    rng = np.random.default_rng(4)
    q = rng.integers(-32767, 32768, 4000).astype(np.int64)
    step, qmax = 2.0 ** -12, 32767
    delta = (_spread(rng, 4000) * np.float32(step * 50)).astype(np.float32)
    delta[:10] = np.float32(step * 70000)
    delta[10:20] = np.float32(-step * 70000)
    seed = 12345
    want_q = np.clip(q + _round(delta.astype(np.float64) / step, rounding, np.random.default_rng(seed)).astype(np.int64),
                     -qmax, qmax)
    s = int(np.random.default_rng(seed).integers(0, 2 ** 63)) if rounding == "stochastic" else 0
    got_q, value = np.empty_like(q), np.empty(q.shape, np.float32)
    _fixed_point_add(q, delta, step, qmax, rounding == "stochastic", s, got_q, value)
    assert np.array_equal(got_q, want_q) and got_q[:10].tolist() == [qmax] * 10
    assert _same(value, (want_q * step).astype(np.float32))


def test_master_value_is_cached_read_only_and_follows_the_codes():
    fp = FixedPoint(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), 16)
    v = fp.value
    assert fp.value is v and not v.flags.writeable
    out = fp.apply(np.full((3, 4), 0.01, np.float32), "nearest")
    assert fp.value is out and np.array_equal(out, (fp.q * fp.step).astype(np.float32))
    fp.q = fp.q * 0                                    # new codes: a new value
    assert not fp.value.any()
