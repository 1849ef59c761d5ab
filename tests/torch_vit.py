"""A torch float32 vision transformer and the CFF paper's losses, written from the papers, not the engine.

Shared by the tests that check whole training steps on a ViT (``test_vit_rules.py``): a pre-LN encoder
layer (the CFF paper's Sec. 3.4; torch's own layer norm, GELU and scaled dot-product attention), the
patch embedding with FF's extra label patch, the token mean (Eq. 13), the supervised and marginal
contrastive losses (Eq. 3 and 15) and FF's loss. Parameters come as a dict of leaf tensors named as the
engine's ``masters()`` (``qkv.w``, ``ln1.gamma``, ...).
"""
import torch
import torch.nn.functional as F


def params(block):
    """Leaf tensors (requires_grad) holding the values of a ``TransformerBlock``'s tensors."""
    return {k: torch.tensor(m.value, dtype=torch.float32, requires_grad=True) for k, m in block.masters().items()}


def embed(x, p, patch, extra=None):
    """Patch projection (a stride-``patch`` convolution), FF's extra patches after the image's, + position."""
    e = p["embed.w"].shape[0]
    w = p["embed.w"].reshape(e, x.shape[1], patch, patch)
    tokens = F.conv2d(x, w, p["embed.b"], stride=patch).flatten(2).transpose(1, 2)
    if extra is not None:
        tokens = torch.cat([tokens, F.linear(extra, p["embed.w"], p["embed.b"])], dim=1)
    return tokens + p["pos"]


def encoder(x, p, heads):
    n, t, e = x.shape
    h = F.layer_norm(x, (e,), p["ln1.gamma"], p["ln1.beta"], 1e-5)
    q, k, v = F.linear(h, p["qkv.w"], p["qkv.b"]).reshape(n, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, e)
    z = x + F.linear(o, p["proj.w"], p["proj.b"])
    u = F.linear(F.layer_norm(z, (e,), p["ln2.gamma"], p["ln2.beta"], 1e-5), p["fc1.w"], p["fc1.b"])
    return z + F.linear(F.gelu(u), p["fc2.w"], p["fc2.b"])


def layer(x, p, heads, patch=None, extra=None, normalise=False):
    """One layer of the paper's ViT: the first embeds patches; FF normalises each later layer's input tokens."""
    if patch is not None:
        x = embed(x, p, patch, extra)
    elif normalise:
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return encoder(x, p, heads)


def supcon(feats, labels, tau, margin=0.0):
    """Supervised contrastive loss of un-normalised rows, averaged over anchors; with a margin, every
    positive similarity a.b becomes min(a.b + m, 1) (the marginal contrastive loss)."""
    z = F.normalize(feats, dim=1)
    sim = z @ z.t()
    m = len(labels)
    eye = torch.eye(m, dtype=torch.bool)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    q = torch.where(pos, torch.clamp(sim + margin, max=1.0), sim) if margin > 0 else sim
    logits = (q / tau).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(dim=1) / pos.sum(dim=1)
    return per_anchor.mean()


def ff(gp, gn, theta):
    """Hinton's FF loss: softplus(theta - g+) + mean over the negatives of softplus(g- - theta), over samples."""
    return (F.softplus(theta - gp) + F.softplus(gn - theta).mean(dim=1)).mean()
