"""How a rule turns a batch of samples into the rows the blocks process.

The first of a local rule's three parts (``rules.LocalRule``): FF, SymBa and DF
give each sample one positive and N negative rows (the image with a correct
or a wrong label in its label channel); a rule without negative data (CwC,
BP) gives each sample one row; CFF gives it two augmented views.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...augment import two_views


@dataclass
class RowSet:
    """The rows of one step: the input of the first block and what the per-block losses need."""
    x: np.ndarray             # (B, ...) the samples as the sensor delivers them
    a0: np.ndarray            # (B * reps, ...) input rows of block 0
    labels: np.ndarray        # (B,) true labels
    row_labels: np.ndarray    # (B * reps,) the label each row carries (its own class for one-row rules)
    reps: int                 # rows per sample, sample-major: row s * reps + k is sample s's k-th row

    @property
    def samples(self) -> int:
        return len(self.labels)

    @property
    def n(self) -> int:
        return len(self.row_labels)


def sample_negatives(labels, n: int, num_classes: int, rng):
    """N distinct wrong labels per sample, uniformly: y + 1 + (a random permutation of 0..C-2)."""
    b = labels.shape[0]
    perm = np.argsort(rng.random((b, num_classes - 1)), axis=1)[:, :n]
    return ((labels[:, None] + 1 + perm) % num_classes).astype(np.int64)


@dataclass(frozen=True)
class LabelledRows:
    """One positive and ``negatives`` distinct wrong labels per sample; row 0 of each sample is the positive."""
    negatives: int

    def make(self, net, x, labels, rng) -> RowSet:
        return self.with_negatives(net, x, labels, sample_negatives(labels, self.negatives, net.num_classes, rng))

    @staticmethod
    def with_negatives(net, x, labels, negatives) -> RowSet:
        """The rows for given wrong labels ``negatives`` (B, N)."""
        reps = negatives.shape[1] + 1
        lab = np.concatenate([labels[:, None], negatives], axis=1).reshape(-1)
        return RowSet(x, net.input_with_label(np.repeat(x, reps, axis=0), lab), labels, lab, reps)


@dataclass(frozen=True)
class OneRow:
    """One row per sample, the image as it is (no label channel)."""

    def make(self, net, x, labels, rng) -> RowSet:
        return RowSet(x, x, labels, labels, 1)


@dataclass(frozen=True)
class TwoViews:
    """Two augmented views per sample (CFF, after supervised contrastive learning): rows 2s and 2s + 1 are
    sample s's two seeded random translations by at most ``max_shift`` pixels (``chipsim.augment``), each
    row carrying the sample's label. The views are cut from the image the first layer received, so the
    sensor still sends one image per sample."""
    max_shift: int

    def make(self, net, x, labels, rng) -> RowSet:
        v1, v2 = two_views(x, rng, self.max_shift)
        a0 = np.stack([v1, v2], axis=1).reshape((2 * len(x),) + tuple(np.shape(x)[1:]))
        return RowSet(x, a0, labels, np.repeat(labels, 2), 2)
