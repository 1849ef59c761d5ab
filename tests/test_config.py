"""Config validation: presets, overrides, path resolution, the `--reference` table, the API.

The malformed configs, model files and `--set` overrides are in the bad-input
corpus (`tests/corpus_config.py`, run by `tests/test_bad_inputs.py`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import chipsim
from chipsim import api, cli
from chipsim.config import LoadedConfig
from corpus_config import BASE, GOOD_MODEL

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "hwconfigs").glob("*.yaml"))

def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "chipsim.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------ valid configs


def _resolved(stdout: str, stderr: str) -> tuple[dict, str]:
    """`validate` prints the resolved YAML on stdout (parseable as it is) and its summary on stderr, after
    the notes on keys set but ignored (tests/test_config_notes.py)."""
    lines = stderr.strip().splitlines()
    assert all(line.startswith("chipsim: note: ") for line in lines[:-1]), lines
    return yaml.safe_load(stdout), lines[-1]


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


def test_docs_config_reference_is_current():
    """docs/config.md is the output of `chipsim validate --reference`, verbatim (regenerate it with
    `chipsim validate --reference > docs/config.md`)."""
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert text == api.config_reference(), "regenerate it: chipsim validate --reference > docs/config.md"


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


# ------------------------------------------------------------------ the bounded YAML loader


def test_yaml_loader_refuses_ambiguity_and_bombs_but_reads_what_people_write():
    from chipsim.errors import ConfigError
    from chipsim.safe_yaml import MAX_NODES, parse, shorten
    # merge keys may override (that is what they are for); a literal key given twice may not
    assert parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "f") == {"base": {"x": 1, "y": 2},
                                                                          "use": {"x": 1, "y": 3}}
    with pytest.raises(ConfigError, match=r"f: key 'y' is given twice \(lines 2 and 3\)"):
        parse("x: 1\ny: 2\ny: 3\n", "f")
    # numbers as YAML 1.2 and every user read them
    assert parse("1e-5", "f") == 1e-5 and parse("-2E3", "f") == -2000.0 and parse("1_000", "f") == 1000
    assert parse(".nan", "f") != parse(".nan", "f") and parse("3e", "f") == "3e"
    # aliases are fine until they expand past the bound
    ok = "a: &a [1, 2]\nb: [*a, *a]\n"
    assert parse(ok, "f") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    depth = 1
    while 10 ** depth < MAX_NODES:
        depth += 1
    bomb = "l0: &l0 [" + ", ".join(["1"] * 10) + "]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, depth + 1))
    with pytest.raises(ConfigError, match="alias bomb"):
        parse(bomb, "f")
    assert len(shorten("x" * 10_000)) < 100 and shorten(list(range(10 ** 6))) == "<list of 1000000 items>"


def test_did_you_mean_ignores_case():
    from chipsim.errors import ConfigError
    with pytest.raises(ConfigError, match="did you mean 'df-r'"):
        api.validate(REPO / "hwconfigs" / "44core_4bit.yaml", ["workload.rule=DF-R"])
    assert api.validate(REPO / "hwconfigs" / "44core_4bit.yaml", rule="DF-R").hw.workload.rule == "df-r"
