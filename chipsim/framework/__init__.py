"""Framework memory, measured: the engine's rules written as a PyTorch practitioner would, and the peak
allocator bytes of one of their training steps.

Why a package apart from the chip model: the DF paper's memory figure (Fig. 4A) is a PyTorch
measurement on a GPU. A hand model of what a framework holds (which tensors autograd saves, when it
frees them) got both BP and DF wrong (issue 24); this package runs the step in real PyTorch and reads
the allocator instead, so nothing here is a memory formula.

    nets.py      the blocks, label embedding, feedback matrices and BP head, from a ModelSpec
    losses.py    the per-block objectives (DF, FF, SymBa, CwC) and BP's cross-entropy, as a table
    steps.py     one training step per (rule, variant): BP plain / checkpointed, local rules
                 memory-conscious / naive
    measure.py   measure_peak(...) -> MeasuredPeak: torch.profiler memory events on CPU,
                 torch.cuda.max_memory_allocated on CUDA
    point.py     measure_point(hw, model, device): the figure of one experiment point (compare, run/map)

Not implemented: the vit blocks and their rules (CFF, FF/BP on a vit); those points report "not measured".
The family shapes of the widened condition grid are in ``chipsim.experiments.measured``.
"""
from .measure import MeasuredPeak, measure_peak
from .steps import RULES, VARIANTS

__all__ = ["MeasuredPeak", "measure_peak", "RULES", "VARIANTS"]
