"""The array contract every dataset is delivered in, and the in-memory work on those arrays.

Why a module of its own: :class:`Dataset` (float32 ``(N, C, H, W)`` images in
``[0, 1]``, int64 labels) is what the simulator, the learning rules and the
noise model are written against, and the helpers here -- uint8 to unit float,
class-stratified subsets, train/test limits -- act on arrays alone, whatever
source they came from. The sources (:mod:`chipsim.data.mnist5k`,
:mod:`chipsim.data.torchvision_sets`) build on this module and never on each
other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

