"""Config keys of the FF family (spans, grouping, inference, label encodings, multistep, cwc):
each bad value is one line naming the file or override, the key and what is allowed; exit code 2."""
from pathlib import Path

import pytest

from chipsim import cli
from chipsim.config import load_config

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "hwconfigs" / "44core_4bit.yaml")


def fails(capsys, *sets):
    argv = ["validate", CFG]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "44core_4bit.yaml" in lines[0] and "--set" in lines[0]
    return lines[0]


@pytest.mark.parametrize("sets, fragments", [
    (["training.schedule=multistep"], ["training.milestones", "needs at least one milestone"]),
    (["training.milestones=[1, 2]"], ["training.milestones", "schedule: multistep only", "cosine"]),
    (["training.schedule=multistep", "training.milestones=[2, 1]"], ["[2, 1] must increase strictly"]),
    (["training.schedule=multistep", "training.milestones=[1, 1]"], ["must increase strictly"]),
    (["training.schedule=multistep", "training.milestones=[1, 3]"],
     ["milestone 3 is outside the 3 epochs", "0 < milestone < 3"]),
    (["training.schedule=multistep", "training.milestones=[0, 1]"], ["milestone 0 is outside"]),
    (["training.schedule=multistep", "training.milestones=1"], ["training.milestones", "expected list of number"]),
    (["training.gamma=0"], ["training.gamma", "must be > 0"]),
    (["training.gamma=2"], ["training.gamma", "must be <= 1"]),
    (["training.schedule=step"], ["training.schedule", "allowed: cosine, constant, multistep"]),
    (["learning.span=0"], ["learning.span", ">= 1"]),
    (["workload.rule=df", "learning.span=3"], ["learning.span", "greedy", "df-o", "df-r"]),
    (["workload.rule=cwc", "learning.span=2"], ["learning.span", "greedy"]),
    (["learning.grouping=sliding"], ["learning.grouping", "allowed: overlapping, chunked"]),
    (["learning.chunk_alternate=true"], ["learning.chunk_alternate", "grouping: chunked only"]),
    (["learning.grouping=chunked", "learning.olu_schedule=alternate"],
     ["learning.olu_schedule", "grouping: overlapping only", "chunk_alternate"]),
    (["learning.inference=onepass"], ["learning.inference", "allowed: goodness, head"]),
    (["learning.head_last_k=0"], ["learning.head_last_k", ">= 1"]),
    (["learning.label_encoding=hot"], ["learning.label_encoding", "allowed: learned, random, onehot",
                                       "did you mean 'onehot'"]),
    (["workload.rule=cw"], ["workload.rule", "cwc"]),
    (["learning.loss=cwcc"], ["learning.loss", "cwc"]),
])
def test_bad_family_keys_are_one_line(capsys, sets, fragments):
    line = fails(capsys, *sets)
    for f in fragments:
        assert f in line, (f, line)


def test_good_family_settings_resolve():
    hw = load_config(CFG, ["workload.rule=cwc"]).hw
    assert (hw.loss, hw.strategy, hw.span, hw.uses_label) == ("cwc", "greedy", 1, False)
    hw = load_config(CFG, ["workload.rule=df-r", "learning.span=3", "learning.grouping=chunked",
                           "learning.chunk_alternate=true", "learning.inference=head",
                           "learning.label_encoding=random", "training.schedule=multistep",
                           "training.milestones=[0.5, 2]", "training.gamma=0.2"]).hw
    assert (hw.strategy, hw.span, hw.learning.grouping, hw.learning.chunk_alternate) == ("df-r", 3, "chunked", True)
    assert (hw.learning.inference, hw.learning.head_last_k, hw.learning.label_encoding) == ("head", 2, "random")
    assert hw.training.milestones == (0.5, 2.0) and hw.training.gamma == 0.2 and hw.uses_label
    assert load_config(CFG, ["workload.rule=df-o"]).hw.span == 2
    assert load_config(CFG, ["workload.rule=bp", "learning.span=4"]).hw.span is None     # ignored by BP
    assert not load_config(CFG, ["workload.rule=bp"]).hw.uses_label


@pytest.mark.parametrize("plain, sets", [
    (["workload.rule=df"], ["workload.rule=cwc"]),
    (["workload.rule=df-r"], ["workload.rule=df-r", "learning.span=3"]),
    (["workload.rule=df-o"], ["workload.rule=df-o", "learning.grouping=chunked"]),
    (["workload.rule=df-r"], ["workload.rule=df-r", "learning.inference=head"]),
    (["workload.rule=df"], ["workload.rule=df", "learning.label_encoding=random"]),
])
def test_family_settings_change_the_executed_step(plain, sets):
    """Each setting is run by the training step: its trace differs from the plain rule's."""
    from chipsim.runner import trace_one_step
    base = ["training.batch_size=4", "workload.model=models/cwc_mnist.yaml"]
    a = trace_one_step(load_config(CFG, base + plain))
    b = trace_one_step(load_config(CFG, base + sets))
    assert a.to_dict() != b.to_dict()
