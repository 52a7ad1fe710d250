"""Reading IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the data. Only
unsigned bytes (type code 0x08) occur in MNIST-style data and are supported.
"""
from __future__ import annotations

import gzip
import hashlib
import pathlib
import zlib
from typing import Optional, Sequence

import numpy as np

from .errors import DataError

__all__ = ["read_idx", "decompressed_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def decompressed_bytes(path: pathlib.Path) -> bytes:
    """The file's content, gunzipped when it is gzip data (whatever its name)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip data ({error})") from error


def _parse(data: bytes, path: pathlib.Path) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or not 1 <= data[3] <= 4:
        raise DataError(f"{path}: bad IDX magic number {data[:4].hex() or '(empty file)'}; "
                        f"expected 000008 followed by the number of dimensions (1-4)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: the header says dimensions {dims}, i.e. {expected} bytes, "
                        f"but the (decompressed) file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: pathlib.Path, sha256: Optional[str] = None,
             shape: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
    """The uint8 array stored in the IDX file at ``path`` (read-only).

    sha256: if given, the expected SHA-256 of the decompressed bytes.
    shape:  if given, the expected shape (``None`` for any size along an axis).
    Raises ``DataError`` naming the file for a bad magic number, wrong sizes,
    truncation, an unexpected shape or a checksum mismatch.
    """
    path = pathlib.Path(path)
    data = decompressed_bytes(path)
    array = _parse(data, path)
    if shape is not None and (len(shape) != array.ndim
                              or any(s is not None and s != d for s, d in zip(shape, array.shape))):
        raise DataError(f"{path}: has shape {array.shape}, expected {tuple(shape)}")
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise DataError(f"{path}: checksum mismatch: SHA-256 of the decompressed content is {actual}, "
                            f"expected {sha256} (a different or corrupted file; replace it)")
    return array
