"""``Split``: the images and labels of one part (train / test / validation) of a data set.

Subsets (``Split.sample``, ``stratified_indices``)
--------------------------------------------------
Every cap on a split (``max_train`` / ``max_test``, the presets, evaluation
subsets, tuning's validation carve, MTFL's paper-protocol 9,000 / 1,000 draw)
draws a seeded random subset, never the first N rows. The rule, named
``SUBSET_RULE`` in run configs and metrics:

1. Strata. ``stratify="auto"`` uses the group extras present (``GROUP_EXTRAS``:
   MTFL's source ``collection``) and then every task's labels, in spec order:
   a stratum is one joint value (collection x gender x smile x glasses x pose
   for MTFL, top_left x bottom_right for the composites, the digit for MNIST).
2. Rare cells are pooled. A cell whose expected share of the subset
   ``n * size / N`` is below ``min_expected`` (1 item) is merged with the
   other rare cells that agree on all but the last key; pooled cells still
   rare are merged on one key fewer, and so on; whatever is rare at the
   first key alone forms one last pool. So the joint label is kept wherever
   its cells are large enough, and the leading keys (the collection first)
   are kept longest.
3. Allocation is proportional with largest remainders (Hamilton): each
   stratum gets ``floor(n * size / N)`` items, and the items left over go to
   the largest fractional parts, ties broken at random. Every stratum's
   count is within one item of its proportional share.
4. Within a stratum the items are drawn uniformly without replacement.

The draw is a function of (the strata, ``n``, ``seed``) only; the subset
keeps the split's order (sorted indices). With ``n >= len(split)`` the whole
split is returned.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .spec import DatasetSpec

__all__ = ["Split", "train_val_split", "stratified_indices", "SUBSET_RULE", "DEFAULT_SUBSET_SEED", "GROUP_EXTRAS"]

Index = Union[slice, np.ndarray, list]
Stratify = Union[str, Sequence[str], None]

#: The name of the rule above, recorded wherever a subset is drawn.
SUBSET_RULE = "stratified-v1"
#: The seed of subsets drawn where no run supplies one.
DEFAULT_SUBSET_SEED = 0
#: Extras that say which source collection an item comes from; ``stratify="auto"``
#: mixes them in proportion before the labels.
GROUP_EXTRAS = ("collection",)
_MIN_EXPECTED = 1.0


def _dense(column: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(column), return_inverse=True)[1].reshape(-1)


def _rows(keys: np.ndarray) -> np.ndarray:
    """Dense ids of the distinct rows of ``keys`` (N, K); all zeros when K = 0."""
    if keys.shape[1] == 0:
        return np.zeros(len(keys), np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def _strata(columns: Sequence[np.ndarray], n: int, min_expected: float) -> np.ndarray:
    """Stratum id of every item: the joint value of ``columns``, rare cells pooled (rule 2)."""
    total = len(columns[0])
    keys = np.stack([_dense(c) for c in columns], axis=1)
    ids = _rows(keys)
    for kept in range(keys.shape[1] - 1, -1, -1):
        rare = np.bincount(ids)[ids] * n < min_expected * total
        if not rare.any():
            break
        ids = ids.copy()
        ids[rare] = ids.max() + 1 + _rows(keys[rare, :kept])
        ids = _dense(ids)
    return ids


def stratified_indices(columns: Sequence[np.ndarray], n: int, seed: int = DEFAULT_SUBSET_SEED,
                       min_expected: float = _MIN_EXPECTED) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``n`` items, stratified on ``columns``.

    columns: 1-D arrays of the same length N (labels, group codes: anything
             ``np.unique`` sorts); one constant column gives a uniform draw.
    The rule is the module docstring's (``SUBSET_RULE``). Raises ValueError
    unless 0 < n <= N.
    """
    columns = [np.asarray(c) for c in columns]
    if not columns or any(c.ndim != 1 for c in columns):
        raise ValueError("stratified_indices needs one or more 1-D columns (their length is the number of items)")
    total = len(columns[0])
    if any(len(c) != total for c in columns):
        raise ValueError(f"stratification columns differ in length: {[len(c) for c in columns]}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 < n <= total:
        raise ValueError(f"cannot draw {n!r} of {total} items: the size must be an integer in [1, {total}]")
    n = int(n)
    if n == total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    ids = _strata(columns, n, min_expected)
    sizes = np.bincount(ids)
    quota = sizes * (n / total)
    alloc = np.floor(quota).astype(np.int64)
    left = n - int(alloc.sum())
    if left:  # largest remainders first, ties at random
        order = np.lexsort((rng.random(len(sizes)), -(quota - alloc)))
        alloc[order[:left]] += 1
    shuffled = rng.permutation(total)
    grouped = shuffled[np.argsort(ids[shuffled], kind="stable")]
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(total) - starts[ids[grouped]]
    return np.sort(grouped[rank < alloc[ids[grouped]]])


def _uniform(total: int) -> list:
    return [np.zeros(total, np.int64)]


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
        """The first ``n`` items (for caps use :meth:`sample`)."""
        return self.subset(slice(0, n))

    def strata(self, stratify: Stratify = "auto") -> list:
        """The columns a subset is stratified on: ``"auto"`` (the group extras present,
        then every task), ``None`` (none: a uniform draw) or a list of task / extra names."""
        if stratify is None:
            return _uniform(len(self))
        if isinstance(stratify, str):
            if stratify != "auto":
                raise ValueError(f"stratify must be 'auto', None or a list of task / extra names; got {stratify!r}")
            stratify = [g for g in GROUP_EXTRAS if g in self.extras] + list(self.spec.task_names)
        columns = []
        for name in stratify:
            column = self.labels.get(name, self.extras.get(name))
            if column is None:
                raise ValueError(f"cannot stratify on {name!r}: not a task ({', '.join(self.labels)}) "
                                 f"or extra ({', '.join(self.extras) or 'none'}) of this split")
            if np.ndim(column) != 1:
                raise ValueError(f"cannot stratify on {name!r}: it has shape {np.shape(column)}, not one value per item")
            columns.append(column)
        return columns or _uniform(len(self))

    def sample(self, n: Optional[int], seed: int = DEFAULT_SUBSET_SEED, stratify: Stratify = "auto") -> "Split":
        """A seeded random subset of ``n`` items, stratified (``SUBSET_RULE``, see the
        module docstring), in the split's order; the whole split when ``n`` is None
        or at least ``len(self)``."""
        if n is None or n >= len(self):
            return self
        return self.subset(stratified_indices(self.strata(stratify), n, seed))


def train_val_split(split: Split, val_fraction: float = 0.1, seed: int = 0,
                    stratify: Stratify = "auto") -> Tuple[Split, Split]:
    """Split a training split into (train, validation), deterministically given ``seed``.

    For hyper-parameter tuning: the test split is never involved. The validation
    part is :meth:`Split.sample` of ``round(N * val_fraction)`` items (stratified),
    the training part the rest; each keeps the original order of its items.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    n = len(split)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(f"cannot hold out {val_fraction:.0%} of {n} items as validation")
    val = stratified_indices(split.strata(stratify), n_val, seed)
    return split.subset(np.setdiff1d(np.arange(n), val)), split.subset(val)
