"""Checkpoints as data only: a versioned ``.npz`` of arrays plus one JSON document for everything else.

Why not pickle: unpickling runs whatever code the file names, so resuming a
run directory someone sent you would run their code. This format holds only
numbers and text. It is read with ``allow_pickle=False`` after checking the
zip signature, so a pickle, an object array or any other file is refused
before a byte of it is interpreted.

Layout of ``checkpoint.npz`` (a zip, as ``numpy.savez`` writes it):

* ``__doc__.npy``: the UTF-8 bytes (a uint8 array) of the JSON document
  ``{"format": "chipsim-checkpoint", "version": 1, "config": {...}, "state": ...}``;
* ``a0.npy``, ``a1.npy``, ...: the arrays the state refers to.

``state`` is any nested plain structure -- dict, list, tuple, str, int,
float, bool, None and numpy arrays or scalars -- encoded so that it decodes
to exactly what was saved (tuples stay tuples, dict keys keep their types,
float32 stays float32, NaN stays NaN). So when the engine changes what a
block or the optimizer keeps, only its ``state()`` / ``load()`` change; a
non-plain object (a dataclass, a class instance) is a programming error,
raised at save time.

Every problem reading a checkpoint is one ``CheckpointError`` line: empty,
truncated, not a checkpoint, another format version, or written by another
config (naming the keys that differ).

A checkpoint is data from whoever wrote the run directory, read within
bounds (``chipsim.safe_files``): only a regular file, never through a symlink
(a link to ``/dev/zero`` would be read until memory runs out, a FIFO would
block), at most ``MAX_BYTES``; every member's header is checked before its
array is allocated (a header that claims 10^12 elements is refused, not
allocated); arrays must be real numbers or text, floats finite; the JSON
document at most ``MAX_DEPTH`` deep; and the state's counters and history
(epoch >= 0, accuracies in [0, 1]) are checked before a run resumes from it.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile

import numpy as np

from .atomic import atomic_file, clean_stale
from .errors import CheckpointError
from .safe_files import read_bytes

FORMAT = "chipsim-checkpoint"
VERSION = 1
NAME = "checkpoint.npz"
LEGACY_NAME = "checkpoint.pkl"
_DOC = "__doc__"
_ZIP_MAGIC = b"PK\x03\x04"
_TAGS = ("__array__", "__tuple__", "__items__", "__float__")
MAX_BYTES = 4 << 30          # far above any model this CPU simulator trains (vit_tiny's is a few MB)
MAX_DEPTH = 64               # nesting of the state document (chipsim writes about 8)
_ARRAY_KINDS = "biufUS"      # bool, integers, floats, text: no complex, object, void or time arrays


# ----------------------------------------------------------------------------- encoding
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, a: np.ndarray, scalar: bool) -> dict:
        if a.dtype.hasobject:
            raise TypeError("checkpoint state holds an object array; only numeric and string arrays are data")
        name = f"a{len(self.arrays)}"
        self.arrays[name] = a
        return {"__array__": name, "scalar": scalar}

    def encode(self, obj, where: str = "state"):
        # numpy first: np.float64 is a subclass of float, and must come back as np.float64
        if isinstance(obj, np.ndarray):
            return self.array(obj, scalar=False)
        if isinstance(obj, np.generic):
            return self.array(np.asarray(obj), scalar=True)
        kind = type(obj)                # exact types: a namedtuple or an enum would not come back as itself
        if obj is None or kind in (bool, str, int):
            return obj
        if kind is float:
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if kind is tuple:
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if kind is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if kind is dict:
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}
            return {"__items__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        raise TypeError(f"checkpoint state: {where} is a {type(obj).__name__}; state() must return plain data "
                        "(dict, list, tuple, str, int, float, bool, None, numpy arrays)")


class _Decoder:
    def __init__(self, arrays, path: str):
        self.arrays, self.path = arrays, path

    def bad(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: damaged checkpoint: {what}")

    def decode(self, obj, depth: int = 0):
        if depth > MAX_DEPTH:
            raise self.bad(f"its state is nested deeper than {MAX_DEPTH} levels")
        if obj is None or isinstance(obj, (bool, str, int, float)):
            return obj
        if isinstance(obj, list):
            return [self.decode(v, depth + 1) for v in obj]
        if not isinstance(obj, dict):
            raise self.bad(f"unexpected {type(obj).__name__} in the state")
        tag = next((t for t in _TAGS if t in obj), None)
        if tag is None:
            return {k: self.decode(v, depth + 1) for k, v in obj.items()}
        if tag == "__array__":
            name = obj["__array__"]
            if not isinstance(name, str) or name not in self.arrays:
                raise self.bad(f"array {name!r} is missing")
            a = self.arrays[name]
            return a[()] if obj.get("scalar") else a
        if tag == "__tuple__":
            if not isinstance(obj["__tuple__"], list):
                raise self.bad("a tuple is not a list of values")
            return tuple(self.decode(v, depth + 1) for v in obj["__tuple__"])
        if tag == "__float__":
            try:
                return float(obj["__float__"])
            except (TypeError, ValueError):
                raise self.bad(f"{obj['__float__']!r} is not a number") from None
        items = obj["__items__"]
        if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 for p in items):
            raise self.bad("a mapping's items are not key-value pairs")
        out = {}
        for k, v in items:
            key = self.decode(k, depth + 1)
            try:
                out[key] = self.decode(v, depth + 1)
            except TypeError:
                raise self.bad("a mapping key is not hashable") from None
        return out


def _no_constant(name):
    raise ValueError(f"{name} in the document")


def _check_member(zf, info, path: str) -> None:
    """Read one member's .npy header (not its data) and refuse it unless its dtype is real numbers or text
    and the bytes it claims are what the member holds: no allocation is ever sized by a header alone."""
    from numpy.lib import format as npy
    with zf.open(info) as fh:
        try:
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise ValueError(f"npy format version {version}")
        except (ValueError, SyntaxError, TypeError) as exc:
            raise CheckpointError(f"{path}: damaged checkpoint: member {info.filename!r} has no valid array "
                                  f"header ({str(exc)[:80]})") from None
        header = fh.tell() if hasattr(fh, "tell") else 0
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject:
        raise CheckpointError(f"{path}: damaged checkpoint: member {info.filename!r} holds {dtype} values; a "
                              "checkpoint holds real numbers and text only")
    count = 1
    for d in shape:
        if not isinstance(d, int) or d < 0:
            raise CheckpointError(f"{path}: damaged checkpoint: member {info.filename!r} has shape {shape}")
        count *= d
    if count * dtype.itemsize > info.file_size - min(header, info.file_size):
        raise CheckpointError(f"{path}: damaged checkpoint: member {info.filename!r} claims {count:,} "
                              f"{dtype} values but holds {info.file_size:,} bytes")


# ----------------------------------------------------------------------------- files
def save(path: str, state, config: dict) -> str:
    """Write ``state`` (plain data) and the run's ``config`` to ``path`` atomically; returns ``path``.

    A stale temp file left by a process killed mid-write is removed first
    (``atomic.clean_stale``); the previous checkpoint stays intact until the
    new one is complete and on disk.
    """
    enc = _Encoder()
    doc = {"format": FORMAT, "version": VERSION, "config": config, "state": enc.encode(state)}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    members = {_DOC: np.frombuffer(text.encode("utf-8"), np.uint8), **enc.arrays}
    with atomic_file(path, durable=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **members)
    return path


def load(path: str) -> tuple:
    """``(state, config)`` of a checkpoint; every failure is one CheckpointError line naming ``path``."""
    clean_stale(path)
    if os.path.basename(path) == LEGACY_NAME or path.endswith(".pkl"):
        raise CheckpointError(f"{path}: a pickle checkpoint from an older chipsim; pickles can carry code, so "
                              f"chipsim no longer opens them; rerun the training (it now writes {NAME})")
    raw = read_bytes(path, "checkpoint", MAX_BYTES, CheckpointError)
    if not raw:
        raise CheckpointError(f"{path}: the file is empty (a write was interrupted?); not a chipsim checkpoint")
    if not raw.startswith(_ZIP_MAGIC):
        kind = "a pickle, which chipsim never opens" if raw[:1] == b"\x80" else "not a chipsim checkpoint"
        raise CheckpointError(f"{path}: {kind} (a checkpoint is a {NAME} zip of arrays and JSON)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            # chipsim writes stored (uncompressed) members only: a compressed member cannot be ours, and its
            # declared size could be a zip bomb
            if any(i.compress_type != zipfile.ZIP_STORED or i.file_size > len(raw) for i in zf.infolist()):
                raise CheckpointError(f"{path}: a zip with compressed or oversized members; not a chipsim checkpoint")
            for info in zf.infolist():
                _check_member(zf, info, path)
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            if _DOC not in npz.files:
                raise CheckpointError(f"{path}: a zip without chipsim's {_DOC} document; not a chipsim checkpoint")
            doc_bytes = npz[_DOC]
            arrays = {k: npz[k] for k in npz.files if k != _DOC}
        if not isinstance(doc_bytes, np.ndarray) or doc_bytes.dtype != np.uint8:
            raise CheckpointError(f"{path}: damaged checkpoint: its {_DOC} document is not UTF-8 bytes")
        doc = json.loads(doc_bytes.tobytes().decode("utf-8"), parse_constant=_no_constant)
        odd = [k for k, a in arrays.items() if not isinstance(a, np.ndarray)]
        if odd:
            raise CheckpointError(f"{path}: damaged checkpoint: member {odd[0]!r} is not a numpy array")

    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: damaged checkpoint: its document is nested too deep") from None
    except MemoryError:
        raise CheckpointError(f"{path}: damaged checkpoint: a member does not fit in memory") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, UnicodeDecodeError,
            NotImplementedError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: truncated or damaged checkpoint ({type(exc).__name__}: "
                              f"{str(exc)[:120]}); rerun the training, or resume from an intact copy") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chipsim checkpoint (no '{FORMAT}' format tag)")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {doc.get('version')!r}; this chipsim reads "
                              f"version {VERSION} only; resume it with the chipsim that wrote it, or rerun")
    if not isinstance(doc.get("config"), dict) or "state" not in doc:
        raise CheckpointError(f"{path}: damaged checkpoint: its config or state is missing")
    return _Decoder(arrays, path).decode(doc["state"]), doc["config"]


# ----------------------------------------------------------------------------- config check
#: Config keys a resumed run may change: none of them changes what the first epochs computed.
#: ``training.epochs`` trains longer (the cosine schedule then spans the new total); ``training.checkpoint``
#: only says whether to keep writing checkpoints; ``workload.data_root`` / ``workload.download`` say where the
#: same dataset lives; ``workload.model`` is a path -- the model's content (``model_spec``) must match.
RESUMABLE_KEYS = ("training.epochs", "training.checkpoint", "workload.data_root", "workload.download",
                  "workload.model")


def training_config(hw, model) -> dict:
    """What determines a training, as a checkpoint stores it: the resolved hwconfig and the model's content."""
    from .schema import to_plain
    return {**to_plain(hw), "model_spec": to_plain(model)}


def check_resumable(path: str, saved: dict, state, current: dict, epochs: int) -> None:
    """Refuse to resume a checkpoint of another config (naming the keys) or past the epochs asked for."""
    from .safe_yaml import shorten
    diffs = config_differences(saved, current)
    if diffs:
        listed = "; ".join(f"{k} (checkpoint {shorten(a, 40)}, now {shorten(b, 40)})" for k, a, b in diffs[:5])
        more = f" and {len(diffs) - 5} more" if len(diffs) > 5 else ""
        raise CheckpointError(f"{path}: written by another config: {listed}{more}; resuming may change only "
                              f"{', '.join(RESUMABLE_KEYS)}")
    done = _count(path, state if isinstance(state, dict) else {}, "epoch")
    if done > epochs:
        raise CheckpointError(f"{path}: {done} epochs are done already; training.epochs must be >= {done} to "
                              f"resume (it is {epochs})")


def _count(path: str, state: dict, name: str) -> int:
    from .safe_yaml import shorten
    v = state.get(name)
    if isinstance(v, np.integer):
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CheckpointError(f"{path}: damaged checkpoint: its {name} count is {shorten(v)}; expected an "
                              "integer >= 0")
    return v


def _fraction(v) -> bool:
    return v is None or (not isinstance(v, bool) and isinstance(v, (int, float, np.floating))
                         and math.isfinite(v) and 0 <= v <= 1)


def _finite(path: str, v, where: str, depth: int = 0) -> None:
    """Every number of a training state is finite: NaN weights or moments would train on to chance."""
    if isinstance(v, (np.ndarray, np.generic)):
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise CheckpointError(f"{path}: damaged checkpoint: {where} holds NaN or infinite values; a training "
                                  "that diverged is not resumed")
    elif isinstance(v, float) and not math.isfinite(v) and not where.endswith("trace"):
        raise CheckpointError(f"{path}: damaged checkpoint: {where} is {v}, not a finite number")
    elif isinstance(v, dict):
        for k, x in v.items():
            _finite(path, x, f"{where}.{k}", depth + 1)
    elif isinstance(v, (list, tuple)):
        for n, x in enumerate(v):
            _finite(path, x, f"{where}[{n}]", depth + 1)


def check_state(path: str, state) -> None:
    """The counters and history a resumed run continues from: epoch and step integers >= 0, one history
    entry per finished epoch, its accuracies in [0, 1] and its loss and time finite."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged checkpoint: its state is not a mapping")
    _finite(path, state, "state")
    epoch, step = _count(path, state, "epoch"), _count(path, state, "step")
    if step < epoch:
        raise CheckpointError(f"{path}: damaged checkpoint: {step} steps cannot finish {epoch} epochs")
    history = state.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise CheckpointError(f"{path}: damaged checkpoint: its history does not list its {epoch} finished epochs")
    for n, h in enumerate(history):
        ok = isinstance(h, dict) and _fraction(h.get("test_accuracy")) and _fraction(h.get("head_accuracy")) \
            and all(_fraction(a) for a in (h.get("per_block_accuracy") or [])) \
            and all(isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) and math.isfinite(h[k])
                    and (k == "loss" or h[k] >= 0) for k in ("loss", "seconds"))
        if not ok:
            raise CheckpointError(f"{path}: damaged checkpoint: epoch {n + 1} of its history has an accuracy "
                                  "outside [0, 1] or a loss or time that is not a finite number")


def flatten(d, prefix: str = "") -> dict:
    """Nested mappings as ``{"a.b.c": value}`` (lists and scalars are leaves)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(saved: dict, current: dict) -> list:
    """``[(key, saved value, current value)]`` for keys that differ and that resuming may not change."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_KEYS:
            continue
        if _canonical(a.get(key)) != _canonical(b.get(key)):
            diffs.append((key, a.get(key, "(absent)"), b.get(key, "(absent)")))
    return diffs


def _canonical(v):
    """JSON round trip: tuples and lists, int and str mapping keys compare as they are stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))
