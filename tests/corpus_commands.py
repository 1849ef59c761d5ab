"""The command part of the bad-input corpus: arguments, output paths, damaged checkpoints and data files.

Data, not tests: ``tests/test_bad_inputs.py`` runs every case through the real
command line in a subprocess. A case is a command line with placeholders,
optional files to lay out first, and what stderr must say:

* ``{tmp}``: the case's own empty directory (the subprocess's working directory);
* ``{preset}``: ``hwconfigs/44core_4bit.yaml``; ``{tiny}``: a 3-block model
  small enough to train in a second; ``{ckpt}``: a checkpoint of that model
  after two epochs at the ``TINY`` settings (made once per session);
* ``{ro}``: a directory this process cannot write into (a read-only
  directory, or a path under ``/sys`` when the tests run as root, whom
  permission bits do not stop).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from corpus_config import Prepared

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "name: tiny\nblocks:\n  - {type: conv, channels: 8, pool: 2}\n  - {type: conv, channels: 8, pool: 2}\n" \
             "  - {type: dense, units: 16}\n"
#: the settings of the session checkpoint; a resume case adds what it changes
TINY = ("workload.train_limit=64", "workload.test_limit=32", "training.batch_size=16", "training.epochs=2")


def tiny_args(*extra: str) -> tuple:
    """``--set`` arguments for the tiny model at the TINY settings (plus ``extra`` overrides)."""
    out = ("--set", "workload.model={tiny}")
    for o in TINY + extra:
        out += ("--set", o)
    return out


@dataclass(frozen=True)
class CommandCase:
    id: str
    argv: tuple                         # arguments after `chipsim`, with placeholders
    expect: tuple                       # fragments stderr must contain
    shown: str                          # the file or argument stderr must name (placeholders allowed)
    setup: Callable | None = None       # setup(tmp, env) lays out files first
    fsize: int | None = None            # RLIMIT_FSIZE: a disk that fills up after this many bytes per file

    def prepare(self, tmp: Path, env: dict) -> Prepared:
        names = dict(env, tmp=str(tmp))
        if self.setup is not None:
            self.setup(tmp, names)
        argv = tuple(a.format(**names) for a in self.argv)
        return Prepared(argv, self.shown.format(**names), tuple(e.format(**names) for e in self.expect),
                        one_line=False, stdout_empty=False, fsize=self.fsize)


# ----------------------------------------------------------------------------- issue 26: files from others are data
def _symlink(rel: str, target: str, victim: str | None = None):
    """``{tmp}/rel`` as a symlink to ``target`` (``{tmp}`` expanded); ``victim`` text written at the target."""
    def setup(tmp: Path, env: dict):
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        dest = target.format(tmp=tmp)
        if victim is not None:
            Path(dest).write_text(victim)
        os.symlink(dest, p)
    return setup


def _fifo(rel: str):
    def setup(tmp: Path, env: dict):
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(p)
    return setup


def _state(change: Callable[[dict], None]):
    """The session checkpoint with its decoded state document changed (``change(doc["state"])``)."""
    return _rewrite_doc(lambda doc: change(doc["state"]))


def _arrays(change: Callable[[dict], None]):
    """The session checkpoint with its arrays changed (``change(members)``, members by name)."""
    def transform(raw: bytes) -> bytes:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            members = {k: npz[k] for k in npz.files}
        change(members)
        buf = io.BytesIO()
        np.savez(buf, **members)
        return buf.getvalue()
    return transform


def _first_float(members: dict) -> str:
    return next(k for k, a in members.items() if a.dtype.kind == "f" and a.size > 1)


def _nan_weights(members: dict) -> None:
    k = _first_float(members)
    members[k] = np.full_like(members[k], np.nan)


def _complex_weights(members: dict) -> None:
    k = _first_float(members)
    members[k] = members[k].astype(np.complex64)


def _huge_header(raw: bytes) -> bytes:
    """A member whose .npy header claims 10^12 float32 values (4 TB) over 16 bytes of data."""
    import zipfile
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    fake = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + bytes(16)
    src = zipfile.ZipFile(io.BytesIO(raw))
    name = next(n for n in src.namelist() if n != "__doc__.npy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for n in src.namelist():
            out.writestr(n, fake if n == name else src.read(n))
    return buf.getvalue()


def _deep_state(state: dict) -> None:
    deep = []
    for _ in range(200):
        deep = [deep]
    state["extra"] = deep


def _negative_epoch(state: dict) -> None:
    state["epoch"] = -5


# ----------------------------------------------------------------------------- files a case lays out
def _file(rel: str, content: bytes | str = b"x"):
    def setup(tmp: Path, env: dict):
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return setup


def _checkpoint(transform: Callable[[bytes], bytes] | None = None, name: str = "checkpoint.npz"):
    """Copy the session checkpoint to ``{tmp}/run/<name>``, optionally damaged by ``transform``."""
    def setup(tmp: Path, env: dict):
        run = tmp / "run"
        run.mkdir()
        raw = Path(env["ckpt"]).read_bytes()
        (run / name).write_bytes(transform(raw) if transform else raw)
    return setup


def _rewrite_doc(change: Callable[[dict], None], compressed: bool = False, drop_doc: bool = False):
    """The session checkpoint with its JSON document changed (another version ...), re-zipped."""
    def transform(raw: bytes) -> bytes:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            members = {k: npz[k] for k in npz.files}
        doc = json.loads(members["__doc__"].tobytes().decode())
        change(doc)
        members["__doc__"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
        if drop_doc:
            del members["__doc__"]
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **members)
        return buf.getvalue()
    return transform


class _WritesAMarker:
    """Unpickling this runs ``open(path, 'w')``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def code_carrying_pickle(marker: str) -> bytes:
    return pickle.dumps({"epoch": 1, "net": _WritesAMarker(marker)}, protocol=4)


def _pickle_checkpoint(name: str):
    def setup(tmp: Path, env: dict):
        (tmp / "run").mkdir()
        (tmp / "run" / name).write_bytes(code_carrying_pickle(str(tmp / "MARKER")))
    return setup


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as an IDX file (torchvision's MNIST format)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _mnist_files(train_labels: int = 12, bad_label: int | None = None):
    """MNIST raw IDX files under ``{tmp}/data/MNIST/raw``: 12 train images, 7 test images."""
    def setup(tmp: Path, env: dict):
        raw = tmp / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for prefix, n, n_labels in (("train", 12, train_labels), ("t10k", 7, 7)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
            if bad_label is not None and prefix == "t10k":
                labels[3] = bad_label
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return setup


def _results_log(rel: str, text: str):
    return _file(f"{rel}/points.jsonl", text)


def _half(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _garbage(raw: bytes) -> bytes:
    return np.random.default_rng(7).bytes(len(raw) // 4)


def _copy_tree(src: str, rel: str):
    def setup(tmp: Path, env: dict):
        shutil.copytree(src, tmp / rel)
    return setup


def _other_model(tmp: Path, env: dict):
    _checkpoint()(tmp, env)
    (tmp / "other.yaml").write_text(TINY_MODEL.replace("units: 16", "units: 24"))


def readonly_dir(base: Path) -> str:
    """A directory nobody running the tests can create files in."""
    if os.geteuid() == 0:               # root ignores permission bits; sysfs refuses new entries to root too
        return "/sys/chipsim-corpus"
    ro = base / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    return str(ro)


C = CommandCase
RUN = ("run", "{preset}")
CKPT_RUN = RUN + tiny_args() + ("--quiet", "--resume", "{tmp}/run")

CASES = [
    # ---- compare's arguments
    C("compare-empty-rules", ("compare", "{preset}", "--rules", "", "--out", "{tmp}/c"),
      ("give at least one rule", "allowed: bp, ff"), "--rules"),
    C("compare-only-commas", ("compare", "{preset}", "--rules", ",,", "--out", "{tmp}/c"),
      ("give at least one rule",), "--rules"),
    C("compare-unknown-rule", ("compare", "{preset}", "--rules", "bp,dfx"), ("'dfx' is not a rule", "allowed:"),
      "--rules"),
    C("compare-rule-twice", ("compare", "{preset}", "--rules", "bp,BP"), ("names a rule twice",), "--rules"),
    C("compare-empty-depths", ("compare", "{preset}", "--depths", ""), ("give at least one depth",), "--depths"),
    C("compare-depth-1", ("compare", "{preset}", "--depths", "1,5"), ("1 is out of range", "must be >= 2"),
      "--depths"),
    C("compare-depth-not-int", ("compare", "{preset}", "--depths", "3,x"), ("'x' is not one of the integers",),
      "--depths"),
    C("compare-depth-fraction", ("compare", "{preset}", "--depths", "3.5"), ("'3.5' is not one of the integers",),
      "--depths"),
    C("compare-width-0", ("compare", "{preset}", "--width", "0"), ("must be an integer >= 1",), "--width 0"),
    C("compare-width-negative", ("compare", "{preset}", "--width=-4"), ("must be an integer >= 1",), "--width -4"),
    C("compare-width-not-int", ("compare", "{preset}", "--width", "x"), ("invalid int value",), "--width"),
    C("compare-width-huge", ("compare", "{preset}", "--width", "200000", "--depths", "3"),
      ("GiB of host memory", "this machine has"), "--width 200000"),
    C("compare-jobs-negative", ("compare", "{preset}", "--jobs=-1"), ("must be an integer >= 1",), "--jobs -1"),
    C("compare-jobs-zero", ("compare", "{preset}", "--jobs", "0"), ("must be an integer >= 1",), "--jobs 0"),
    C("compare-device-unknown", ("compare", "{preset}", "--device", "tpu"), ("'tpu'", "allowed: cpu, cuda, none"),
      "--device"),
    C("compare-own-model-and-depths", ("compare", "{preset}", "--own-model", "--depths", "3"), ("not both",),
      "--own-model"),
    # ---- sweep's arguments
    C("sweep-negatives-not-int", ("sweep", "{preset}", "--negatives", "1,x"),
      ("'x' is not one of the integers or avg",), "--negatives"),
    C("sweep-negatives-zero", ("sweep", "{preset}", "--negatives", "0"), ("integers >= 1 or avg",), "--negatives"),
    C("sweep-negatives-fraction", ("sweep", "{preset}", "--negatives", "1.5"), ("not one of the integers",),
      "--negatives"),
    C("sweep-negatives-beyond-classes", ("sweep", "{preset}", "--negatives", "12"),
      ("12 is out of range for mnist5k", "allowed: 1..9"), "learning.negatives"),
    C("sweep-bits-not-allowed", ("sweep", "{preset}", "--bits", "12"), ("allowed: 32, 8, 6, 4, 3, 2",), "--bits"),
    C("sweep-bits-not-int", ("sweep", "{preset}", "--bits", "four"), ("not one of the bit widths",), "--bits"),
    C("sweep-levels-out-of-range", ("sweep", "{preset}", "--noise", "shot", "--levels", "0-9"),
      ("within 0-5",), "--levels"),
    C("sweep-levels-backwards", ("sweep", "{preset}", "--noise", "shot", "--levels", "5-0"),
      ("runs backwards", "0-5"), "--levels"),
    C("sweep-levels-garbage", ("sweep", "{preset}", "--noise", "shot", "--levels", "a-b"),
      ("expected a range like 0-5",), "--levels"),
    C("sweep-seeds-negative", ("sweep", "{preset}", "--bits", "4", "--seeds=-1"), ("must be >= 0",), "--seeds"),
    C("sweep-seeds-not-int", ("sweep", "{preset}", "--bits", "4", "--seeds", "0,one"), ("not one of the integers",),
      "--seeds"),
    C("sweep-gain-nan", ("sweep", "{preset}", "--noise", "mismatch", "--gain-std", "nan"),
      ("must be a finite number >= 0",), "--gain-std"),
    C("sweep-gain-negative", ("sweep", "{preset}", "--noise", "mismatch", "--gain-std=-1"),
      ("must be a finite number >= 0",), "--gain-std"),
    C("sweep-no-axis", ("sweep", "{preset}"), ("give --noise KINDS, --bits WIDTHS or --negatives LIST",), "sweep"),
    C("sweep-unknown-noise", ("sweep", "{preset}", "--noise", "thermal"), ("'thermal' is not a noise kind",
                                                                          "allowed: shot"), "--noise"),
    C("sweep-jobs-zero", ("sweep", "{preset}", "--bits", "4", "--jobs", "0"), ("must be an integer >= 1",),
      "--jobs 0"),
    C("reproduce-jobs-negative", ("reproduce", "--quick", "--jobs=-2"), ("must be >= 1",), "--jobs -2"),
    # ---- run and map
    C("run-unknown-option", RUN + ("--bogus",), ("unrecognized arguments",), "--bogus"),
    C("run-bad-rule", RUN + ("--rule", "dfx"), ("'dfx' is not allowed", "did you mean 'df'"), "workload.rule"),
    C("run-set-without-value", RUN + ("--set", "training.epochs"), ("expected key.path=value",),
      "--set training.epochs"),
    C("map-missing-model", ("map", "{preset}", "--model", "{tmp}/nope.yaml"), ("not found",), "nope.yaml"),
    C("map-missing-config", ("map", "{tmp}/nope.yaml"), ("file not found", "presets:", "44core_8bit.yaml"),
      "nope.yaml"),
    C("run-unmappable-fails-before-training", RUN + tiny_args("chip.mesh.rows=1", "chip.mesh.cols=1",
                                                              "chip.cores=1") + ("--quiet", "--out", "{tmp}/r"),
      ("gets no core", "at least 3 cores"), "1x1 mesh"),
    C("argument-not-utf8", ("map", "{preset}", "--set", "chip.name=\udcff"), ("is not valid UTF-8",),
      "chip.name="),
    # ---- output paths
    C("map-out-is-a-file", ("map", "{preset}", "--model", "{tiny}", "--out", "{tmp}/afile"),
      ("is a file, not a directory",), "--out {tmp}/afile", setup=_file("afile")),
    C("map-out-under-a-file", ("map", "{preset}", "--model", "{tiny}", "--out", "{tmp}/afile/sub"),
      ("is a file, not a directory",), "--out {tmp}/afile/sub", setup=_file("afile")),
    C("run-out-holds-another-run", RUN + ("--out", "{tmp}/full"),
      ("already holds files", "never writes into another run's directory", "--resume {tmp}/full"),
      "--out {tmp}/full", setup=_file("full/summary.json", "{}")),
    C("map-out-in-unwritable-dir", ("map", "{preset}", "--out", "{ro}/sub"), ("cannot create the directory",),
      "{ro}/sub"),
    # batch 16: at the preset's 32, the tiny model's barriers (mapping.statistics: batch) hold more than SRAM
    C("map-out-disk-full", ("map", "{preset}", "--model", "{tiny}", "--set", "training.batch_size=16", "--out",
                            "{tmp}/m"),
      ("cannot write", "File too large", "nothing of this run was written"), "{tmp}/m/", fsize=24_000),
    C("compare-out-is-a-file", ("compare", "{preset}", "--own-model", "--rules", "bp", "--out", "{tmp}/afile"),
      ("is a file, not a directory",), "--out {tmp}/afile", setup=_file("afile")),
    C("compare-out-foreign-dir", ("compare", "{preset}", "--own-model", "--rules", "bp", "--out", "{tmp}/full"),
      ("holds files but no points.jsonl",), "--out {tmp}/full", setup=_file("full/notes.txt", "mine")),
    C("sweep-out-is-a-file", ("sweep", "{preset}", "--bits", "4", "--out", "{tmp}/afile"),
      ("is a file, not a directory",), "--out {tmp}/afile", setup=_file("afile")),
    C("reproduce-out-is-a-file", ("reproduce", "--quick", "--out", "{tmp}/afile"), ("is a file, not a directory",),
      "--out {tmp}/afile", setup=_file("afile")),
    # ---- checkpoints (`run --resume`): damaged, foreign, of another config
    C("resume-missing-dir", CKPT_RUN, ("no such run directory or checkpoint",), "--resume {tmp}/run"),
    C("resume-dir-without-checkpoint", CKPT_RUN, ("no checkpoint.npz there",), "--resume {tmp}/run",
      setup=_file("run/summary.json", "{}")),
    C("resume-empty-file", CKPT_RUN, ("the file is empty", "not a chipsim checkpoint"), "checkpoint.npz",
      setup=_file("run/checkpoint.npz", b"")),
    C("resume-truncated", CKPT_RUN, ("truncated or damaged checkpoint",), "checkpoint.npz",
      setup=_checkpoint(_half)),
    C("resume-garbage", CKPT_RUN, ("not a chipsim checkpoint",), "checkpoint.npz", setup=_checkpoint(_garbage)),
    C("resume-pickle-carrying-code", CKPT_RUN, ("a pickle, which chipsim never opens",), "checkpoint.npz",
      setup=_pickle_checkpoint("checkpoint.npz")),
    C("resume-legacy-pickle", CKPT_RUN, ("a pickle checkpoint from an older chipsim", "can carry code"),
      "checkpoint.pkl", setup=_pickle_checkpoint("checkpoint.pkl")),
    C("resume-other-format-version", CKPT_RUN, ("format version 99", "reads version 1"), "checkpoint.npz",
      setup=_checkpoint(_rewrite_doc(lambda d: d.update(version=99)))),
    C("resume-not-chipsim-format", CKPT_RUN, ("not a chipsim checkpoint", "format tag"), "checkpoint.npz",
      setup=_checkpoint(_rewrite_doc(lambda d: d.update(format="other")))),
    C("resume-zip-without-document", CKPT_RUN, ("without chipsim's __doc__ document",), "checkpoint.npz",
      setup=_checkpoint(_rewrite_doc(lambda d: None, drop_doc=True))),
    C("resume-compressed-members", CKPT_RUN, ("compressed or oversized members",), "checkpoint.npz",
      setup=_checkpoint(_rewrite_doc(lambda d: None, compressed=True))),
    C("resume-state-missing", CKPT_RUN, ("its config or state is missing",), "checkpoint.npz",
      setup=_checkpoint(_rewrite_doc(lambda d: d.pop("state")))),
    C("resume-checkpoint-is-a-directory", CKPT_RUN, ("is a directory",), "checkpoint.npz",
      setup=_file("run/checkpoint.npz/x", "")),
    C("resume-other-seed", RUN + tiny_args("training.seed=1") + ("--resume", "{tmp}/run"),
      ("written by another config", "training.seed (checkpoint 0, now 1)", "may change only training.epochs"),
      "checkpoint.npz", setup=_checkpoint()),
    C("resume-other-train-limit", RUN + tiny_args("workload.train_limit=48") + ("--resume", "{tmp}/run"),
      ("workload.train_limit (checkpoint 64, now 48)",), "checkpoint.npz", setup=_checkpoint()),
    C("resume-other-bits", RUN + tiny_args("precision.weight_bits=8") + ("--resume", "{tmp}/run"),
      ("precision.weight_bits (checkpoint 4, now 8)",), "checkpoint.npz", setup=_checkpoint()),
    C("resume-other-rule", RUN + tiny_args() + ("--rule", "bp", "--resume", "{tmp}/run"),
      ("workload.rule (checkpoint 'df-r', now 'bp')",), "checkpoint.npz", setup=_checkpoint()),
    C("resume-other-model-content", RUN + tiny_args("workload.model={tmp}/other.yaml") + ("--resume", "{tmp}/run"),
      ("model_spec.blocks",), "checkpoint.npz", setup=_other_model),
    C("resume-fewer-epochs", RUN + tiny_args("training.epochs=1") + ("--resume", "{tmp}/run"),
      ("2 epochs are done already", "training.epochs must be >= 2"), "checkpoint.npz", setup=_checkpoint()),
    C("resume-into-file", RUN + tiny_args() + ("--resume", "{tmp}/run", "--out", "{tmp}/afile"),
      ("is a file, not a directory",), "--out {tmp}/afile",
      setup=lambda tmp, env: (_checkpoint()(tmp, env), _file("afile")(tmp, env))),
    # ---- damaged data files and results logs
    C("data-idx-fewer-labels", RUN + tiny_args("workload.dataset=mnist", "workload.data_root={tmp}/data")
      + ("--quiet", "--out", "{tmp}/r"), ("are damaged", "the train split has 12 images but 11 labels"),
      "MNIST/raw", setup=_mnist_files(train_labels=11)),
    C("data-idx-label-out-of-range", RUN + tiny_args("workload.dataset=mnist", "workload.data_root={tmp}/data")
      + ("--quiet", "--out", "{tmp}/r"), ("the test split has 1 label(s) outside 0..9", "e.g. 12 at index 3"),
      "MNIST/raw", setup=_mnist_files(bad_label=12)),
    C("sweep-log-line-without-key", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1 is damaged", 'without its "key"'), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", '{"accuracy": 1}\n')),
    C("sweep-log-damaged-middle-line", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1 is damaged (not JSON)",), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", 'garbage\n{"key": "a"}\n')),
    C("compare-log-not-an-object", ("compare", "{preset}", "--own-model", "--rules", "bp", "--out", "{tmp}/c"),
      ("line 2 is damaged (a JSON list",), "{tmp}/c/points.jsonl", setup=_results_log("c", '{"key": "a"}\n[1, 2]\n')),
    # ---- issue 26: files from others are data, read within bounds; exclusive, bounded writes
    C("sweep-log-symlink-elsewhere", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("is a symbolic link", "regular files"), "{tmp}/sw/points.jsonl",
      setup=_symlink("sw/points.jsonl", "{tmp}/victim.txt", victim="precious\n")),
    C("compare-log-symlink-elsewhere", ("compare", "{preset}", "--own-model", "--rules", "bp", "--out", "{tmp}/c"),
      ("is a symbolic link",), "{tmp}/c/points.jsonl",
      setup=_symlink("c/points.jsonl", "{tmp}/victim.txt", victim="precious\n")),
    C("sweep-log-fifo", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw") + tiny_args(),
      ("is a FIFO",), "{tmp}/sw/points.jsonl", setup=_fifo("sw/points.jsonl")),
    C("sweep-log-accuracy-above-one", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1", "an accuracy lies in [0, 1]"), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", '{"key": "a", "accuracy": {"clean": 5.0}}\n')),
    C("sweep-log-accuracy-nan", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1 is damaged", "NaN is not a finite number"), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", '{"key": "a", "accuracy": {"clean": NaN}}\n')),
    C("sweep-log-deeply-nested", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1", "nested"), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", '{"key": "a", "x": ' + "[" * 100000 + "]" * 100000 + "}\n")),
    C("sweep-log-nested-past-limit", ("sweep", "{preset}", "--bits", "4", "--rules", "bp", "--out", "{tmp}/sw")
      + tiny_args(), ("line 1", "nested deeper than"), "{tmp}/sw/points.jsonl",
      setup=_results_log("sw", '{"key": "a", "x": ' + "[" * 40 + "]" * 40 + "}\n")),
    C("resume-checkpoint-symlink-to-dev-zero", CKPT_RUN, ("is a symbolic link",), "checkpoint.npz",
      setup=_symlink("run/checkpoint.npz", "/dev/zero")),
    C("resume-checkpoint-fifo", CKPT_RUN, ("is a FIFO",), "checkpoint.npz", setup=_fifo("run/checkpoint.npz")),
    C("resume-checkpoint-dev-zero-named", RUN + tiny_args() + ("--quiet", "--resume", "/dev/zero"),
      ("is a character device",), "/dev/zero"),
    C("resume-negative-epoch", CKPT_RUN, ("epoch count is -5", ">= 0"), "checkpoint.npz",
      setup=_checkpoint(_state(_negative_epoch))),
    C("resume-nan-weights", CKPT_RUN, ("NaN or infinite",), "checkpoint.npz", setup=_checkpoint(_arrays(_nan_weights))),
    C("resume-complex-weights", CKPT_RUN, ("complex64 values", "real numbers"), "checkpoint.npz",
      setup=_checkpoint(_arrays(_complex_weights))),
    C("resume-header-claims-a-terabyte", CKPT_RUN, ("claims 1,000,000,000,000",), "checkpoint.npz",
      setup=_checkpoint(_huge_header)),
    C("resume-state-nested-too-deep", CKPT_RUN, ("nested deeper than 64",), "checkpoint.npz",
      setup=_checkpoint(_state(_deep_state))),
    C("config-is-a-fifo", ("validate", "{tmp}/hw.yaml"), ("is a FIFO",), "{tmp}/hw.yaml", setup=_fifo("hw.yaml")),
    C("config-is-dev-zero", ("validate", "/dev/zero"), ("character device",), "/dev/zero"),
    C("model-is-a-fifo", ("validate", "{preset}", "--set", "workload.model={tmp}/m.yaml"), ("is a FIFO",),
      "{tmp}/m.yaml", setup=_fifo("m.yaml")),
    C("model-name-with-newline", ("validate", "{preset}", "--set", "workload.model={tmp}/m.yaml"),
      ("control character", "one line of printable text"), "{tmp}/m.yaml",
      setup=_file("m.yaml", 'name: "tiny\\n# Injected heading"\nblocks:\n  - {type: dense, units: 16}\n')),
    C("chip-name-with-newline", ("validate", "{preset}", "--set", 'chip.name="a\\n## b"'), ("control character",),
      "chip.name"),
    C("set-section-to-a-scalar", ("validate", "{preset}", "--set", "training=3"), ("training is a section",),
      "--set training=3"),
    C("reproduce-into-a-directory-with-a-readme", ("reproduce", "--quick", "--out", "{tmp}/mine"),
      ("holds files this command did not write",), "--out {tmp}/mine", setup=_file("mine/README.md", "mine\n")),
    C("training-diverges", RUN + tiny_args("training.lr=1e30") + ("--quiet", "--out", "{tmp}/r"),
      ("training diverged", "lower training.lr"), "training.lr"),
]
