"""Pair-split Multi-MNIST: MT-CRL's distribution shift (Hu et al. 2022, App. C).

Built the way Sun's MultiDigitMNIST generator builds its composites, with
MT-CRL's changes:

* the 100 ordered label pairs ``"00"``-``"99"`` (same-digit pairs included)
  are shuffled with the data set's ``seed`` and split 3:1:1 into 60
  *train*, 20 *valid* and 20 *test* pairs, so that no pair of labels seen in
  training appears in the test set ("every image co-occurrence correlation
  will no longer appear again in test set");
* for each pair ``(a, b)``, ``per_pair`` composites (the paper: 10,000; the
  default here: 1,000, Table 6's budget): a digit image of class ``a``
  on the left and one of class ``b`` on the right, each drawn uniformly with
  replacement from the digit pool;
* the tasks are the left and the right digit.

Options (``tf_mtvib.datasets.load``):

* ``per_pair``: composites per label pair;
* ``seed``: the pair shuffle and the image draws (a reproduction's *seed* is
  one pair shuffle plus one initialisation);
* ``pool``: ``"pooled"`` (default, as Sun's generator: every split draws from
  MNIST train + test, 70,000 digits, so a digit image may appear in train and
  test composites, always in pairs of other labels) or ``"disjoint"`` (train and
  valid composites from MNIST train, test composites from MNIST test).

Two layouts, two data sets (a data set's input shape is fixed, see
:mod:`tf_mtvib.datasets.spec`):

* ``pairmnist``: 28x56, the two digits side by side ("X = [F_left, F_right]
  ... simply their concatenation", App. C.1). The default: it is that text's
  reading and the cheaper one;
* ``pairmnist64``: Sun's 64x64 canvas, each digit in its 32-pixel half at a
  row offset uniform in [0, 36) and a column offset uniform in [0, 4).

Splits: ``"train"`` holds the train *and* valid pairs, told apart by the extra
``environment`` (0: train, 1: valid): MT-CRL's task loss reads environment 0
and its G-IRM penalty both; the baselines train on both, as in the paper.
``"test"`` holds the test pairs (``environment`` 2). With ``holdout="valid"``
(Table 1: accuracy on the valid pairs of models trained on the train pairs)
``"train"`` holds the train pairs only and ``"test"`` the valid pairs. The extra ``pair``
holds ``10 * left + right``; ``index_left`` / ``index_right`` the digits'
indices in the pool. Cached on disk, keyed by every option and the source
files' digests.
"""
from __future__ import annotations

import pathlib
from typing import Dict, Tuple

import numpy as np

from . import cache, mnist
from .spec import get_spec
from .split import Split

__all__ = ["NUM_PAIRS", "PAIR_COUNTS", "ENVIRONMENTS", "POOLS", "HOLDOUTS", "LAYOUT_OF", "pair_split", "make_pairs", "load_pairs"]

#: Ordered label pairs of two digits, same-digit pairs included
NUM_PAIRS = 100
#: Label pairs per part, 3:1:1 (App. C)
PAIR_COUNTS = {"train": 60, "valid": 20, "test": 20}
#: The ``environment`` extra of each part
ENVIRONMENTS = {"train": 0, "valid": 1, "test": 2}
POOLS = ("pooled", "disjoint")
#: ``holdout``: the parts of each split. "test" (default): train on train + valid, test on the test pairs;
#: "valid": train on the train pairs only, test on the valid pairs (MT-CRL Table 1's Acc_val)
HOLDOUTS = {"test": {"train": ("train", "valid"), "test": ("test",)},
            "valid": {"train": ("train",), "test": ("valid",)}}
#: Each data set's layout
LAYOUT_OF = {"pairmnist": "concat", "pairmnist64": "canvas64"}
#: Sun's generator: a 64x64 canvas, digit rows in [0, 36), columns in [0, 4) of the digit's half
_CANVAS, _MAX_ROW, _MAX_COL = 64, 36, 4
#: Bump when the construction changes, so that old cache entries are not used.
_VERSION = 1
_STREAM = {"train": 0, "valid": 1, "test": 2}


def pair_split(seed: int) -> Dict[str, np.ndarray]:
    """The label pairs (``10 * left + right``) of each part, from one seeded shuffle of all 100."""
    order = np.random.default_rng([int(seed), 0xC0FFEE]).permutation(NUM_PAIRS)
    parts, start = {}, 0
    for part, n in PAIR_COUNTS.items():
        parts[part] = np.sort(order[start:start + n])
        start += n
    return parts


def make_pairs(images: np.ndarray, labels: np.ndarray, pairs: np.ndarray, per_pair: int, seed,
               layout: str = "concat") -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """``per_pair`` composites of each label pair in ``pairs`` from the pool ``images`` (N, 28, 28[, 1]).

    Returns (composites (len(pairs) * per_pair, H, W, 1) uint8, arrays) with arrays
    ``left``, ``right`` (labels), ``pair`` and ``index_left`` / ``index_right`` (pool indices).
    """
    if images.ndim == 4:
        images = images[..., 0]
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    if any(len(ix) == 0 for ix in by_class):
        raise ValueError("the digit pool lacks a class")
    pairs = np.asarray(pairs, np.int64)
    pair = np.repeat(pairs, per_pair)
    left, right = pair // 10, pair % 10
    index = {}
    for side, cls in (("left", left), ("right", right)):
        draw = np.empty(len(pair), np.int64)
        for c in range(10):
            sel = np.flatnonzero(cls == c)
            draw[sel] = by_class[c][rng.integers(0, len(by_class[c]), size=len(sel))]
        index[side] = draw
    n = len(pair)
    if layout == "concat":
        out = np.concatenate([images[index["left"]], images[index["right"]]], axis=2)
    elif layout == "canvas64":
        out = np.zeros((n, _CANVAS, _CANVAS), np.uint8)
        half = _CANVAS // 2
        for side, x0 in (("left", 0), ("right", half)):
            rows = rng.integers(0, _MAX_ROW, size=n)
            cols = x0 + rng.integers(0, _MAX_COL, size=n)
            for dy in range(_MAX_ROW):
                for dx in np.unique(cols):
                    sel = np.flatnonzero((rows == dy) & (cols == dx))
                    if len(sel):
                        out[sel, dy:dy + 28, dx:dx + 28] = images[index[side][sel]]
    else:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(sorted(set(LAYOUT_OF.values())))}")
    return out[..., None], {"left": left, "right": right, "pair": pair,
                            "index_left": index["left"], "index_right": index["right"]}


def _pool(part: str, pool: str, data_dir: pathlib.Path) -> Tuple[np.ndarray, np.ndarray]:
    if pool == "disjoint":
        return mnist.load_source("mnist", "test" if part == "test" else "train", data_dir, 10)
    train, test = (mnist.load_source("mnist", s, data_dir, 10) for s in ("train", "test"))
    return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])


def load_pairs(name: str, split: str, data_dir: pathlib.Path, *, per_pair: int, seed: int, pool: str,
               holdout: str = "test") -> Split:
    """The ``pairmnist`` or ``pairmnist64`` split, from the cache or built and cached."""
    spec = get_spec(name)
    layout = LAYOUT_OF[name]
    parts = HOLDOUTS[holdout][split]
    sources = ("train", "test") if pool == "pooled" else (("test",) if "test" in parts else ("train",))

    def build() -> Dict[str, np.ndarray]:
        pairs = pair_split(seed)
        chunks = []
        for part in parts:
            images, labels = _pool(part, pool, data_dir)
            composites, arrays = make_pairs(images, labels, pairs[part], per_pair, (seed, _STREAM[part]), layout)
            arrays["environment"] = np.full(len(composites), ENVIRONMENTS[part], np.int64)
            chunks.append({"images": composites, **arrays})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    key = {"dataset": name, "split": split, "per_pair": per_pair, "seed": seed, "pool": pool, "layout": layout,
           "parts": list(parts), "sources": [mnist.source_digest("mnist", s) for s in sources], "version": _VERSION}
    arrays = cache.cached_arrays(f"{name}-{split}-{per_pair}", key, build)
    labels = {task: arrays.pop(task) for task in spec.task_names}
    return Split(arrays.pop("images"), labels, spec, extras=arrays)
