"""The hwconfig schema: chip, precision, workload, training, learning and mapping, as frozen dataclasses.

Why a module of its own: these classes *are* the schema -- each field's
``spec`` gives its default, unit, range and documentation (the ``--reference``
table is generated from them), and each ``_validate`` states a rule that
spans fields. They know nothing about files: reading YAML, ``--set``
overrides and presets live in :mod:`chipsim.config.files`; the chip's sections
(``Chip`` and its parts) live in :mod:`chipsim.config.chip_schema` and are re-exported here.

The key paths here (``chip.mesh.rows``, ``chip.core.sram_kib``,
``precision.weight_bits``, ``workload.rule`` ...) are chipsim's public schema:
users' YAML files and scripts write them, so extend but never rename.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import ConfigError
from ..modelspec import ModelSpec, check_fits_host
from ..schema import spec
from .chip_schema import ALLOWED_BITS, Chip, Core, CoreEnergy, Mesh, Noc, NocEnergy, OffChip  # noqa: F401

RULES = ("bp", "ff", "symba", "df", "df-o", "df-r", "cwc", "cff")
DATASET_NAMES = ("mnist5k", "mnist", "fashion_mnist", "cifar10", "svhn")
# (channels, height, width, classes) per dataset: shapes are checked, and `map` runs, without data files
DATASET_SHAPES = {"mnist5k": (1, 28, 28, 10), "mnist": (1, 28, 28, 10), "fashion_mnist": (1, 28, 28, 10),
                  "cifar10": (3, 32, 32, 10), "svhn": (3, 32, 32, 10)}


# ---------------------------------------------------------------- precision
@dataclass(frozen=True)
class Precision:
    weight_bits: int = spec(4, doc="bits of the compute copy of weights (signed, per-channel scale)",
                            unit="bits", choices=ALLOWED_BITS)
    activation_bits: int = spec(4, doc="bits of activations after ReLU (unsigned, per-layer scale)",
                                unit="bits", choices=ALLOWED_BITS)
    gradient_bits: int = spec(8, doc="bits of errors/gradients sent and multiplied", unit="bits",
                              choices=ALLOWED_BITS)
    update_bits: int = spec(16, doc="bits of the fixed-point master weights the optimizer updates",
                            unit="bits", choices=ALLOWED_BITS)
    optimizer_bits: int = spec(16, doc="bits of the optimizer state a core keeps between steps (SGD momentum; "
                               "Adam's first moment and the square root of its second), per-tensor scale, "
                               "rounded as precision.rounding; 32 = float32 (16: as accurate as 32 on a "
                               "validation split, 8 about half a point lower; docs/defaults.md)",
                               unit="bits", choices=ALLOWED_BITS)
    accumulator_bits: int = spec(16, doc="bits of the weight-gradient accumulators (a step's gradient, summed "
                                 "over its samples, as the optimizer reads it), per-tensor scale; 32 = float32 "
                                 "(16: as accurate as 32 on a validation split)",
                                 unit="bits", choices=ALLOWED_BITS)
    goodness_bits: int = spec(8, doc="bits of the block output that goodness squares, taken before it is "
                              "requantized to activation_bits for storage and the NoC; at or below "
                              "activation_bits the sent output itself is squared; local rules on conv and dense models only (bp "
                              "squares nothing; a vit model's token mean is taken at 32 bits)",
                              unit="bits", choices=ALLOWED_BITS)
    vector_bits: int = spec(32, doc="bits of the vector unit's arithmetic (batch norm, quantisation scaling, "
                            "losses, the optimizer, activation functions): 32 = float32, 16 = bfloat16 (float32's "
                            "range, 8-bit significand; docs/precision.md); its work is costed at this width",
                            unit="bits", choices=(16, 32))
    rounding: str = spec("stochastic", doc="rounding of gradients and updates",
                         choices=("stochastic", "nearest"))
    scale: str = spec("float", doc="quantization scales: any float, or powers of two (shift-only hardware)",
                      choices=("float", "pow2"))


# ---------------------------------------------------------------- workload
@dataclass(frozen=True)
class Workload:
    model: str = spec(doc="model file (models/*.yaml), relative to this file", path=True)
    rule: str = spec("df-r", doc="learning rule (cwc: channel-wise competitive, no label and no negatives; cff: "
                     "contrastive forward-forward on a vit model, two augmented views and a supervised contrastive "
                     "loss per layer, then a linear probe)", choices=RULES)
    dataset: str = spec("mnist5k", doc="dataset; mnist5k needs no download", choices=DATASET_NAMES)
    data_root: str = spec("~/.cache/chipsim/data", doc="where torchvision datasets live", path=True)
    download: bool = spec(False, doc="let torchvision download missing files (needs internet)")
    train_limit: Optional[int] = spec(None, doc="use only this many training samples", min=1)
    test_limit: Optional[int] = spec(None, doc="use only this many test samples", min=1)


@dataclass(frozen=True)
class Training:
    epochs: int = spec(3, doc="passes over the training set", min=1)
    batch_size: int = spec(64, doc="samples per weight update", unit="samples", min=1)
    optimizer: str = spec("adam", doc="optimizer on the master weights", choices=("adam", "sgd"))
    lr: float = spec(1e-3, doc="peak learning rate", min=0, min_exclusive=True)
    momentum: float = spec(0.9, doc="SGD momentum (0 = plain SGD, no state)", min=0, max=1)
    schedule: str = spec("cosine", doc="learning-rate schedule over all steps; multistep: lr x gamma at each of "
                         "training.milestones (torch's MultiStepLR, the Advancements paper)",
                         choices=("cosine", "constant", "multistep"))
    milestones: Tuple[float, ...] = spec((), doc="epochs at which multistep multiplies the learning rate by gamma, "
                                         "strictly increasing and inside (0, epochs); a fraction of an epoch is "
                                         "allowed (the drop then falls within that epoch)", unit="epochs")
    gamma: float = spec(0.1, doc="multistep's decay factor per milestone (the Advancements paper: 0.1 or 0.2)",
                        min=0, min_exclusive=True, max=1)
    seed: int = spec(0, doc="seed of weights, shuffling, negatives and rounding", min=0)
    checkpoint: bool = spec(True, doc="write a checkpoint after each epoch (for --resume)")
    update: str = spec("batch", doc="when a layer's update runs in the step's schedule: batch = once its "
                       "gradient is complete, after every sample op waiting on its cores; immediate = as soon as "
                       "its gradient is complete and no op of the step still needs its old weights (the update "
                       "lock: DF-O's error through W^T; DF-R's fixed B needs none), ahead of other work; the "
                       "engine's arithmetic is the same (an update uses the same gradient either way), only the "
                       "schedule differs", choices=("batch", "immediate"))

    def _validate(self, key, where):
        path = f"{key}.milestones" if key else "milestones"
        ms = list(self.milestones)
        if self.schedule == "multistep" and not ms:
            raise where.error(path, "schedule multistep needs at least one milestone (the epochs at which the "
                              "learning rate is multiplied by gamma), e.g. [1, 2]")
        if ms and self.schedule != "multistep":
            raise where.error(path, f"milestones apply to schedule: multistep only (schedule is {self.schedule}); "
                              "remove them or set training.schedule: multistep")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise where.error(path, f"{_fmt(ms)} must increase strictly")
        bad = [m for m in ms if not 0 < m < self.epochs]
        if bad:
            raise where.error(path, f"milestone {_fmt(bad[0])} is outside the {self.epochs} epochs of training; "
                              f"allowed: 0 < milestone < {self.epochs} (training.epochs)")


@dataclass(frozen=True)
class Learning:
    loss: str = spec("auto", doc="per-block loss; auto takes it from workload.rule",
                     choices=("auto", "ff", "symba", "df", "cwc", "contrastive", "ce"))
    strategy: str = spec("auto", doc="update strategy; auto takes it from workload.rule",
                         choices=("auto", "greedy", "df-o", "df-r", "bp"))
    olu_schedule: str = spec("every-step", doc="overlapping groups: every loss every step (DF), or the Trifecta's "
                             "alternation: each step uses every span-th loss, so each block is updated by one loss, "
                             "its own when last in its group and the next block's when first",
                             choices=("every-step", "alternate"))
    span: Optional[int] = spec(None, doc="blocks one loss reaches: its own and span-1 below (1 = greedy, 2 = DF-O/"
                               "DF-R's pairs, more = DF's Figure S2); null = from the strategy (1 for greedy, 2 for "
                               "df-o and df-r); ignored by bp", min=1)
    grouping: str = spec("overlapping", doc="overlapping: every block's loss reaches the span blocks ending at it; "
                         "chunked: consecutive chunks of span blocks sharing none, each updated by the loss at its "
                         "top (the Advancements paper)", choices=("overlapping", "chunked"))
    chunk_alternate: bool = spec(False, doc="chunked groups only: shift the chunk boundaries by span // 2 blocks on "
                                 "odd steps (the Advancements paper's alternating chunks)")
    negatives: Optional[int] = spec(None, doc="N distinct wrong labels per positive; null = classes - 1", min=1)
    negative_reduce: str = spec("max", doc="combine the N negative goodnesses by max (DF) or mean "
                                "(the paper's 'avg' ablation)", choices=("max", "avg"))
    margin: float = spec(1.0, doc="DF margin m+ between positive and hardest negative goodness", min=0)
    reg_lambda: float = spec(0.01, doc="DF regularisation weight on the hardest negative goodness "
                             "(0.1 measured about 3 points worse on a validation split of mnist5k)", min=0)
    ff_theta: float = spec(2.0, doc="FF goodness threshold (mean-of-squares goodness)", min=0)
    symba_alpha: float = spec(4.0, doc="SymBa scale of the goodness gap", min=0, min_exclusive=True)
    inference: str = spec("goodness", doc="goodness: the goodness under each of the C labels (C passes); head: a "
                          "linear softmax classifier on the last head_last_k blocks' activity under a neutral label "
                          "(one pass; Hinton, Trifecta App. H, the Advancements paper), trained alongside with "
                          "cross-entropy, no gradient reaching the blocks; on a vit model the linear probe of "
                          "learning.head_epochs instead (stage 2); ignored by bp and cff (always a probe)",
                          choices=("goodness", "head"))
    head_last_k: int = spec(2, doc="blocks whose concatenated outputs the head reads (2: the Advancements paper's "
                            "last two layers); its own key, not decode_last_k, because it sets the head's size; conv and "
                            "dense models only (a vit model's probe reads the last layer's token mean)",
                            min=1)
    label_encoding: str = spec("learned", doc="how the label enters the input: learned (a trained extra channel of "
                               "the image's size, Trifecta with OLU, DF), random (the same channel, fixed: Trifecta "
                               "without OLU) or onehot (Hinton: one-hot in the first pixels of the image, for dense "
                               "models); ignored by cwc, cff and bp, which take no label, and by vit models, which take it as a fixed "
                               "random patch",
                               choices=("learned", "random", "onehot"))
    decode_last_k: int = spec(1, doc="decode by goodness summed over the last k blocks (1: on the 4-block "
                              "default model the last block alone decodes as well as the last three on validation, "
                              "and inference then needs only its goodness); ignored by bp and cff, which decode with a head",
                              min=1)
    temperature: float = spec(0.1, doc="contrastive loss temperature tau (cff)", min=0, min_exclusive=True)
    contrastive_margin: Tuple[float, ...] = spec((0.0,), doc="marginal contrastive loss margin m (the CFF paper's "
                                                 "Eq. 15; 0 = the supervised contrastive loss, Eq. 3): one value for "
                                                 "every layer, or one per layer (CFF+M: 0.4 falling linearly to 0.1)",
                                                 unit="cosine similarity", scalar_list=True)
    augment: int = spec(2, doc="cff's two views: each is the image shifted by a seeded random (dy, dx) of at most "
                        "this many pixels, zero-filled (a random crop of the zero-padded image); 0 = two identical "
                        "views", unit="pixels", min=0)
    head_epochs: int = spec(100, doc="vit models: passes of the linear probe over the frozen encoder's token means "
                            "(stage 2: Adam, lr 1e-2 cosine, batch 64, retrained after every epoch); the head of cff, "
                            "and of ff/symba/df with inference: head", min=1)
    bn_backward: str = spec("fixed-stats", doc="errors through BN: also through the batch mean and variance "
                            "(autograd's gradient; couples every row of the batch), or with the statistics "
                            "held fixed (a per-channel scale; rows independent, so a core keeps and "
                            "back-propagates only the rows a loss gives an error, e.g. DF's positive and "
                            "hardest negatives); conv and dense blocks with norm: batch only (a vit model keeps every row)",
                            choices=("batch-stats", "fixed-stats"))

    def _validate(self, key, where):
        path = (key + ".") if key else ""
        if self.chunk_alternate and self.grouping != "chunked":
            raise where.error(f"{path}chunk_alternate", "applies to grouping: chunked only; overlapping groups "
                              "alternate with learning.olu_schedule: alternate")
        bad = [m for m in self.contrastive_margin if not 0 <= m <= 2]
        if not self.contrastive_margin or bad:
            raise where.error(f"{path}contrastive_margin", f"{_fmt(list(self.contrastive_margin))}: give one margin or "
                              "one per layer, each in [0, 2] (a cosine similarity shift)")
        if self.olu_schedule == "alternate" and self.grouping != "overlapping":
            raise where.error(f"{path}olu_schedule", "alternate applies to grouping: overlapping only; chunked "
                              "groups alternate with learning.chunk_alternate: true")


@dataclass(frozen=True)
class Mapping:
    strategy: str = spec("fit", doc="fit = split layers only as far as SRAM needs; balanced = also give every idle "
                         "core to the layer with the most MACs per slice; search = try layouts between the two (slices "
                         "per layer, a split layer's replicated work on every slice or once and multicast, a row "
                         "or column walk of the mesh) and keep the best by mapping.objective, within SRAM and "
                         "mapping.search_seconds", choices=("fit", "balanced", "search"))
    objective: str = spec("edp", doc="what mapping.strategy: search minimises: latency = step latency, energy = "
                          "energy per step (static included), edp = their product", choices=("latency", "energy",
                                                                                            "edp"))
    search_layouts: int = spec(48, doc="most layouts mapping.strategy: search costs (the budget that keeps its "
                               "result the same on every machine; ~1-3 s on the shipped presets); when the whole "
                               "space between fit and balanced is this small it is enumerated exhaustively",
                               unit="layouts", min=1, max=10 ** 6)
    search_seconds: float = spec(20.0, doc="a cap on the time mapping.strategy: search takes (it stops after the "
                                 "layout it is costing); should it bind, the result depends on the machine's "
                                 "speed and the report says so", unit="s", min=0, min_exclusive=True, max=3600)
    micro_batch: int = spec(1, doc="samples a core processes together", unit="samples", min=1)
    statistics: str = spec("auto", doc="where BN's statistics and the activation and error quantisation scales "
                           "come from, in the engine and in the chip's schedule alike: batch = over the whole "
                           "batch, so every sample of the step reaches each such value before any goes on (a "
                           "barrier in the schedule; the layer holds the batch's inputs meanwhile); running = BN "
                           "from running estimates updated sample by sample in stream order, scales from running "
                           "estimates latched for the step and updated as samples stream (no barrier); "
                           "micro-batch = BN over the mapping.micro_batch samples a core processes together, "
                           "scales latched and updated once per micro-batch; running and micro-batch need "
                           "learning.bn_backward fixed-stats and mapping.negatives parallel, conv and dense "
                           "models only; auto (the default) = running wherever the engine streams (what a chip "
                           "streaming samples can run, with no barrier), else batch with its barrier (vit "
                           "models, sequential negatives, learning.bn_backward batch-stats); the run's "
                           "settings name the value it resolved to",
                           choices=("auto", "batch", "running", "micro-batch"))
    memory_mode: str = spec("streaming", doc="the memory figure run's headline (console, report.md) shows first "
                            "and compare prints first among its ratios: streaming = what the "
                            "chip's cores hold while samples stream through them (the per-core ledger, which every "
                            "mapping must fit); whole-batch = every tensor of the batch in one memory pool, "
                            "chip-independent, at the chip's widths (the paper's GPU-style measure); pytorch = "
                            "the peak allocator bytes of one real PyTorch training step of the same rule, model, "
                            "batch, N and optimizer, measured (chipsim.framework; torch.profiler on CPU), labelled "
                            "with the torch version and device (vit models: rules cff, ff, symba, df, bp). streaming and "
                            "whole-batch are always computed; run and map measure the pytorch figure only under "
                            "this mode (it runs a PyTorch step), compare at every point (unless --device none)",
                            choices=("streaming", "whole-batch", "pytorch"))
    negatives: str = spec("parallel", doc="how a block takes a sample's N+1 label variants (local goodness "
                          "rules): parallel = all rows together, every row kept until the losses above have said "
                          "which they need; sequential = one variant after another through every block, each "
                          "keeping per sample only the positive and, for each loss reaching it, that loss's running "
                          "hardest negative (DF's max loss selects no other row); sequential-recompute = one block "
                          "at a time, keeping the positive and its own hardest negative and holding its input, "
                          "from which it recomputes the rows a loss above asks for (a recompute op). Sequential "
                          "needs learning.loss df with negative_reduce max and learning.bn_backward fixed-stats; "
                          "batch statistics and activation scales then come from the positive pass; ignored by bp "
                          "and cwc (one row per sample) and cff (two views)",
                          choices=("parallel", "sequential", "sequential-recompute"))
    feedback_storage: str = spec("stored", doc="DF-R random feedback weights kept in SRAM, or regenerated "
                                 "from a seed on the fly", choices=("stored", "seeded"))
    batch_loss: str = spec("recompute", doc="a loss over the whole batch (cff's contrastive loss): recompute = a "
                           "layer keeps only each sample's input and token mean until the batch's loss is known, "
                           "then runs each sample's forward again for its backward (one more forward per layer and "
                           "sample); keep = every sample's activations stay in SRAM until then (no extra work)",
                           choices=("recompute", "keep"))


@dataclass(frozen=True)
class HwConfig:
    chip: Chip = spec(doc="the modelled chip")
    workload: Workload = spec(doc="what runs on it")
    precision: Precision = spec(Precision, doc="bit widths of stored and computed values")
    training: Training = spec(Training, doc="training loop")
    learning: Learning = spec(Learning, doc="loss, update strategy and decoding")
    mapping: Mapping = spec(Mapping, doc="placement of layers on cores and memory accounting")

    def _validate(self, key, where):
        # an operand width runs on the narrowest lanes at least as wide (6-bit operands on 8-bit lanes),
        # so a table needs an entry at or above every configured width, not every width itself
        for bits_key in ("weight_bits", "activation_bits", "gradient_bits", "update_bits", "goodness_bits"):
            bits = getattr(self.precision, bits_key)
            for table, path, what in ((self.chip.core.macs_per_cycle, "chip.core.macs_per_cycle", "MACs per cycle"),
                                      (self.chip.core.energy_pj.mac, "chip.core.energy_pj.mac", "pJ per MAC")):
                if not any(b >= bits for b in table):
                    raise where.error(path, f"has no entry for {bits} bits or wider (precision.{bits_key}); "
                                      f"add `{bits}: <{what}>`")
        # the engine's vector work (normalisation, quantisation, losses, optimizer) runs at precision.vector_bits
        vbits = self.precision.vector_bits
        for table, path, what in ((self.chip.core.vector_ops_per_cycle, "chip.core.vector_ops_per_cycle",
                                   "operations per cycle"),
                                  (self.chip.core.energy_pj.vector_op, "chip.core.energy_pj.vector_op",
                                   "pJ per operation")):
            if not any(b >= vbits for b in table):
                raise where.error(path, f"has no entry for {vbits} bits or wider (precision.vector_bits: the "
                                  f"engine's vector work runs at {vbits} bits); add `{vbits}: <{what}>`")
        if self.mapping.negatives != "parallel" and self.strategy != "bp" and self.loss != "cwc":
            why = None
            if self.loss != "df" or self.learning.negative_reduce != "max":
                why = (f"learning.loss {self.loss}" + (f" with negative_reduce {self.learning.negative_reduce}"
                                                        if self.loss == "df" else "")
                       + " gives every row an error, so no row can be dropped; use learning.loss df with "
                       "learning.negative_reduce max, or mapping.negatives parallel")
            elif self.learning.bn_backward != "fixed-stats":
                why = ("learning.bn_backward batch-stats couples every row of the batch in the backward, so every "
                       "row must be kept; use learning.bn_backward fixed-stats, or mapping.negatives parallel")
            if why:
                raise where.error("mapping.negatives", f"{self.mapping.negatives}: {why}")
        if self.mapping.statistics not in ("batch", "auto"):
            if self.learning.bn_backward != "fixed-stats":
                raise where.error("mapping.statistics", f"{self.mapping.statistics} needs learning.bn_backward "
                                  "fixed-stats (the gradient through batch statistics couples the batch); "
                                  "allowed with batch-stats: batch")
            if self.mapping.negatives != "parallel" and self.strategy != "bp" and self.loss != "cwc":
                raise where.error("mapping.statistics", f"{self.mapping.statistics} needs mapping.negatives "
                                  "parallel (sequential passes take the positive pass's batch statistics); "
                                  "allowed with sequential negatives: batch")
        if self.strategy == "greedy" and (self.learning.span or 1) > 1:
            raise where.error("learning.span", f"{self.learning.span} needs a link to send errors down, but the "
                              f"strategy is greedy (span 1); set learning.strategy (or workload.rule) to df-o "
                              "(through W^T) or df-r (through a fixed random B)")
        classes = DATASET_SHAPES[self.workload.dataset][3]
        n = self.learning.negatives
        if n is not None and n > classes - 1:
            raise where.error("learning.negatives", f"{n} is out of range for {self.workload.dataset} ({classes} "
                              f"classes); allowed: 1..{classes - 1} (or null for {classes - 1})")

    @property
    def loss(self) -> str:
        """The per-block loss after resolving ``auto`` from the rule."""
        if self.learning.loss != "auto":
            return self.learning.loss
        return {"bp": "ce", "ff": "ff", "symba": "symba", "cwc": "cwc", "cff": "contrastive"}.get(self.workload.rule,
                                                                                                 "df")

    @property
    def strategy(self) -> str:
        """The update strategy after resolving ``auto`` from the rule."""
        if self.learning.strategy != "auto":
            return self.learning.strategy
        return {"bp": "bp", "df-o": "df-o", "df-r": "df-r"}.get(self.workload.rule, "greedy")

    @property
    def span(self) -> Optional[int]:
        """Blocks one loss reaches after resolving null from the strategy; None under BP."""
        if self.strategy == "bp":
            return None
        if self.learning.span is not None:
            return self.learning.span
        return 1 if self.strategy == "greedy" else 2

    @property
    def uses_label(self) -> bool:
        """Does the input carry a label? Not for BP (a head decides), CwC (channel groups decide) nor CFF
        (the labels pick the positive pairs of its loss)."""
        return self.strategy != "bp" and self.loss not in ("cwc", "contrastive")


def _fmt(v) -> str:
    """Milestones as the user wrote them: 2 rather than 2.0."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return f"{v:g}"


def streaming_statistics_apply(hw: HwConfig, model: ModelSpec) -> bool:
    """Whether the engine can take BN's statistics and the quantisation scales as samples stream
    (``mapping.statistics`` running or micro-batch) for this model and these options."""
    sequential = hw.mapping.negatives != "parallel" and hw.strategy != "bp" and hw.loss != "cwc"
    return not model.is_transformer and hw.learning.bn_backward == "fixed-stats" and not sequential


def resolve_statistics(hw: HwConfig, model: ModelSpec) -> HwConfig:
    """``hw`` with ``mapping.statistics: auto`` resolved: running where the engine streams (what a chip that
    streams samples can run), else batch, whose barrier the schedule then costs. Other values unchanged."""
    if hw.mapping.statistics != "auto":
        return hw
    mode = "running" if streaming_statistics_apply(hw, model) else "batch"
    return dataclasses.replace(hw, mapping=dataclasses.replace(hw.mapping, statistics=mode))


def check_model(hw: HwConfig, model: ModelSpec, source: str):
    """Refuse a model that cannot run on the dataset's input, or whose arrays could not fit this machine;
    returns its block shapes. ``source`` names the model in the message (its file)."""
    c, h, w, classes = DATASET_SHAPES[hw.workload.dataset]
    if model.is_transformer and hw.mapping.statistics != "batch":
        raise ConfigError(f"mapping.statistics: {hw.mapping.statistics} applies to conv and dense models; "
                          f"{source} is a vit model; allowed: batch")
    return check_fits_host(model, (c, h, w), classes, hw.training.batch_size, hw.learning.negatives,
                           with_label=hw.strategy != "bp", source=source)
