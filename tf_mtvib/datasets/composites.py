"""MultiMNIST / MultiFashion: two source images on one canvas (Lin et al. 2019).

Placement scheme (per composite, sizes for 28x28 sources on the 36x36 canvas
and ``max_shift`` = 4; ``slack`` = canvas - source = 8):

* two source images of *different* classes are drawn: the first uniformly
  from the whole source split, the second uniformly from the items of every
  other class;
* the top-left item sits at (row, col) offset (u_y, u_x), the bottom-right
  item at (slack - v_y, slack - v_x), with u_y, u_x, v_y, v_x independent
  and uniform in {0, ..., max_shift}: each item starts flush in its corner
  and moves up to ``max_shift`` pixels towards the centre along each axis,
  always fully inside the canvas (top-left offsets 0..4, bottom-right 4..8);
* the two placed images are combined by pixel-wise maximum.

Train composites are built only from source train images, test composites
only from source test images (``load`` passes the source split). The result
is deterministic given the seed and is cached on disk, keyed by every
parameter and the source content digest.
"""
from __future__ import annotations

import pathlib
from typing import Dict, Optional, Tuple

import numpy as np

from . import cache, mnist
from .spec import get_spec
from .split import Split

__all__ = ["SOURCE_OF", "make_composites", "load_composites"]

#: The source data set of each composite data set.
SOURCE_OF = {"multimnist": "mnist", "multifashion": "fashion-mnist"}

#: Bump when the construction changes, so that old cache entries are not used.
_VERSION = 1
_SPLIT_STREAM = {"train": 0, "test": 1}


def _draw_pairs(rng: np.random.Generator, labels: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source indices (i, j) with labels[i] != labels[j]: i uniform over all items,
    j uniform over the items of the other classes (exact, no rejection loop)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.cumsum(counts) - counts
    first = rng.integers(len(labels), size=n)
    cls = labels[first]
    others = len(labels) - counts[cls]
    if np.any(others == 0):
        raise ValueError("composites need source items of at least two classes")
    r = rng.integers(0, others)  # position among the other classes' items, in class order
    second = order[r + (r >= starts[cls]) * counts[cls]]
    return first, second


def _place(canvas: np.ndarray, images: np.ndarray, offsets: np.ndarray) -> None:
    """canvas[k] = max(canvas[k], images[k] placed at offsets[k]), grouped by offset."""
    h, w = images.shape[1:3]
    for dy, dx in np.unique(offsets, axis=0):
        sel = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        window = (sel, slice(dy, dy + h), slice(dx, dx + w))
        canvas[window] = np.maximum(canvas[window], images[sel])


def make_composites(images: np.ndarray, labels: np.ndarray, n: int, seed, max_shift: int = 4,
                    canvas_size: Optional[int] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
    """Build ``n`` composites from ``images`` (N, H, W[, 1]) uint8 with ``labels`` (N,).

    seed: anything ``np.random.default_rng`` accepts (an int, a tuple of ints).
    canvas_size: side of the square canvas; by default H + 2 * max_shift.
    Returns (composites (n, S, S, 1) uint8, labels_tl, labels_br, meta) where meta
    holds ``index_tl``/``index_br`` (source indices, int64 (n,)) and
    ``offset_tl``/``offset_br`` ((row, col) of each item's top-left pixel, int64 (n, 2)).
    """
    if images.ndim == 4:
        images = images[..., 0]
    h, w = images.shape[1:3]
    size = h + 2 * max_shift if canvas_size is None else canvas_size
    slack = size - max(h, w)
    if not 0 <= max_shift <= slack:
        raise ValueError(f"max_shift must be in [0, {slack}] for {h}x{w} sources on a {size}x{size} canvas")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    index_tl, index_br = _draw_pairs(rng, labels, n)
    offset_tl = rng.integers(0, max_shift + 1, size=(n, 2))
    offset_br = (size - np.array([h, w])) - rng.integers(0, max_shift + 1, size=(n, 2))
    canvas = np.zeros((n, size, size), np.uint8)
    _place(canvas, images[index_tl], offset_tl)
    _place(canvas, images[index_br], offset_br)
    meta = {"index_tl": index_tl, "index_br": index_br,
            "offset_tl": offset_tl.astype(np.int64), "offset_br": offset_br.astype(np.int64)}
    return canvas[..., None], labels[index_tl], labels[index_br], meta


def load_composites(name: str, split: str, data_dir: pathlib.Path, *, num_train: int, num_test: int,
                    seed: int, max_shift: int) -> Split:
    """The ``multimnist`` or ``multifashion`` split, from the cache or built and cached
    (``load`` supplies the option defaults)."""
    spec = get_spec(name)
    top_left, bottom_right = spec.task_names
    source = SOURCE_OF[name]
    n = num_train if split == "train" else num_test
    size = spec.input_shape[0]

    def build() -> Dict[str, np.ndarray]:
        images, labels = mnist.load_source(source, split, data_dir, spec.task(top_left).num_classes)
        composites, labels_tl, labels_br, meta = make_composites(
            images, labels, n, (seed, _SPLIT_STREAM[split]), max_shift, canvas_size=size)
        return {"images": composites, top_left: labels_tl, bottom_right: labels_br, **meta}

    key = {"dataset": name, "split": split, "n": n, "seed": seed, "max_shift": max_shift,
           "canvas": size, "source": mnist.source_digest(source, split), "version": _VERSION}
    arrays = cache.cached_arrays(f"{name}-{split}-{n}", key, build)
    labels = {task: arrays.pop(task) for task in spec.task_names}
    return Split(arrays.pop("images"), labels, spec, extras=arrays)
