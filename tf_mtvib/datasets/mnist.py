"""MNIST and Fashion-MNIST: the IDX source files, identified by content.

Used directly by the ``mnist`` data set and as the sources of the
``multimnist`` / ``multifashion`` composites.
"""
from __future__ import annotations

import hashlib
import pathlib
from typing import Dict, Tuple

import numpy as np

from .errors import DataError
from .fetch import Remote, require_files
from .idx import read_idx
from .spec import get_spec
from .split import Split

__all__ = ["SOURCES", "SOURCE_SIZES", "source_digest", "load_source", "load_mnist"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Items per split, the same for both sources.
SOURCE_SIZES = {"train": 60_000, "test": 10_000}
_IMAGE_SIZE = 28

SOURCES: Dict[str, Remote] = {
    "mnist": Remote(
        "MNIST", "mnist",
        ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        tuple(f"{f}.gz" for files in _FILES.values() for f in files)),
    "fashion-mnist": Remote(
        "Fashion-MNIST", "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        tuple(f"{f}.gz" for files in _FILES.values() for f in files)),
}

#: SHA-256 of each IDX file's decompressed content. (Cross-check: the MD5s of
#: the decompressed MNIST files are the canonical 6bbc9ace.../a25bea73.../2646ac64...)
_SHA256: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


def source_digest(source: str, split: str) -> str:
    """One digest for the content of a source split (its images and labels files)."""
    return hashlib.sha256("".join(_SHA256[source][f] for f in _FILES[split]).encode()).hexdigest()


def load_source(source: str, split: str, data_dir: pathlib.Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Verified images (N, 28, 28, 1) uint8 and labels (N,) int64 of ``source``
    ("mnist" or "fashion-mnist") split ``split`` ("train" or "test")."""
    remote = SOURCES[source]
    image_file, label_file = _FILES[split]
    paths = require_files(data_dir, remote, {f"{f}.gz": (f,) for f in (image_file, label_file)})
    n = SOURCE_SIZES[split]
    images = read_idx(paths[f"{image_file}.gz"], _SHA256[source][image_file], (n, _IMAGE_SIZE, _IMAGE_SIZE))
    labels = read_idx(paths[f"{label_file}.gz"], _SHA256[source][label_file], (n,))
    if labels.max() >= num_classes:
        raise DataError(f"{paths[f'{label_file}.gz']}: label {labels.max()} out of range [0, {num_classes})")
    return images[..., None], labels.astype(np.int64)


def load_mnist(split: str, data_dir: pathlib.Path) -> Split:
    """The single-task ``mnist`` data set."""
    spec = get_spec("mnist")
    (task,) = spec.tasks
    images, labels = load_source("mnist", split, data_dir, task.num_classes)
    return Split(images, {task.name: labels}, spec)
