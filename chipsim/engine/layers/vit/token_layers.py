"""The parametrised pieces of a transformer layer: a quantized token-wise dense and a layer norm.

Both follow ``QuantBlock``'s conventions (``chipsim.engine.layers.block``):

* master parameters are ``chipsim.quant.FixedPoint`` at ``update_bits``; the
  optimizer updates them through :meth:`masters` (name -> FixedPoint) with the
  gradients :meth:`backward` returns under the same names, then calls
  :meth:`requantize`;
* a weighted sum's weights are quantized from the master per output channel to
  ``weight_bits``, its input through a running :class:`~chipsim.quant.ClippedScale`
  to ``in_bits``; the product is exact on the integer codes and rescaled;
* errors are quantized to ``gradient_bits`` (seeded, stochastic or nearest)
  before each integer product; quantizers pass gradients straight through.

At 32 bits every quantizer is the identity, which the torch parity tests use.

Where the work lands on a transformer sub-layer split across cores
(``chipsim.engine.layers.vit.block``): a product's own work is shared by the slices
(``units``); quantizing an operand that every slice holds whole -- the
layer-norm output entering Q/K/V or FC1 (``whole_input``), the residual-stream
error entering the output projection or FC2 (``whole_error``) -- is done by
every slice in full (``replicated``, ``chipsim.trace.work.split``).
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .... import kernels as K
from ....quant import ClippedScale, FixedPoint, quantize_signed, quantize_weights, signed_max
from ....trace import nbytes_of
from ....trace.work import record, split

LN_EPS = 1e-5


def master_copy(w0, bits: int, min_range: float = 0.0) -> FixedPoint:
    """A fixed-point master for ``w0`` whose range reaches at least ``min_range``.

    FixedPoint sizes its grid from the initial values (4x headroom); a bias that
    starts at zero or a position embedding that starts at 0.02 would then
    saturate early, so such parameters ask for an absolute range instead.
    """
    w0 = np.asarray(w0, dtype=np.float32)
    peak = float(np.max(np.abs(w0))) if w0.size else 0.0
    headroom = 4.0 if peak == 0.0 else max(4.0, min_range / peak)
    return FixedPoint(w0, bits, headroom=headroom)


def code_bound(bits: int):
    """The largest code magnitude of a signed ``bits``-wide operand, or None at 32 bits (float).

    Every transformer operand is a signed code of its lane width (non-negative
    values use the upper half), so this one bound serves all of them.
    """
    return None if bits == 32 else signed_max(bits)


def int_bound(a_max, b_max):
    """``int_bound`` for the kernels from two operands' code bounds (None if either is float)."""
    return None if a_max is None or b_max is None else (a_max, b_max)


def dequantize(codes, scale, bits: int):
    """Codes times scale; at 32 bits the 'codes' already are the values."""
    return codes if bits == 32 else (codes * scale).astype(np.float32)


def rescale(acc, scale, kernel: str, quantized: bool = True):
    """An integer accumulator times its operands' scales, as float32: one multiply per element on a core
    (costed as ``dequantize`` when the product ran on codes; a float product needs no rescale)."""
    if quantized:
        record("dequantize", kernel, np.size(acc))
    return (acc * scale).astype(np.float32)


def whole(flag: bool):
    """The ``replicated`` split context when ``flag`` (an operand every slice holds whole), else none."""
    return split("replicated") if flag else nullcontext()


class QuantLinear:
    """y = x W^T + b over every token, with W at ``weight_bits`` and x at ``in_bits`` (signed codes).

    Weights start Xavier-uniform (the original ViT's choice), biases at zero.
    ``whole_input`` / ``whole_error``: the input / the output error is a tensor
    every slice of a split layer holds whole (see the module docstring).
    """

    def __init__(self, in_dim: int, out_dim: int, precision, rng, in_bits: int | None = None,
                 whole_input: bool = False, whole_error: bool = False):
        p = precision
        self.whole_input, self.whole_error = bool(whole_input), bool(whole_error)
        self.prec = p
        self.shape = (int(out_dim), int(in_dim))
        bound = np.sqrt(6.0 / (in_dim + out_dim))
        self.w = FixedPoint(rng.uniform(-bound, bound, size=self.shape).astype(np.float32), p.update_bits)
        self.b = master_copy(np.zeros(out_dim, np.float32), p.update_bits, min_range=1.0)
        self.in_bits = p.activation_bits if in_bits is None else int(in_bits)
        self.in_scale = ClippedScale(self.in_bits, signed=True, scale_mode=p.scale)
        self.requantize()

    def masters(self) -> dict:
        return {"w": self.w, "b": self.b}

    def requantize(self):
        """Refresh the weight codes and the float bias from the masters (after each update)."""
        self.wq, self.wscale = quantize_weights(self.w.value, self.prec.weight_bits, self.prec.scale)
        self.bias = self.b.value

    def quantize_input(self, x, train: bool):
        return self.in_scale.quantize(x, update=train)

    def forward(self, x, train: bool, quantized=None):
        """Returns (y, cache). ``quantized=(codes, scale)`` skips the input quantizer (already done)."""
        if quantized is None:
            with whole(self.whole_input):
                quantized = self.quantize_input(x, train)
        xq, xs = quantized
        bound = int_bound(code_bound(self.in_bits), code_bound(self.prec.weight_bits))
        acc = self._product(xq, bound)
        y = K.bias_add(rescale(acc, xs * self.wscale, "QuantLinear.forward", bound is not None), self.bias)
        return y, dict(xq=xq, xs=xs)

    def _product(self, xq, bound):
        return K.token_dense_forward(xq, self.wq, int_bound=bound)

    def _grad_weight_product(self, xq, gq, bound):
        return K.token_dense_grad_weight(xq, gq, int_bound=bound)

    def quantize_error(self, g, rng):
        p = self.prec
        return quantize_signed(g, p.gradient_bits, p.rounding, rng, p.scale)

    def backward(self, gy, cache, rng, input_grad: bool = True):
        """Error at the output -> ({"w", "b"} gradients, error at the input or None)."""
        p = self.prec
        with whole(self.whole_error):
            gq, gs = self.quantize_error(gy, rng)
        bound = int_bound(code_bound(self.in_bits), code_bound(p.gradient_bits))
        # rescaled once for the step's sum; the per-sample rescale-and-add into the accumulator is costed by
        # the tracer (StepTracer.accumulation), so it is not logged here
        gw = (self._grad_weight_product(cache["xq"], gq, bound) * (cache["xs"] * gs)).astype(np.float32)
        grads = {"w": gw, "b": K.bias_grad(gy)}
        if not input_grad:
            return grads, None
        # fold the per-output-channel weight scale into the error: one integer product serves all channels
        bound = int_bound(code_bound(p.gradient_bits), code_bound(p.weight_bits))
        with whole(self.whole_error):
            hq, hs = self.quantize_error(rescale(gy, self.wscale, "QuantLinear.grad_input", bound is not None), rng)
        acc = K.token_dense_grad_input(hq, self.wq, int_bound=bound)
        return grads, rescale(acc, hs, "QuantLinear.grad_input", bound is not None)

    def stored_bytes(self, cache) -> dict:
        """The input codes the weight gradient reads."""
        return {"x": nbytes_of(cache["xq"].size, self.in_bits)}

    def param_bytes(self) -> dict:
        p = self.prec
        n = self.shape[0] * self.shape[1]
        return dict(weights=nbytes_of(n, p.weight_bits) + 4 * self.shape[0],     # codes + per-channel scales
                    master=nbytes_of(n + self.shape[0], p.update_bits))          # weights + bias

    def state(self):
        return dict(w=self.w.to_state(), b=self.b.to_state(), in_scale=self.in_scale.running)

    def load(self, s):
        self.w, self.b = FixedPoint.from_state(s["w"]), FixedPoint.from_state(s["b"])
        self.in_scale.running = s["in_scale"]
        self.requantize()


class LayerNorm:
    """Layer norm over each token's features with a learnable gain and shift (float, masters at update_bits).

    Statistics and normalisation run at float32 on the vector unit: they are
    a mean and a variance of accumulator-width values, and their output is
    requantized right away as the next weighted sum's operand (by that
    :class:`QuantLinear`'s input quantizer), so narrowing them buys nothing.
    """

    def __init__(self, dim: int, precision):
        self.prec = precision
        self.gamma = master_copy(np.ones(dim, np.float32), precision.update_bits)
        self.beta = master_copy(np.zeros(dim, np.float32), precision.update_bits, min_range=1.0)

    def masters(self) -> dict:
        return {"gamma": self.gamma, "beta": self.beta}

    def requantize(self):
        pass                                   # used as float values straight from the masters

    def forward(self, x):
        return K.layernorm_forward(x, self.gamma.value, self.beta.value, LN_EPS)

    def backward(self, gy, cache, input_grad: bool = True):
        gx, gg, gb = K.layernorm_backward(gy, cache, input_grad=input_grad)
        return {"gamma": gg, "beta": gb}, gx

    @staticmethod
    def stored_bytes(cache) -> dict:
        """xhat (float32, per element) and 1/std (float32, per token)."""
        return {"xhat": 4 * cache.xhat.size, "inv_std": 4 * cache.inv_std.size}

    def param_bytes(self) -> dict:
        n = 2 * self.gamma.value.size
        return dict(weights=4 * n, master=nbytes_of(n, self.prec.update_bits))

    def state(self):
        return dict(gamma=self.gamma.to_state(), beta=self.beta.to_state())

    def load(self, s):
        self.gamma, self.beta = FixedPoint.from_state(s["gamma"]), FixedPoint.from_state(s["beta"])
