"""One block ``BN -> conv|dense -> ReLU -> [max-pool]`` on quantized integer operands.

What a core does, in order (and what the trace records):

* BN normalises the incoming activation (float affine; per channel), then the
  result ``z`` is quantized to signed ``activation_bits`` -- the conv/dense
  operand. Weights are quantized from the master copy to signed
  ``weight_bits`` with per-output-channel scales. The weighted sum is an exact
  integer accumulation (``chipsim.kernels``) rescaled by the two scales.
* ReLU, optional max-pool, then the output is quantized to unsigned
  ``activation_bits``: that is what is stored and sent over the NoC.
* Goodness squares the same pooled output, but at ``goodness_bits`` when that
  is wider: a core has the value at accumulator precision before it
  requantizes it for the NoC, and a 4-bit output has only 16 levels, too
  coarse for the small goodness gaps a margin loss works on. The wider copy
  is kept for the goodness gradient ``2 * out / D`` (``cache["gsrc"]``), on
  the rows the block's own loss gives an error.
* Backward: the error at the pre-activation is quantized to signed
  ``gradient_bits`` (stochastic rounding, seeded) before the integer
  grad-weight and grad-input products. Quantizers pass gradients straight
  through (STE). BN's backward either holds the batch statistics fixed (a
  per-channel scale, so rows stay independent and ``select`` may drop the
  rows without an error) or goes through them as autograd does
  (``bn_backward``).

At ``bits == 32`` every quantizer is the identity and the kernels run in plain
float32, so the same code is checked against torch autograd.
"""
from __future__ import annotations

import math

import numpy as np

from ... import kernels as K
from ...kernels import norm_stream
from ...quant import ClippedScale, FixedPoint, quantize_signed, quantize_weights, signed_max
from ...trace import nbytes_of
from ...trace.work import record, split
from .feedback import feedback_weights
from .protocol import ParamGroup, TracePart
from .sent_error import send_quantized
from .statistics import BN_LEARN, set_groups, use_mode

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _rescale(acc, scale, kernel: str):
    """An integer accumulator (or error) times its scale, as float32: one multiply per element on chip."""
    record("dequantize", kernel, np.size(acc))
    return (acc * scale).astype(np.float32, copy=False)


def _int_bound(a_bits: int, b_bits: int):
    """The kernels' ``int_bound`` for two quantized operands (both symmetric signed codes bound it),
    or None when either side is float32 (no exactness to prove)."""
    if 32 in (a_bits, b_bits):
        return None
    return signed_max(a_bits), signed_max(b_bits)


class QuantBlock:
    """A trainable block with the precision of a ``Precision`` config.

    ``forward`` returns the output and a cache; ``backward_pre`` turns an error
    at the block output into the error at the pre-activation (through pool and
    ReLU); ``grad_weight`` and ``grad_input`` consume that. Splitting it this way
    lets a learning rule choose *which* of them to run, and with which kernel
    (true weights for DF-O/BP, random feedback for DF-R).
    """

    def __init__(self, index, spec, in_shape, precision, rng, head: bool = False,
                 bn_backward: str = "fixed-stats", goodness: bool = True):
        self.index = index
        self.bn_backward = bn_backward   # "batch-stats" | "fixed-stats" (config learning.bn_backward)
        self.head = head          # BP's linear classifier: no ReLU, no output quantization
        self.spec = spec
        self.kind = spec.type
        self.prec = precision
        self.in_shape = tuple(in_shape)              # (C, H, W) or (K,)
        self.pool = spec.pool
        if self.kind == "conv":
            c, h, w = in_shape
            k, s, p = spec.kernel, spec.stride, spec.padding
            ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                raise ValueError(f"block {index}: kernel {k} does not fit a {h}x{w} input")
            self.w_shape = (spec.channels, c, k, k)
            self.pre_shape = (spec.channels, ho, wo)
            if self.pool:
                if ho < self.pool or wo < self.pool:
                    raise ValueError(f"block {index}: pool {self.pool} does not fit a {ho}x{wo} map")
                self.out_shape = (spec.channels, ho // self.pool, wo // self.pool)
            else:
                self.out_shape = self.pre_shape
            fan_in = c * k * k
            bn_features = c
        else:
            kdim = int(np.prod(in_shape))
            self.w_shape = (spec.units, kdim)
            self.pre_shape = self.out_shape = (spec.units,)
            fan_in = bn_features = kdim
        bound = math.sqrt(6.0 / fan_in)              # He-uniform: keeps ReLU outputs O(1)
        w0 = rng.uniform(-bound, bound, size=self.w_shape).astype(np.float32)
        self.master = FixedPoint(w0, precision.update_bits)
        # BN normalises without a learnable affine: the weighted sum that follows
        # absorbs any per-channel scale, and a core then keeps only running stats.
        self.gamma = np.ones(bn_features, np.float32)
        self.beta = np.zeros(bn_features, np.float32)
        self.running_mean = np.zeros(bn_features, np.float32)
        self.running_var = np.ones(bn_features, np.float32)
        self.use_bn = spec.norm == "batch"
        self.z_scale = ClippedScale(precision.activation_bits, signed=True, scale_mode=precision.scale)
        self.out_scale = ClippedScale(precision.activation_bits, signed=False, scale_mode=precision.scale)
        self.goodness_bits = max(precision.goodness_bits, precision.activation_bits)
        # None: goodness squares the sent output itself, or (``goodness=False``, BP's blocks) is never taken
        self.good_scale = (ClippedScale(self.goodness_bits, signed=False, scale_mode=precision.scale)
                           if self.goodness_bits > precision.activation_bits and goodness and not head else None)
        self.statistics = "batch"                     # mapping.statistics (use_statistics)
        self.micro_batch = 1
        self.bn_seen = 0                              # running: rows folded into the running BN statistics
        self.err_scales = None                        # running / micro-batch: (grad_weight's, grad_input's)
        self.feedback = None                          # DF-R: (codes, scales) when kept in SRAM
        self.feedback_seed = None                     # DF-R: the seed they are (re)generated from
        self.requantize()

    def use_statistics(self, mode: str, micro_batch: int = 1):
        """``mapping.statistics``: ``batch`` (the batch's BN statistics and scales), ``running`` or
        ``micro-batch``: swaps the scales for streaming ones, latched per step (``statistics.use``)."""
        use_mode(self, mode, micro_batch)

    def _bn_learn(self, x):
        """BN in training on rows that set the statistics, as ``mapping.statistics`` says
        (``statistics.BN_LEARN``); updates the eval statistics as that mode does."""
        return BN_LEARN[self.statistics](self, x, BN_MOMENTUM, BN_EPS)

    # ------------------------------------------------------------ parameters
    @property
    def units(self) -> int:
        return self.w_shape[0]

    def requantize(self, part=None):
        """Refresh the compute copy of the weights from the master copy (after each update)."""
        self.wq, self.wscale = quantize_weights(self.master.value, self.prec.weight_bits, self.prec.scale)

    def set_feedback(self, seed: int, stored: bool):
        """DF-R's fixed random kernel B, of this block's weight shape, at weight_bits, from ``seed``.

        ``stored``: generated once and kept in SRAM (``mapping.feedback_storage: stored``); else
        regenerated from the seed at every use, which costs PRNG work and no SRAM
        (``seeded``). Both give the same B.
        """
        self.feedback_seed = int(seed)
        self.feedback = feedback_weights(seed, self.w_shape, self.prec.weight_bits) if stored else None

    def feedback_kernel(self):
        """(codes, scales) of B: the kept copy, or regenerated now (costed per use)."""
        if self.feedback is not None:
            return self.feedback
        return feedback_weights(self.feedback_seed, self.w_shape, self.prec.weight_bits, regenerate=True)

    # ------------------------------------------------------------ forward
    def forward(self, a_in, train: bool, stats_from=None):
        """Run the block on a batch; returns (out, cache).

        ``stats_from``: the cache of an earlier pass of the same step (``mapping.negatives: sequential``
        sends a sample's negatives after its positive): normalise with that pass's batch statistics and
        quantize with the scales it set, updating neither -- the block has not seen these rows' batch.
        """
        p = self.prec
        learn = train and stats_from is None          # this batch sets the statistics and scales
        x = a_in.reshape(a_in.shape[0], -1) if self.kind == "dense" else a_in
        if self.statistics != "batch":
            set_groups(self)
        with split("replicated"):        # every slice of a split layer holds, and normalises, the whole input
            if self.use_bn:
                if learn:
                    z, bnc = self._bn_learn(x)
                else:
                    ref = stats_from["bnc"] if train else None
                    z = K.batchnorm_eval_forward(x, self.gamma, self.beta,
                                                 self.running_mean if ref is None else ref.mean,
                                                 self.running_var if ref is None else ref.var, BN_EPS)
                    bnc = None if ref is None else ref._replace(xhat=None)
            else:
                z, bnc = x.astype(np.float32), None
            # int8 codes where the int8 unit takes them as they are (no float32 copy of a 4-bit tensor)
            zq, zs = self.z_scale.quantize(z, update=learn, as_int8=K.use_int8())
        bound = _int_bound(p.activation_bits, p.weight_bits)
        if self.kind == "conv":
            # The accumulator's rescale is done by the kernel as it leaves the GEMM's layout. im2col's
            # columns are not kept for the weight gradient: it runs on the rows that get an error
            # (often under a third of them) and redoes their im2col, cheaper than keeping every row's
            # columns (the largest array of a step) and copying the kept rows out of it.
            y = K.conv2d_forward(zq, self.wq, self.spec.stride, self.spec.padding, int_bound=bound,
                                 out_scale=zs * self.wscale)
            record("dequantize", "QuantBlock.forward", y.size)
        else:
            acc = K.dense_forward(zq, self.wq, int_bound=bound)
            y = _rescale(acc, (zs * self.wscale).reshape(1, -1), "QuantBlock.forward")
        if self.head:
            return y, dict(zq=zq, zs=zs, bnc=bnc, y=y, argmax=None, r_shape=y.shape, out=y, gsrc=y)
        argmax = None
        if self.pool:                    # ReLU applied as the pool reads y (same work, one pass fewer)
            r_pooled, argmax = K.maxpool2d_forward(y, self.pool, self.pool, relu=True)
        else:
            r_pooled = K.relu_forward(y)
        # the values the codes stand for (codes * scale), made as they are quantized: the codes themselves
        # are not kept (at 32 bits quantize is the identity and returns r_pooled)
        out, _ = self.out_scale.quantize(r_pooled, update=learn, times_scale=True)
        if self.good_scale is None:
            gsrc = out
        else:
            gsrc, _ = self.good_scale.quantize(r_pooled, update=learn, times_scale=True)
        cache = dict(zq=zq, zs=zs, bnc=bnc, y=y, argmax=argmax, r_shape=y.shape, out=out, gsrc=gsrc)
        return out, cache

    # ------------------------------------------------------------ backward
    def backward_pre(self, g_out, cache):
        """Error at the block output -> error at the conv/dense pre-activation."""
        if self.head:
            return g_out
        g = g_out
        if self.pool:
            g = K.maxpool2d_backward(g, cache["argmax"], cache["r_shape"])
        return K.relu_backward(g, cache["y"])

    def quantize_error(self, gy, rng, which: int = 0, as_int8: bool = False):
        """Quantize an error tensor to gradient_bits (stochastic or nearest, seeded): over the batch, or at
        the latched streaming scale (``which``: 0 the weight gradient's, 1 the error sent down). ``as_int8``:
        int8 codes where they fit (for a product on the int8 unit)."""
        if self.err_scales is not None:
            set_groups(self)
            return self.err_scales[which].quantize(gy, rng, as_int8=as_int8)
        return quantize_signed(gy, self.prec.gradient_bits, self.prec.rounding, rng, self.prec.scale,
                               as_int8=as_int8)

    def grad_weight(self, gy, cache, rng):
        """dL/dW for the pre-activation error gy, through the exact integer kernel."""
        p = self.prec
        gq, gs = self.quantize_error(gy, rng, as_int8=K.use_int8())
        bound = _int_bound(p.activation_bits, p.gradient_bits)
        if self.kind == "conv":
            acc = K.conv2d_grad_weight(cache["zq"], gq, self.w_shape[2:], self.spec.stride, self.spec.padding,
                                       int_bound=bound)
        else:
            acc = K.dense_grad_weight(cache["zq"], gq, int_bound=bound)
        # the step's sum, rescaled once here; a streaming chip rescales and adds each sample's product into
        # the accumulator, which the tracer costs per sample (StepTracer.accumulation), so not logged here
        return (acc * (cache["zs"] * gs)).astype(np.float32, copy=False)

    def grad_input(self, gy, cache, rng, use_feedback: bool = False):
        """Error at the block *input* (before BN), through W (true) or the random feedback B."""
        p = self.prec
        wq, ws = self.feedback_kernel() if use_feedback else (self.wq, self.wscale)
        # fold the per-output-channel weight scale into the error so one
        # integer product serves all channels: sum_o (wq_o * s_o) g_o = sum_o wq_o (s_o g_o)
        shape = (1, -1, 1, 1) if self.kind == "conv" else (1, -1)
        hq, hs = self.quantize_error(_rescale(gy, ws.reshape(shape), "QuantBlock.grad_input"), rng, which=1,
                                     as_int8=K.use_int8())
        bound = _int_bound(p.gradient_bits, p.weight_bits)
        if self.kind == "conv":
            acc = K.conv2d_grad_input(hq, wq, cache["zq"].shape, self.spec.stride, self.spec.padding,
                                      int_bound=bound)
        else:
            acc = K.dense_grad_input(hq, wq, int_bound=bound)
        # each slice finishes its full-size partial (both steps are linear in it) before the reduction
        with split("replicated"):
            gz = _rescale(acc, hs, "QuantBlock.grad_input")
            if not self.use_bn:
                gx = gz
            elif isinstance(cache["bnc"], norm_stream.RowBNCache):
                gx = norm_stream.batchnorm_backward_rows(gz, cache["bnc"])
            elif self.bn_backward == "batch-stats":
                gx = K.batchnorm_backward(gz, cache["bnc"])[0]
            else:
                gx = K.batchnorm_backward_fixed_stats(gz, cache["bnc"])
        return gx.reshape((gx.shape[0],) + self.in_shape)

    def send_error(self, gx, rng):
        """The error at the block input as it goes down the NoC: quantised here, by the sender, to signed
        ``gradient_bits`` codes (stochastic or nearest, seeded), so what travels is what the trace sizes.
        On a split block this runs once the slices' float32 partials are summed (``StepTracer.
        block_error_down``); the block below computes with these codes times their scale."""
        return send_quantized(gx, lambda g: self.quantize_error(g, rng), self.prec.gradient_bits)

    def select(self, cache, rows):
        """The cache cut down to ``rows`` (indices into its batch axis).

        What a core keeps once it knows which rows will receive an error: the
        rest are dropped before the backward ops run. Only valid when rows are
        independent in the backward pass (``bn_backward == "fixed-stats"``):
        the batch-statistics gradient needs every row, so ``xhat`` is not kept.
        The cache holds no im2col columns (the weight gradient redoes them on
        its rows), so the error and the weight gradient keep the same rows. The
        goodness copy (``gsrc``) is not carried: the rule takes its gradient
        at the loss, before any select.
        """
        if self.bn_backward != "fixed-stats":
            raise ValueError("rows can be dropped only with learning.bn_backward = fixed-stats")
        bnc = cache["bnc"]._replace(xhat=None) if cache["bnc"] is not None else None
        if isinstance(bnc, norm_stream.RowBNCache):
            bnc = norm_stream.select_rows(bnc, rows)
        return dict(zq=cache["zq"][rows], zs=cache["zs"], bnc=bnc, y=cache["y"][rows],
                    argmax=None if cache["argmax"] is None else cache["argmax"][rows],
                    r_shape=(len(rows),) + tuple(cache["r_shape"][1:]), out=cache["out"][rows])

    # ------------------------------------------------------------ storage (bits as stored on chip)
    def stored_bytes(self, cache) -> dict:
        """Bytes of what forward keeps, at the widths a core would store them."""
        p = self.prec
        rows = cache["zq"].shape[0]
        if self.head:                                # logits stay float32; no mask
            return dict(zq=nbytes_of(cache["zq"].size, p.activation_bits), mask=0, out=4 * cache["out"].size)
        out = dict(zq=nbytes_of(cache["zq"].size, p.activation_bits),
                   mask=nbytes_of(cache["y"].size, 1),
                   out=nbytes_of(cache["out"].size, p.activation_bits))
        if self.pool:
            out["argmax"] = nbytes_of(cache["argmax"].size, max(1, math.ceil(math.log2(self.pool * self.pool))))
        if self.good_scale is not None and "gsrc" in cache:   # the wider copy goodness squares (not after select)
            out["gsrc"] = nbytes_of(cache["gsrc"].size, self.goodness_bits)
        out["goodness"] = rows * 4                   # one float32 per row
        return out

    def param_bytes(self) -> dict:
        """Bytes of the persistent state, from the arrays the block holds, at the widths it holds them."""
        p = self.prec
        return dict(weights=nbytes_of(self.wq.size, p.weight_bits) + 4 * self.wscale.size,  # codes + scales
                    master=nbytes_of(self.master.value.size, self.master.bits),
                    bn=4 * (self.running_mean.size + self.running_var.size))           # float32 statistics

    # ------------------------------------------------------------ what it puts on the chip (layers.protocol)
    work_cuts = ()                                   # one part: all its work is its own

    def param_tensors(self) -> tuple:
        """Its one weight tensor: (part, optimizer key, name in the gradient (None: the gradient is the
        array), master, split)."""
        return ((self, f"w{self.index}", None, self.master, "units"),)
    error_in_split = "units"                         # each slice receives the errors of its own outputs

    def trace_forward(self, tracer, cache, goodness: bool) -> None:
        tracer.block_forward(self, cache, goodness)

    def trace_grad_weight(self, tracer, losses) -> None:
        tracer.block_grad_weight(self, losses)

    def trace_error_down(self, tracer, below, rows, use_feedback: bool, loss: int) -> None:
        tracer.block_error_down(self, below, rows, use_feedback, loss)

    def trace_parts(self) -> tuple:
        """One trace layer: its weights split by output units, BN's statistics replicated."""
        kind = "head" if self.head else self.kind
        pb = self.param_bytes()
        norm = (pb["bn"], self.running_mean.size + self.running_var.size) if self.use_bn else ()
        return (TracePart(self.index, f"{kind}{self.index}", self.units, kind, "forward",
                          (ParamGroup("", "units", pb["weights"], pb["master"], self.master.value.size,
                                      (f"w{self.index}",)),), norm),)

    def trace_outputs(self, out, cache) -> tuple:
        """The output at activation_bits (a head's logits stay float32)."""
        bits = 32 if self.head else self.prec.activation_bits
        return ((nbytes_of(np.size(out), bits), int(np.size(out))),)

    def feedback_bytes(self) -> int:
        """Bytes of DF-R's kept feedback kernel (0 when it is regenerated from its seed)."""
        if self.feedback is None:
            return 0
        codes, scales = self.feedback
        return nbytes_of(codes.size, self.prec.weight_bits) + 4 * scales.size

    # ------------------------------------------------------------ checkpoint
    def state(self):
        """Plain data (``chipsim.checkpoint``): arrays, floats, tuples."""
        out = dict(master=self.master.to_state(),
                   running_mean=self.running_mean.copy(), running_var=self.running_var.copy(),
                   z_scale=self.z_scale.running, out_scale=self.out_scale.running,
                   good_scale=None if self.good_scale is None else self.good_scale.running,
                   feedback_seed=self.feedback_seed, feedback_stored=self.feedback is not None)
        if self.statistics != "batch":               # the streaming estimates (batch keeps none of its own)
            out.update(bn_seen=self.bn_seen, err_scales=tuple(e.running for e in self.err_scales))
        return out

    def load(self, s):
        self.master = FixedPoint.from_state(s["master"])
        self.running_mean, self.running_var = s["running_mean"], s["running_var"]
        self.z_scale.running, self.out_scale.running = s["z_scale"], s["out_scale"]
        if self.good_scale is not None:
            self.good_scale.running = s["good_scale"]
        self.bn_seen = s.get("bn_seen", 0)
        if self.err_scales is not None and s.get("err_scales") is not None:
            for e, r in zip(self.err_scales, s["err_scales"]):
                e.running = r
        if s["feedback_seed"] is not None:
            self.set_feedback(s["feedback_seed"], s["feedback_stored"])
        self.requantize()
