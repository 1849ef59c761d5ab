"""The fused and serial kernels of the engine-speed work give exactly what the plain numpy (or
int64) computation they replace gives -- bit for bit, on shapes with tails, ties, -0.0 and NaN.

Bit equality (``tobytes``), not closeness: these kernels replaced numpy expressions inside the
integer engine, and every later step depends on their exact output.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from chipsim import kernels as K
from chipsim import quant as Q
from chipsim.kernels import conv as C
from chipsim.kernels import exact as E
from chipsim.kernels import norm as N
from chipsim.kernels import sums as S
from chipsim.trace.work import open_log

SIZES = list(range(1, 140)) + [255, 256, 257, 1000, 4095, 8193, 65537, 320 * 16 * 14 * 14 + 3]


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _awkward(rng, n):
    """Gaussian float32 with zeros, negative zeros and a scale that varies by size."""
    x = (rng.standard_normal(n) * rng.uniform(0.01, 20)).astype(np.float32)
    x[rng.integers(0, n, max(1, n // 20))] = 0.0
    x[rng.integers(0, n, max(1, n // 20))] = -0.0
    return x


def test_absmax_is_the_max_of_abs_and_ignores_nan():
    rng = np.random.default_rng(0)
    for n in SIZES:
        x = _awkward(rng, n)
        assert Q._absmax(x) == np.abs(x).max()
    x = np.array([0.5, np.nan, -3.0, 1.0, -np.nan], np.float32)
    assert Q._absmax(x) == 3.0                     # NaNs ignored, as the comparison loop did
    assert Q._absmax(np.array([-np.inf, 1.0], np.float32)) == np.inf
    assert Q._absmax(np.array([-0.0, 0.0], np.float32)) == 0.0


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_signed_unsigned_match_the_numpy_formula(signed):
    """Nearest rounding: codes = clip(rint(x * (1/scale))) in float64, scale from max|x|."""
    rng = np.random.default_rng(1)
    for n in (1, 7, 64, 1001, 100003):
        x = _awkward(rng, n)
        x = x if signed else np.abs(x)
        fn = Q.quantize_signed if signed else Q.quantize_unsigned
        codes, scale = fn(x, 8, "nearest")
        qmax = Q.signed_max(8) if signed else Q.unsigned_max(8)
        ref_scale = np.float32(np.abs(x).max() / qmax) if np.abs(x).max() > 0 else np.float32(1)
        assert scale == ref_scale
        ref = np.clip(np.rint(x.astype(np.float64) * (1.0 / np.float64(scale))), -qmax if signed else 0, qmax)
        assert _same(codes, ref.astype(np.float32))


def _splitmix_uniform(seed: int, n: int):
    """u_i of quant._uniform in plain numpy uint64 arithmetic (wrapping multiplies)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0


def test_stochastic_quantize_is_floor_of_value_plus_counter_uniform():
    x = _awkward(np.random.default_rng(2), 5000)
    codes, scale = Q.quantize_signed(x, 8, "stochastic", np.random.default_rng(7))
    seed = int(np.random.default_rng(7).integers(0, 2 ** 63))        # the one draw quantize_signed takes
    v = x.astype(np.float64) * (1.0 / np.float64(scale))
    ref = np.clip(np.floor(v + _splitmix_uniform(seed, x.size)), -127, 127)
    assert _same(codes, ref.astype(np.float32))


def test_mean_square_is_numpys_bit_for_bit():
    rng = np.random.default_rng(3)
    for n in SIZES:
        x = _awkward(rng, n)
        assert Q._mean_square(x) == np.mean(np.square(x, dtype=np.float64))
        if n % 4 == 0:
            x4 = x.reshape(2, 2, -1)
            assert Q._mean_square(x4) == np.mean(np.square(x4, dtype=np.float64))
    strided = _awkward(rng, 300)[::3]                           # not contiguous: numpy itself
    assert Q._mean_square(strided) == np.mean(np.square(strided, dtype=np.float64))


def test_row_sum_squares_and_goodness_are_numpys_bit_for_bit():
    rng = np.random.default_rng(4)
    for shape in ((320, 3136), (90, 1568), (7, 1), (5, 8), (3, 127), (3, 129), (4, 1000), (2, 100003)):
        y = _awkward(rng, int(np.prod(shape))).reshape(shape)
        out = np.empty(shape[0])
        S._row_sum_squares(y, out)
        y64 = y.astype(np.float64)
        assert _same(out, (y64 * y64).sum(axis=1))
        ref = ((y64 * y64).sum(axis=1) / y.shape[1]).astype(np.float32)
        assert _same(K.goodness(y), ref)
        assert _same(K.goodness(y.astype(np.float64)), ref)     # the numpy fallback agrees


def test_vectorised_leaves_round_as_numpys_pairwise_sum():
    """The 8-lane leaf (``sums._squares8``) must round every partial sum as numpy's scalar leaf does.
    Values spread over 2**-40 .. 2**40 make nearly every float64 addition round, so an addition done in
    another order, or fused with its multiply, would show. Every length 1-300 (leaves with and without a
    tail, trees of one to three levels) and whole rows, against numpy; then an inf and a NaN."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(4000) * np.exp2(rng.uniform(-40, 40, 4000))).astype(np.float32)
    for n in range(1, 301):
        got = S._pairwise_sum_squares(x[:n], 0, n)
        want = np.square(x[:n], dtype=np.float64).sum()
        assert got == want, n
    rows = x[:3900].reshape(13, 300)
    out = np.empty(13)
    S._row_sum_squares(rows, out)
    assert _same(out, np.square(rows, dtype=np.float64).sum(axis=1))
    y = x[:200].copy()
    y[77] = np.inf
    assert S._pairwise_sum_squares(y, 0, 200) == np.inf
    y[5] = np.nan
    assert np.isnan(S._pairwise_sum_squares(y, 0, 200))


@pytest.mark.parametrize("signed", [True, False])
def test_clipped_scale_divide_round_clip_is_numpys(signed):
    rng = np.random.default_rng(5)
    lo, hi = (-7, 7) if signed else (0, 15)
    for n in SIZES[::7] + [100003]:
        x = _awkward(rng, n)
        x[0] = np.nan if n > 3 else x[0]
        for scale in (np.float32(0.37), np.float32(1e-3), np.float32(3.0)):
            ref = np.clip(np.rint(x / scale), lo, hi).astype(np.float32)
            assert _same(Q._divide_round_clip(x, scale, lo, hi), ref)   # incl. the sign of -0.0, NaN
            # the values the codes stand for, made in the same pass: codes * scale in float32
            assert _same(Q._divide_round_clip(x, scale, lo, hi, True), ref * scale)
    s = Q.ClippedScale(4, signed=signed)
    z = rng.standard_normal((32, 3, 5, 5)).astype(np.float32)
    codes, scale = s.quantize(z if signed else np.abs(z), update=True)
    ref = np.clip(np.rint((z if signed else np.abs(z)) / scale), lo, hi).astype(np.float32)
    assert _same(codes, ref)


def _bn_stats_one_channel_at_a_time(x):
    """The statistics summed channel by channel, sample by sample, in float64 (np.cumsum adds in
    sequence), as the kernel did before it summed four channels side by side."""
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    mean, var = np.empty(c), np.empty(c)
    for ci in range(c):
        v = x3[:, ci].reshape(-1).astype(np.float64)
        mean[ci] = np.cumsum(v)[-1] / v.size
        d = x3[:, ci].reshape(-1) - mean[ci]
        var[ci] = np.cumsum(d * d)[-1] / v.size
    return mean, var


@pytest.mark.parametrize("shape", [(320, 2, 28, 28), (9, 6, 7, 3), (7, 5, 4, 4), (33, 1568), (5, 3), (4, 1)])
def test_batchnorm_forward_is_the_numpy_expression_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    mean, var = N._bn_stats(N._as_ncs(x))
    rm, rv = _bn_stats_one_channel_at_a_time(x)
    assert _same(mean, rm) and _same(var, rv)
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    y, cache = K.batchnorm_train_forward(x, gamma, beta)
    inv_std = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    b = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - mean.astype(np.float32).reshape(b)) * inv_std.reshape(b)
    assert _same(cache.xhat, xhat)
    assert _same(y, (xhat * gamma.reshape(b) + beta.reshape(b)).astype(np.float32))


@pytest.mark.parametrize("shape, k, s", [((6, 3, 8, 8), 2, 2), ((4, 2, 9, 7), 2, 2), ((3, 2, 9, 9), 3, 3),
                                         ((2, 3, 8, 8), 3, 2)])
def test_maxpool_of_relu_equals_relu_then_pool(shape, k, s):
    """Values and indices, with ties (integer inputs), -0.0 and NaN among the inputs."""
    rng = np.random.default_rng(int(np.prod(shape)))
    x = rng.integers(-3, 4, shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = -0.0
    x.reshape(-1)[::37] = np.nan
    y1, i1 = K.maxpool2d_forward(K.relu_forward(x), k, s)
    y2, i2 = K.maxpool2d_forward(x, k, s, relu=True)
    assert _same(y1, y2) and _same(i1, i2)
    finite = np.nan_to_num(x, nan=0.0)
    ty, ti = F.max_pool2d(torch.from_numpy(np.maximum(finite, 0)), k, s, return_indices=True)
    y3, i3 = K.maxpool2d_forward(finite, k, s, relu=True)
    assert np.array_equal(y3, ty.numpy()) and np.array_equal(i3, ti.numpy())


def test_fused_relu_pool_logs_the_relu_and_the_pool():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    with open_log() as log:
        K.maxpool2d_forward(x, 2, 2, relu=True)
    with open_log() as ref:
        K.maxpool2d_forward(K.relu_forward(x), 2, 2)
    assert log.items == ref.items


def _int_conv(x, w, p):
    """Plain int64 reference of a stride-1 cross-correlation."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = h + 2 * p - kh + 1, wd + 2 * p - kw + 1
    y = np.zeros((n, o, ho, wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + ho, j:j + wo], w[:, :, i, j].astype(np.int64))
    return y


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_forward_chunked_and_rescaled_is_exact(bits, threads, monkeypatch):
    """Chunks of a few samples (a small FORWARD_CHUNK_BYTES, single-threaded BLAS) give the exact
    integers; ``out_scale`` gives (acc * scale).astype(float32) of them, on each accumulation path."""
    rng = np.random.default_rng(bits)
    amax, wmax = Q.signed_max(bits), Q.signed_max(bits)
    x = rng.integers(-amax, amax + 1, (7, 3, 9, 8)).astype(np.float32)
    w = rng.integers(-wmax, wmax + 1, (5, 3, 3, 3)).astype(np.float32)
    scale = rng.uniform(0.001, 2.0, 5).astype(np.float32)
    monkeypatch.setattr(C, "FORWARD_CHUNK_BYTES", 4 * 27 * 90 * 2)          # about 2 samples a chunk
    ref = _int_conv(x, w, 1)
    with threadpool_limits(threads):
        assert E.blas_threads() == threads
        if threads == 1:
            assert 1 < C._chunk_samples(27, 90, 7) < 7
        acc = K.conv2d_forward(x, w, 1, 1, int_bound=(amax, wmax))
        y, cols = K.conv2d_forward(x, w, 1, 1, int_bound=(amax, wmax), keep_cols=True, out_scale=scale)
    assert np.array_equal(acc, ref)
    assert _same(y, (acc * scale.reshape(1, -1, 1, 1)).astype(np.float32))
    assert _same(cols, C._im2col_grid(C._pad_planes(x, 1, 1, C._grid_pitch(8, 3, 1), 2), 7, 3, 3, 3, 9, 9))


def test_conv_forward_out_scale_with_stride_two_and_floats():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    for stride, pad in ((2, 1), (1, 1)):
        acc = K.conv2d_forward(x, w, stride, pad)
        y = K.conv2d_forward(x, w, stride, pad, out_scale=scale)
        assert _same(y, (acc * scale.reshape(1, -1, 1, 1)).astype(np.float32))


# ---------------------------------------------------------------- int8 codes (``as_int8``)
def _int8_of(ref):
    """The int8 codes a float32 code array stands for (its -0.0 becomes 0: int8 has no sign of zero)."""
    assert np.array_equal(ref, np.rint(ref)) and np.abs(ref).max(initial=0) <= 127
    return ref.astype(np.int8)


@pytest.mark.parametrize("signed", [True, False])
def test_divide_round_clip_as_int8_gives_the_float_codes(signed):
    """``as_int8``: the same integers as the float32 codes, as int8, on sizes across the kernel's chunks of
    INT_CHUNK (4096) elements; a NaN anywhere gives the float32 codes instead (which carry it)."""
    rng = np.random.default_rng(11)
    lo, hi = (-7, 7) if signed else (0, 15)
    for n in (1, 5, 4095, 4096, 4097, 3 * 4096 + 17, 100003):
        x = _awkward(rng, n)
        for scale in (np.float32(0.37), np.float32(1e-3)):
            ref = np.clip(np.rint(x / scale), lo, hi).astype(np.float32)
            assert _same(Q._divide_round_clip(x, scale, lo, hi, as_int8=True), _int8_of(ref))
        x[n - 1] = np.nan                       # in the last chunk: every chunk's flag counts
        ref = np.clip(np.rint(x / np.float32(0.37)), lo, hi).astype(np.float32)
        assert _same(Q._divide_round_clip(x, np.float32(0.37), lo, hi, as_int8=True), ref)
    # values (times_scale) and codes that do not fit int8 stay float32
    x = _awkward(rng, 100)
    assert Q._divide_round_clip(x, np.float32(0.01), 0, 255, as_int8=True).dtype == np.float32
    assert Q._divide_round_clip(x, np.float32(0.3), -7, 7, True, as_int8=True).dtype == np.float32


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_quantize_signed_as_int8_gives_the_float_codes(rounding):
    """Nearest and stochastic: the same codes as int8, from the same one draw of the caller's generator
    (the uniforms are indexed by the element's position in the whole tensor, across chunks); at 16 bits,
    or with a NaN, float32 codes."""
    x = _awkward(np.random.default_rng(12), 3 * 4096 + 5)
    for bits in (4, 8):
        want, ws = Q.quantize_signed(x, bits, rounding, np.random.default_rng(3))
        got, gs = Q.quantize_signed(x, bits, rounding, np.random.default_rng(3), as_int8=True)
        assert gs == ws and _same(got, _int8_of(want))
    assert Q.quantize_signed(x, 16, rounding, np.random.default_rng(3), as_int8=True)[0].dtype == np.float32
    x[4096] = np.nan
    want = Q.quantize_signed(x, 8, rounding, np.random.default_rng(3))[0]
    assert _same(Q.quantize_signed(x, 8, rounding, np.random.default_rng(3), as_int8=True)[0], want)


def test_streaming_scales_as_int8_give_the_float_codes():
    """The streaming quantizers (``mapping.statistics: running``) too, and their estimates move alike."""
    from chipsim.quant.streaming import StreamErrorScale, StreamScale
    rng = np.random.default_rng(13)
    z = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    a, b = StreamScale(4, signed=True), StreamScale(4, signed=True)
    for _ in range(2):
        want, ws = a.quantize(z, update=True)
        got, gs = b.quantize(z, update=True, as_int8=True)
        assert gs == ws and a.running == b.running and _same(got, _int8_of(want))
    a, b = StreamErrorScale(8, "stochastic"), StreamErrorScale(8, "stochastic")
    for seed in (1, 2):
        want, ws = a.quantize(z, np.random.default_rng(seed))
        got, gs = b.quantize(z, np.random.default_rng(seed), as_int8=True)
        assert gs == ws and a.running == b.running and _same(got, _int8_of(want))


def _quantize_weights_numpy(w, bits, scale_mode):
    """quantize_weights as it was written in numpy (the fused kernels replaced these five passes)."""
    n_out, qmax = w.shape[0], 2 ** (bits - 1) - 1
    max_abs = np.abs(w.reshape(n_out, -1)).max(axis=1)
    scale = Q.codes._finish_scale(max_abs, qmax, scale_mode)
    w_int = np.clip(np.rint(w / scale.reshape((n_out,) + (1,) * (w.ndim - 1))), -qmax, qmax)
    return w_int.astype(np.float32), scale


@pytest.mark.parametrize("shape", [(16, 2, 3, 3), (256, 1568), (1, 7), (5, 4097)])
@pytest.mark.parametrize("scale_mode", ["float", "pow2"])
def test_quantize_weights_is_the_numpy_expression(shape, scale_mode):
    """The weights' per-channel codes and scales, bit for bit, with -0.0, zeros rows, ties and a NaN row."""
    rng = np.random.default_rng(sum(shape))
    w = _awkward(rng, int(np.prod(shape))).reshape(shape)
    w[0] = 0.0                                            # an all-zero row: scale 1
    if shape[0] > 2:
        w[1].reshape(-1)[:3] = (0.5, -1.5, 2.5)           # halves: rint's ties to even
        w[2].reshape(-1)[1] = np.nan
    for bits in (2, 4, 8, 16):
        got, got_s = Q.quantize_weights(w, bits, scale_mode)
        want, want_s = _quantize_weights_numpy(w, bits, scale_mode)
        assert _same(got, want) and _same(got_s, want_s)


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (16, True), (16, False), (4, True)])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_quant_store_codes_are_the_float_codes_cast(bits, signed, rounding):
    """A QuantStore's codes, now made in its integer type in one pass, are the float32 codes its quantizer
    made, cast, as before; and its load is ``codes.astype(float32) * scale``. A NaN keeps the old path."""
    x = _awkward(np.random.default_rng(bits), 3 * 4096 + 9)
    x = x if signed else np.abs(x)
    for bad in (False, True):
        if bad:
            x[5000] = np.nan
        st = Q.QuantStore(x.shape, bits, signed=signed, rounding=rounding)
        fn = Q.quantize_signed if signed else Q.quantize_unsigned
        with np.errstate(invalid="ignore"):                  # a NaN cast to an integer, on both sides
            st.store(x, np.random.default_rng(4))
            want, want_s = fn(x, bits, rounding, np.random.default_rng(4))
            want = want.astype(st.codes.dtype)
        assert st.codes.dtype == {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16,
                                  (16, False): np.uint16, (4, True): np.int8}[bits, signed]
        assert st.scale == want_s and _same(st.codes, want)
        assert _same(st.load(), st.codes.astype(np.float32) * st.scale)


def test_rows_absmax_is_numpys_including_nan_and_inf():
    """``np.abs(rows).max(axis=1)``: the same float32 values; a row with a NaN gives a NaN, as numpy's."""
    rng = np.random.default_rng(21)
    rows = _awkward(rng, 7 * 1001).reshape(7, 1001)
    rows[1, 5], rows[2, 9], rows[3, 0], rows[4] = np.nan, np.inf, -np.inf, -0.0
    got, want = Q.passes._rows_absmax(rows), np.abs(rows).max(axis=1)
    assert got.dtype == np.float32
    assert np.isnan(got[1]) and np.isnan(want[1])
    keep = [0, 2, 3, 4, 5, 6]
    assert _same(got[keep], want[keep])
