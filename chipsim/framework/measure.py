"""Peak allocator bytes of one training step, measured in PyTorch.

Why measured: what a framework holds during a step (autograd's saved tensors, the gradients of the
errors in flight, allocator workspaces) is not a list of rules one can write down reliably (issue 24).

CPU: every tensor of the run -- the network, the optimizer, the batch -- is created inside one
``torch.profiler`` session with ``profile_memory=True``; the allocator's memory events (+ bytes on
allocation, - on free) summed in time order give the bytes live at every instant, and the peak is the
largest sum inside the measured step, a ``record_function`` range. Before it, every parameter gets a
zero gradient and the optimizer steps once on them, so the optimizer's state exists (Adam allocates it
lazily) and a previous step's gradients are alive when the measured step starts, as in a training loop
(a whole unmeasured step would leave the same tensors behind, at twice the compute). The running sum starts at zero before anything
is built, so the peak is absolute: parameters, optimizer state, buffers and the batch included.

CUDA: the same two steps; ``torch.cuda.reset_peak_memory_stats`` before the measured step and
``torch.cuda.max_memory_allocated`` after it (the caching allocator's bytes, rounded to its blocks).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

# kineto (the profiler's backend) logs an ERROR line on machines without a GPU; only its fatal ones, please
os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from ..errors import ConfigError
from .losses import LossParams
from .nets import TorchNet
from .steps import RULES, train_step, variants
from .vit import TorchViT

#: optimizer name -> constructor(parameters, momentum); chipsim's ``training.optimizer`` / ``training.momentum``
OPTIMIZERS = {"adam": lambda p, momentum: torch.optim.Adam(p, lr=1e-3),
              "sgd": lambda p, momentum: torch.optim.SGD(p, lr=0.01, momentum=momentum)}
STEP_RANGE = "chipsim.framework.measured_step"
DEVICES = ("cpu", "cuda")
_CONV_RULES = tuple(r for r in RULES if RULES[r].views == 1)
#: block kind -> (the net that builds it, the rules it runs: as the engine, CFF on vit only, and a vit
#: trains each block on its own loss (span 1) or by BP; ``engine/networks/vit.check_rule_model``)
NETS = {"conv": (TorchNet, _CONV_RULES), "dense": (TorchNet, _CONV_RULES),
        "vit": (TorchViT, ("bp", "ff", "symba", "df", "cff"))}


def net_for(blocks, rule: str):
    """The net class of ``blocks``' kind, or a ConfigError naming what is allowed."""
    kind = blocks[0].type
    if kind not in NETS:
        raise ConfigError(f"model: {kind} blocks have no framework implementation; allowed: {', '.join(NETS)}")
    cls, rules = NETS[kind]
    if rule not in rules:
        raise ConfigError(f"rule: {rule!r} does not run on {kind} blocks; allowed: {', '.join(rules)}")
    return cls


@dataclass(frozen=True)
class MeasuredPeak:
    """One measured step: its peak and what it was measured on."""
    bytes: int                 # peak allocator bytes over the step (absolute: resident state included)
    resident_bytes: int        # live when the step began: parameters, optimizer state, last gradients, batch
    torch_version: str
    device: str                # "cpu" or the CUDA device's name
    how: str                   # "torch.profiler memory events" or "torch.cuda.max_memory_allocated"
    rule: str
    variant: str
    optimizer: str             # "adam", "sgd" (momentum 0: no state) or "sgd+momentum"
    batch: int
    negatives: int             # N wrong labels per sample (0: the rule has none)
    rows: int                  # rows a block sees: batch x (N + 1), batch x views (CFF), or batch
    threads: int               # torch intra-op threads (CPU)

    @property
    def mib(self) -> float:
        return self.bytes / 2 ** 20

    def label(self) -> str:
        """What a table prints beside the figure: ``measured, torch 2.14, cpu``."""
        short = ".".join(self.torch_version.split("+")[0].split(".")[:2])
        dev = "cpu" if self.device == "cpu" else "cuda"
        return f"measured, torch {short}, {dev}"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label()}


def _check(rule, variant, optimizer, device):
    if rule not in RULES:
        raise ConfigError(f"rule: {rule!r} has no framework implementation; allowed: {', '.join(RULES)}")
    if variant not in variants(rule):
        raise ConfigError(f"variant: {variant!r} is not a variant of {rule}; allowed: {', '.join(variants(rule))}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer: {optimizer!r} is not measured; allowed: {', '.join(OPTIMIZERS)}")
    if device not in DEVICES:
        raise ConfigError(f"--device: {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda, but torch sees no CUDA device here; allowed on this machine: cpu")


def _blocks(model):
    return tuple(model.blocks) if hasattr(model, "blocks") else tuple(model)


def _build(blocks, rule, batch, negatives, optimizer, momentum, shape, num_classes, seed, dtype, device):
    r = RULES[rule]
    gen = torch.Generator().manual_seed(seed + 1)
    net = net_for(blocks, rule)(blocks, shape, num_classes, with_label=r.with_label, feedback=r.feedback,
                                with_head=r.span == 0, seed=seed, dtype=dtype).to(device)
    opt = OPTIMIZERS[optimizer](net.parameters(), momentum)
    # the batch as the loader delivers it: B images, or B x views (CFF's two views of each sample)
    x = torch.rand((batch * r.views,) + tuple(shape), generator=gen, dtype=dtype).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    # N distinct wrong labels per sample: label + 1..N (mod classes), shifted by a random offset
    shift = torch.randint(0, num_classes - negatives, (batch, 1), generator=gen) if negatives < num_classes - 1 else 0
    neg = ((labels.cpu()[:, None] + 1 + shift + torch.arange(negatives)[None, :]) % num_classes).to(device)
    return net, opt, x, labels, neg


def for_dataset(name: str) -> tuple:
    """((C, H, W), classes) of a chipsim dataset name (``workload.dataset``)."""
    from ..config import DATASET_SHAPES
    c, h, w, k = DATASET_SHAPES[name]
    return (c, h, w), k


def measure_peak(model, rule: str, batch: int, negatives: int, optimizer: str = "adam", dataset_shape=(1, 28, 28),
                 variant: str | None = None, device: str = "cpu", num_classes: int = 10, seed: int = 0,
                 hp: LossParams = LossParams(), dtype=torch.float32, momentum: float = 0.9) -> MeasuredPeak:
    """Peak allocator bytes of one training step of ``rule`` on ``model`` (a ModelSpec or its blocks).

    ``negatives``: N wrong labels per sample (ignored by rules whose input carries no label: BP, CwC);
    ``variant``: BP ``plain``/``checkpointed``, local rules ``conscious``/``naive`` (default: the first);
    ``dataset_shape``: (C, H, W) of one input; ``device``: ``cpu`` (profiler events) or ``cuda``;
    ``momentum``: SGD's (chipsim's ``training.momentum``, default 0.9; 0 keeps no state)."""
    if rule not in RULES:
        raise ConfigError(f"rule: {rule!r} has no framework implementation; allowed: {', '.join(RULES)}")
    variant = variant or variants(rule)[0]
    _check(rule, variant, optimizer, device)
    n = negatives if RULES[rule].with_label else 0
    if RULES[rule].with_label and not 1 <= n <= num_classes - 1:
        raise ConfigError(f"negatives: {negatives} wrong labels per sample; allowed: 1..{num_classes - 1}")
    blocks = _blocks(model)
    net_for(blocks, rule)
    args = (blocks, rule, batch, n, optimizer, momentum, tuple(dataset_shape), num_classes, seed, dtype)
    if device == "cuda":
        peak, resident, dev, how = _measure_cuda(args, rule, variant, hp)
        threads = torch.get_num_threads()
    else:
        # one intra-op thread, whatever the process uses: a parallel kernel's workspace moves the peak (by
        # about 45 KB between 1 and 2 threads), and the figure must not depend on which executor ran it
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            peak, resident, dev, how = _measure_cpu(args, rule, variant, hp)
        finally:
            torch.set_num_threads(before)
        threads = 1
    return MeasuredPeak(bytes=int(peak), resident_bytes=int(resident), torch_version=torch.__version__,
                        device=dev, how=how, rule=rule, variant=variant,
                        optimizer="sgd+momentum" if optimizer == "sgd" and momentum else optimizer, batch=batch,
                        negatives=n, rows=batch * RULES[rule].views * (n + 1), threads=threads)


def _prime(net, opt) -> None:
    """The state a training loop is in before a step: last step's gradients and the optimizer's state."""
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()                                   # zero gradients: Adam's moments stay 0, no weight moves


def _measure_cpu(args, rule, variant, hp):
    from torch.profiler import ProfilerActivity, profile, record_function
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net, opt, x, y, neg = _build(*args, device="cpu")
        _prime(net, opt)
        with record_function(STEP_RANGE):
            train_step(net, opt, rule, variant, x, y, neg, hp)
        del net, opt, x, y, neg
    return (*peak_in_range(prof.profiler.kineto_results.events(), STEP_RANGE), "cpu", "torch.profiler memory events")


def peak_in_range(events, range_name: str):
    """(peak, bytes live at its start) of the running sum of CPU memory events inside ``range_name``."""
    mem, window = [], None
    for i, e in enumerate(events):
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            mem.append((e.start_ns(), i, e.nbytes()))
        elif e.name() == range_name:
            window = (e.start_ns(), e.end_ns())
    if window is None:
        raise RuntimeError(f"the profiler recorded no {range_name!r} range")
    live, start, peak = 0, None, None
    for t, _, nbytes in sorted(mem):
        if t >= window[0] and start is None:
            start = peak = live
        if t > window[1]:
            break
        live += nbytes
        if start is not None:
            peak = max(peak, live)
    if start is None:
        start = peak = live
    return peak, start


def _measure_cuda(args, rule, variant, hp):
    net, opt, x, y, neg = _build(*args, device="cuda")
    _prime(net, opt)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    train_step(net, opt, rule, variant, x, y, neg, hp)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak, resident, torch.cuda.get_device_name(), "torch.cuda.max_memory_allocated"
