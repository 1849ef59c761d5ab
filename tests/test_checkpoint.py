"""Checkpoints hold data only: the codec round-trips plain structures exactly and refuses everything else.

The command-line side (damaged, foreign and other-config checkpoints through
`chipsim run --resume`) is in the bad-input corpus; resuming bit-identically is
in test_end_to_end.py.
"""
import io
import json
import os
import zipfile

import numpy as np
import pytest

from chipsim import checkpoint
from chipsim.errors import CheckpointError, OutputError
from chipsim.quant import FixedPoint


def _same(a, b):
    """Equal in value *and* type, recursively (a float32 must come back float32, a tuple as a tuple)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (np.isnan(a) and np.isnan(b)))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


STATE = {
    "ints": [0, -3, 2 ** 127 + 5],                       # PCG64 states are 128-bit integers
    "floats": [1.5, float("nan"), float("inf"), -float("inf"), -0.0],
    "text": "ünïcode", "flags": (True, False, None),
    "tuple_keys": {("w", 0): np.arange(6, dtype=np.float32).reshape(2, 3), "emb": np.zeros(3, np.int64)},
    "int_keys": {4: "four", 8: [1, 2]},
    "tagged_looking": {"__array__": "not an array", "__tuple__": [1]},   # keys that look like the codec's tags
    "scalars": [np.float32(0.1), np.float64(np.nan), np.int64(-7), np.bool_(True)],
    "arrays": [np.array([], np.float32), np.array(3.0), np.array(["a", "bc"]), np.ones((2, 0, 3), np.uint8)],
    "nested": [[{"a": (1, [2, (3,)])}]],
}


def test_round_trip_is_exact_for_every_plain_type(tmp_path):
    path = str(tmp_path / checkpoint.NAME)
    checkpoint.save(path, STATE, {"training": {"seed": 0}})
    state, config = checkpoint.load(path)
    _same(STATE, state)
    assert config == {"training": {"seed": 0}}
    # data only: every member loads with allow_pickle=False, and the document is JSON
    with np.load(path, allow_pickle=False) as npz:
        doc = json.loads(npz["__doc__"].tobytes().decode())
    assert doc["format"] == checkpoint.FORMAT and doc["version"] == checkpoint.VERSION
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize("bad", [object(), {"x": FixedPoint(np.ones(3), 8)}, [np.array([object()], dtype=object)],
                                 {"s": {1, 2}}])
def test_save_refuses_what_is_not_plain_data(tmp_path, bad):
    with pytest.raises(TypeError, match="plain data|object array"):
        checkpoint.save(str(tmp_path / "c.npz"), bad, {})
    assert not os.listdir(tmp_path), "a refused save leaves nothing behind"


def test_fixed_point_state_is_exact():
    rng = np.random.default_rng(0)
    for bits in (4, 16, 32):
        fp = FixedPoint(rng.normal(size=(5, 7)).astype(np.float32), bits)
        fp.apply(rng.normal(size=(5, 7)).astype(np.float32) * 0.01, "stochastic", np.random.default_rng(1))
        back = FixedPoint.from_state(fp.to_state())
        assert np.array_equal(back.value, fp.value) and back.bits == fp.bits and back.step == fp.step
        # and it keeps learning identically
        d = rng.normal(size=(5, 7)).astype(np.float32) * 0.01
        a = fp.apply(d, "stochastic", np.random.default_rng(2))
        b = back.apply(d, "stochastic", np.random.default_rng(2))
        assert np.array_equal(a, b)


def _write(path, members):
    buf = io.BytesIO()
    np.savez(buf, **members)
    path.write_bytes(buf.getvalue())


def test_damaged_files_are_one_clear_error(tmp_path):
    good = tmp_path / "good.npz"
    checkpoint.save(str(good), {"epoch": 1, "w": np.arange(1000.0)}, {})
    raw = good.read_bytes()
    cases = {
        "empty": (b"", "the file is empty"),
        "truncated": (raw[:len(raw) // 2], "truncated or damaged"),
        "one byte short": (raw[:-1], "truncated or damaged"),
        "garbage": (b"\x00\x01garbage" * 50, "not a chipsim checkpoint"),
        "npy": (b"\x93NUMPY" + b"\x00" * 100, "not a chipsim checkpoint"),
        "pickle": (b"\x80\x04\x95" + b"\x00" * 20, "a pickle, which chipsim never opens"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as exc:
            checkpoint.load(str(p))
        assert str(p) in str(exc.value) and "\n" not in str(exc.value), name
    doc = {"format": checkpoint.FORMAT, "version": 2, "config": {}, "state": None}
    _write(tmp_path / "v2.npz", {"__doc__": np.frombuffer(json.dumps(doc).encode(), np.uint8)})
    with pytest.raises(CheckpointError, match="format version 2; this chipsim reads version 1"):
        checkpoint.load(str(tmp_path / "v2.npz"))
    doc.update(version=1, state={"__array__": "a7", "scalar": False})
    _write(tmp_path / "dangling.npz", {"__doc__": np.frombuffer(json.dumps(doc).encode(), np.uint8)})
    with pytest.raises(CheckpointError, match="array 'a7' is missing"):
        checkpoint.load(str(tmp_path / "dangling.npz"))
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as zf:          # a zip member that is not an array
        zf.writestr("__doc__.npy", b"not npy")
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(str(tmp_path / "raw.npz"))


def test_a_stale_temp_file_from_a_killed_write_is_cleaned(tmp_path):
    path = tmp_path / checkpoint.NAME
    dead = 2 ** 22 + 12345                     # above the default pid_max: no such process
    stale = tmp_path / f".{checkpoint.NAME}.{dead}.0badc0de.tmp"
    stale.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".{checkpoint.NAME}.{os.getppid()}.0badc0de.tmp"      # a running writer's: kept
    alive.write_bytes(b"being written")
    other = tmp_path / "unrelated.tmp"
    other.write_bytes(b"not ours")
    checkpoint.save(str(path), {"epoch": 1}, {})
    assert not stale.exists() and alive.exists() and other.exists()
    stale.write_bytes(b"left by a second kill")
    checkpoint.load(str(path))                 # resuming cleans too
    assert not stale.exists() and alive.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([checkpoint.NAME, alive.name, other.name])


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / checkpoint.NAME)
    checkpoint.save(path, {"epoch": 1}, {})

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        checkpoint.save(path, {"epoch": 2}, {})
    monkeypatch.undo()
    assert checkpoint.load(path)[0] == {"epoch": 1}
    assert os.listdir(tmp_path) == [checkpoint.NAME]


def test_config_differences_name_the_keys_and_allow_the_resumable_ones():
    saved = {"training": {"epochs": 2, "seed": 0, "checkpoint": True}, "workload": {"data_root": "/a", "model": "/m",
             "train_limit": 64}, "chip": {"core": {"macs_per_cycle": {"4": 256}}}, "model_spec": {"blocks": [1, 2]}}
    same_but_resumable = {"training": {"epochs": 5, "seed": 0, "checkpoint": False},
                          "workload": {"data_root": "/b", "model": "/elsewhere/m", "train_limit": 64},
                          "chip": {"core": {"macs_per_cycle": {4: 256}}}, "model_spec": {"blocks": (1, 2)}}
    assert checkpoint.config_differences(saved, same_but_resumable) == []
    other = json.loads(json.dumps(same_but_resumable))
    other["training"]["seed"] = 1
    other["workload"]["train_limit"] = 32
    other["model_spec"]["blocks"] = [1, 3]
    assert [k for k, *_ in checkpoint.config_differences(saved, other)] == [
        "model_spec.blocks", "training.seed", "workload.train_limit"]
    with pytest.raises(CheckpointError, match=r"training.seed \(checkpoint 0, now 1\)"):
        checkpoint.check_resumable("c.npz", saved, {"epoch": 1}, other, epochs=5)
    with pytest.raises(CheckpointError, match="2 epochs are done already"):
        checkpoint.check_resumable("c.npz", saved, {"epoch": 2}, same_but_resumable, epochs=1)
