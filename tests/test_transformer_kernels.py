"""Transformer kernels: float parity with torch autograd (forward and gradients), integer
exactness of every product on codes against a plain int64 numpy reference, and work logging."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim import kernels as K
from chipsim.trace import work

torch.set_num_threads(2)


def _close(ours, ref, rtol=1e-4):
    ref = np.asarray(ref)
    atol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


def _t(a, grad=True):
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------- float parity with torch
@pytest.mark.parametrize("shape", [(3, 5, 8), (2, 16, 64), (7, 12)])
def test_layernorm_matches_torch(shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = _rand(rng, *shape) * 3 + 1
    gamma, beta = 1 + 0.3 * _rand(rng, shape[-1]), 0.5 * _rand(rng, shape[-1])
    xt, gt, bt = _t(x), _t(gamma), _t(beta)
    yt = F.layer_norm(xt, (shape[-1],), gt, bt, eps=1e-5)
    gy = _rand(rng, *shape)
    yt.backward(torch.tensor(gy))
    y, cache = K.layernorm_forward(x, gamma, beta, 1e-5)
    _close(y, yt.detach().numpy())
    gx, gg, gb = K.layernorm_backward(gy, cache)
    _close(gx, xt.grad.numpy())
    _close(gg, gt.grad.numpy())
    _close(gb, bt.grad.numpy())
    none, gg2, gb2 = K.layernorm_backward(gy, cache, input_grad=False)
    assert none is None
    np.testing.assert_array_equal(gg2, gg)
    np.testing.assert_array_equal(gb2, gb)


def test_gelu_matches_torch():
    rng = np.random.default_rng(3)
    x = _rand(rng, 4, 9, 33) * 3
    xt = _t(x)
    yt = F.gelu(xt)                       # torch's default: the exact erf form
    gy = _rand(rng, *x.shape)
    yt.backward(torch.tensor(gy))
    _close(K.gelu_forward(x), yt.detach().numpy())
    _close(K.gelu_backward(gy, x), xt.grad.numpy())


def test_softmax_matches_torch():
    rng = np.random.default_rng(4)
    s = _rand(rng, 2, 3, 5, 5) * 4
    st = _t(s)
    pt = torch.softmax(st, dim=-1)
    gp = _rand(rng, *s.shape)
    pt.backward(torch.tensor(gp))
    p = K.softmax(s)
    _close(p, pt.detach().numpy())
    _close(K.softmax_backward(gp, p), st.grad.numpy())
    big = K.softmax(np.array([[1000.0, 0.0, -1000.0]], np.float32))   # max-subtracted: no overflow
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]])


def test_attention_products_match_torch():
    """Scaled dot-product attention built from the kernels equals torch's, with gradients for Q, K, V."""
    rng = np.random.default_rng(5)
    n, h, t, d = 2, 3, 6, 4
    q, k, v = _rand(rng, n, h, t, d), _rand(rng, n, h, t, d), _rand(rng, n, h, t, d)
    qt, kt, vt = _t(q), _t(k), _t(v)
    ot = F.scaled_dot_product_attention(qt, kt, vt)
    go = _rand(rng, n, h, t, d)
    ot.backward(torch.tensor(go))
    s = K.attn_scores(q, k) / np.float32(math.sqrt(d))
    p = K.softmax(s)
    o = K.attn_values(p, v)
    assert K.LAST_PATH["attn_scores"] == "float" and K.LAST_PATH["attn_values"] == "float"
    _close(o, ot.detach().numpy())
    gp = K.attn_values_grad_probs(go, v)
    _close(K.attn_values_grad_values(p, go), vt.grad.numpy())
    gs = K.softmax_backward(gp, p) / np.float32(math.sqrt(d))
    _close(K.attn_scores_grad_query(gs, k), qt.grad.numpy())
    _close(K.attn_scores_grad_key(gs, q), kt.grad.numpy())


def test_token_dense_matches_torch():
    rng = np.random.default_rng(6)
    x, w = _rand(rng, 3, 5, 12), _rand(rng, 7, 12)
    xt, wt = _t(x), _t(w)
    yt = F.linear(xt, wt)
    gy = _rand(rng, 3, 5, 7)
    yt.backward(torch.tensor(gy))
    _close(K.token_dense_forward(x, w), yt.detach().numpy())
    _close(K.token_dense_grad_weight(x, gy), wt.grad.numpy())
    _close(K.token_dense_grad_input(gy, w), xt.grad.numpy())


@pytest.mark.parametrize("c,hw,p", [(1, 28, 7), (3, 8, 4), (2, 6, 3)])
def test_patch_embedding_matches_torch(c, hw, p):
    """patchify + dense + position embedding = conv2d(stride=p) + pos, with the weight and pos gradients."""
    rng = np.random.default_rng(c * hw + p)
    n, e = 3, 10
    t = (hw // p) ** 2
    x = rng.random((n, c, hw, hw), dtype=np.float32)
    w, pos, b = _rand(rng, e, c * p * p), _rand(rng, t, e), _rand(rng, e)
    wt, post, bt = _t(w), _t(pos), _t(b)
    conv = F.conv2d(_t(x, grad=False), wt.reshape(e, c, p, p), bt, stride=p)      # (N, E, h, w)
    yt = conv.flatten(2).transpose(1, 2) + post                                   # (N, T, E)
    gy = _rand(rng, n, t, e)
    yt.backward(torch.tensor(gy))
    y = K.bias_add(K.bias_add(K.patch_embed_forward(x, w, p), b), pos)
    _close(y, yt.detach().numpy())
    _close(K.patch_embed_grad_weight(x, gy, p), wt.grad.numpy())
    _close(K.bias_grad(gy, keep=2), post.grad.numpy())
    _close(K.bias_grad(gy), bt.grad.numpy())


def test_patch_embedding_extra_patches_share_the_weights():
    rng = np.random.default_rng(7)
    x, w, extra = rng.random((2, 1, 8, 8), dtype=np.float32), _rand(rng, 5, 16), _rand(rng, 2, 1, 16)
    y = K.patch_embed_forward(x, w, 4, extra=extra)
    assert y.shape == (2, 5, 5)
    _close(y[:, 4], extra[:, 0] @ w.T)
    gy = _rand(rng, 2, 5, 5)
    ref = K.patch_embed_grad_weight(x, gy[:, :4], 4) + gy[:, 4].T @ extra[:, 0]
    _close(K.patch_embed_grad_weight(x, gy, 4, extra=extra), ref)


def test_patchify_rejects_untiled_images():
    with pytest.raises(ValueError, match="does not tile"):
        K.patchify(np.zeros((1, 1, 10, 10), np.float32), 3)


def test_token_mean_and_adds_match_torch():
    rng = np.random.default_rng(8)
    x, y = _rand(rng, 3, 6, 5), _rand(rng, 3, 6, 5)
    xt = _t(x)
    mt = xt.mean(dim=1)
    g = _rand(rng, 3, 5)
    mt.backward(torch.tensor(g))
    _close(K.token_mean(x), mt.detach().numpy())
    _close(K.token_mean_backward(g, 6), xt.grad.numpy())
    np.testing.assert_array_equal(K.residual_add(x, y), x + y)


# ----------------------------------------------------------------- integer exactness on codes
def _codes(rng, bits, shape, signed=True):
    m = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    return rng.integers(-m if signed else 0, m + 1, size=shape).astype(np.float32), m


def _i64(a):
    return np.asarray(a).astype(np.int64)


@pytest.mark.parametrize("a_bits,b_bits", [(4, 4), (8, 4), (4, 8), (8, 8)])
def test_attention_products_exact_on_codes(a_bits, b_bits):
    rng = np.random.default_rng(a_bits * 10 + b_bits)
    n, h, t, d = 2, 4, 16, 16
    qa, ma = _codes(rng, a_bits, (n, h, t, d))
    kb, mb = _codes(rng, b_bits, (n, h, t, d))
    pa, mpa = _codes(rng, a_bits, (n, h, t, t), signed=False)
    ga, mga = _codes(rng, a_bits, (n, h, t, t))
    bound, pbound, gbound = (ma, mb), (mpa, mb), (mga, mb)
    def sw(a):
        return np.swapaxes(a, -1, -2)
    cases = [
        (K.attn_scores(qa, kb, int_bound=bound), _i64(qa) @ sw(_i64(kb))),
        (K.attn_values(pa, kb, int_bound=pbound), _i64(pa) @ _i64(kb)),
        (K.attn_scores_grad_query(ga, kb, int_bound=gbound), _i64(ga) @ _i64(kb)),
        (K.attn_scores_grad_key(ga, kb, int_bound=gbound), sw(_i64(ga)) @ _i64(kb)),
        (K.attn_values_grad_probs(qa, kb, int_bound=bound), _i64(qa) @ sw(_i64(kb))),
        (K.attn_values_grad_values(pa, kb, int_bound=pbound), sw(_i64(pa)) @ _i64(kb)),
    ]
    for ours, ref in cases:
        assert ours.shape == ref.shape
        np.testing.assert_array_equal(_i64(ours), ref)


@pytest.mark.parametrize("bound,path", [((7, 7), "fp32"), ((127, 2 ** 20), "fp64"), ((2 ** 40, 2 ** 12), "int64")])
def test_attention_product_paths_agree(bound, path):
    """Every accumulation path gives the same exact integers (a loose bound only forces a wider path)."""
    rng = np.random.default_rng(9)
    q, _ = _codes(rng, 4, (2, 2, 8, 16))
    k, _ = _codes(rng, 4, (2, 2, 8, 16))
    s = K.attn_scores(q, k, int_bound=bound)
    assert K.LAST_PATH["attn_scores"] == path
    np.testing.assert_array_equal(_i64(s), _i64(q) @ np.swapaxes(_i64(k), -1, -2))


@pytest.mark.parametrize("a_bits,b_bits", [(4, 4), (8, 4), (8, 8)])
def test_token_products_exact_on_codes(a_bits, b_bits):
    rng = np.random.default_rng(a_bits + 3 * b_bits)
    x, ma = _codes(rng, a_bits, (4, 16, 64))
    w, mb = _codes(rng, b_bits, (192, 64))
    g, mg = _codes(rng, a_bits, (4, 16, 192))
    np.testing.assert_array_equal(_i64(K.token_dense_forward(x, w, int_bound=(ma, mb))),
                                  _i64(x) @ _i64(w).T)
    np.testing.assert_array_equal(_i64(K.token_dense_grad_weight(x, g, int_bound=(ma, mg))),
                                  _i64(g).reshape(-1, 192).T @ _i64(x).reshape(-1, 64))
    np.testing.assert_array_equal(_i64(K.token_dense_grad_input(g, w, int_bound=(mg, mb))),
                                  _i64(g) @ _i64(w))
    img, mi = _codes(rng, a_bits, (3, 1, 28, 28), signed=False)
    pw, mp = _codes(rng, b_bits, (64, 49))
    pg, mpg = _codes(rng, a_bits, (3, 16, 64))
    patches = _i64(img).reshape(3, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(3, 16, 49)
    np.testing.assert_array_equal(_i64(K.patch_embed_forward(img, pw, 7, int_bound=(mi, mp))), patches @ _i64(pw).T)
    np.testing.assert_array_equal(_i64(K.patch_embed_grad_weight(img, pg, 7, int_bound=(mi, mpg))),
                                  _i64(pg).reshape(-1, 64).T @ patches.reshape(-1, 49))


# ----------------------------------------------------------------- work logging
def test_transformer_kernels_log_their_work():
    rng = np.random.default_rng(10)
    n, h, t, d = 2, 4, 16, 16
    q, m = _codes(rng, 4, (n, h, t, d))
    with work.open_log() as log:
        s = K.attn_scores(q, q, int_bound=(m, m))
        p = K.softmax(s)
        K.attn_values(p, q)
        K.layernorm_forward(np.ones((n, t, 64), np.float32), np.ones(64), np.zeros(64))
        K.gelu_forward(np.ones((n, t, 8), np.float32))
        K.token_mean(np.ones((n, t, 64), np.float32))
        K.token_dense_forward(np.ones((n, t, 64), np.float32), np.ones((32, 64), np.float32), int_bound=(127, 7))
    items = {w.kernel: w for w in log.items}
    assert items["attn_scores"].kind == "attn_scores" and items["attn_scores"].unit == work.MAC
    assert items["attn_scores"].count == n * h * t * t * d and items["attn_scores"].bits == (4, 4)
    assert items["attn_values"].count == n * h * t * t * d and items["attn_values"].bits == (32, 32)
    assert items["softmax"].unit == work.VECTOR and items["softmax"].count == n * h * t * t * 5
    assert items["layernorm_forward"].kind == "layernorm" and items["layernorm_forward"].count == n * t * 64 * 8
    assert items["gelu_forward"].kind == "gelu"
    assert items["token_mean"].count == n * t * 64
    assert items["token_dense_forward"].count == n * t * 32 * 64 and items["token_dense_forward"].bits == (8, 4)
    for kind in ("attn_scores", "attn_scores_grad", "attn_values", "attn_values_grad"):
        assert "attn" in kind and work.KINDS[kind][0] == work.MAC
