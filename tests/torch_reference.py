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
