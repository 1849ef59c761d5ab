"""One training step of every rule, as a PyTorch practitioner would write it, in two variants each.

A rule is a row of :data:`RULES` (its objective, how many blocks one loss reaches, whether the input
carries the label, whether errors cross blocks through a fixed random B, how many views of a sample the
batch holds); a variant is a row of
:data:`VARIANTS`. The step is ``zero_grad(set_to_none=True)``, the rule's forward and backward, then
``optimizer.step()``.

* BP ``plain``: forward through every block and the head, one backward.
* BP ``checkpointed``: the same with ``torch.utils.checkpoint`` around each block (non-reentrant):
  a block keeps only its input through the forward and recomputes its graph in the backward -- the
  memory-conscious baseline a PyTorch user would compare a local rule against.
* local ``conscious``: blocks run in order; block l's loss is backpropagated as soon as block l has run,
  and no graph spans more blocks than a loss reaches. Span 1 (FF, SymBa, DF/greedy, CwC): block l's
  input is detached, its graph freed by its own backward. Span 2 (DF-O, DF-R): block l's graph is kept
  (``retain_graph``) until loss l + 1 has pushed its error (through W_{l+1}^T, or B_{l+1} for DF-R)
  through it, then freed -- at that moment two blocks' graphs are whole.
* local ``naive``: every block's graph is built in one forward and one backward runs over the sum of
  all local losses (each block's input detached, so each loss reaches only its own block); span-2
  rules then send each loss's error at the input of its block into the block below in one more
  backward, over the graphs still alive. Same gradients as ``conscious``, every graph alive at once.

Every loss whose group starts at block 0 reaches the label embedding through W_0 (as the engine's
routing). Negatives are N distinct wrong labels per sample, given with the batch; the N + 1 rows of a
sample are all formed in the step (``mapping.negatives: parallel``). CFF's two views of a sample come as
two rows of the batch (the data loader makes them, ``vit.py``), each with the sample's label.

The steps drive conv/dense nets (``nets.TorchNet``) and vision transformers (``vit.TorchViT``) alike:
a loss reads ``net.readout(out)`` (a conv block's output, a transformer block's token mean) and BP's head
``net.head_input(a)``; which rules a kind of net runs is ``measure.NETS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .losses import OBJECTIVES


@dataclass(frozen=True)
class Rule:
    objective: Optional[str]      # None: BP (cross-entropy at the head)
    span: int                     # blocks one loss reaches (0: BP, every block)
    with_label: bool              # the input carries the label (positive and negative rows)
    feedback: bool                # errors cross into the block below through a fixed random B (DF-R)
    views: int = 1                # rows per sample delivered by the loader (CFF: two augmented views)


RULES = {
    "bp": Rule(None, 0, False, False),
    "ff": Rule("ff", 1, True, False),
    "symba": Rule("symba", 1, True, False),
    "df": Rule("df", 1, True, False),          # DF's loss, greedy (span 1)
    "df-o": Rule("df", 2, True, False),
    "df-r": Rule("df", 2, True, True),
    "cwc": Rule("cwc", 1, False, False),
    "cff": Rule("contrastive", 1, False, False, views=2),
}
#: variants per kind of rule; the first is the default
VARIANTS = {"bp": ("plain", "checkpointed"), "local": ("conscious", "naive")}


def variants(rule: str) -> tuple:
    return VARIANTS["bp" if RULES[rule].span == 0 else "local"]


def _bp(net, x, labels, checkpointed: bool):
    a = x
    for blk in net.blocks:
        a = checkpoint(blk, a, use_reentrant=False) if checkpointed else blk(a)
    loss = F.cross_entropy(net.head_input(a) @ net.head.t(), labels)
    loss.backward()


def _input_rows(net, rule, x, labels, negatives):
    """(rows, labels, rows per sample): the positive and N negative rows with the label channel; for a rule
    with views, the loader's rows and each row's label."""
    if rule.views > 1:
        return x, labels.repeat_interleave(rule.views), 1
    if not rule.with_label:
        return x, labels, 1
    reps = negatives.shape[1] + 1
    lab = torch.cat([labels[:, None], negatives], 1).reshape(-1)
    return net.rows(x.repeat_interleave(reps, 0), lab), labels, reps


def _local_conscious(net, rule, a0, labels, reps, hp):
    objective = OBJECTIVES[rule.objective]
    last = len(net.blocks) - 1
    below = None                        # block l-1's output, its graph kept for loss l (span 2)
    for l, blk in enumerate(net.blocks):
        if l == 0:
            inp = a0                    # carries the label embedding's graph
        else:
            inp = below.detach()
            if rule.span == 2:
                inp.requires_grad_()
        out = blk(inp)
        loss = objective(net.readout(out), labels, reps, hp, net.num_classes)
        loss.backward(retain_graph=rule.span == 2 and l < last)
        if rule.span == 2 and l > 0:
            below.backward(inp.grad)    # loss l's error through block l-1; frees block l-1's graph
            inp.grad = None
        del loss, inp
        below = out if rule.span == 2 else out.detach()
        del out
    del below


def _local_naive(net, rule, a0, labels, reps, hp):
    objective = OBJECTIVES[rule.objective]
    inputs, outputs, total = [], [], 0
    for l, blk in enumerate(net.blocks):
        inp = a0 if l == 0 else outputs[-1].detach().requires_grad_(rule.span == 2)
        out = blk(inp)
        total = total + objective(net.readout(out), labels, reps, hp, net.num_classes)
        inputs.append(inp)
        outputs.append(out)
    total.backward(retain_graph=rule.span == 2)
    if rule.span == 2 and len(outputs) > 1:
        errors = [inp.grad for inp in inputs[1:]]
        for inp in inputs[1:]:          # else autograd would accumulate into the very tensors it is sending
            inp.grad = None
        torch.autograd.backward(outputs[:-1], errors)


def _local(net, rule, x, labels, negatives, hp, naive: bool):
    a0, labels, reps = _input_rows(net, rule, x, labels, negatives)
    (_local_naive if naive else _local_conscious)(net, rule, a0, labels, reps, hp)


#: (rule kind, variant) -> the body of the step
BODIES = {
    ("bp", "plain"): lambda net, rule, x, y, neg, hp: _bp(net, x, y, checkpointed=False),
    ("bp", "checkpointed"): lambda net, rule, x, y, neg, hp: _bp(net, x, y, checkpointed=True),
    ("local", "conscious"): lambda net, rule, x, y, neg, hp: _local(net, rule, x, y, neg, hp, naive=False),
    ("local", "naive"): lambda net, rule, x, y, neg, hp: _local(net, rule, x, y, neg, hp, naive=True),
}


def train_step(net, optimizer, rule: str, variant: str, x, labels, negatives, hp) -> None:
    """One step: zero the gradients (freeing them), the rule's forward and backward, the update."""
    r = RULES[rule]
    body = BODIES[("bp" if r.span == 0 else "local", variant)]
    optimizer.zero_grad(set_to_none=True)
    body(net, r, x, labels, negatives, hp)
    optimizer.step()
