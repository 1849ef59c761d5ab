"""The int8 unit (chipsim.kernels.int8): exact against plain integer numpy at the bound, bit-identical
to the float path through the kernels and through whole training steps, and chosen by the machine.

References are int64 numpy written here (no chipsim code), inputs adversarial: every code at its
largest magnitude with the signs that make the sums largest, reductions at and one past the int32
limit. They run on whatever CPU runs the tests: with ``set_kernels("int8")`` torch's ``_int_mm``
computes even where the CPU lacks dot-product instructions (slower, same integers).
"""
import os

import numpy as np
import pytest
import torch

from chipsim import kernels as K
from chipsim.errors import ChipsimError
from chipsim.kernels import int8 as I8
from chipsim.kernels.exact import set_kernels

from test_kernels import CONV_CASES


@pytest.fixture(params=["int8", "float"])
def unit(request):
    old = set_kernels(request.param)
    yield request.param
    set_kernels(old)


@pytest.fixture
def int8_unit():
    old = set_kernels("int8")
    yield
    set_kernels(old)


# ---------------------------------------------------------------- integer references (int64 numpy)
def _pad(x, p):
    return np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)))


def ref_conv(x, w, s, p):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    xp, w = _pad(x, p), w.astype(np.int64)
    y = np.zeros((n, o, ho, wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]     # (n, c, ho, wo)
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return y


def ref_grad_weight(x, gy, kh, kw, s, p):
    ho, wo = gy.shape[2:]
    xp, gy = _pad(x, p), gy.astype(np.int64)
    gw = np.zeros((gy.shape[1], x.shape[1], kh, kw), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
            gw[:, :, i, j] = np.einsum("nchw,nohw->oc", patch, gy)
    return gw


def ref_grad_input(gy, w, x_shape, s, p):
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    gx = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.int64)
    gy, w = gy.astype(np.int64), w.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            gx[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] += np.einsum("nohw,oc->nchw", gy, w[:, :, i, j])
    return gx[:, :, p:p + h, p:p + wd]


def _codes(rng, shape, m):
    return rng.integers(-m, m + 1, shape).astype(np.float32)


def _same(got, want_int, dtype):
    """``got`` holds exactly the integers ``want_int``, in ``dtype``."""
    assert got.dtype == dtype
    assert np.array_equal(np.asarray(got, np.int64), want_int)
    assert np.array_equal(got, want_int.astype(dtype))


# ---------------------------------------------------------------- the GEMM at the int32 bound
def test_int32_chunk_is_the_largest_exact_reduction():
    # 127*127 = 16129; (2**31 - 1) // 16129 = 133144, and 133144*16129 = 2147479576 < 2**31 = 2147483648
    assert I8.int32_chunk((127, 127)) == 133144
    # 7*7 = 49; 2147483647 // 49 = 43826196
    assert I8.int32_chunk((7, 7)) == 43826196


@pytest.mark.parametrize("k", [133144, 133145])
@pytest.mark.parametrize("sign", [1, -1])
def test_int8_gemm_at_the_bound(int8_unit, k, sign):
    """Every product +-127*127: at K = 133144 one int32 sum reaches 2147479576 = 2**31 - 4072; one
    more term would overflow int32, so K = 133145 must take two chunks summed in int64."""
    a = np.full((17, k), 127, np.int8)
    b = np.full((k, 8), sign * 127, np.int8)
    b[:, 1] = np.where(np.arange(k) % 2, 127, -127)          # alternating signs: sums cancel
    b[:, 2] = 0
    got = I8.int8_gemm(a, b, (127, 127))
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert got.dtype == (np.int32 if k == 133144 else np.int64)
    assert np.array_equal(got, want)
    assert want[0, 0] == sign * k * 16129


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (16, 8, 8), (17, 9, 31), (40, 300, 7), (5, 64, 90)])
def test_matmul_int8_any_shape_and_layout(int8_unit, shape):
    """No shape constraint leaks out (M <= 16, K or N not multiples of 8), transposed views in."""
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = _codes(rng, (k, m), 127).T                # a transposed view
    b = _codes(rng, (k, n), 127)
    got = I8.matmul_int8(a, b, (127, 127))
    assert got.flags.c_contiguous
    assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


# ---------------------------------------------------------------- the kernels on both units
@pytest.mark.parametrize("codes", [np.float32, np.int8])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bound", [(7, 7, 7), (127, 127, 127)])
@pytest.mark.parametrize("unit, layout", [("float", "nchw"), ("int8", "nchw"), ("int8", "channels-last"),
                                          ("int8", "grid-cl"), ("int8", "direct")])
def test_conv_exact_on_each_unit(unit, case, bound, layout, codes, monkeypatch):
    """Forward, grad-weight and grad-input hold the int64 reference's integers on each unit and, on
    the int8 unit, in each of its layouts (the cases have 1-5 channels: under CL_MIN_CHANNELS = 8
    they take the NCHW grid; with it set to 1, channels-last, and for the weight gradient, with
    GRID_MIN_ROW set to 0, the grid's im2col against a channels-last error, ``grid-cl``) and through
    oneDNN's direct conv (``direct``: DIRECT_MIN_CHANNELS set to 1; off in the others), every operand at
    its largest magnitude somewhere (random signs elsewhere). The activations and errors come as
    float32 codes or as the int8 codes the block's quantizers make for the int8 unit (``as_int8``)."""
    from chipsim.kernels import conv, conv_direct
    monkeypatch.setitem(I8._STATE, "choice", unit)                # the unit for this test only
    monkeypatch.setattr(conv, "CL_MIN_CHANNELS", 1 if layout in ("channels-last", "grid-cl") else 8)
    monkeypatch.setattr(conv, "GRID_MIN_ROW", 0 if layout == "grid-cl" else 1 << 30)
    monkeypatch.setattr(conv, "DIRECT_MIN_CHANNELS", 1)
    monkeypatch.setitem(conv_direct._STATE, "on", layout == "direct")
    if layout == "direct" and not conv_direct.available():
        pytest.skip("oneDNN's direct int8 conv is not exact or not present here")
    n, c, h, w, o, kh, kw, s, p = case
    ma, mw, mg = bound
    rng = np.random.default_rng(sum(case) + ma)
    x, wt = _codes(rng, (n, c, h, w), ma), _codes(rng, (o, c, kh, kw), mw)
    x[0, 0] = ma
    wt[0] = mw
    x = x.astype(codes)
    y = K.conv2d_forward(x, wt, s, p, int_bound=(ma, mw))
    want = ref_conv(x, wt, s, p)
    _same(y, want, np.float32)
    gy = _codes(rng, want.shape, mg)
    gy[0, 0] = mg
    gy = gy.astype(codes)
    _same(K.conv2d_grad_weight(x, gy, (kh, kw), s, p, int_bound=(ma, mg)), ref_grad_weight(x, gy, kh, kw, s, p),
          np.float32)
    _same(K.conv2d_grad_input(gy, wt, x.shape, s, p, int_bound=(mg, mw)), ref_grad_input(gy, wt, x.shape, s, p),
          np.float32)
    if unit == "int8" and s == 1:
        # the input gradient is a conv only while the padding is at most k - 1
        direct_gi = layout == "direct" and p <= kh - 1 and p <= kw - 1
        assert K.LAST_UNIT["conv2d_grad_input"] == ("int8-direct" if direct_gi else "int8")
        assert K.LAST_UNIT["conv2d_grad_weight"] == "int8"
        assert K.LAST_UNIT["conv2d_forward"] == ("int8-direct" if layout == "direct" else "int8")


def test_conv_grad_weight_past_the_int32_bound(unit):
    """n*Ho*Wo = 170*28*28 = 133280 products of 127*127 per weight: past int32's 133144, so the
    int8 unit chunks the reduction and the float path goes wide; both give float64 with the exact
    sum 133280*16129 = 2149673120 (> 2**31) where every code is +127."""
    x = np.full((170, 1, 28, 28), 127, np.float32)
    gy = np.full((170, 2, 28, 28), 127, np.float32)
    gy[:, 1] = -127
    gw = K.conv2d_grad_weight(x, gy, (3, 3), 1, 1, int_bound=(127, 127))
    assert gw.dtype == np.float64
    assert gw[0, 0, 1, 1] == 2149673120 and gw[1, 0, 1, 1] == -2149673120
    assert np.array_equal(gw, ref_grad_weight(x, gy, 3, 3, 1, 1).astype(np.float64))


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("c", [6, 12, 120])
def test_conv_forward_rescale_is_the_float_paths(int8_unit, c, direct, monkeypatch):
    """``out_scale`` on the int8 unit rounds like the float path: the same float32 bits. 6 channels
    take the NCHW grid, 12 channels-last or (``direct``) oneDNN's direct conv, whose scale is applied
    by oneDNN; at 120, K = 1080 and 1080*127*127 = 17419320 > 2**24, so the float path's accumulator
    is float64, the rescale is a float64 product and the direct conv does not apply."""
    from chipsim.kernels import conv_direct
    monkeypatch.setitem(conv_direct._STATE, "on", direct)
    rng = np.random.default_rng(3)
    x, wt = _codes(rng, (4, c, 9, 9), 127), _codes(rng, (5, c, 3, 3), 127)
    scale = rng.random(5).astype(np.float32) * 1e-3
    got = K.conv2d_forward(x, wt, 1, 1, int_bound=(127, 127), out_scale=scale)
    set_kernels("float")
    want = K.conv2d_forward(x, wt, 1, 1, int_bound=(127, 127), out_scale=scale)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("codes", [np.float32, np.int8])
@pytest.mark.parametrize("k", [1, 9, 300])
def test_dense_exact_on_each_unit(unit, k, codes):
    """The dense products on each unit, the activations and errors as float32 or int8 codes."""
    rng = np.random.default_rng(k)
    x, w, g = _codes(rng, (33, k), 127), _codes(rng, (10, k), 127), _codes(rng, (33, 10), 127)
    x[0], w[0] = 127, 127
    x, g = x.astype(codes), g.astype(codes)
    xi, wi, gi = (v.astype(np.int64) for v in (x, w, g))
    _same(K.dense_forward(x, w, int_bound=(127, 127)), xi @ wi.T, np.float32)
    _same(K.dense_grad_weight(x, g, int_bound=(127, 127)), gi.T @ xi, np.float32)
    _same(K.dense_grad_input(g, w, int_bound=(127, 127)), gi @ wi, np.float32)
    assert K.LAST_UNIT["dense_grad_input"] == ("int8" if unit == "int8" else "float")


def test_digit_split_is_exact():
    """Balanced base-128 digits: 255 = 2*128 - 1, 16319 = 127*128 + 63 (the largest of two digits),
    32767 = 2*128**2 + 0*128 - 1; every code of the range comes back as the sum of its digits."""
    assert [I8.digits_needed(m) for m in (127, 128, 255, 16319, 16320, 32767, 2088895, 2088896)] == \
        [1, 2, 2, 2, 3, 3, 3, 4]
    codes = np.arange(-32767, 32768)
    digits = I8.split_digits(codes, 3)
    assert all(d.dtype == np.int8 for d in digits)
    assert digits[0].min() == -64 and digits[0].max() == 63 and np.abs(digits[2]).max() <= 127
    assert np.array_equal(sum(d.astype(np.int64) * 128 ** i for i, d in enumerate(digits)), codes)
    assert [int(d[-1]) for d in I8.split_digits(np.array([32767]), 3)] == [-1, 0, 2]


@pytest.mark.parametrize("bound", [(255, 127), (32767, 127), (16319, 16319), (255, 255)])
def test_wide_codes_on_int8_digits_at_the_bound(unit, bound):
    """8-bit unsigned and 16-bit codes, the extremes included, through the int8 digits (or the float
    path): the int64 reference's integers, in the float path's dtype."""
    ma, mb = bound
    rng = np.random.default_rng(ma + mb)
    x, w = _codes(rng, (40, 300), ma), _codes(rng, (6, 300), mb)
    x[0], x[1], w[0], w[1] = ma, -ma, mb, -mb
    want = x.astype(np.int64) @ w.astype(np.int64).T
    y = K.dense_forward(x, w, int_bound=bound)
    wide = 300 * ma * mb >= 2 ** 24          # the float path's dtype: float64 past 2**24
    _same(y, want, np.float64 if wide else np.float32)
    assert K.LAST_UNIT["dense_forward"] == ("int8-digits" if unit == "int8" else "float")


def test_too_wide_codes_keep_the_float_path(int8_unit):
    """16-bit x 16-bit would take 9 int8 GEMMs: the float path runs, exactly."""
    rng = np.random.default_rng(5)
    x, w = _codes(rng, (20, 30), 32767), _codes(rng, (4, 30), 32767)
    y = K.dense_forward(x, w, int_bound=(32767, 32767))
    assert K.LAST_UNIT["dense_forward"] == "float"
    _same(y, x.astype(np.int64) @ w.astype(np.int64).T, np.float64)


# ---------------------------------------------------------------- the choice of unit
def test_kernel_path_follows_the_cpu(monkeypatch):
    from chipsim.kernels import conv_direct
    monkeypatch.setitem(conv_direct._STATE, "on", False)
    monkeypatch.setitem(I8._STATE, "choice", "auto")
    monkeypatch.setitem(I8._STATE, "cpu", ())
    assert I8.kernel_path() == "float32-blas" and not I8.use_int8()
    monkeypatch.setitem(I8._STATE, "cpu", ("avx512_vnni",))
    assert I8.kernel_path() == "int8-vnni (torch._int_mm)"
    monkeypatch.setitem(I8._STATE, "cpu", ("avx512_vnni", "amx_int8"))
    assert I8.kernel_path() == "int8-amx (torch._int_mm)"
    monkeypatch.setitem(I8._STATE, "choice", "float")
    assert I8.kernel_path() == "float32-blas"
    monkeypatch.setitem(I8._STATE, "choice", "int8")
    monkeypatch.setitem(I8._STATE, "cpu", ())
    assert I8.kernel_path() == "int8-generic (torch._int_mm)"
    monkeypatch.setitem(conv_direct._STATE, "on", True)
    monkeypatch.setitem(conv_direct._STATE, "probe", True)
    assert I8.kernel_path() == "int8-generic (torch._int_mm, oneDNN direct conv)"
    monkeypatch.setitem(conv_direct._STATE, "probe", False)           # present but not exact here
    assert I8.kernel_path() == "int8-generic (torch._int_mm)"


def test_no_working_int_mm_keeps_the_float_path(monkeypatch):
    """A torch whose ``_int_mm`` is missing or fails its probe (CUDA-only builds) gives no int8 unit,
    even when asked for."""
    monkeypatch.setitem(I8._STATE, "int_mm", None)
    monkeypatch.setitem(I8._STATE, "choice", "int8")
    assert I8.kernel_path() == "float32-blas" and not I8.use_int8()


def test_kernel_path_is_exported():
    from chipsim.kernels.exact import kernel_path
    assert kernel_path() in ("float32-blas",) or kernel_path().startswith("int8-")


def test_bad_choice(monkeypatch):
    with pytest.raises(ValueError, match="auto"):
        set_kernels("fast")
    monkeypatch.setitem(I8._STATE, "choice", None)
    monkeypatch.setenv("CHIPSIM_KERNELS", "fast")
    with pytest.raises(ChipsimError, match="CHIPSIM_KERNELS.*auto, int8, float"):
        I8.use_int8()


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch):
    monkeypatch.setitem(I8._STATE, "cpu", None)
    flags = I8.cpu_dot_flags()
    try:
        text = open("/proc/cpuinfo").read().split()
    except OSError:
        text = []
    assert set(flags) == set(I8.DOT_FLAGS) & set(text)


# ---------------------------------------------------------------- a GPU, where there is one
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_unit_matches_cpu():
    rng = np.random.default_rng(9)
    x, wt = _codes(rng, (8, 16, 14, 14), 7), _codes(rng, (32, 16, 3, 3), 7)
    gy = _codes(rng, (8, 32, 14, 14), 127)
    old = set_kernels("int8")
    try:
        cpu = [K.conv2d_forward(x, wt, 1, 1, int_bound=(7, 7)),
               K.conv2d_grad_weight(x, gy, (3, 3), 1, 1, int_bound=(7, 127)),
               K.conv2d_grad_input(gy, wt, x.shape, 1, 1, int_bound=(127, 7))]
        I8.set_device("cuda")
        assert I8.kernel_path().startswith("int8-cuda")
        gpu = [K.conv2d_forward(x, wt, 1, 1, int_bound=(7, 7)),
               K.conv2d_grad_weight(x, gy, (3, 3), 1, 1, int_bound=(7, 127)),
               K.conv2d_grad_input(gy, wt, x.shape, 1, 1, int_bound=(127, 7))]
        a, b = _codes(rng, (5, 13), 127), _codes(rng, (13, 3), 127)      # M <= 16, K and N not multiples of 8
        assert np.array_equal(I8.matmul_int8(a, b, (127, 127)), a.astype(np.int64) @ b.astype(np.int64))
    finally:
        I8.set_device("cpu")
        set_kernels(old)
    for a, b in zip(cpu, gpu):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- NaN (a diverged run) and bound order
@pytest.mark.parametrize("c", [2, 12])
@pytest.mark.parametrize("where", ["x", "w", "gy"])
def test_nan_operands_give_the_float_paths_nans(c, where):
    """int8 has no NaN: a NaN code (a corrupted or diverged tensor) sends the product to the float
    path, so the int8 unit returns exactly what the float path returns, NaNs included."""
    rng = np.random.default_rng(c)
    x, wt, gy = _codes(rng, (3, c, 6, 6), 7), _codes(rng, (4, c, 3, 3), 7), _codes(rng, (3, 4, 6, 6), 127)
    {"x": x, "w": wt, "gy": gy}[where].reshape(-1)[5] = np.nan
    got = {}
    for unit in ("float", "int8"):
        old = set_kernels(unit)
        try:
            got[unit] = (K.conv2d_forward(x, wt, 1, 1, int_bound=(7, 7)),
                         K.conv2d_grad_weight(x, gy, (3, 3), 1, 1, int_bound=(7, 127)),
                         K.conv2d_grad_input(gy, wt, x.shape, 1, 1, int_bound=(127, 7)),
                         K.dense_forward(x.reshape(3, -1), wt.reshape(4, -1)[:, :1].repeat(x[0].size, 1) * 0 + 1,
                                         int_bound=(7, 7)))
        finally:
            set_kernels(old)
    assert any(np.isnan(a).any() for a in got["float"])
    for a, b in zip(got["float"], got["int8"]):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def test_digit_split_does_not_trust_the_bounds_order(int8_unit):
    """The weight gradients pass ``int_bound`` as (x, gy) for the product gy^T @ x: with x at 255
    (two digits) and gy at 127 the digits must follow each operand, not the order of the bounds."""
    rng = np.random.default_rng(11)
    x, g = rng.integers(0, 256, (50, 30)).astype(np.float32), _codes(rng, (50, 7), 127)
    x[0, 0], g[0, 0] = 255, -127
    gw = K.dense_grad_weight(x, g, int_bound=(255, 127))
    assert K.LAST_UNIT["dense_grad_weight"] == "int8-digits"
    _same(gw, g.astype(np.int64).T @ x.astype(np.int64), np.float32)


def test_a_junk_thread_count_for_the_int8_gemms_is_a_note_not_a_traceback():
    import subprocess
    import sys
    env = dict(os.environ, CHIPSIM_INT8_THREADS="two")
    p = subprocess.run([sys.executable, "-c", "import chipsim.kernels.int8 as m; print(m.GEMM_THREADS)"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == "1"
    assert p.stderr.strip() == "chipsim: note: CHIPSIM_INT8_THREADS='two' is not a count >= 0; using 1"
