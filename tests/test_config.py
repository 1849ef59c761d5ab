"""Config validation through the real command line: `chipsim validate`.

The corpus below holds malformed hwconfigs, model files and `--set` overrides.
Each case runs `python -m chipsim.cli validate ...` in a subprocess and checks
the user-facing contract: exit code 2, exactly one line on stderr naming the
file (or the `--set` override), the key path and what is allowed, and never a
Python traceback. The positive tests cover presets, overrides, path resolution
and the `--reference` table.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import chipsim
from chipsim import api, cli
from chipsim.config import LoadedConfig

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "hwconfigs").glob("*.yaml"))
CNN_SMALL = REPO / "models" / "cnn_small.yaml"

# A small valid hwconfig; cases derive malformed variants by text replacement.
# MODEL is replaced by the model file's path.
BASE = """\
chip:
  name: tiny
  mesh: {rows: 4, cols: 11}
  cores: 44
  clock_mhz: 200
  core:
    sram_kib: 256
    macs_per_cycle: {4: 256, 8: 64, 16: 16, 32: 4}
    vector_ops_per_cycle: {8: 64, 16: 32, 32: 16}
    energy_pj:
      mac: {4: 0.03, 8: 0.1, 16: 0.4, 32: 2.3}
      vector_op: {8: 0.06, 16: 0.38, 32: 1.15}
      sram_read_byte: 0.6
      sram_write_byte: 0.8
  noc:
    link_bytes_per_cycle: 16
    hop_latency_cycles: 4
    energy_pj: {byte_hop: 0.4}
precision:
  weight_bits: 4
workload:
  model: MODEL
  rule: df-r
  dataset: mnist5k
training:
  batch_size: 64
  lr: 0.001
  momentum: 0.9
"""

GOOD_MODEL = """\
name: m
blocks:
  - {type: conv, channels: 8, pool: 2}
  - {type: dense, units: 16}
"""


@dataclass
class Case:
    id: str
    expect: tuple                     # fragments stderr must contain (key path, what is allowed ...)
    replace: tuple = ()               # (old, new) text replacements applied to BASE
    text: str | bytes | None = None   # whole hwconfig text instead of BASE
    model: str | bytes | None = None  # model file text (written next to the hwconfig as model.yaml)
    args: tuple = ()                  # extra CLI arguments (--set ...)
    target: str = "config"            # config | model | set | missing | dir: which name stderr must show


def R(old, new):
    return ((old, new),)


CASES = [
    # ---- the file itself
    Case("missing-file", ("file not found",), target="missing"),
    Case("directory", ("is a directory", "expected a YAML file"), target="dir"),
    Case("empty-file", ("file is empty", "expected a mapping with keys chip, workload"), text=""),
    Case("comments-only", ("file is empty",), text="# nothing here\n"),
    Case("yaml-syntax-flow", ("YAML syntax error", "line 3,", "expected ',' or ']'"),
         text="chip:\n  name: [x\n  mesh: 3\n"),
    Case("yaml-syntax-tab", ("YAML syntax error", "line 2,", "cannot start any token"),
         text="chip:\n\tname: x\n"),
    Case("yaml-syntax-mapping", ("YAML syntax error", "line 1,", "mapping values are not allowed"),
         text="chip: name: x\n"),
    Case("not-utf8", ("cannot read",), text=b"chip:\n  name: \xff\xfe\n"),
    Case("top-level-list", ("expected a mapping at the top level", "got list"), text="- chip\n- workload\n"),
    Case("top-level-scalar", ("expected a mapping at the top level", "got str"), text="hello\n"),
    # ---- unknown keys, at several depths, with did-you-mean
    Case("unknown-key-top", ("trainig", "unknown key", "did you mean 'training'", "allowed here: chip, workload"),
         replace=R("training:", "trainig:")),
    Case("unknown-key-depth2", ("chip.meshh", "did you mean 'mesh'", "allowed here: name, mesh"),
         replace=R("mesh: {", "meshh: {")),
    Case("unknown-key-depth3", ("chip.mesh.rowz", "did you mean 'rows'", "allowed here: rows, cols"),
         replace=R("rows: 4", "rowz: 4")),
    Case("unknown-key-depth4", ("chip.core.energy_pj.sram_red_byte", "did you mean 'sram_read_byte'",
                                "allowed here: mac, vector_op, sram_read_byte, sram_write_byte"),
         replace=R("sram_read_byte", "sram_red_byte")),
    Case("unknown-key-no-hint", ("precision.zzz", "unknown key", "allowed here: weight_bits"),
         replace=R("  weight_bits: 4\n", "  weight_bits: 4\n  zzz: 1\n")),
    # ---- wrong types
    Case("string-for-int", ("chip.mesh.rows", "expected integer", "'four'"), replace=R("rows: 4", "rows: four")),
    Case("bool-for-int", ("training.batch_size", "expected integer", "True"),
         replace=R("batch_size: 64", "batch_size: true")),
    Case("fraction-for-int", ("chip.mesh.cols", "expected integer", "11.5"), replace=R("cols: 11", "cols: 11.5")),
    Case("string-for-number", ("training.lr", "expected number", "'fast'"), replace=R("lr: 0.001", "lr: fast")),
    Case("list-for-mapping", ("chip.mesh", "expected a mapping with keys rows, cols"),
         replace=R("mesh: {rows: 4, cols: 11}", "mesh: [4, 11]")),
    Case("scalar-for-mapping", ("chip.noc.energy_pj", "expected a mapping with keys byte_hop"),
         replace=R("energy_pj: {byte_hop: 0.4}", "energy_pj: 0.4")),
    Case("null-for-required", ("chip.core.sram_kib", "expected number, got null"),
         replace=R("sram_kib: 256", "sram_kib:")),
    Case("missing-required", ("chip.clock_mhz", "missing required key", "expected number"),
         replace=R("  clock_mhz: 200\n", "")),
    Case("missing-section", ("workload", "missing required key", "expected mapping"),
         replace=R("workload:\n  model: MODEL\n  rule: df-r\n  dataset: mnist5k\n", "")),
    Case("string-key-for-bits", ("chip.core.macs_per_cycle.4", "expected integer", "'4'"),
         replace=R("macs_per_cycle: {4: 256", "macs_per_cycle: {'4': 256")),
    Case("bool-for-bool-field", ("workload.download", "expected true/false", "'yes please'"),
         replace=R("  rule: df-r\n", "  rule: df-r\n  download: yes please\n")),
    # ---- out of range / not allowed
    Case("bits-not-allowed", ("precision.weight_bits", "12 is not allowed", "allowed: 2, 3, 4, 5, 6, 7, 8, 16, 32"),
         replace=R("weight_bits: 4", "weight_bits: 12")),
    Case("bits-key-not-allowed", ("chip.core.macs_per_cycle.9", "allowed: 2, 3, 4"),
         replace=R("macs_per_cycle: {4: 256", "macs_per_cycle: {9: 1, 4: 256")),
    Case("sram-zero", ("chip.core.sram_kib", "out of range", "must be > 0"), replace=R("sram_kib: 256", "sram_kib: 0")),
    Case("sram-negative", ("chip.core.sram_kib", "out of range", "must be > 0"),
         replace=R("sram_kib: 256", "sram_kib: -1")),
    Case("macs-zero", ("chip.core.macs_per_cycle.8", "must be > 0"), replace=R("8: 64", "8: 0")),
    Case("lr-negative", ("training.lr", "-0.1 is out of range", "must be > 0"), replace=R("lr: 0.001", "lr: -0.1")),
    Case("batch-zero", ("training.batch_size", "0 is out of range", "must be >= 1"),
         replace=R("batch_size: 64", "batch_size: 0")),
    Case("momentum-too-big", ("training.momentum", "must be <= 1"), replace=R("momentum: 0.9", "momentum: 1.5")),
    Case("mesh-cores-mismatch", ("chip.cores", "40 cores but mesh is 4 x 11 = 44", "make them agree"),
         replace=R("cores: 44", "cores: 40")),
    Case("macs-missing-bits", ("chip.core.macs_per_cycle", "no entry for 32 bits or wider", "precision.weight_bits",
                               "add `32: <MACs per cycle>`"),
         replace=(("weight_bits: 4", "weight_bits: 32"), ("16: 16, 32: 4}", "16: 16}"))),
    Case("energy-missing-bits", ("chip.core.energy_pj.mac", "no entry for 32 bits or wider", "add `32: <pJ per MAC>`"),
         replace=(("weight_bits: 4", "weight_bits: 32"), ("16: 0.4, 32: 2.3}", "16: 0.4}"))),
    Case("unknown-rule", ("workload.rule", "'dfr' is not allowed", "allowed: bp, ff, symba, df, df-o, df-r",
                          "did you mean 'df-r'"), replace=R("rule: df-r", "rule: dfr")),
    Case("unknown-dataset", ("workload.dataset", "allowed: mnist5k", "did you mean 'mnist'"),
         replace=R("dataset: mnist5k", "dataset: mnsit")),
    # ---- the model file
    Case("model-missing-abs", ("workload.model", "model file /nonexistent/model.yaml not found"),
         replace=R("MODEL", "/nonexistent/model.yaml")),
    Case("model-missing-rel", ("workload.model", "nothere.yaml not found"), replace=R("MODEL", "nothere.yaml")),
    Case("model-is-directory", ("workload.model", "is a directory", "expected a YAML file"), replace=R("MODEL", ".")),
    Case("model-conv-no-channels", ("blocks[0].channels", "a conv block needs `channels`"),
         model="name: m\nblocks:\n  - {type: conv, pool: 2}\n  - {type: dense, units: 10}\n", target="model"),
    Case("model-dense-with-channels", ("blocks[1].channels", "a dense block takes `units`, not `channels`"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8}\n  - {type: dense, units: 10, channels: 3}\n",
         target="model"),
    Case("model-unknown-block-type", ("blocks[0].type", "'Conv' is not allowed", "allowed: conv, dense",
                                      "did you mean 'conv'"),
         model="name: m\nblocks:\n  - {type: Conv, channels: 8}\n", target="model"),
    Case("model-empty-blocks", ("blocks", "needs at least one block"), model="name: m\nblocks: []\n", target="model"),
    Case("model-conv-after-dense", ("blocks[1].type", "conv after dense is not supported",
                                    "put all conv blocks first"),
         model="name: m\nblocks:\n  - {type: dense, units: 10}\n  - {type: conv, channels: 8}\n", target="model"),
    Case("model-pool-1", ("blocks[0].pool", "1 is a no-op", "use 0 (no pool) or >= 2"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8, pool: 1}\n", target="model"),
    Case("model-unknown-block-key", ("blocks[0].chanels", "did you mean 'channels'", "allowed here: type, channels"),
         model="name: m\nblocks:\n  - {type: conv, chanels: 8}\n", target="model"),
    Case("model-blocks-not-list", ("blocks", "expected list of mapping"),
         model="name: m\nblocks: {type: conv, channels: 8}\n", target="model"),
    Case("model-empty-file", ("expected a mapping with keys name, blocks",), model="", target="model"),
    Case("model-yaml-syntax", ("YAML syntax error", "line 3, column 15", "mapping values are not allowed"),
         model="name: m\nblocks:\n  - type: conv: 8\n", target="model"),
    # ---- --set overrides
    Case("set-no-equals", ("--set precision.weight_bits", "expected key.path=value"),
         args=("--set", "precision.weight_bits"), target="set"),
    Case("set-empty-key", ("--set =3", "expected key.path=value"), args=("--set", "=3"), target="set"),
    Case("set-unknown-key", ("--set chip.mesh.rowz=3", "chip.mesh.rowz", "did you mean 'rows'", "allowed here: rows, cols"),
         args=("--set", "chip.mesh.rowz=3"), target="set"),
    Case("set-unknown-section", ("--set trainig.lr=0.1", "trainig", "did you mean 'training'"),
         args=("--set", "trainig.lr=0.1"), target="set"),
    Case("set-wrong-type", ("--set training.epochs=many", "training.epochs", "expected integer", "'many'"),
         args=("--set", "training.epochs=many")),
    Case("set-not-allowed", ("--set precision.weight_bits=12", "precision.weight_bits", "allowed: 2, 3, 4"),
         args=("--set", "precision.weight_bits=12")),
    Case("set-below-range", ("--set training.lr=0", "training.lr", "must be > 0"), args=("--set", "training.lr=0")),
    Case("set-into-scalar", ("--set training.lr.x=1", "training.lr", "expected number"),
         args=("--set", "training.lr.x=1")),
]


def _write_case(case: Case, tmp_path: Path) -> tuple[Path, str]:
    """Write the case's files; return (hwconfig path, the file name stderr must show)."""
    cfg = tmp_path / f"{case.id}.yaml"
    if case.target == "missing":
        return cfg, cfg.name
    if case.target == "dir":
        cfg.mkdir()
        return cfg, cfg.name
    model_path = CNN_SMALL
    if case.model is not None:
        model_path = tmp_path / "model.yaml"
        (model_path.write_bytes if isinstance(case.model, bytes) else model_path.write_text)(case.model)
    text = BASE if case.text is None else case.text
    if isinstance(text, str):
        for old, new in case.replace:
            assert old in text, f"case {case.id}: {old!r} not in the base config"
            text = text.replace(old, new)
        cfg.write_text(text.replace("MODEL", str(model_path)))
    else:
        cfg.write_bytes(text)
    if case.target == "set":
        return cfg, "--set " + case.args[-1]
    return cfg, (model_path.name if case.target == "model" else cfg.name)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "chipsim.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_corpus_is_large_and_ids_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_config_is_one_clear_line(case: Case, tmp_path: Path):
    cfg, shown = _write_case(case, tmp_path)
    proc = _run_cli("validate", str(cfg), *case.args, cwd=tmp_path)
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chipsim: error: ")
    assert shown in err
    if case.args:  # an override error names the override
        assert "--set" in err
    for fragment in case.expect:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert proc.stdout == ""


# ------------------------------------------------------------------ valid configs


def _resolved(stdout: str, stderr: str) -> tuple[dict, str]:
    """`validate` prints the resolved YAML on stdout (parseable as it is) and its summary on stderr."""
    return yaml.safe_load(stdout), stderr.strip()


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_validates(preset: Path, capsys):
    assert cli.main(["validate", str(preset)]) == 0
    out, err = capsys.readouterr()
    data, summary = _resolved(out, err)
    loaded = chipsim.validate(preset)
    assert data == yaml.safe_load(yaml.safe_dump(loaded.to_dict()))
    hw = loaded.hw
    assert summary == (f"ok: {preset.stem}: {hw.chip.mesh.rows}x{hw.chip.mesh.cols} mesh, "
                       f"{loaded.model.depth} blocks, rule {hw.workload.rule}")
    # defaults are filled in and the model path is resolved to an absolute path
    assert data["config_file"] == str(preset)
    assert data["learning"]["loss"] == "auto" and "feedback_storage" in data["mapping"]
    assert os.path.isabs(data["workload"]["model"]) and os.path.isfile(data["workload"]["model"])
    assert data["model_spec"]["blocks"]


def test_preset_validates_in_subprocess():
    proc = _run_cli("validate", "hwconfigs/44core_4bit.yaml", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "ok: 44core_4bit: 4x11 mesh, 4 blocks, rule df-r"
    assert yaml.safe_load(proc.stdout)["chip"]["name"] == "44core_4bit"


def test_set_overrides_change_resolved_values(capsys):
    preset = str(REPO / "hwconfigs" / "44core_4bit.yaml")
    rc = cli.main(["validate", preset, "--set", "precision.weight_bits=8", "--set", "training.lr=0.01",
                   "--set", "workload.rule=bp", "--set", "chip.core.macs_per_cycle.8=128",
                   "--set", "workload.train_limit=500"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data, summary = _resolved(out, err)
    assert data["precision"]["weight_bits"] == 8
    assert data["training"]["lr"] == 0.01
    assert data["chip"]["core"]["macs_per_cycle"] == {4: 256, 8: 128, 16: 16, 32: 4}
    assert data["workload"]["train_limit"] == 500
    assert data["overrides"] == ["precision.weight_bits=8", "training.lr=0.01", "workload.rule=bp",
                                 "chip.core.macs_per_cycle.8=128", "workload.train_limit=500"]
    assert summary.endswith("rule bp")


def test_set_overrides_are_type_checked():
    preset = REPO / "hwconfigs" / "44core_4bit.yaml"
    loaded = api.validate(preset, ["training.epochs=2.0", "training.lr=1", "workload.test_limit=null",
                                   "workload.download=true"])
    assert isinstance(loaded, LoadedConfig)
    assert loaded.hw.training.epochs == 2 and type(loaded.hw.training.epochs) is int
    assert loaded.hw.training.lr == 1.0 and type(loaded.hw.training.lr) is float
    assert loaded.hw.workload.test_limit is None and loaded.hw.workload.download is True
    for bad in ("training.epochs=2.5", "workload.download=maybe", "training.seed=-1", "chip.name=[1, 2]"):
        with pytest.raises(chipsim.errors.ConfigError, match=r"--set"):
            api.validate(preset, [bad])


def test_relative_model_path_resolves_against_config_dir(tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.yaml").write_text(GOOD_MODEL)
    (tmp_path / "cfgs").mkdir()
    cfg = tmp_path / "cfgs" / "hw.yaml"
    cfg.write_text(BASE.replace("MODEL", "../models/m.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["validate", os.path.relpath(cfg)]) == 0
    data, summary = _resolved(*capsys.readouterr())
    assert data["workload"]["model"] == str(tmp_path / "models" / "m.yaml")
    assert data["config_file"] == str(cfg)
    assert data["model_spec"]["name"] == "m"
    assert summary == "ok: hw: 4x11 mesh, 2 blocks, rule df-r"


# ------------------------------------------------------------------ reference, help, exit codes


def test_reference_table_lists_every_key(capsys):
    assert cli.main(["validate", "--reference"]) == 0
    out = capsys.readouterr().out
    assert out == api.config_reference()
    for key in ("chip.mesh.rows", "chip.core.sram_kib", "precision.weight_bits", "workload.rule",
                "workload.model", "workload.dataset", "blocks[].type", "blocks[].channels"):
        assert f"| `{key}` |" in out, key
    row = next(line for line in out.splitlines() if line.startswith("| `precision.weight_bits` |"))
    assert "`4`" in row and "bits" in row and "16 \\| 32" in row  # default, unit, allowed (escaped pipes)
    # every table row has the same number of cells as the header
    for line in out.splitlines():
        if line.startswith("|"):
            assert line.replace("\\|", "").count("|") == 6, line


def test_help_lists_every_command_with_example(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in cli.COMMANDS:
        assert cmd.name in out and cmd.summary.split()[0] in out
    assert "examples:" in out and "chipsim run hwconfigs/44core_4bit.yaml" in out


@pytest.mark.parametrize("argv", [[], ["nosuchcommand"], ["validate"], ["validate", "--bogus", "x.yaml"],
                                  ["validate", "--reference", "x.yaml"]])
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "validate", interrupted)
    assert cli.main(["validate", "whatever.yaml"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_validate_is_public_api():
    assert chipsim.validate is api.validate
    loaded = chipsim.validate(str(REPO / "hwconfigs" / "44core_8bit.yaml"), overrides=("training.epochs=1",))
    assert loaded.hw.precision.weight_bits == 8 and loaded.hw.training.epochs == 1
    assert loaded.overrides == ("training.epochs=1",)


def test_readme_config_reference_is_current():
    """The README's reference section is the output of `chipsim validate --reference`, verbatim."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN CONFIG REFERENCE -->\n", "<!-- END CONFIG REFERENCE -->"
    section = text[text.index(begin) + len(begin):text.index(end)]
    assert section == api.config_reference(), "regenerate it: see the README's Configuration reference"


def test_readme_and_ci_run_the_same_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    line = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && pytest -q'
    assert line in readme and line in ci
    assert "chipsim run hwconfigs/44core_4bit.yaml" in readme.split("\n## ")[0]


def test_set_path_values_resolve_against_the_working_directory(tmp_path, monkeypatch):
    model = tmp_path / "m.yaml"
    model.write_text(GOOD_MODEL)
    monkeypatch.chdir(tmp_path)
    loaded = api.validate(REPO / "hwconfigs" / "44core_4bit.yaml", ["workload.model=m.yaml"])
    assert loaded.hw.workload.model == str(model)
