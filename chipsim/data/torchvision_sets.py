"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN, read through the real ``torchvision.datasets`` classes.

Why a module of its own: the files on disk are exactly those torchvision
downloads and verifies, and every way they can be missing or damaged becomes
one :class:`chipsim.errors.DataError` line naming the files and how to fetch
them. We read the decoded arrays (``.data``, ``.targets``, ``.labels``)
instead of iterating with transforms: one vectorised conversion instead of
60,000 PIL round trips. torchvision (and with it torch) is imported only when
one of these datasets is loaded.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from chipsim.errors import DataError

from .arrays import _to_unit_float

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

#: Classes per dataset, for the label-range check of :func:`_check_split` (the registry in
#: :mod:`chipsim.data.registry` keeps the same numbers for every dataset it serves).
_NUM_CLASSES = {name: 10 for name in _LOADER_NAMES.values()}
