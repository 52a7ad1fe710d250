"""``Split``: the images and labels of one part (train / test / validation) of a data set."""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple, Union

import numpy as np

from .spec import DatasetSpec

__all__ = ["Split", "train_val_split"]

Index = Union[slice, np.ndarray, list]


@dataclasses.dataclass
class Split:
    """Images and labels of one split.

    images: uint8, shape (N, H, W, C).
    labels: int64 arrays of shape (N,), 0-based, keyed by task name (``spec.task_names``).
    spec:   the data set's description; its ``input_shape`` is the shape of one image.
    extras: optional per-item arrays (first dimension N), e.g. composite source
            indices and offsets, or MTFL landmarks.
    """

    images: np.ndarray
    labels: Dict[str, np.ndarray]
    spec: DatasetSpec
    extras: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C); got {self.images.dtype} {self.images.shape}")
        if tuple(self.images.shape[1:]) != tuple(self.spec.input_shape):
            raise ValueError(f"image shape {self.images.shape[1:]} differs from the spec's {self.spec.input_shape}")
        if set(self.labels) != set(self.spec.task_names):
            raise ValueError(f"labels are keyed {sorted(self.labels)}; the spec's tasks are {list(self.spec.task_names)}")
        for key, array in {**self.labels, **self.extras}.items():
            if len(array) != n:
                raise ValueError(f"{key!r} has {len(array)} items, the images {n}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Index) -> "Split":
        """The items at ``indices`` (an index array, a list or a slice), in that order."""
        if not isinstance(indices, slice):
            indices = np.asarray(indices, dtype=np.int64)
        return Split(
            images=self.images[indices],
            labels={k: v[indices] for k, v in self.labels.items()},
            spec=self.spec,
            extras={k: v[indices] for k, v in self.extras.items()},
        )

    def take(self, n: int) -> "Split":
        """The first ``n`` items."""
        return self.subset(slice(0, n))


def train_val_split(split: Split, val_fraction: float = 0.1, seed: int = 0) -> Tuple[Split, Split]:
    """Split a training split into (train, validation), deterministically given ``seed``.

    For hyper-parameter tuning: the test split is never involved. Each part keeps
    the original order of its items.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    n = len(split)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(f"cannot hold out {val_fraction:.0%} of {n} items as validation")
    order = np.random.default_rng(seed).permutation(n)
    return split.subset(np.sort(order[n_val:])), split.subset(np.sort(order[:n_val]))
