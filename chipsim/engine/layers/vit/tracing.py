"""A transformer layer's trace parts in a training step: each layer as its two sub-layers (``block.SubLayer``).

``chipsim.engine.tracing.step.StepTracer`` records a conv/dense block as one
layer of the trace; a transformer layer is two (its attention half and its MLP
half, each with cores of its own, split by heads and by MLP hidden units: see
``block``). ``TransformerBlock``'s ``trace_forward``, ``trace_grad_weight``
and ``trace_error_down`` (``layers.protocol``) call the functions here, which
record through the tracer's primitives; everything else -- the losses,
goodness, the BP head, the optimizer steps' bookkeeping -- the tracer records
as for any layer, keyed by block index: a block's MLP sub-layer *is* trace
layer ``blk.index``, so its output, its loss and the errors it receives are
where the tracer looks for them.

Per transformer layer and sample:

* forward: ``attention`` (reads the received tokens and the attention half's
  tensors; writes what its backward keeps -- LN1's state, the Q/K/V input
  codes, Q/K/V, the attention matrix, the output projection's input -- the
  projection's full-size partial, reduced over the head slices, and the
  attention output ``z``) -> send ``z`` to every MLP slice -> ``mlp`` (writes
  LN2's state, FC1's input, the pre-activations GELU's backward reads, FC2's
  input, FC2's partial, the output and its token mean);
* backward (``grad_w`` ops, the whole backward of each half: a transformer
  layer's error to the input shares every product with its weight gradient):
  ``mlp backward`` (reads the loss's error and the MLP half's kept buffers;
  writes its gradient accumulators, FC1's input-error partial, the error at
  ``z``) -> send it to every head slice -> ``attention backward`` (its
  accumulators, Q/K/V's input-error partial and, under BP, the error at the
  layer input, which ``error_down`` then sends to the layer below); the
  partials and the errors sent are float32, as the engine holds them;
* update: one ``update`` op per sub-layer.

Which buffers are split by units and which are replicated on a split
sub-layer is ``block``'s table (``TransformerBlock.kept_buffers``); the
work inside each op carries its own split (``chipsim.trace.work``).
"""
from __future__ import annotations

from ....trace import nbytes_of
from ....trace.roles import Role


def _state(tracer, layer: int) -> dict:
    """What the tracer keeps for a transformer layer between its forward and its backward."""
    return tracer.layer_state.setdefault(layer, {})


def _kept(tracer, layer, table) -> list:
    """Buffers of a half's kept tensors (``TransformerBlock.kept_buffers``'s (name, bytes, split, values))."""
    return [tracer.rec.buffer(layer, name, tracer.act_cat, nb, "sample", how, n, Role.ACTIVATION)
            for name, nb, how, n in table]


def record_forward(tracer, blk, cache, goodness: bool) -> None:
    """A transformer layer's forward. Under recompute (``cache["kept"]``: the sizes the second pass's
    buffers take) it keeps nothing for the backward: each half's core keeps what it received."""
    rec, l, cat = tracer.rec, blk.index, tracer.act_cat
    a, m = blk.parts
    items, (cut,) = tracer.log.take(), blk.work_cuts
    again = "kept" in cache
    kb = cache["kept"] if again else blk.kept_buffers(cache)
    n = kb["stream"]
    ka = [] if again else _kept(tracer, a.index, kb["attn"])
    partial = rec.buffer(a.index, "proj_partial", cat, kb["attn_partial"], "sample", "reduce", n, Role.PARTIAL)
    z = rec.buffer(a.index, "attention_output", cat, kb["z"], "sample", "units", n, Role.OUTPUT)
    rec.op(a.index, "fwd", "attention", work=items[:cut], reads=[tracer.inp[l]] + tracer.weight_reads(a.index),
           writes=tuple(ka) + (partial, z))
    z_in = rec.buffer(m.index, "input", "noc_buffers", kb["z"], "sample", "replicated", n, Role.RECEIVED)
    rec.send(a.index, m.index, "attention output", z, z_in, kb["z"], "activation")
    km = [] if again else _kept(tracer, m.index, kb["mlp"])
    partial = rec.buffer(m.index, "fc2_partial", cat, kb["mlp_partial"], "sample", "reduce", n, Role.PARTIAL)
    out = rec.buffer(m.index, "output", cat, kb["out"], "sample", "units", n, Role.OUTPUT)
    pooled = rec.buffer(m.index, "token_mean", cat, kb["pooled"], "sample", "units", kb["pooled_values"],
                        Role.GOODNESS_INPUT)
    rec.op(m.index, "fwd", "mlp", work=items[cut:], reads=[z_in] + tracer.weight_reads(m.index),
           writes=tuple(km) + (partial, out, pooled))
    tracer.kept[l] = dict(out=out, gsrc=pooled)
    _state(tracer, l).update(kept_attn=ka, kept_mlp=km, stream=cache["out"].size,
                             again=(kb, z_in) if again else None)


def record_grad_weight(tracer, blk, losses) -> None:
    """A transformer layer's backward, the MLP half then the attention half. Under recompute each half
    reads what its core kept (z; the layer input) and writes its recomputed buffers, which live while
    its backward runs."""
    rec, l = tracer.rec, blk.index
    st = _state(tracer, l)
    a, m = blk.parts
    items, (cut,) = tracer.log.take(), blk.work_cuts
    n = st["stream"]
    # the backward's partials and the errors it sends are the float32 the engine holds (it quantises an
    # error only where it multiplies it, not before it sends it): 32 bits, like the forward's partials
    nb = nbytes_of(n, 32)
    k = tracer.kept[l]
    squared = [k["gsrc"]] if "g" in k and l in losses else []      # a goodness gradient reads the token mean
    again = st.pop("again", None)
    if again is None:
        reads_m, reads_a, temp_m, temp_a = st.pop("kept_mlp"), st.pop("kept_attn"), [], []
    else:
        kb, z_in = again
        reads_m, reads_a = [z_in], [tracer.inp[l]]
        temp_m, temp_a = _kept(tracer, m.index, kb["mlp"]), _kept(tracer, a.index, kb["attn"])
    par = tracer.params[m.index]
    partial = rec.buffer(m.index, "fc1_grad_partial", "gradients", nb, "sample", "reduce", n, Role.ERROR)
    gz = rec.buffer(m.index, "error_out", "gradients", nb, "sample", "units", n, Role.ERROR)
    gacc = (par["gacc"], par["gacc_shared"])       # read and written: each sample's gradient is added in
    rec.op(m.index, "grad_w", "mlp backward" + (" (recompute)" if again else ""),
           work=items[:cut] + tracer.accumulation(*gacc),
           reads=tracer.deciders(l, losses) + squared + reads_m + tracer.weight_reads(m.index) + list(gacc),
           writes=tuple(temp_m) + (par["gacc"], par["gacc_shared"], partial, gz))
    gz_in = rec.buffer(a.index, "error_in", "gradients", nb, "sample", "replicated", n, Role.ERROR)
    rec.send(m.index, a.index, "error", gz, gz_in, nb, "error")
    par = tracer.params[a.index]
    writes = temp_a + [par["gacc"], par["gacc_shared"],
                       rec.buffer(a.index, "qkv_grad_partial", "gradients", nb, "sample", "reduce", n, Role.ERROR)]
    if blk.sends_error:
        st["err_out"] = rec.buffer(a.index, "error_out", "gradients", nb, "sample", "units", n, Role.ERROR)
        writes.append(st["err_out"])
    gacc = (par["gacc"], par["gacc_shared"])
    rec.op(a.index, "grad_w", "attention backward" + (" (recompute)" if again else ""),
           work=items[cut:] + tracer.accumulation(*gacc),
           reads=[gz_in] + reads_a + tracer.weight_reads(a.index) + list(gacc), writes=tuple(writes))


def record_error_down(tracer, blk, below, loss: int) -> None:
    """BP's error from a transformer layer's input into the layer below (computed by its attention
    backward, so only the send is left)."""
    err = _state(tracer, blk.index).pop("err_out")
    sent = tracer.rec.trace.buffers[err]
    recv = tracer.rec.buffer(below.index, "error_in", "gradients", sent.nbytes, "sample", below.error_in_split,
                             sent.elements, Role.ERROR)
    tracer.rec.send(blk.parts[0].index, below.index, "error", err, recv, sent.nbytes, "error")
    tracer.err_in[(below.index, loss)] = recv
