"""Framework memory, measured: the engine's rules written as a PyTorch practitioner would, and the peak
allocator bytes of one of their training steps.

Why a package apart from the chip model: the DF paper's memory figure (Fig. 4A) is a PyTorch
measurement on a GPU. A hand model of what a framework holds (which tensors autograd saves, when it
frees them) got both BP and DF wrong (issue 24); this package runs the step in real PyTorch and reads
the allocator instead, so nothing here is a memory formula.

    nets.py      the conv/dense blocks, label embedding, feedback matrices and BP head, from a ModelSpec
    vit.py       the vit blocks (pre-LN encoder layers, SDPA attention, patch embedding), FF's fixed
                 label patch and BP's token-mean head
    losses.py    the per-block objectives (DF, FF, SymBa, CwC, CFF's contrastive loss), as a table
    steps.py     one training step per (rule, variant): BP plain / checkpointed, local rules
                 memory-conscious / naive
    measure.py   measure_peak(...) -> MeasuredPeak: torch.profiler memory events on CPU,
                 torch.cuda.max_memory_allocated on CUDA; NETS: block kind -> net and the rules it runs
    point.py     measure_point(hw, model, device): the figure of one experiment point (compare, run/map)

Rules per block kind, as the engine runs them: conv/dense blocks every rule but CFF; vit blocks CFF, FF,
SymBa, DF (span 1) and BP. Not implemented (as in the engine): DF-O/DF-R and CwC on a vit, CFF on conv
blocks; such points, and any block kind not in ``measure.NETS``, report "not measured" with the reason.
The family shapes of the widened condition grid are in ``chipsim.experiments.measured``.
"""
from .measure import MeasuredPeak, measure_peak
from .steps import RULES, VARIANTS

__all__ = ["MeasuredPeak", "measure_peak", "RULES", "VARIANTS"]
