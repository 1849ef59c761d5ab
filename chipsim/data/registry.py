"""The dataset registry: which names :func:`load_dataset` accepts, and the one front door that loads them.

Why a module of its own: the sources (:mod:`chipsim.data.mnist5k`,
:mod:`chipsim.data.torchvision_sets`) only produce arrays; this module maps a
name to its loader, kind and class count, checks the arguments, applies the
train/test limits (:mod:`chipsim.data.arrays`) and returns the
:class:`~chipsim.data.arrays.Dataset` every workload sees.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from chipsim.errors import DataError

from .arrays import CIFAR_LIKE, MNIST_LIKE, Dataset, _apply_limit, _check_limit
from .mnist5k import _load_mnist5k
from .torchvision_sets import _torchvision_loader

#: Where torchvision-backed datasets are looked for when ``root`` is not given.
#: Under the user's cache directory rather than the working directory, so the
#: same files are found whichever directory the CLI is started from.
DEFAULT_ROOT = Path.home() / ".cache" / "chipsim" / "data"   # = workload.data_root's default

DEFAULT_DATASET = "mnist5k"

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
