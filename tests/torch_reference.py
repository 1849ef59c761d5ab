"""A torch float32 block written from the papers, not from chipsim's engine.

Shared by ``tests/test_rules.py`` (gradients of one step must match the
engine's) and ``benchmarks/train_step.py`` (the speed baseline), so both
compare against the same independent definition: BN without affine (batch
statistics, optionally detached) -> conv or dense -> ReLU -> max-pool, with
DF-R's random feedback as a custom autograd Function.
"""
import torch
import torch.nn.functional as F


class FeedbackLinearOp(torch.autograd.Function):
    """y = op(x, W) forward; backward sends the error to x through B instead of W (feedback alignment)."""

    @staticmethod
    def forward(ctx, x, w, b, conv_args):
        ctx.save_for_backward(x, w, b)
        ctx.conv_args = conv_args
        return F.conv2d(x, w, **conv_args) if w.dim() == 4 else x @ w.t()

    @staticmethod
    def backward(ctx, gy):
        x, w, b = ctx.saved_tensors
        if w.dim() == 4:
            gx = torch.nn.grad.conv2d_input(x.shape, b, gy, **ctx.conv_args)
            gw = torch.nn.grad.conv2d_weight(x, w.shape, gy, **ctx.conv_args)
        else:
            gx, gw = gy @ b, gy.t() @ x
        return gx, gw, None, None


def torch_block(a, w, spec, feedback=None, fixed_stats=False):
    """BN (batch stats, no affine) -> conv/dense -> ReLU -> pool, in torch.

    ``fixed_stats``: normalise with the batch statistics detached, so no
    gradient flows through them (chipsim's ``bn_backward: fixed-stats``)."""
    if spec.type == "dense":
        a = a.reshape(a.shape[0], -1)
    if fixed_stats:
        dims = [0] + list(range(2, a.dim()))
        mean = a.mean(dim=dims, keepdim=True).detach()
        var = a.var(dim=dims, unbiased=False, keepdim=True).detach()
        z = (a - mean) / torch.sqrt(var + 1e-5)
    else:
        z = F.batch_norm(a, None, None, training=True, eps=1e-5)
    args = dict(stride=spec.stride, padding=spec.padding) if spec.type == "conv" else {}
    if feedback is not None:
        y = FeedbackLinearOp.apply(z, w, feedback, args)
    else:
        y = F.conv2d(z, w, **args) if spec.type == "conv" else z @ w.t()
    r = F.relu(y)
    return F.max_pool2d(r, spec.pool) if spec.pool else r


def torch_routed_grads(specs, ws, a0, reach, block_loss, feedbacks=None, fixed_stats=False):
    """Reference gradients of a routed local rule: sum over the used losses l of ``block_loss(l, out_l)``,
    where loss l's error flows through the blocks ``reach[l]`` (a contiguous run ending at l) and no
    further.

    Written from the routing's definition, not from the engine's step: loss l's graph is rebuilt
    from the detached output of block ``reach[l][0] - 1`` -- or from ``a0`` itself, carrying the
    label embedding's graph, when it reaches block 0 -- up to block l, so autograd stops exactly at
    the group's bottom. ``feedbacks[j]`` (DF-R's fixed B_j, a tensor of W_j's shape, or None)
    replaces W_j^T in the error from block j into block j-1; the error into the embedding always
    goes through W_0. ``ws`` are leaf tensors with ``requires_grad``; their ``.grad`` is filled.
    Returns the total loss.
    """
    with torch.no_grad():
        outs, a = [], a0.detach()
        for spec, w in zip(specs, ws):
            a = torch_block(a, w.detach(), spec, fixed_stats=fixed_stats)
            outs.append(a)
    total = 0
    for l, blocks in enumerate(reach):
        if not blocks:
            continue
        lo = blocks[0]
        assert list(blocks) == list(range(lo, l + 1)), f"loss {l}: group {blocks} is not a run ending at {l}"
        a = a0 if lo == 0 else outs[lo - 1]
        for j in range(lo, l + 1):
            fb = feedbacks[j] if feedbacks is not None and j > lo else None
            a = torch_block(a, ws[j], specs[j], feedback=fb, fixed_stats=fixed_stats)
        total = total + block_loss(l, a)
    total.backward()
    return total
