"""A transformer encoder layer behind the block interface the rules drive, as two sub-layers of the chip.

The rules (``rules.compose.local_step``, ``rules.compose.bp_step``) drive every block the same
way: ``forward``, the objective on what it reads (``cache["gsrc"]``),
``backward_pre``, ``grad_weight`` and, under BP, ``grad_input``.
:class:`TransformerBlock` gives an ``EncoderLayer`` / ``EmbedEncoderLayer``
(``chipsim.engine.layers.vit.transformer``) that interface:

* what the objectives read is the token mean at accumulator width
  (``cache["pooled"]``, the CFF paper's Eq. 13): FF's goodness and CFF's
  contrastive loss both take it; ``backward_pre`` spreads an error there
  back over the tokens (``token_mean_backward``);
* the gradient is a dict of the layer's tensors (``masters()`` names); the
  optimizer keeps state per tensor (``training.update.tensor_keys``);
* ``grad_weight`` runs the whole backward; under BP it also computes the
  error at the input, which ``grad_input`` then hands over (the two share
  every product up to the input, so the engine runs them once);
* rows are never dropped (``select``): the network says its rows are all kept
  (``TransformerNetwork.bn_backward``).

**On the chip a transformer layer is two sub-layers** (:class:`SubLayer`),
each a layer of the trace with cores of its own, so the mapper splits each on
its own axis:

* ``attn``: (patch projection + position,) LN1, Q/K/V, the heads' scores,
  softmax and values, the output projection, the residual add. It splits by
  **heads**: a slice holds its heads' rows of W_qkv, their columns of W_proj,
  their Q/K/V and attention matrix (the ``attn_probs`` buffer, N*H*T*T codes
  at softmax_bits, lives with its head), and computes a full-size *partial*
  of the projection's output, which is reduced over the slices.
* ``mlp``: LN2, FC1, GELU, FC2, the residual add, the output's
  requantization and its token mean. It splits by **MLP hidden units**: a
  slice holds its units' rows of W_fc1 and columns of W_fc2 and their
  pre-activations; FC2's output is again a partial that is reduced.

What every slice holds and does in full (replicated): the token stream it
receives, the layer norms (their statistics are per token, over all
features), the quantization of the operand every slice reads whole (the LN
outputs entering Q/K/V and FC1; the residual-stream error entering W_proj and
FC2), the patch projection and position embedding of the first layer, and the
small tensors on the residual stream (LN gains, the output biases of W_proj
and FC2). After a reduction each slice finishes its share of the features
(reduce-scatter), so the residual add, output quantization and token mean
are shared by units. This is Megatron-LM's tensor parallelism with the two
halves on cores of their own: the all-reduce between them becomes the
reduction plus the multicast of the attention half's output to every MLP
slice, which the trace already expresses (a ``reduce`` buffer and a send to a
``replicated`` one), so mapping, ledger, NoC, timing and energy need nothing
new.

One ``forward`` call runs both halves; it notes where the first half's
kernels end (``work.logged()``, in :attr:`TransformerBlock.work_cuts`) so the
tracer attributes each half's work to its own sub-layer. ``grad_weight``
does the same (the MLP half's backward runs first).

**Recompute** (``recompute=True``; ``mapping.batch_loss: recompute``, for a
loss over the whole batch): the training forward keeps only what each half's
core received -- the layer input on the attention cores, z (at
``stream_bits``) on the MLP cores -- and the token mean the loss reads. Once
the loss is known, each half's backward first runs its forward again from
what its core kept (without moving the running scales, so it reproduces the
first pass exactly). A core then holds one sample's activations at a time
instead of the batch's, for one more forward per sample; both passes are the
engine's work, so the trace costs both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .... import kernels as K
from ....modelspec import Block as BlockSpec
from ....trace import nbytes_of
from ....trace.work import logged, split
from ..block import QuantBlock
from ..protocol import ParamGroup, TracePart
from ..sent_error import send_float
from . import tracing
from .transformer import EmbedEncoderLayer


@dataclass(frozen=True)
class LabelledImages:
    """The first layer's input under a label rule: the images and one extra patch per row (N, 1, C*p*p)."""
    images: np.ndarray
    patches: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SubLayer:
    """One half of a transformer layer as the chip sees it: a trace layer and the tensors it holds."""
    index: int            # its layer id in the trace
    block: int            # the transformer layer (block index) it belongs to
    kind: str             # "attn" | "mlp"
    units: int            # its split axis: heads (attn) or MLP hidden units (mlp)
    names: tuple          # the block's tensors (``masters()`` names) it holds
    shared: frozenset     # of those, the ones every slice holds whole (replicated)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.block}"


_ATTN = ("ln1.gamma", "ln1.beta", "qkv.w", "qkv.b", "proj.w", "proj.b")
_MLP = ("ln2.gamma", "ln2.beta", "fc1.w", "fc1.b", "fc2.w", "fc2.b")
_EMBED = ("embed.w", "embed.b", "pos")
_SHARED = frozenset(("ln1.gamma", "ln1.beta", "proj.b", "ln2.gamma", "ln2.beta", "fc2.b") + _EMBED)


class TransformerBlock:
    """A transformer layer (``EncoderLayer`` or ``EmbedEncoderLayer``) as a block of the rules.

    ``attn_index``: the trace id of its attention sub-layer (its MLP sub-layer, where the output, the
    loss and the block's own buffers live, has the block's index). ``normalise_input``: divide each
    input token by its L2 norm first (FF on a ViT, the CFF paper's Algorithm 1 right: a layer must not
    read its goodness off the layer below). ``sends_error``: the backward also computes the error at the
    input (BP).
    """
    kind = "vit"
    head = False
    use_bn = False
    goodness_bits = 32            # the token mean the objectives read is taken at accumulator width

    def __init__(self, layer, attn_index: int, normalise_input: bool = False, sends_error: bool = False,
                 recompute: bool = False):
        self.layer = layer
        self.embeds = isinstance(layer, EmbedEncoderLayer)
        self.encoder = layer.encoder if self.embeds else layer
        if sends_error and self.embeds:
            raise ValueError("the first layer's input is the image: it sends no error")
        self.index = layer.index
        self.prec = layer.prec
        self.normalise_input = bool(normalise_input)
        self.sends_error = bool(sends_error)
        self.recompute = bool(recompute)
        enc = self.encoder
        self.tokens, self.dim = enc.tokens, enc.dim
        self.in_shape, self.out_shape = tuple(layer.in_shape), tuple(enc.out_shape)
        attn = (_EMBED if self.embeds else ()) + _ATTN
        self.parts = (SubLayer(attn_index, self.index, "attn", enc.heads, attn, _SHARED & frozenset(attn)),
                      SubLayer(self.index, self.index, "mlp", enc.mlp_dim, _MLP, _SHARED & frozenset(_MLP)))
        self.work_cuts = ()       # log positions between the parts of the last forward / backward call

    @property
    def units(self) -> int:
        return self.parts[1].units

    @property
    def widths(self):
        return self.encoder.widths

    def masters(self) -> dict:
        return self.layer.masters()

    def requantize(self, part: SubLayer | None = None):
        """Refresh the compute copies (of one sub-layer's tensors only, when given)."""
        if part is None:
            self.layer.requantize()
            return
        mods = {"embed": getattr(self.layer, "embed", None), "qkv": self.encoder.qkv, "proj": self.encoder.proj,
                "fc1": self.encoder.fc1, "fc2": self.encoder.fc2}
        for prefix in sorted({n.split(".")[0] for n in part.names}):
            if mods.get(prefix) is not None:
                with split("replicated" if f"{prefix}.w" in part.shared else "units"):
                    mods[prefix].requantize()

    # ------------------------------------------------------------ forward
    def forward(self, a, train: bool):
        """Tokens (N, T, E), or the first layer's images (or ``LabelledImages``) -> (out, cache).

        In training under ``recompute`` the cache keeps only what each half's core received (the layer input,
        z) and what the loss reads (the token mean), plus ``kept``: the sizes the recomputed buffers take."""
        z, c_attn = self._attention(a, train)
        self.work_cuts = (logged(),)
        out, c_mlp = self.layer.forward_mlp(z, train)
        cache = {**c_attn, **c_mlp}
        cache["gsrc"] = cache["pooled"]
        if self.recompute and train:
            cache = dict(input=a, z=z, out=out, pooled=cache["pooled"], gsrc=cache["pooled"],
                         kept=self.kept_buffers(cache))
        return out, cache

    def _attention(self, a, train: bool):
        """The attention half (after FF's input normalisation, if any): (z, its cache)."""
        x, extra = (a.images, a.patches) if isinstance(a, LabelledImages) else (a, None)
        if self.normalise_input:
            with split("replicated"):
                x = K.token_l2_normalize(x)
        return self.layer.forward_attention(x, train, extra) if self.embeds else self.layer.forward_attention(x, train)

    # ------------------------------------------------------------ backward
    def backward_pre(self, err, cache):
        """The error at what the objective read (the token mean, (N, E)) -> the error at the output tokens."""
        if np.ndim(err) == 2:
            return K.token_mean_backward(err, self.tokens)
        return err

    def grad_weight(self, gy, cache, rng):
        """The layer's backward from the error at its output: gradients by tensor name, the MLP half first.
        Under BP the error at the input is kept for :meth:`grad_input`. Under ``recompute`` each half first
        runs its forward again from what its core kept (the running scales stay as pass 1 set them, so the
        second pass reproduces the first exactly)."""
        again = "input" in cache
        mlp = self.layer.forward_mlp(cache["z"], train=False)[1] if again else cache
        g_mlp, gz = self.layer.backward_mlp(gy, mlp, rng)
        self.work_cuts = (logged(),)
        attn = self._attention(cache["input"], train=False)[1] if again else cache
        g_attn, gx = self.layer.backward_attention(gz, attn, rng, input_grad=self.sends_error)
        cache["gx"] = gx
        return {**g_mlp, **g_attn}

    def grad_input(self, gy, cache, rng, use_feedback: bool = False):
        """The error at the input, computed by :meth:`grad_weight` (which must run first)."""
        if use_feedback:
            raise ValueError("a transformer layer has no random feedback path (DF-R); use df-o or bp")
        gx = cache.pop("gx", None)
        if gx is None:
            raise ValueError(f"block {self.index}: its input error comes with its weight gradient "
                             "(grad_weight first, with sends_error)")
        return gx

    def send_error(self, gx, rng):
        """The error at the input as it goes down: the float32 the layer holds (not quantised before it is
        sent, so the trace sizes it at 32 bits)."""
        return send_float(gx)

    def select(self, cache, rows):
        raise ValueError("a transformer layer keeps every row (TransformerNetwork.bn_backward)")

    # ------------------------------------------------------------ storage (bits as stored on chip)
    def kept_buffers(self, cache) -> dict:
        """What each half keeps and produces, as (name, bytes, split, values) at the widths a core stores them.

        ``attn`` / ``mlp``: kept for the backward; ``*_partial``: a full-size float32 partial of a split
        product's output (W_proj, FC2), reduced over the slices; ``z``: the attention half's output
        (the residual stream, at stream_bits), sent to the MLP half; ``out``: the layer output at output_bits;
        ``pooled``: its token mean (float32), what the objectives read. ``stream`` / ``pooled_values``: the
        values of the residual stream (z, out, the partials) and of the token mean.
        """
        c, enc, w = cache, self.encoder, self.encoder.widths
        ln1, ln2 = c["ln1"], c["ln2"]
        attn = []
        if self.embeds:
            img, extra = c["embed"]["xq"]
            n = img.size + (0 if extra is None else extra.size)
            attn.append(("patch_input", self.layer.embed.stored_bytes(c["embed"])["x"], "replicated", n))
        n_ln1, n_ln2 = ln1.xhat.size + ln1.inv_std.size, ln2.xhat.size + ln2.inv_std.size
        attn += [("ln1_state", 4 * n_ln1, "replicated", n_ln1),
                 ("qkv_input", nbytes_of(c["qkv"]["xq"].size, enc.qkv.in_bits), "replicated", c["qkv"]["xq"].size),
                 ("qkv", nbytes_of(3 * c["attn"]["qq"].size, w.attn_bits), "units", 3 * c["attn"]["qq"].size),
                 ("attn_probs", nbytes_of(c["attn"]["pq"].size, w.softmax_bits), "units", c["attn"]["pq"].size),
                 ("proj_input", nbytes_of(c["proj"]["xq"].size, enc.proj.in_bits), "units", c["proj"]["xq"].size)]
        mlp = [("ln2_state", 4 * n_ln2, "replicated", n_ln2),
               ("fc1_input", nbytes_of(c["fc1"]["xq"].size, enc.fc1.in_bits), "replicated", c["fc1"]["xq"].size),
               ("mlp_pre", 4 * c["u"].size, "units", c["u"].size),
               ("fc2_input", nbytes_of(c["fc2"]["xq"].size, enc.fc2.in_bits), "units", c["fc2"]["xq"].size)]
        n = c["out"].size
        return dict(attn=attn, mlp=mlp, attn_partial=4 * n, z=nbytes_of(n, w.stream_bits), mlp_partial=4 * n,
                    out=nbytes_of(n, w.output_bits), pooled=4 * c["pooled"].size, stream=n,
                    pooled_values=c["pooled"].size)

    def stored_bytes(self, cache) -> dict:
        return self.layer.stored_bytes(cache)

    def param_bytes(self, names=None) -> dict:
        """Bytes of the tensors ``names`` (default all) as a core holds them: compute copies (weight codes
        and per-channel scales; layer-norm gains and the position embedding as float32; biases are read
        from their masters) and masters at update_bits."""
        p, masters = self.prec, self.masters()
        weights = master = 0
        for n in (masters if names is None else names):
            v = masters[n].value
            master += nbytes_of(v.size, masters[n].bits)
            if n.endswith(".w"):
                weights += nbytes_of(v.size, p.weight_bits) + 4 * v.shape[0]
            elif not n.endswith(".b"):
                weights += 4 * v.size
        return dict(weights=weights, master=master)

    def feedback_bytes(self) -> int:
        return 0

    # ------------------------------------------------------------ what it puts on the chip (layers.protocol)
    def trace_parts(self) -> tuple:
        """Its two sub-layers; each holds its tensors split by its units and the shared ones replicated."""
        masters, out = self.masters(), []
        for part in self.parts:
            groups = []
            for shared, how, sfx in ((False, "units", ""), (True, "replicated", "_shared")):
                names = [n for n in part.names if (n in part.shared) == shared]
                pb = self.param_bytes(names)
                groups.append(ParamGroup(sfx, how, pb["weights"], pb["master"],
                                         sum(masters[n].value.size for n in names),
                                         tuple(f"w{self.index}.{n}" for n in names)))
            out.append(TracePart(part.index, part.name, part.units, part.kind,
                                 "attention" if part.kind == "attn" else "mlp", tuple(groups)))
        return tuple(out)

    error_in_split = "replicated"     # an error arriving at a transformer layer's output is read whole by FC2

    def param_tensors(self) -> tuple:
        """Per sub-layer, each tensor: (part, optimizer key, name in the gradient dict, master, split)."""
        masters = self.masters()
        return tuple((part, f"w{self.index}.{n}", n, masters[n], "replicated" if n in part.shared else "units")
                     for part in self.parts for n in part.names)

    def trace_forward(self, tracer, cache, goodness: bool) -> None:
        tracing.record_forward(tracer, self, cache, goodness)

    def trace_grad_weight(self, tracer, losses) -> None:
        tracing.record_grad_weight(tracer, self, losses)

    def trace_error_down(self, tracer, below, rows, use_feedback: bool, loss: int) -> None:
        tracing.record_error_down(tracer, self, below, loss)

    def trace_outputs(self, out, cache) -> tuple:
        """z (the residual stream at stream_bits, sent to the MLP half), then the output at output_bits."""
        kb = self.kept_buffers(cache)
        return ((kb["z"], kb["stream"]), (kb["out"], kb["stream"]))

    # ------------------------------------------------------------ checkpoint
    def state(self):
        return self.layer.state()

    def load(self, s):
        self.layer.load(s)


class TokenMeanHead(QuantBlock):
    """A linear classifier on the token mean of a transformer layer's output: BP's head on a ViT, and the
    linear probe of its local rules (``probe.LinearProbe``). It receives the layer's output tokens as
    sent, averages them (the paper's average-pooling head), then is BP's dense head (``QuantBlock``)."""

    def __init__(self, index: int, tokens: int, dim: int, num_classes: int, precision, rng, norm: str = "none"):
        super().__init__(index, BlockSpec(type="dense", units=num_classes, norm=norm), (dim,), precision, rng,
                         head=True)
        self.tokens, self.dim = int(tokens), int(dim)

    def pooled(self, a):
        """(N, T, E) tokens (or flattened to (N, T*E)) -> their mean (N, E)."""
        a = np.asarray(a)
        return K.token_mean(a.reshape(len(a), self.tokens, self.dim))

    def forward(self, a, train: bool):
        return super().forward(self.pooled(a), train)

    def grad_input(self, gy, cache, rng, use_feedback: bool = False):
        return K.token_mean_backward(super().grad_input(gy, cache, rng, use_feedback), self.tokens)
