"""Load both splits of a data set and print what was loaded and how long it took.

    python -m tf_mtvib.datasets --dataset multimnist [--data-dir D] [--option KEY=VALUE ...] [--fresh-cache]

The first load of each split builds (or decodes) and caches; the second is
served from the cache. ``--fresh-cache`` uses an empty temporary cache so the
first load is cold whatever was cached before.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .loading import SPLITS, load
from .paths import CACHE_DIR_ENV, resolve_data_dir
from .spec import dataset_names
from .split import Split


def _timed_load(name: str, data_dir, options: Dict[str, Any]) -> Tuple[float, Dict[str, Split]]:
    start = time.perf_counter()
    splits = {split: load(name, split, data_dir, **options) for split in SPLITS}
    for split in splits.values():  # touch the pixels: a memory-mapped cache must be read too
        np.asarray(split.images).max()
    return time.perf_counter() - start, splits


def time_load(name: str, data_dir=None, **options: Any) -> Dict[str, Any]:
    """Load both splits twice; ``{"first_s", "cached_s", "splits"}``."""
    first, _ = _timed_load(name, data_dir, options)
    cached, splits = _timed_load(name, data_dir, options)
    return {"first_s": first, "cached_s": cached, "splits": splits}


def describe(split: Split) -> str:
    """Count, shape and per-task label histogram of a split."""
    lines = [f"{len(split)} items, images {split.images.dtype} {tuple(split.images.shape)}"]
    for task in split.spec.tasks:
        labels = np.asarray(split.labels[task.name])
        own = labels[labels >= 0]             # tasks with their own images: -1 on the other tasks' examples
        counts = np.bincount(own, minlength=task.num_classes)
        mine = f" ({len(own)} of its own)" if len(own) < len(labels) else ""
        lines.append(f"  {task.name}{mine}: " + ", ".join(f"{c}={n}" for c, n in zip(task.class_names, counts)))
    return "\n".join(lines)


@contextlib.contextmanager
def _fresh_cache(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous: Optional[str] = os.environ.get(CACHE_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="tf_mtvib_cache_") as tmp:
        os.environ[CACHE_DIR_ENV] = tmp
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(CACHE_DIR_ENV, None)
            else:
                os.environ[CACHE_DIR_ENV] = previous


def _parse_option(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        return key, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tf_mtvib.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=dataset_names())
    parser.add_argument("--data-dir", default=None, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    parser.add_argument("--option", "-o", action="append", type=_parse_option, default=[],
                        metavar="KEY=VALUE", help="a load() option, e.g. protocol=official")
    parser.add_argument("--fresh-cache", action="store_true", help="time a cold load with an empty cache")
    args = parser.parse_args(argv)
    options = dict(args.option)
    with _fresh_cache(args.fresh_cache):
        result = time_load(args.dataset, args.data_dir, **options)
    print(f"{args.dataset}{' ' + str(options) if options else ''} from {resolve_data_dir(args.data_dir)}")
    for split, data in result["splits"].items():
        print(f"{split}: {describe(data)}")
    first = "cold" if args.fresh_cache else "first"
    print(f"load time, both splits: {first} {result['first_s']:.2f} s, cached {result['cached_s']:.2f} s")


if __name__ == "__main__":
    main()
