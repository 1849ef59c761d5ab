"""Keys a config sets but its options ignore, and retired keys: one stderr note each, never for defaults.

The rules are the table ``chipsim.config.ignored.IGNORED``; these tests pin, for each kind of reason, that
the note appears when the key is set and ignored, and that it does not when the key is read or only
defaulted.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chipsim import api, cli
from chipsim.config import HwConfig, load_config
from chipsim.config.ignored import IGNORED, RETIRED
from chipsim.schema import reference

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "hwconfigs").glob("*.yaml"))
BASE = REPO / "hwconfigs" / "44core_4bit.yaml"
VIT = f"workload.model={REPO / 'models' / 'vit_tiny.yaml'}"


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The default preset without its one rule-specific key (precision.goodness_bits, which BP ignores)."""
    text = BASE.read_text().replace("../models/", str(REPO / "models") + "/")
    lines = [x for x in text.splitlines(keepends=True) if not x.lstrip().startswith("goodness_bits:")]
    assert len(lines) == len(text.splitlines()) - 1
    path = tmp_path_factory.mktemp("notes") / "plain.yaml"
    path.write_text("".join(lines))
    return path


def _noted(path, *overrides) -> list[str]:
    """The keys named by the notes of the config at ``path`` under ``overrides``."""
    return [line.split(": ")[2].split(" is ")[0] for line in load_config(str(path), overrides).notes]


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_presets_with_their_own_rule_say_nothing(preset):
    assert load_config(str(preset)).notes == ()


# (overrides, the key noted): set and ignored under the other settings
IGNORED_CASES = [
    (("training.momentum=0.5",), "training.momentum"),                                   # Adam has no momentum
    (("workload.rule=ff", "learning.reg_lambda=0.1"), "learning.reg_lambda"),            # FF's loss has no lambda
    (("workload.rule=df-o", "mapping.feedback_storage=seeded"), "mapping.feedback_storage"),  # no B under DF-O
    (("training.gamma=0.2",), "training.gamma"),                                          # cosine, not multistep
    (("training.optimizer=sgd", "training.momentum=0", "precision.optimizer_bits=8"), "precision.optimizer_bits"),
    (("workload.rule=df", "learning.ff_theta=3"), "learning.ff_theta"),
    (("workload.rule=ff", "learning.symba_alpha=3"), "learning.symba_alpha"),
    (("workload.rule=symba", "learning.margin=2"), "learning.margin"),
    (("workload.rule=ff", "learning.negative_reduce=avg"), "learning.negative_reduce"),
    (("workload.rule=bp", "learning.negatives=1"), "learning.negatives"),
    (("workload.rule=bp", "mapping.negatives=sequential"), "mapping.negatives"),
    (("workload.rule=bp", "learning.span=3"), "learning.span"),
    (("workload.rule=df-r", "learning.temperature=0.5"), "learning.temperature"),
    (("workload.rule=df-r", "learning.augment=0"), "learning.augment"),
    (("workload.rule=df-r", "mapping.batch_loss=keep"), "mapping.batch_loss"),
    (("workload.rule=df-r", "learning.head_last_k=1"), "learning.head_last_k"),    # inference: goodness
    (("workload.rule=df-r", "learning.head_epochs=5"), "learning.head_epochs"),    # conv model: no probe
    (("workload.rule=cwc", "learning.label_encoding=onehot"), "learning.label_encoding"),
    (("workload.rule=bp", "learning.decode_last_k=2"), "learning.decode_last_k"),
    (("workload.rule=bp", "learning.inference=head"), "learning.inference"),
    (("learning.olu_schedule=every-step", "learning.grouping=chunked"), "learning.olu_schedule"),
    (("workload.download=true",), "workload.download"),                              # mnist5k: nothing to fetch
    (("workload.rule=cff", VIT, "learning.bn_backward=batch-stats"), "learning.bn_backward"),
    (("workload.rule=cff", VIT, "learning.inference=goodness"), "learning.inference"),
    (("workload.rule=bp", "learning.grouping=chunked"), "learning.grouping"),
    (("workload.rule=df-r", "learning.contrastive_margin=0.2"), "learning.contrastive_margin"),
    (("workload.rule=df-o", "learning.chunk_alternate=false"), "learning.chunk_alternate"),   # overlapping
    (("workload.data_root=/tmp/nowhere",), "workload.data_root"),
    (("workload.rule=bp", "precision.goodness_bits=16"), "precision.goodness_bits"),
    (("workload.rule=ff", VIT, "precision.goodness_bits=16"), "precision.goodness_bits"),
]

# the same keys where the settings read them: no note
USED_CASES = [
    ("training.optimizer=sgd", "training.momentum=0.5"),
    ("workload.rule=df", "learning.reg_lambda=0.1"),
    ("workload.rule=df-r", "mapping.feedback_storage=seeded"),
    ("training.schedule=multistep", "training.milestones=[1]", "training.gamma=0.2"),
    ("training.optimizer=sgd", "training.momentum=0.9", "precision.optimizer_bits=8"),
    ("workload.rule=ff", "learning.ff_theta=3"),
    ("workload.rule=cwc", "learning.decode_last_k=2"),
    ("workload.rule=df-r", "learning.inference=head", "learning.head_last_k=1"),
    ("workload.rule=cff", VIT, "learning.head_epochs=5", "learning.temperature=0.5", "mapping.batch_loss=keep"),
    ("workload.rule=ff", VIT, "learning.inference=head"),
    ("workload.rule=df-o", "learning.grouping=chunked", "learning.chunk_alternate=true"),
    ("workload.rule=cwc", "precision.goodness_bits=16"),
    ("workload.rule=bp", "learning.bn_backward=batch-stats", "training.update=immediate"),
]


@pytest.mark.parametrize("overrides,key", IGNORED_CASES, ids=[k for _, k in IGNORED_CASES])
def test_a_key_set_but_ignored_is_noted_once(plain, overrides, key):
    assert _noted(plain, *overrides) == [key]


@pytest.mark.parametrize("overrides", USED_CASES, ids=[o[-1].split("=")[0] for o in USED_CASES])
def test_a_key_the_settings_read_is_not_noted(plain, overrides):
    assert _noted(plain, *overrides) == []


def test_defaults_are_never_noted(plain):
    """Every key of the table has a default some options ignore; left unset, none is named."""
    for rule in ("bp", "ff", "symba", "df", "df-o", "df-r", "cwc"):
        assert _noted(plain, f"workload.rule={rule}") == [], rule
        assert load_config(str(plain), (f"workload.rule={rule}",)).hw.learning.reg_lambda == 0.01  # defaulted
    assert _noted(plain, "workload.rule=cff", VIT) == []
    assert _noted(plain, "workload.rule=ff", VIT) == []
    # the shipped preset sets goodness_bits, which bp and a vit model ignore: that note is true
    assert _noted(BASE, "workload.rule=bp") == ["precision.goodness_bits"]
    assert _noted(BASE, "workload.rule=cff", VIT) == ["precision.goodness_bits"]


def test_the_note_names_the_file_or_the_set_and_the_reason(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE.read_text().replace("../models/", str(REPO / "models") + "/")
                   .replace("  optimizer: adam", "  optimizer: adam\n  momentum: 0.8"))
    (line,) = load_config(str(cfg)).notes
    assert line == (f"note: {cfg}: training.momentum is set but ignored: only SGD has momentum; "
                    "training.optimizer is adam")
    (line,) = load_config(str(BASE), ("workload.rule=ff", "learning.reg_lambda=0.1")).notes
    assert line.startswith("note: --set learning.reg_lambda: learning.reg_lambda is set but ignored: ")
    assert "the loss is ff" in line


def test_commands_print_each_note_on_one_stderr_line(capsys):
    assert cli.main(["validate", str(BASE), "--set", "training.momentum=0.5"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("chipsim: note: --set training.momentum: training.momentum is set but ignored")
    assert err[1].startswith("ok: ")
    api.validate(BASE)
    assert capsys.readouterr().err == ""


def test_a_file_with_the_retired_noc_routing_still_loads_with_a_note(tmp_path):
    cfg = tmp_path / "old.yaml"
    cfg.write_text(BASE.read_text().replace("../models/", str(REPO / "models") + "/")
                   .replace("    energy_pj: {byte_hop: 0.4}", "    energy_pj: {byte_hop: 0.4}\n    routing: xy"))
    loaded = load_config(str(cfg))
    assert loaded.notes == (f"note: {cfg}: chip.noc.routing is " + RETIRED["chip.noc.routing"],)
    assert loaded.hw == load_config(str(BASE)).hw.__class__(**{
        f.name: getattr(loaded.hw, f.name) for f in dataclasses.fields(HwConfig)})
    assert "routing" not in loaded.to_dict()["chip"]["noc"]


def test_the_table_names_schema_keys_and_retired_keys_are_gone():
    keys = {row[0] for row in reference(HwConfig)}
    assert all(row.key in keys for row in IGNORED), [r.key for r in IGNORED if r.key not in keys]
    assert len({row.key for row in IGNORED}) == len(IGNORED)
    assert not set(RETIRED) & keys
    # every key of the table is exercised above, set and ignored
    assert {row.key for row in IGNORED} == {k for _, k in IGNORED_CASES}
