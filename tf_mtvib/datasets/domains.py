"""Digit domains: an offline benchmark with Office-Home's structure, for VMTL (Shen et al. 2021).

VMTL's data sets (Office-Home, Office-Caltech, ImageCLEF, DomainNet, as VGG16 features) cannot be had
here. Office-Home is 4 domains (Art, Clipart, Product, Real-World) that share 65 classes; each domain is a
task with its own images, trained on 5, 10 or 20 % of them and tested on the rest (the MRN split lists).
``digitdomains`` keeps that structure with local files:

* 4 domains, each a task, sharing the 10 digit classes; each its own MNIST *train* digits, disjoint
  across domains (``per_domain`` per domain, default 1,000: 100 per class, against Office-Home's ~60);
* rendered four ways: ``original``; ``rotated`` (90 degrees counter-clockwise); ``negative``
  (255 - x); ``textured`` (the digit over a Fashion-MNIST *test* image at half intensity,
  ``max(digit, texture // 2)``, one random texture per digit);
* ``fraction`` of each domain's images, per class (``round(fraction * n_c)``, so every class has
  training images: a class left with none is an error), form the train split; the rest the test split;
* the features come from an extractor trained on Fashion-MNIST's *train* split and then frozen
  (:mod:`tf_mtvib.extractor`), as VGG16-on-ImageNet is for Office-Home: a different data set from
  the tasks', never trained on them.

A split's examples belong to one task each: a task's labels are ``-1`` (``MISSING_LABEL``) on the other
tasks' examples, and the extra ``task`` holds the domain's index (the multi-input batches'
task id). ``source_index`` holds the digit's index in MNIST train, ``texture_index`` the Fashion-MNIST
test image behind a textured digit (-1 elsewhere). Cached on disk, keyed by every option and the
source files' digests.

:func:`read_office_home` reads the official Office-Home features (one ``.npy`` of 4,096 floats per
image under ``office-home_feature/<Domain>/<Class>/<file>.npy``) with the MRN split lists
(``<Domain>/train_5.txt`` ..., lines ``<path> <label>``, the paths absolute on the authors' machine),
for users who have them.
"""
from __future__ import annotations

import pathlib
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import cache, mnist
from .errors import DataError
from .spec import get_spec
from .split import Split

__all__ = ["DOMAINS", "FRACTIONS", "NAME", "render", "domain_indices", "fraction_split", "load_domains",
           "per_task_splits", "read_office_home", "OFFICE_HOME_DOMAINS"]

NAME = "digitdomains"
#: The tasks, in order (their index is the extra ``task``)
DOMAINS = ("original", "rotated", "negative", "textured")
#: The training fractions of VMTL's tables (supplement Tables C.4-C.6: 5, 10 and 20 %)
FRACTIONS = (0.05, 0.1, 0.2)
#: Office-Home's domains, as the official split lists name them
OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real_World")
MISSING = -1
#: Bump when the construction changes, so that old cache entries are not used.
_VERSION = 1


def render(domain: str, digits: np.ndarray, textures: Optional[np.ndarray] = None) -> np.ndarray:
    """The digits ``(N, 28, 28, 1)`` uint8 rendered in ``domain`` (``textures``: one per digit, for
    ``textured``)."""
    if domain == "original":
        return digits.copy()
    if domain == "rotated":
        return np.rot90(digits, k=1, axes=(1, 2)).copy()
    if domain == "negative":
        return (255 - digits).astype(np.uint8)
    if domain == "textured":
        if textures is None or len(textures) != len(digits):
            raise ValueError("the textured domain needs one texture per digit")
        return np.maximum(digits, textures // 2).astype(np.uint8)
    raise ValueError(f"unknown domain {domain!r}; choose one of: {', '.join(DOMAINS)}")


def domain_indices(num_source: int, per_domain: int, seed: int, num_domains: int = len(DOMAINS)) -> np.ndarray:
    """``(num_domains, per_domain)`` disjoint indices into the digit source, one seeded draw."""
    if per_domain * num_domains > num_source:
        raise DataError(f"per_domain={per_domain} x {num_domains} domains needs {per_domain * num_domains:,} "
                        f"digits; the source has {num_source:,}")
    rng = np.random.default_rng([int(seed), 0xD0])
    return rng.permutation(num_source)[:per_domain * num_domains].reshape(num_domains, per_domain)


def fraction_split(labels: np.ndarray, fraction: float, seed, task: str = "task") -> np.ndarray:
    """Boolean mask of the training examples: per class, ``round(fraction * n_c)`` of its ``n_c`` examples,
    drawn with ``seed``. Raises :class:`DataError` when a class would have none."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * len(rows)))
        if k < 1:
            raise DataError(f"task {task!r} has no training images of class {c} at fraction {fraction:g} "
                            f"({len(rows)} images of the class); raise the fraction or per_domain")
        if k == len(rows):
            raise DataError(f"task {task!r} keeps no test images of class {c} at fraction {fraction:g}")
        train[rng.choice(rows, size=k, replace=False)] = True
    return train


def load_domains(split: str, data_dir: pathlib.Path, *, per_domain: int, fraction: float, seed: int) -> Split:
    """The ``digitdomains`` split ("train": ``fraction`` of each domain, "test": the rest)."""
    spec = get_spec(NAME)
    fraction = float(fraction)

    def build() -> Dict[str, np.ndarray]:
        digits, labels = mnist.load_source("mnist", "train", data_dir, 10)
        textures, _ = mnist.load_source("fashion-mnist", "test", data_dir, 10)
        index = domain_indices(len(digits), per_domain, seed)
        rng = np.random.default_rng([int(seed), 0xD1])
        chunks = []
        for k, domain in enumerate(DOMAINS):
            rows = index[k]
            tex = rng.integers(0, len(textures), size=len(rows)) if domain == "textured" else None
            images = render(domain, digits[rows], textures[tex] if tex is not None else None)
            y = labels[rows]
            train = fraction_split(y, fraction, [int(seed), 0xD2, k], task=domain)
            keep = train if split == "train" else ~train
            chunk = {"images": images[keep], "task": np.full(int(keep.sum()), k, np.int64),
                     "source_index": rows[keep].astype(np.int64),
                     "texture_index": (tex[keep] if tex is not None else np.full(int(keep.sum()), MISSING)).astype(np.int64)}
            for j, name in enumerate(DOMAINS):
                chunk[name] = y[keep] if j == k else np.full(int(keep.sum()), MISSING, np.int64)
            chunks.append(chunk)
        return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}

    key = {"dataset": NAME, "split": split, "per_domain": per_domain, "fraction": fraction, "seed": seed,
           "sources": [mnist.source_digest("mnist", "train"), mnist.source_digest("fashion-mnist", "test")],
           "version": _VERSION}
    arrays = cache.cached_arrays(f"{NAME}-{split}-{per_domain}-{fraction:g}", key, build)
    labels = {task: arrays.pop(task) for task in spec.task_names}
    return Split(arrays.pop("images"), labels, spec, extras=arrays)


def per_task_splits(split: Split, task_key: str = "task") -> Dict[str, Split]:
    """``{task: the examples of that task}`` of a split whose examples each belong to one task (the extra
    ``task_key`` holds the task's index in ``split.spec.task_names``): the input of
    :func:`tf_mtvib.datasets.to_multi_input_dataset`."""
    if task_key not in split.extras:
        raise DataError(f"the {split.spec.name} split has no extra {task_key!r}: its examples are not per task")
    ids = np.asarray(split.extras[task_key])
    out = {}
    for k, name in enumerate(split.spec.task_names):
        rows = np.flatnonzero(ids == k)
        if len(rows) == 0:
            raise DataError(f"task {name!r} has no examples in this {split.spec.name} split")
        out[name] = split.subset(rows)
    return out


def _relative(path: str) -> Tuple[str, str, str]:
    """``(domain, class, stem)`` of a split list's path: its last three components, whatever the prefix."""
    parts = pathlib.PurePosixPath(path.strip().replace("\\", "/")).parts
    if len(parts) < 3:
        raise DataError(f"split list path {path!r} has no <domain>/<class>/<file> ending")
    return parts[-3], parts[-2], pathlib.PurePosixPath(parts[-1]).stem


def read_office_home(feature_root: pathlib.Path, split_root: pathlib.Path, percent: int = 5,
                     domains: Sequence[str] = OFFICE_HOME_DOMAINS) -> Dict[str, Dict[str, Mapping[str, np.ndarray]]]:
    """The official Office-Home VGG16 features with the MRN split lists.

    ``split_root/<Domain>/train_<percent>.txt`` and ``test_<percent>.txt`` list ``<path> <label>``; each
    path (absolute, on another machine) is mapped by its domain/class/file ending to
    ``feature_root/<Domain>/<Class>/<file>.npy``. Returns ``{domain: {"train"|"test": {"features":
    (N, D) float32, "labels": (N,) int64}}}``. Raises :class:`DataError` for a missing list or feature
    file, or when the domains' label sets differ.
    """
    feature_root, split_root = pathlib.Path(feature_root), pathlib.Path(split_root)
    out: Dict[str, Dict[str, Mapping[str, np.ndarray]]] = {}
    for domain in domains:
        out[domain] = {}
        for part in ("train", "test"):
            listing = split_root / domain / f"{part}_{percent}.txt"
            if not listing.is_file():
                raise DataError(f"no split list {listing}")
            features, labels = [], []
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split()
                if len(fields) != 2:
                    raise DataError(f"{listing}:{n}: expected '<path> <label>', got {line!r}")
                d, c, stem = _relative(fields[0])
                path = feature_root / d / c / f"{stem}.npy"
                if not path.is_file():
                    raise DataError(f"{listing}:{n}: no feature file {path} for {fields[0]}")
                features.append(np.load(path).astype(np.float32).reshape(-1))
                labels.append(int(fields[1]))
            if not features:
                raise DataError(f"{listing} lists no images")
            dims = {f.shape[0] for f in features}
            if len(dims) != 1:
                raise DataError(f"{listing}: feature files differ in length ({sorted(dims)})")
            out[domain][part] = {"features": np.stack(features), "labels": np.asarray(labels, np.int64)}
    label_sets = {d: tuple(np.unique(np.concatenate([p["labels"] for p in v.values()]))) for d, v in out.items()}
    if len(set(label_sets.values())) != 1:
        raise DataError("the tasks' label sets differ: " + "; ".join(f"{d}: {len(s)} classes" for d, s in label_sets.items()))
    return out
