"""On-disk cache of derived arrays (composites, decoded images), keyed by content.

A cache entry's file name holds a digest of everything the arrays depend on
(parameters, source digests, a format version), so changing any of them makes
a new entry instead of returning a stale one. Files are written to a temporary
name and renamed, so a crashed run never leaves a half-written entry behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile
import warnings
import zipfile
from typing import Any, Callable, Dict, Iterator, Mapping, Tuple

import numpy as np

from .paths import cache_dir, is_writable_dir

__all__ = ["entry_path", "cached_arrays", "cached_array"]


def entry_path(prefix: str, key: Mapping[str, Any], suffix: str) -> pathlib.Path:
    """The cache file for ``key`` (a JSON-serialisable mapping)."""
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{prefix}-{digest}{suffix}"


@contextlib.contextmanager
def _atomic_target(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` on success."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes it private; a cache entry is not a secret
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _warn_unusable(path: pathlib.Path, error: BaseException) -> None:
    warnings.warn(f"ignoring unreadable cache file {path} ({error}); rebuilding it", RuntimeWarning, stacklevel=3)


def cached_arrays(prefix: str, key: Mapping[str, Any],
                  build: Callable[[], Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """A dict of arrays from the cache (an ``.npz`` file), or ``build()`` it and store it."""
    path = entry_path(prefix, key, ".npz")
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            _warn_unusable(path, error)
    arrays = build()
    if is_writable_dir(path.parent):
        with _atomic_target(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        warnings.warn(f"cache directory {path.parent} is not writable; not caching", RuntimeWarning, stacklevel=2)
    return arrays


def cached_array(prefix: str, key: Mapping[str, Any], shape: Tuple[int, ...], dtype: Any,
                 fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """One large array from the cache (an ``.npy`` file, memory-mapped read-only),
    or made by ``fill(out)`` writing into a fresh array of ``shape`` and ``dtype``.

    ``fill`` writes straight into the memory-mapped cache file, so the array
    is never held in memory twice.
    """
    path = entry_path(prefix, key, ".npy")
    if path.exists():
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.shape == tuple(shape) and array.dtype == np.dtype(dtype):
                return array
            raise ValueError(f"holds {array.dtype} {array.shape}, expected {np.dtype(dtype)} {tuple(shape)}")
        except (OSError, ValueError, EOFError) as error:
            _warn_unusable(path, error)
    if not is_writable_dir(path.parent):
        warnings.warn(f"cache directory {path.parent} is not writable; not caching", RuntimeWarning, stacklevel=2)
        out = np.empty(shape, dtype)
        fill(out)
        return out
    with _atomic_target(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        fill(out)
        out.flush()
        del out
    return np.load(path, mmap_mode="r", allow_pickle=False)
