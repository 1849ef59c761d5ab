"""Tests for chipsim.kernels: float parity with torch autograd, integer
exactness against int64 references, accumulation-path selection,
determinism."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim import kernels as K

torch.set_num_threads(2)


def _close(ours, ref, rtol=1e-4):
    """rtol 1e-4 plus an atol of 1e-5 times the reference's scale (float
    GEMMs summed in a different order differ by a few ulps of the largest
    partial sums, not of each tiny result)."""
    ref = np.asarray(ref)
    atol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


def _t(a, grad=True):
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


# (N, C, H, W, O, kh, kw, stride, padding)
CONV_CASES = [
    (1, 3, 7, 5, 4, 3, 3, 1, 1),
    (2, 3, 7, 5, 4, 3, 3, 2, 0),
    (2, 2, 9, 9, 3, 5, 5, 1, 2),
    (3, 4, 7, 5, 5, 3, 2, 2, 1),
    (1, 2, 6, 7, 3, 1, 3, 1, 0),
    (2, 3, 8, 8, 4, 5, 3, 2, 1),
    (2, 5, 11, 6, 6, 3, 3, 1, 0),
    (1, 1, 5, 5, 2, 5, 5, 1, 0),
    # stride 1 with padding >= kernel width: the grid pitch widens to Wo
    (2, 2, 5, 6, 3, 1, 1, 1, 1),
    (2, 2, 5, 8, 3, 3, 1, 1, 1),
    (1, 2, 6, 5, 3, 3, 3, 1, 3),
    (2, 3, 6, 7, 4, 2, 2, 1, 1),   # even kernel: right padding larger than needed
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(case):
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    xt, wtt = _t(x), _t(wt)
    yt = F.conv2d(xt, wtt, stride=s, padding=p)
    gy = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(gy))
    y = K.conv2d_forward(x, wt, s, p)
    assert y.dtype == np.float32 and K.LAST_PATH["conv2d_forward"] == "float"
    _close(y, yt.detach().numpy())
    _close(K.conv2d_grad_weight(x, gy, (kh, kw), s, p), wtt.grad.numpy())
    _close(K.conv2d_grad_input(gy, wt, x.shape, s, p), xt.grad.numpy())


@pytest.mark.parametrize("n,k,o", [(1, 5, 3), (7, 33, 10), (64, 3136, 10)])
def test_dense_matches_torch(n, k, o):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((o, k)).astype(np.float32)
    xt, wtt = _t(x), _t(w)
    yt = F.linear(xt, wtt)
    gy = rng.standard_normal((n, o)).astype(np.float32)
    yt.backward(torch.tensor(gy))
    _close(K.dense_forward(x, w), yt.detach().numpy())
    _close(K.dense_grad_weight(x, gy), wtt.grad.numpy())
    _close(K.dense_grad_input(gy, w), xt.grad.numpy())


@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (1, 2, 3, 3), (8, 6)])
def test_batchnorm_matches_torch(shape):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    c = shape[1]
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    xt, gt, bt = _t(x), _t(gamma), _t(beta)
    yt = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
    gy = rng.standard_normal(shape).astype(np.float32)
    yt.backward(torch.tensor(gy))
    y, cache = K.batchnorm_train_forward(x, gamma, beta, 1e-5)
    _close(y, yt.detach().numpy())
    axes = (0,) + tuple(range(2, len(shape)))
    _close(cache.mean, x.astype(np.float64).mean(axes))
    _close(cache.var, x.astype(np.float64).var(axes))       # biased
    gx, gg, gb = K.batchnorm_backward(gy, cache)
    _close(gx, xt.grad.numpy())
    _close(gg, gt.grad.numpy())
    _close(gb, bt.grad.numpy())
    rm = rng.standard_normal(c).astype(np.float32)
    rv = rng.random(c).astype(np.float32) + 0.5
    ref = F.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv),
                       torch.tensor(gamma), torch.tensor(beta), training=False)
    _close(K.batchnorm_eval_forward(x, gamma, beta, rm, rv, 1e-5), ref.numpy())


@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (8, 6)])
def test_batchnorm_fixed_stats_backward_matches_torch_with_detached_statistics(shape):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    xt = _t(x)
    axes = [0] + list(range(2, len(shape)))
    mean = xt.mean(axes, keepdim=True).detach()
    var = xt.var(axes, unbiased=False, keepdim=True).detach()
    g = torch.tensor(gamma).reshape((1, -1) + (1,) * (len(shape) - 2))
    gy = rng.standard_normal(shape).astype(np.float32)
    ((xt - mean) / torch.sqrt(var + 1e-5) * g).backward(torch.tensor(gy))
    _, cache = K.batchnorm_train_forward(x, gamma, np.zeros_like(gamma), 1e-5)
    _close(K.batchnorm_backward_fixed_stats(gy, cache), xt.grad.numpy())
    # rows are independent: the gradient of a subset of rows is that subset of the gradient
    _close(K.batchnorm_backward_fixed_stats(gy[1:3], cache), xt.grad.numpy()[1:3])


@pytest.mark.parametrize("shape,k,s", [((2, 3, 8, 8), 2, 2), ((1, 2, 7, 5), 2, 2),
                                       ((2, 2, 7, 7), 3, 2), ((1, 1, 6, 6), 3, 1)])
def test_maxpool_matches_torch(shape, k, s):
    rng = np.random.default_rng(k + s)
    x = rng.standard_normal(shape).astype(np.float32)
    xt = _t(x)
    yt, it = F.max_pool2d(xt, k, s, return_indices=True)
    gy = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(gy))
    y, idx = K.maxpool2d_forward(x, k, s)
    assert np.array_equal(y, yt.detach().numpy())
    assert np.array_equal(idx, it.numpy())
    _close(K.maxpool2d_backward(gy, idx, x.shape), xt.grad.numpy())


def test_maxpool_ties_go_to_first_max():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0        # tie in the first window
    y, idx = K.maxpool2d_forward(x, 2, 2)
    assert idx[0, 0, 0, 0] == 1 and idx[0, 0, 1, 1] == 10
    g = K.maxpool2d_backward(np.ones_like(y), idx, x.shape)
    assert g[0, 0, 0, 1] == 1 and g[0, 0, 1, 1] == 0 and g.sum() == 4


def test_relu_and_goodness_match_torch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    xt = _t(x)
    yt = torch.relu(xt)
    gt = (yt ** 2).mean(dim=(1, 2, 3))
    gg = rng.standard_normal(3).astype(np.float32)
    gt.backward(torch.tensor(gg))
    y = K.relu_forward(x)
    assert np.array_equal(y, yt.detach().numpy())
    g = K.goodness(y)
    assert g.dtype == np.float32 and g.shape == (3,)
    _close(g, gt.detach().numpy())
    gy = K.goodness_backward(gg, y)
    _close(K.relu_backward(gy, y), xt.grad.numpy())
    _close(K.relu_backward(gy, y > 0), xt.grad.numpy())


def test_determinism():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((8, 32, 14, 14)).astype(np.float32)
    for _ in range(2):
        a = [K.conv2d_forward(x, w, 1, 1), K.conv2d_grad_weight(x, gy, 3, 1, 1),
             K.conv2d_grad_input(gy, w, x.shape, 1, 1),
             K.batchnorm_train_forward(x, np.ones(16), np.zeros(16))[0]]
        b = [K.conv2d_forward(x, w, 1, 1), K.conv2d_grad_weight(x, gy, 3, 1, 1),
             K.conv2d_grad_input(gy, w, x.shape, 1, 1),
             K.batchnorm_train_forward(x, np.ones(16), np.zeros(16))[0]]
        assert all(np.array_equal(u, v) for u, v in zip(a, b))


# ---------------------------------------------------------------------------
# integer exactness
# ---------------------------------------------------------------------------
def _ref_conv_int(x, w, gy, s, p):
    """int64 reference of conv forward, grad_w and grad_input."""
    x, w = x.astype(np.int64), w.astype(np.int64)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    y = np.zeros((n, o, ho, wo), np.int64)
    gw = np.zeros_like(w)
    gxp = np.zeros_like(xp)
    g = None if gy is None else gy.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None), slice(i, i + s * ho, s), slice(j, j + s * wo, s))
            patch = xp[sl]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
            if g is not None:
                gw[:, :, i, j] = np.einsum("nchw,nohw->oc", patch, g)
                gxp[sl] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    return y, gw, gxp[:, :, p:p + h, p:p + wd]


def _codes(rng, shape, lo, hi, p_extreme=0.8):
    """Integer codes, mostly at the extreme ``hi`` so sums approach the
    worst-case bound (random signs would only give a random walk)."""
    a = rng.integers(lo, hi + 1, shape)
    a = np.where(rng.random(shape) < p_extreme, hi, a)
    return a.astype(np.float32)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n,c,h,w,o,k,s,p", [
    (2, 57, 5, 5, 3, 3, 1, 1),   # 8-bit fwd: K=513, 513*255*127 just < 2**24
    (2, 58, 5, 4, 3, 3, 1, 1),   # 8-bit fwd: K=522 just over -> fp64
    (4, 3, 16, 16, 4, 3, 1, 1),  # grad_w K=1024: fp32 at 4 bits, fp64 at 8
    (3, 5, 9, 7, 4, 3, 2, 1),    # stride 2 path
])
def test_conv_integer_exact(bits, n, c, h, w, o, k, s, p):
    rng = np.random.default_rng(bits * 100 + c)
    amax, qmax = 2 ** bits - 1, 2 ** (bits - 1) - 1
    x = _codes(rng, (n, c, h, w), 0, amax)
    wt = _codes(rng, (o, c, k, k), -qmax, qmax)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    gy = _codes(rng, (n, o, ho, wo), -qmax, qmax)
    y_ref, gw_ref, gx_ref = _ref_conv_int(x, wt, gy, s, p)

    y = K.conv2d_forward(x, wt, s, p, int_bound=(amax, qmax))
    path = K.accumulation_path(c * k * k, amax, qmax)
    assert K.LAST_PATH["conv2d_forward"] == path
    assert y.dtype == (np.float32 if path == "fp32" else np.float64)
    assert np.array_equal(y, y_ref)

    gw = K.conv2d_grad_weight(x, gy, k, s, p, int_bound=(amax, qmax))
    assert K.LAST_PATH["conv2d_grad_weight"] == K.accumulation_path(
        n * ho * wo, amax, qmax)
    assert np.array_equal(gw, gw_ref)

    gx = K.conv2d_grad_input(gy, wt, x.shape, s, p, int_bound=(qmax, qmax))
    assert np.array_equal(gx, gx_ref)
    if bits == 8 and c == 57:
        assert K.LAST_PATH["conv2d_forward"] == "fp32"
    if bits == 8 and c == 58:
        assert K.LAST_PATH["conv2d_forward"] == "fp64"
    if (n, h) == (4, 16):
        assert K.LAST_PATH["conv2d_grad_weight"] == ("fp32" if bits == 4 else "fp64")


def test_fp32_path_is_needed_near_the_bound():
    """Plain float32 accumulation is NOT exact past 2**24 (why paths exist)."""
    a = np.full((1, 600), 255, np.float32)
    b = np.full((600, 1), 127, np.float32)
    b[::2] = 126
    exact = (a.astype(np.int64) @ b.astype(np.int64))[0, 0]
    assert exact >= 2 ** 24
    naive = np.float32(0)
    for v in (a[0] * b[:, 0]):
        naive = np.float32(naive + v)
    assert int(naive) != exact
    y = K.dense_forward(a, b.T, int_bound=(255, 127))
    assert K.LAST_PATH["dense_forward"] == "fp64" and y[0, 0] == exact


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_dense_integer_exact(bits):
    rng = np.random.default_rng(bits)
    amax, qmax = 2 ** bits - 1, 2 ** (bits - 1) - 1
    n, k, o = 64, 3136, 10
    if bits == 16:
        amax = qmax          # signed 16-bit operands; 16-bit products > 2**24
    x = _codes(rng, (n, k), 0, amax)
    w = _codes(rng, (o, k), -qmax, qmax)
    gy = _codes(rng, (n, o), -qmax, qmax)
    xi, wi, gi = (a.astype(np.int64) for a in (x, w, gy))
    y = K.dense_forward(x, w, int_bound=(amax, qmax))
    assert K.LAST_PATH["dense_forward"] == K.accumulation_path(k, amax, qmax)
    assert np.array_equal(y, xi @ wi.T)
    assert np.array_equal(K.dense_grad_weight(x, gy, int_bound=(amax, qmax)), gi.T @ xi)
    assert np.array_equal(K.dense_grad_input(gy, w, int_bound=(qmax, qmax)), gi @ wi)
    if bits == 16:   # chunks would be < MIN_CHUNK: single float64 GEMM
        assert K._fp32_chunk(amax, qmax) < K.MIN_CHUNK
        assert K.LAST_PATH["dense_forward"] == "fp64" and y.dtype == np.float64


def test_chunked_fp64_is_exact():
    """Chunks of exact fp32 GEMMs summed in float64 equal the int64 sum,
    while a single fp32 GEMM over the same data is not exact."""
    rng = np.random.default_rng(3)
    a = _codes(rng, (5, 4000), 0, 255)
    b = _codes(rng, (4000, 6), -127, 127)
    ref = a.astype(np.int64) @ b.astype(np.int64)
    kc = K._fp32_chunk(255, 127)
    assert kc * 255 * 127 < 2 ** 24 <= (kc + 1) * 255 * 127
    out = K._chunked_fp64(a, b, kc)
    assert out.dtype == np.float64 and np.array_equal(out, ref)
    assert np.array_equal(K._chunked_fp64(a, b, 7), ref)   # uneven chunks
    assert not np.array_equal(np.dot(a, b), ref)


def test_accumulation_path_thresholds():
    assert K.accumulation_path(1, 2 ** 24 - 1, 1) == "fp32"
    assert K.accumulation_path(1, 2 ** 24, 1) == "fp64"
    assert K.accumulation_path(2 ** 20, 2 ** 2, 3) == "fp32"      # 3*2**22
    assert K.accumulation_path(2, 2 ** 23, 1) == "fp64"
    assert K.accumulation_path(1, 2 ** 53 - 1, 1) == "fp64"
    assert K.accumulation_path(1, 2 ** 53, 1) == "int64"
    assert K.accumulation_path(4, 2 ** 30, 2 ** 30) == "int64"
    with pytest.raises(ValueError):
        K.accumulation_path(2, 2 ** 31, 2 ** 31)


def test_int64_path_exact():
    """Force the int64 loops with huge claimed bounds; values up to 2**20
    (exact in float32) make products of 2**40 that float32 would round."""
    rng = np.random.default_rng(11)
    x = rng.integers(-2 ** 20, 2 ** 20, (3, 50)).astype(np.float32)
    w = rng.integers(-2 ** 20, 2 ** 20, (4, 50)).astype(np.float32)
    ref = x.astype(np.int64) @ w.astype(np.int64).T
    y = K.dense_forward(x, w, int_bound=(2 ** 26, 2 ** 26))
    assert K.LAST_PATH["dense_forward"] == "int64" and y.dtype == np.int64
    assert np.array_equal(y, ref)
    assert not np.array_equal(np.dot(x, w.T), ref)
    xc = rng.integers(0, 2 ** 12, (2, 3, 6, 5)).astype(np.float32)
    wc = rng.integers(-2 ** 12, 2 ** 12, (4, 3, 3, 3)).astype(np.float32)
    gy = rng.integers(-2 ** 12, 2 ** 12, (2, 4, 6, 5)).astype(np.float32)
    y_ref, gw_ref, gx_ref = _ref_conv_int(xc, wc, gy, 1, 1)
    big = (2 ** 26, 2 ** 26)
    y = K.conv2d_forward(xc, wc, 1, 1, int_bound=big)
    assert K.LAST_PATH["conv2d_forward"] == "int64" and y.dtype == np.int64
    assert np.array_equal(y, y_ref)
    assert np.array_equal(K.conv2d_grad_weight(xc, gy, 3, 1, 1, int_bound=big), gw_ref)
    gx = K.conv2d_grad_input(gy, wc, xc.shape, 1, 1, int_bound=big)
    assert K.LAST_PATH["conv2d_grad_input"] == "int64"
    assert np.array_equal(gx, gx_ref)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_grad_weight_reuses_forward_columns_exactly(stride, padding):
    """cols kept by the forward give the same weight gradient as recomputing im2col."""
    rng = np.random.default_rng(7)
    x = rng.integers(-7, 8, (3, 4, 9, 8)).astype(np.float32)
    w = rng.integers(-7, 8, (5, 4, 3, 3)).astype(np.float32)
    y, cols = K.conv2d_forward(x, w, stride, padding, int_bound=(7, 7), keep_cols=True)
    assert np.array_equal(y, K.conv2d_forward(x, w, stride, padding, int_bound=(7, 7)))
    gy = rng.integers(-127, 128, y.shape).astype(np.float32)
    again = K.conv2d_grad_weight(x, gy, (3, 3), stride, padding, int_bound=(7, 127))
    reused = K.conv2d_grad_weight(x, gy, (3, 3), stride, padding, int_bound=(7, 127), cols=cols)
    assert np.array_equal(again, reused)


def test_malloc_tuning_applies_on_glibc_and_can_be_turned_off():
    """Importing the kernels keeps freed memory mapped (glibc), unless CHIPSIM_MALLOC_TUNING=0."""
    import os
    import platform
    import subprocess
    import sys
    code = "from chipsim import kernels, malloc_tuning; print(malloc_tuning.apply())"

    def applied(**env):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.strip()
    on, off = applied(), applied(CHIPSIM_MALLOC_TUNING="0")
    assert off == "False"
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert on == "True"


def test_malloc_tuning_reuses_blocks_larger_than_the_mmap_threshold():
    """A 40 MB temporary (bigger than glibc's 32 MiB mmap ceiling, like the engine's im2col
    columns at 320 rows) is served again from pages already faulted in, not mapped afresh."""
    import platform
    import subprocess
    import sys
    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        pytest.skip("mallopt is glibc-only")
    # the output is allocated inside numba (no transparent-huge-page advice, unlike numpy's own)
    code = (
        "import resource, numpy as np\n"
        "from chipsim import kernels as K\n"
        "gy = np.ones((64, 32, 70, 70), np.float32)\n"
        "K._nchw_to_grid(gy, 71)\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "K._nchw_to_grid(gy, 71)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    faults = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip())
    assert faults < 40 * 2**20 // 4096 // 10, f"{faults} page faults re-allocating a freed 40 MB block"
