"""The quantized transformer layers: at 32 bits equal to a torch ViT layer (forward, every parameter
gradient, the input gradient); at 4/8 bits on integer codes of the configured widths, seeded,
close to the float gradient; storage accounting at the stored widths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chipsim.config import Precision
from chipsim.engine.layers.vit.transformer import EmbedEncoderLayer, EncoderLayer, TransformerWidths, build_encoder
from chipsim.modelspec import load_model

torch.set_num_threads(2)

FLOAT = Precision(weight_bits=32, activation_bits=32, gradient_bits=32, update_bits=32, goodness_bits=32)
FOUR = Precision(weight_bits=4, activation_bits=4, gradient_bits=8, update_bits=16, goodness_bits=8)
EIGHT = Precision(weight_bits=8, activation_bits=8, gradient_bits=8, update_bits=16, goodness_bits=8)
N, T, E, H, M = 3, 9, 16, 4, 24


def _close(ours, ref, rtol=1e-4):
    ref = np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def _perturb(layer, rng):
    """Move every parameter off its init (biases 0, gains 1) so each gradient is exercised."""
    for name, m in layer.masters().items():
        m.apply((0.2 * rng.standard_normal(m.value.shape)).astype(np.float32))
    layer.requantize()


def _torch_encoder(x, p, prefix=""):
    def g(name):
        return p[prefix + name]
    n, t, e = x.shape
    h = F.layer_norm(x, (e,), g("ln1.gamma"), g("ln1.beta"), 1e-5)
    q, k, v = F.linear(h, g("qkv.w"), g("qkv.b")).reshape(n, t, 3, H, e // H).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, e)
    z = x + F.linear(o, g("proj.w"), g("proj.b"))
    u = F.linear(F.layer_norm(z, (e,), g("ln2.gamma"), g("ln2.beta"), 1e-5), g("fc1.w"), g("fc1.b"))
    return z + F.linear(F.gelu(u), g("fc2.w"), g("fc2.b"))


def _torch_params(layer):
    return {k: torch.tensor(m.value, dtype=torch.float32, requires_grad=True) for k, m in layer.masters().items()}


def test_encoder_layer_matches_torch():
    rng = np.random.default_rng(0)
    layer = EncoderLayer(1, E, H, M, T, FLOAT, rng)
    _perturb(layer, rng)
    x = rng.standard_normal((N, T, E)).astype(np.float32)
    p = _torch_params(layer)
    xt = torch.tensor(x, requires_grad=True)
    ft = _torch_encoder(xt, p)
    gy = rng.standard_normal(ft.shape).astype(np.float32)
    ft.backward(torch.tensor(gy))
    out, cache = layer.forward(x, train=True)
    _close(out, ft.detach().numpy())
    _close(cache["pooled"], ft.detach().numpy().mean(axis=1))
    grads, gx = layer.backward(gy, cache, np.random.default_rng(1), input_grad=True)
    assert set(grads) == set(layer.masters())
    for k, g in grads.items():
        assert g.shape == layer.masters()[k].value.shape, k
        _close(g, p[k].grad.numpy())
    _close(gx, xt.grad.numpy())
    _close(layer.grad_input(gy, cache, np.random.default_rng(1)), xt.grad.numpy())
    local, none = layer.backward(gy, cache, np.random.default_rng(1))          # layer-local: input detached
    assert none is None
    for k in grads:
        np.testing.assert_array_equal(local[k], grads[k])


def test_embed_layer_matches_torch():
    """Patch projection + position embedding + encoder layer 1, gradients reaching the embedding."""
    rng = np.random.default_rng(2)
    layer = EmbedEncoderLayer(0, (1, 12, 12), 4, E, H, M, FLOAT, rng)
    _perturb(layer, rng)
    x = rng.random((N, 1, 12, 12), dtype=np.float32)
    p = _torch_params(layer)
    conv = F.conv2d(torch.tensor(x), p["embed.w"].reshape(E, 1, 4, 4), p["embed.b"], stride=4)
    ft = _torch_encoder(conv.flatten(2).transpose(1, 2) + p["pos"], p)
    gy = rng.standard_normal(ft.shape).astype(np.float32)
    ft.backward(torch.tensor(gy))
    out, cache = layer.forward(x, train=True)
    _close(out, ft.detach().numpy())
    grads, none = layer.backward(gy, cache, np.random.default_rng(3))
    assert none is None and set(grads) == set(layer.masters())
    for k, g in grads.items():
        _close(g, p[k].grad.numpy())
    with pytest.raises(ValueError, match="no input gradient"):
        layer.backward(gy, cache, np.random.default_rng(3), input_grad=True)


def test_embed_layer_extra_token():
    """FF's label patch: one more token through the same projection, with its own position."""
    rng = np.random.default_rng(4)
    layer = EmbedEncoderLayer(0, (1, 8, 8), 4, E, H, M, FLOAT, rng, extra_tokens=1)
    x = rng.random((2, 1, 8, 8), dtype=np.float32)
    extra = rng.random((2, 1, 16), dtype=np.float32)
    out, cache = layer.forward(x, True, extra)
    assert out.shape == (2, 5, E)
    with pytest.raises(ValueError, match="extra patch"):
        layer.forward(x, True)
    grads, _ = layer.backward(np.ones_like(out), cache, np.random.default_rng(0))
    assert grads["pos"].shape == (5, E)


def _grad_cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@pytest.mark.parametrize("prec,min_cos", [(EIGHT, 0.99), (FOUR, 0.9)])
def test_quantized_layer_runs_on_codes_and_tracks_float(prec, min_cos):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, T, E)).astype(np.float32)
    gy = rng.standard_normal((8, T, E)).astype(np.float32)
    ref = EncoderLayer(1, E, H, M, T, FLOAT, np.random.default_rng(6))
    q = EncoderLayer(1, E, H, M, T, prec, np.random.default_rng(6))
    out, cache = q.forward(x, train=True)
    a = prec.activation_bits
    amax = 2 ** (a - 1) - 1
    for codes in (cache["qkv"]["xq"], cache["attn"]["qq"], cache["attn"]["kq"], cache["attn"]["vq"],
                  cache["fc2"]["xq"]):
        assert np.all(codes == np.rint(codes)) and np.abs(codes).max() <= amax
    pq = cache["attn"]["pq"]
    assert np.all(pq == np.rint(pq)) and pq.min() >= 0 and pq.max() <= 2 ** (q.widths.softmax_bits - 1) - 1
    assert len(np.unique(out)) <= 2 * amax + 1                     # the output is requantized to a bits
    g_ref, _ = ref.backward(gy, ref.forward(x, True)[1], np.random.default_rng(7))
    g1, _ = q.backward(gy, cache, np.random.default_rng(7))
    g2, _ = q.backward(gy, cache, np.random.default_rng(7))
    for k in g_ref:
        np.testing.assert_array_equal(g1[k], g2[k])               # seeded stochastic rounding
    for k in g_ref:                                                # same init: close to the float gradient
        assert _grad_cosine(g1[k], g_ref[k]) > min_cos, k


def test_stored_bytes_at_stored_widths():
    rng = np.random.default_rng(8)
    q = EncoderLayer(1, E, H, M, T, FOUR, rng)
    _, cache = q.forward(rng.standard_normal((2, T, E)).astype(np.float32), train=True)
    sb = q.stored_bytes(cache)
    assert sb["attn_probs"] == 2 * H * T * T * 8 // 8               # P at softmax_bits = 8
    assert sb["qkv"] == (3 * 2 * T * E * 4 + 7) // 8
    assert sb["out"] == (2 * T * E * 4 + 7) // 8
    assert sb["mlp_pre"] == 4 * 2 * T * M
    wide = EncoderLayer(1, E, H, M, T, FOUR, rng, TransformerWidths(softmax_bits=16))
    assert wide.widths.softmax_bits == 16 and wide.widths.attn_bits == 4
    assert TransformerWidths(softmax_bits=2, input_bits=4, output_bits=8).resolve(FOUR) == TransformerWidths(4, 4, 8, 4)
    first = EmbedEncoderLayer(0, (1, 8, 8), 4, E, H, M, FOUR, rng)
    _, c0 = first.forward(rng.random((2, 1, 8, 8), dtype=np.float32), train=True)
    assert first.embed.in_bits == 8 and np.abs(c0["embed"]["xq"][0]).max() > 7     # pixels on 8-bit codes
    assert first.stored_bytes(c0)["linear_inputs"] == q.stored_bytes(c0)["linear_inputs"] + 2 * 64
    assert EncoderLayer(1, E, H, M, T, FLOAT, rng).widths == TransformerWidths(32, 32, 32, 32, 32)
    pb = q.param_bytes()
    n_w = 3 * E * E + E * E + 2 * E * M
    assert pb["weights"] > (n_w * 4) // 8 and pb["master"] >= (n_w * 16) // 8


def test_build_encoder_from_model_file():
    model = load_model("models/vit_tiny.yaml")
    layers = build_encoder(model.blocks, (1, 28, 28), FOUR, np.random.default_rng(0))
    assert len(layers) == 4 and isinstance(layers[0], EmbedEncoderLayer)
    assert layers[0].tokens == 16 and all(la.tokens == 16 for la in layers[1:])
    out, _ = layers[0].forward(np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32), False)
    for la in layers[1:]:
        out, cache = la.forward(out, False)
    assert out.shape == (2, 16, 64) and cache["pooled"].shape == (2, 64)


def test_layer_step_logs_every_transformer_op():
    """A forward + backward of the first layer logs attention, softmax and layer-norm ops of their own kinds,
    the weighted sums at the quantized widths, and the MACs the products really performed."""
    from chipsim.trace import work
    rng = np.random.default_rng(9)
    layer = EmbedEncoderLayer(0, (1, 28, 28), 7, 64, 4, 256, FOUR, rng)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    with work.open_log() as log:
        out, cache = layer.forward(x, train=True)
        layer.backward(np.ones_like(out), cache, np.random.default_rng(0))
    by_kind = {}
    for w in log.items:
        by_kind.setdefault(w.kind, []).append(w)
    for kind in ("patch_embed", "patch_embed_grad_weight", "token_dense_forward", "token_dense_grad_weight",
                 "token_dense_grad_input", "attn_scores", "attn_scores_grad", "attn_values", "attn_values_grad",
                 "softmax", "softmax_backward", "layernorm", "layernorm_backward", "gelu", "gelu_backward",
                 "token_mean", "bias_add", "bias_grad", "residual_add"):
        assert kind in by_kind, kind
    n, t, e, h = 4, 16, 64, 4
    assert sum(w.count for w in by_kind["attn_scores"]) == n * h * t * t * (e // h)
    assert sum(w.count for w in by_kind["attn_scores_grad"]) == 2 * n * h * t * t * (e // h)
    assert {w.bits for w in by_kind["attn_scores"]} == {(4, 4)}
    assert {w.bits for w in by_kind["attn_values"]} == {(8, 4)}           # P at softmax_bits = 8
    assert {w.bits for w in by_kind["patch_embed"]} == {(8, 4)}           # pixels at input_bits = 8
    fwd = sum(w.count for w in by_kind["token_dense_forward"])
    assert fwd == n * t * (3 * e * e + e * e + 2 * e * 256)
    assert {w.bits for w in by_kind["token_dense_grad_weight"]} == {(4, 8)}
    assert len(by_kind["layernorm_backward"]) == 2 and len(by_kind["token_dense_grad_input"]) == 4
