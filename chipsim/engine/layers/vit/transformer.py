"""Quantized vision-transformer layers: a pre-LN encoder layer and the patch embedding in front of it.

One encoder layer (ViT, Dosovitskiy et al.; the CFF paper's Sec. 3.4)::

    z = x + Proj(MHSA(LN1(x)))           MHSA = Q/K/V projection, scores, softmax, values
    f = z + FC2(GELU(FC1(LN2(z))))
    out = quantize(f)                    what is stored and sent to the next layer

The CFF paper's first "layer" is the patch projection plus position embedding
plus encoder layer 1 (:class:`EmbedEncoderLayer`); every later layer is one
:class:`EncoderLayer`. Each such layer is one unit of layer-local learning:
its loss reaches its own parameters and nothing below.

Widths (``Precision`` plus :class:`TransformerWidths`), and why:

* The five weighted sums (patch projection, Q/K/V, output projection, FC1,
  FC2) are exact integer products of ``weight_bits`` weights (per output
  channel) and ``activation_bits`` inputs (running ACIQ clipping scales),
  rescaled to float32 with a float bias -- as ``QuantBlock`` does. Every
  operand is a signed code of its lane width: layer-norm, attention and GELU
  outputs are signed anyway, and the non-negative pixels use the upper half
  of the signed range (codes 0 .. 2**(b-1) - 1), so the patch projection runs
  on the same b-bit lanes instead of needing b + 1 bits for unsigned codes.
  Pixels are ``input_bits`` wide (default 8, the sensor's width; as usual for
  a quantized network's first layer): at 4 bits the image keeps only 8
  levels, for a product that is ~1.5% of the encoder's forward MACs.
* Attention products: see ``chipsim.engine.layers.vit.mhsa`` (Q/K/V at ``attn_bits``,
  softmax in float32 on accumulator-width scores, P at ``softmax_bits``).
* LayerNorm statistics and normalisation are float32 on the vector unit
  (``chipsim.engine.layers.vit.token_layers.LayerNorm``): a per-token mean and variance
  of accumulator values, whose output is requantized right away as the next
  product's operand.
* Residual adds run at accumulator width (float32) inside a layer; what
  leaves a core is requantized, signed: the layer's output to ``output_bits``
  (default activation_bits), and z, the attention half's output, to
  ``stream_bits`` (default 8) -- on the chip the two halves of a layer run on
  cores of their own (``chipsim.engine.layers.vit.block``), and z is the residual
  stream the MLP half adds to, so it keeps 8 bits where the output, which the
  next layer normalises first, takes 4. The token mean that the layer's
  loss and the head read (``cache["pooled"]``) is taken before that
  requantization, at accumulator width, as QuantBlock's goodness is: a
  reduction the core runs on the value it has.
* Errors are quantized to ``gradient_bits`` with seeded stochastic rounding
  before every integer product; all quantizers are straight-through.

At 32 bits everything is float32 and the layer matches torch autograd
(``tests/test_transformer_layer.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .... import kernels as K
from ....quant import ClippedScale, FixedPoint, check_bits
from ....trace import nbytes_of
from ....trace.work import split
from .mhsa import SelfAttentionCore
from .token_layers import LayerNorm, QuantLinear, dequantize, master_copy


@dataclass(frozen=True)
class TransformerWidths:
    """Widths inside a transformer layer that ``Precision`` does not name.

    ``None`` means "activation_bits". When activation_bits is 32 (the float
    reference) every width here is 32 too, so a 32-bit config is float
    throughout. ``softmax_bits`` is never narrower than activation_bits.
    """
    softmax_bits: int = 8                 # attention probabilities P, the P V operand (non-negative codes)
    attn_bits: int | None = None          # Q, K, V as operands of the attention products (signed)
    output_bits: int | None = None        # the layer output, stored and sent (signed)
    input_bits: int | None = 8            # the image's pixels, the patch projection's operand
    stream_bits: int | None = 8           # z, the attention half's output, as it crosses to the MLP half (signed)

    def resolve(self, precision) -> TransformerWidths:
        a = precision.activation_bits
        if a == 32:
            return TransformerWidths(32, 32, 32, 32, 32)
        attn, out, pixels, stream = (a if v is None else check_bits(v) for v in (self.attn_bits, self.output_bits,
                                                                                 self.input_bits, self.stream_bits))
        return TransformerWidths(max(check_bits(self.softmax_bits), a), attn, out, pixels, stream)


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def _sum_bytes(*dicts) -> dict:
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


class EncoderLayer:
    """One pre-LN transformer encoder layer on (N, T, E) tokens, at the widths of ``precision``."""

    def __init__(self, index: int, dim: int, heads: int, mlp_dim: int, tokens: int, precision, rng,
                 widths: TransformerWidths = TransformerWidths()):
        self.index = index
        self.dim, self.heads, self.mlp_dim, self.tokens = int(dim), int(heads), int(mlp_dim), int(tokens)
        self.prec = precision
        self.widths = w = widths.resolve(precision)
        self.ln1 = LayerNorm(dim, precision)
        self.qkv = QuantLinear(dim, 3 * dim, precision, rng, whole_input=True)
        self.attn = SelfAttentionCore(dim, heads, precision, w.attn_bits, w.softmax_bits)
        self.proj = QuantLinear(dim, dim, precision, rng, whole_error=True)
        self.ln2 = LayerNorm(dim, precision)
        self.fc1 = QuantLinear(dim, mlp_dim, precision, rng, whole_input=True)
        self.fc2 = QuantLinear(mlp_dim, dim, precision, rng, whole_error=True)
        self.out_scale = ClippedScale(w.output_bits, signed=True, scale_mode=precision.scale)
        self.stream_scale = ClippedScale(w.stream_bits, signed=True, scale_mode=precision.scale)

    @property
    def in_shape(self):
        return (self.tokens, self.dim)

    out_shape = in_shape

    def parts(self) -> dict:
        return dict(ln1=self.ln1, qkv=self.qkv, proj=self.proj, ln2=self.ln2, fc1=self.fc1, fc2=self.fc2)

    def masters(self) -> dict:
        """Every trainable parameter as name -> FixedPoint (the names :meth:`backward` returns)."""
        out = {}
        for name, part in self.parts().items():
            out.update(_prefixed(name, part.masters()))
        return out

    def requantize(self):
        for part in self.parts().values():
            part.requantize()

    # ------------------------------------------------------------ forward
    def forward(self, x, train: bool):
        """Tokens (N, T, E) -> (out, cache); ``out`` is the requantized output, ``cache["pooled"]`` (N, E)
        the token mean at accumulator width."""
        z, c_attn = self.forward_attention(x, train)
        out, c_mlp = self.forward_mlp(z, train)
        return out, {**c_attn, **c_mlp}

    def forward_attention(self, x, train: bool):
        """The first half, LN1 -> MHSA -> residual: (z, its part of the cache)."""
        with split("replicated"):                # every head's slice normalises the whole token stream
            h, c_ln1 = self.ln1.forward(x)
        qkv, c_qkv = self.qkv.forward(h, train)
        o, c_attn = self.attn.forward(qkv, train)
        a, c_proj = self.proj.forward(o, train)
        zq, zs = self.stream_scale.quantize(K.residual_add(x, a), update=train)
        return dequantize(zq, zs, self.widths.stream_bits), dict(ln1=c_ln1, qkv=c_qkv, attn=c_attn, proj=c_proj)

    def forward_mlp(self, z, train: bool):
        """The second half, LN2 -> GELU MLP -> residual -> requantized output: (out, its part of the cache)."""
        with split("replicated"):
            h2, c_ln2 = self.ln2.forward(z)
        u, c_fc1 = self.fc1.forward(h2, train)
        g = K.gelu_forward(u)
        m, c_fc2 = self.fc2.forward(g, train)
        f = K.residual_add(z, m)
        fq, fs = self.out_scale.quantize(f, update=train)
        out = dequantize(fq, fs, self.widths.output_bits)
        return out, dict(ln2=c_ln2, fc1=c_fc1, u=u, fc2=c_fc2, out=out, pooled=K.token_mean(f))

    # ------------------------------------------------------------ backward
    def backward(self, g_out, cache, rng, input_grad: bool = False):
        """Error at the output (N, T, E) -> (gradients by :meth:`masters` name, error at the input or None).

        ``input_grad=False`` is the layer-local case (input detached): the
        last layer-norm backward skips its input gradient and the residual
        branch is not summed.
        """
        g_mlp, gz = self.backward_mlp(g_out, cache, rng)
        g_attn, gx = self.backward_attention(gz, cache, rng, input_grad)
        return {**g_mlp, **g_attn}, gx

    def backward_mlp(self, g_out, cache, rng):
        """The MLP half's backward: (its gradients, the error at z, the attention half's output)."""
        c = cache
        g_fc2, gg = self.fc2.backward(g_out, c["fc2"], rng)
        gu = K.gelu_backward(gg, c["u"])
        g_fc1, gh2 = self.fc1.backward(gu, c["fc1"], rng)
        g_ln2, gz_mlp = self.ln2.backward(gh2, c["ln2"])
        gz = K.residual_add(g_out, gz_mlp)
        grads = {}
        for name, g in (("fc2", g_fc2), ("fc1", g_fc1), ("ln2", g_ln2)):
            grads.update(_prefixed(name, g))
        return grads, gz

    def backward_attention(self, gz, cache, rng, input_grad: bool = False):
        """The attention half's backward from the error at z: (its gradients, the error at the input or None)."""
        c = cache
        g_proj, go = self.proj.backward(gz, c["proj"], rng)
        gqkv = self.attn.backward(go, c["attn"], rng)
        g_qkv, gh = self.qkv.backward(gqkv, c["qkv"], rng)
        g_ln1, gx_attn = self.ln1.backward(gh, c["ln1"], input_grad=input_grad)
        grads = {}
        for name, g in (("proj", g_proj), ("qkv", g_qkv), ("ln1", g_ln1)):
            grads.update(_prefixed(name, g))
        gx = K.residual_add(gz, gx_attn) if input_grad else None
        return grads, gx

    def grad_input(self, g_out, cache, rng):
        """The BP baseline's error at the layer input (it also needs the gradients: use :meth:`backward`)."""
        return self.backward(g_out, cache, rng, input_grad=True)[1]

    # ------------------------------------------------------------ storage (bits as stored on chip)
    def stored_bytes(self, cache) -> dict:
        """Bytes of what forward keeps for the backward pass, by buffer, at the widths a core stores them.

        ``attn_probs`` is the attention matrix (N*H*T*T codes at softmax_bits);
        ``mlp_pre`` the FC1 output GELU's backward reads (float32);
        ``ln_xhat``/``ln_inv_std`` the two layer norms' float32 state; ``x`` the
        codes each weighted sum's weight gradient reads; ``out`` the output.
        """
        c = cache
        proj_in = {"x": nbytes_of(c["proj"]["xq"].size, self.proj.in_bits)}
        sb = _sum_bytes(self.qkv.stored_bytes(c["qkv"]), proj_in,
                        self.fc1.stored_bytes(c["fc1"]), self.fc2.stored_bytes(c["fc2"]))
        ln = _sum_bytes(LayerNorm.stored_bytes(c["ln1"]), LayerNorm.stored_bytes(c["ln2"]))
        out = dict(linear_inputs=sb["x"], ln_xhat=ln["xhat"], ln_inv_std=ln["inv_std"],
                   mlp_pre=4 * c["u"].size, out=nbytes_of(c["out"].size, self.widths.output_bits),
                   pooled=4 * c["pooled"].size)
        out.update(self.attn.stored_bytes(c["attn"]))
        return out

    def param_bytes(self) -> dict:
        return _sum_bytes(*(part.param_bytes() for part in self.parts().values()))

    # ------------------------------------------------------------ checkpoint
    def state(self):
        return dict(parts={k: p.state() for k, p in self.parts().items()}, attn=self.attn.state(),
                    out_scale=self.out_scale.running, stream_scale=self.stream_scale.running)

    def load(self, s):
        for k, p in self.parts().items():
            p.load(s["parts"][k])
        self.attn.load(s["attn"])
        self.out_scale.running = s["out_scale"]
        self.stream_scale.running = s["stream_scale"]
        self.requantize()


class PatchProjection(QuantLinear):
    """The patch embedding's weighted sum: patchify the image codes, then one exact dense product.

    Its input is the image (pixels as signed activation_bits codes, which
    for non-negative pixels use 0 .. 2**(b-1) - 1; running clipping scale),
    plus optional extra patches that share the scale and the weights. It
    never sends an error further down: no input gradient.
    """

    def __init__(self, in_channels: int, patch: int, dim: int, precision, rng, in_bits: int | None = None):
        super().__init__(in_channels * patch * patch, dim, precision, rng, in_bits=in_bits)
        self.patch = int(patch)

    def forward(self, x, train: bool, extra=None):
        xq, xs = self.quantize_input(x, train)
        eq = None if extra is None else self.in_scale.quantize(extra, update=False)[0]
        return super().forward(None, train, quantized=((xq, eq), xs))

    def _product(self, xq, bound):
        return K.patch_embed_forward(xq[0], self.wq, self.patch, int_bound=bound, extra=xq[1])

    def _grad_weight_product(self, xq, gq, bound):
        return K.patch_embed_grad_weight(xq[0], gq, self.patch, int_bound=bound, extra=xq[1])

    def backward(self, gy, cache, rng, input_grad: bool = False):
        if input_grad:
            raise ValueError("the patch embedding's input is the image: it has no input gradient")
        return super().backward(gy, cache, rng, input_grad=False)

    def stored_bytes(self, cache) -> dict:
        img, extra = cache["xq"]
        return {"x": nbytes_of(img.size + (0 if extra is None else extra.size), self.in_bits)}


class EmbedEncoderLayer:
    """The paper's first layer: patch projection + learnable position embedding + encoder layer 1.

    ``extra_tokens`` reserves position embeddings for patches the caller
    appends to the image's (FF's label patch, the paper's Algorithm 1 right):
    ``forward(x, train, extra)`` takes them as raw patch vectors
    (N, extra_tokens, C*p*p) that go through the same projection.
    """

    def __init__(self, index: int, input_shape, patch: int, dim: int, heads: int, mlp_dim: int, precision, rng,
                 widths: TransformerWidths = TransformerWidths(), extra_tokens: int = 0):
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"block {index}: patch {patch} does not tile a {h}x{w} image")
        self.index = index
        self.input_shape = tuple(input_shape)
        self.patch = int(patch)
        self.extra_tokens = int(extra_tokens)
        self.tokens = (h // patch) * (w // patch) + self.extra_tokens
        self.prec = precision
        self.widths = widths.resolve(precision)
        self.embed = PatchProjection(c, patch, dim, precision, rng, in_bits=self.widths.input_bits)
        self.pos = master_copy(rng.normal(0.0, 0.02, size=(self.tokens, dim)).astype(np.float32),
                               precision.update_bits, min_range=1.0)
        self.encoder = EncoderLayer(index, dim, heads, mlp_dim, self.tokens, precision, rng, widths)

    @property
    def in_shape(self):
        return self.input_shape

    @property
    def out_shape(self):
        return self.encoder.out_shape

    def masters(self) -> dict:
        return {**_prefixed("embed", self.embed.masters()), "pos": self.pos, **self.encoder.masters()}

    def requantize(self):
        self.embed.requantize()
        self.encoder.requantize()

    def forward(self, x, train: bool, extra=None):
        """Images (N, C, H, W) [+ extra patches] -> (out, cache), as :meth:`EncoderLayer.forward`."""
        z, c_attn = self.forward_attention(x, train, extra)
        out, c_mlp = self.forward_mlp(z, train)
        return out, {**c_attn, **c_mlp}

    def forward_attention(self, x, train: bool, extra=None):
        """Patch projection + position, then the encoder's attention half: (z, its part of the cache).

        The projection is replicated on a split layer's slices: every head needs the whole token stream,
        and the product is small (C*p*p inputs per token)."""
        want = (self.extra_tokens, self.embed.shape[1])
        if (extra is None) != (self.extra_tokens == 0) or (extra is not None and extra.shape[1:] != want):
            raise ValueError(f"block {self.index}: expected {self.extra_tokens} extra patch(es) of "
                             f"{self.embed.shape[1]} values per sample")
        with split("replicated"):
            y, c_embed = self.embed.forward(x, train, extra)
            tokens = K.bias_add(y, self.pos.value)
        z, cache = self.encoder.forward_attention(tokens, train)
        return z, dict(cache, embed=c_embed)

    def forward_mlp(self, z, train: bool):
        return self.encoder.forward_mlp(z, train)

    def backward(self, g_out, cache, rng, input_grad: bool = False):
        """Error at the output -> (gradients, None): the error runs through encoder layer 1 into the
        position embedding and the patch projection, never into the image."""
        g_mlp, gz = self.backward_mlp(g_out, cache, rng)
        g_attn, _ = self.backward_attention(gz, cache, rng, input_grad)
        return {**g_mlp, **g_attn}, None

    def backward_mlp(self, g_out, cache, rng):
        return self.encoder.backward_mlp(g_out, cache, rng)

    def backward_attention(self, gz, cache, rng, input_grad: bool = False):
        """The attention half's backward, on into the position embedding and the patch projection (their
        copies are replicated, so every slice computes their whole gradient)."""
        if input_grad:
            raise ValueError("the first layer's input is the image: it has no input gradient")
        grads, gt = self.encoder.backward_attention(gz, cache, rng, input_grad=True)
        with split("replicated"):
            grads["pos"] = K.bias_grad(gt, keep=2)
            grads.update(_prefixed("embed", self.embed.backward(gt, cache["embed"], rng)[0]))
        return grads, None

    def stored_bytes(self, cache) -> dict:
        out = self.encoder.stored_bytes(cache)
        out["linear_inputs"] += self.embed.stored_bytes(cache["embed"])["x"]
        return out

    def param_bytes(self) -> dict:
        n = self.pos.value.size
        return _sum_bytes(self.embed.param_bytes(), self.encoder.param_bytes(),
                          dict(weights=4 * n, master=nbytes_of(n, self.prec.update_bits)))

    def state(self):
        return dict(embed=self.embed.state(), pos=self.pos.to_state(), encoder=self.encoder.state())

    def load(self, s):
        self.embed.load(s["embed"])
        self.pos = FixedPoint.from_state(s["pos"])
        self.encoder.load(s["encoder"])


def build_encoder(blocks, input_shape, precision, rng, widths: TransformerWidths = TransformerWidths(),
                  extra_tokens: int = 0):
    """The layers of a ``vit`` model's blocks (``chipsim.modelspec``): the first embeds patches."""
    mlp = [b.mlp_dim or 4 * b.dim for b in blocks]
    first = blocks[0]
    layers = [EmbedEncoderLayer(0, input_shape, first.patch, first.dim, first.heads, mlp[0], precision, rng, widths,
                                extra_tokens)]
    for i, b in enumerate(blocks[1:], start=1):
        layers.append(EncoderLayer(i, b.dim, b.heads, mlp[i], layers[0].tokens, precision, rng, widths))
    return layers
