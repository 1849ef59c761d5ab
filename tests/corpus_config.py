"""The config part of the bad-input corpus: malformed hwconfigs, model files and ``--set`` values.

Data, not tests: ``tests/test_bad_inputs.py`` runs every case through the real
command line (``chipsim validate ...`` in a subprocess) and checks the
user-facing contract. Each case is a valid config (``BASE``) with one thing
broken, or a whole file, plus what stderr must say. Besides typos and types,
the hostile inputs a config loader must survive: duplicate keys, alias bombs,
huge values, non-finite numbers, model shapes that cannot run or could not
fit in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class Prepared:
    """A case made ready to run: the command line and what its stderr must show."""
    argv: tuple                       # arguments after `chipsim`
    shown: str                        # the file or argument the message must name
    expect: tuple                     # fragments stderr must contain (key path, what is allowed ...)
    one_line: bool = True             # stderr is exactly the one error line (else: at most 3 lines)
    stdout_empty: bool = True         # nothing on stdout (validate prints only when it succeeds)
    fsize: int | None = None          # RLIMIT_FSIZE in bytes: writes beyond it fail (a full disk)


@dataclass
class Case:
    id: str
    expect: tuple                     # fragments stderr must contain (key path, what is allowed ...)
    replace: tuple = ()               # (old, new) text replacements applied to BASE
    text: str | bytes | None = None   # whole hwconfig text instead of BASE
    model: str | bytes | None = None  # model file text (written next to the hwconfig as model.yaml)
    args: tuple = ()                  # extra CLI arguments (--set ...)
    target: str = "config"            # config | model | set | missing | dir: which name stderr must show

    def prepare(self, tmp: Path) -> Prepared:
        """Write the case's files under ``tmp``: `chipsim validate FILE [--set ...]`."""
        cfg, shown = _write_case(self, tmp)
        return Prepared(("validate", str(cfg), *self.args), shown,
                        self.expect + (("--set",) if self.args else ()))


def R(old, new):
    return ((old, new),)


CASES = [
    # ---- the file itself
    Case("missing-file", ("file not found", "presets:", "44core_4bit.yaml", "176core_512k.yaml"),
         target="missing"),
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
    # ---- hostile YAML: duplicates, alias bombs, huge values (one bounded loader, chipsim/safe_yaml.py)
    Case("dup-key", ("'weight_bits' is given twice", "lines 20 and 21", "keep one"),
         replace=R("  weight_bits: 4\n", "  weight_bits: 4\n  weight_bits: 8\n")),
    Case("dup-section", ("'training' is given twice", "lines 25 and 29"), text=BASE + "training:\n  epochs: 2\n"),
    Case("dup-key-flow", ("'rows' is given twice", "line"),
         replace=R("mesh: {rows: 4, cols: 11}", "mesh: {rows: 4, cols: 11, rows: 5}")),
    Case("dup-key-model", ("'name' is given twice", "lines 1 and 2"),
         model="name: m\nname: n\nblocks:\n  - {type: dense, units: 10}\n", target="model"),
    Case("alias-bomb", ("refused", "aliases expand to more than 100,000 values"),
         text="".join(f"{a}: &{a} [" + ", ".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]\n"
                      for p, a in zip([None] + list("abcdefgh"), "abcdefghi")) + BASE),
    Case("alias-bomb-model", ("refused", "alias bomb"), target="model",
         model="".join(f"{a}: &{a} [" + ", ".join([f"*{p}"] * 9 if p else ["1"] * 9) + "]\n"
                       for p, a in zip([None] + list("abcdefgh"), "abcdefghi")) + "name: m\nblocks: *i\n"),
    Case("recursive-alias", ("refused", "refers to the value that contains it"), text="chip: &c [*c]\n"),
    Case("huge-string-in-int", ("chip.mesh.rows", "expected integer", "(500,002 characters)"),
         replace=R("rows: 4", "rows: '" + "x" * 500_000 + "'")),
    Case("file-too-large", ("refused", "larger than 1024 KiB"), text=BASE + "# " + "x" * (1 << 20) + "\n"),
    Case("int-5000-digits", ("refused", "is too large"), replace=R("rows: 4", "rows: " + "9" * 5000)),
    Case("int-beyond-64-bit", ("refused", "does not fit in 64 bits"), replace=R("rows: 4", "rows: 99999999999999999999")),
    Case("nested-too-deep", ("refused", "nested too deeply"), text="chip: " + "[" * 50_000 + "]" * 50_000 + "\n"),
    Case("date-out-of-range", ("refused", "month must be in 1..12"), replace=R("rows: 4", "rows: 2024-13-45")),
    # ---- every number must be finite (one check in the schema converter)
    Case("nan-lr", ("training.lr", "nan is not allowed", "must be finite"), replace=R("lr: 0.001", "lr: .nan")),
    Case("inf-clock", ("chip.clock_mhz", "inf is not allowed", "finite"), replace=R("clock_mhz: 200", "clock_mhz: .inf")),
    Case("minus-inf-energy", ("chip.core.energy_pj.sram_read_byte", "-inf is not allowed"),
         replace=R("sram_read_byte: 0.6", "sram_read_byte: -.inf")),
    Case("nan-in-energy-table", ("chip.core.energy_pj.mac.4", "nan is not allowed"),
         replace=R("mac: {4: 0.03", "mac: {4: .nan")),
    Case("nan-in-macs-table", ("chip.core.macs_per_cycle.4", "nan is not allowed"),
         replace=R("macs_per_cycle: {4: 256", "macs_per_cycle: {4: .nan")),
    Case("overflow-to-inf", ("chip.noc.hop_latency_cycles", "inf is not allowed"),
         replace=R("hop_latency_cycles: 4", "hop_latency_cycles: 1e400")),
    Case("set-nan-lr", ("training.lr", "nan is not allowed"), args=("--set", "training.lr=.nan")),
    Case("set-inf-clock", ("chip.clock_mhz", "inf is not allowed"), args=("--set", "chip.clock_mhz=.inf")),
    Case("set-nan-sram", ("chip.core.sram_kib", "nan is not allowed"), args=("--set", "chip.core.sram_kib=.NaN")),
    Case("set-nan-hop", ("chip.noc.hop_latency_cycles", "nan is not allowed"),
         args=("--set", "chip.noc.hop_latency_cycles=.nan")),
    Case("set-inf-epochs", ("training.epochs", "inf is not allowed"), args=("--set", "training.epochs=.inf")),
    Case("set-nan-energy-entry", ("chip.core.energy_pj.mac.8", "nan is not allowed"),
         args=("--set", "chip.core.energy_pj.mac.8=.nan")),
    # ---- sizes beyond what anything could run
    Case("mesh-too-large", ("chip.mesh.rows", "100000 is out of range", "must be <= 1024"),
         replace=R("rows: 4", "rows: 100000")),
    Case("energy-too-large", ("chip.noc.energy_pj.byte_hop", "must be <= 1000000"),
         replace=R("byte_hop: 0.4", "byte_hop: 1e300")),
    Case("set-dup-key", ("'rows' is given twice", "keep one"), args=("--set", "chip.mesh={rows: 4, rows: 5}"),
         target="set"),
    Case("rule-wrong-case", ("workload.rule", "'DF-R' is not allowed", "did you mean 'df-r'"),
         replace=R("rule: df-r", "rule: DF-R")),
    Case("negatives-beyond-classes", ("learning.negatives", "12 is out of range for mnist5k", "allowed: 1..9"),
         args=("--set", "learning.negatives=12")),
    # ---- model shapes that cannot run, or could not fit in memory: refused before any array exists
    Case("model-kernel-too-large", ("blocks[0].kernel", "40 does not fit block 0's 28x28 input",
                                    "allowed: kernel <= 28"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8, kernel: 40, padding: 0}\n  - {type: dense, units: 10}\n",
         target="model"),
    Case("model-kernel-too-large-later", ("blocks[1].kernel", "9 does not fit block 1's 7x7 input"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8, pool: 4}\n  - {type: conv, channels: 8, kernel: 9, padding: 0}\n",
         target="model"),
    Case("model-pool-too-large", ("blocks[0].pool", "30 does not fit block 0's 28x28 output", "allowed: 0 or 2..28"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8, pool: 30}\n", target="model"),
    Case("model-pools-shrink-to-nothing", ("blocks[2].pool", "1x1 output", "shrink the map to nothing",
                                           "allowed: 0 (no pool)"),
         model="name: m\nblocks:\n" + "  - {type: conv, channels: 8, pool: 4}\n" * 3, target="model"),
    Case("model-padding-100000", ("would need at least", "GiB of host memory", "8x200026x200026", "this machine has"),
         model="name: m\nblocks:\n  - {type: conv, channels: 8, padding: 100000}\n", target="model"),
    Case("model-100000-channels", ("GiB of host memory", "100000x28x28"),
         model="name: m\nblocks:\n  - {type: conv, channels: 100000}\n  - {type: dense, units: 10}\n",
         target="model"),
    Case("model-huge-dense", ("GiB of host memory", "make the model smaller"),
         model="name: m\nblocks:\n  - {type: dense, units: 100000000}\n", target="model"),
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


