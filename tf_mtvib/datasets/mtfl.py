"""MTFL (Zhang et al. 2014): face images with gender, smile, glasses and pose labels.

Read from ``<data_dir>/mtfl/MTFL.zip`` or an extracted ``<data_dir>/mtfl/MTFL/``
folder, files exactly as distributed: annotation lines
``path x1..x5 y1..y5 gender smile glasses pose`` with CRLF line ends, leading
spaces and Windows back-slashes in the paths; labels 1-based in the files,
0-based here. The annotation files are identified by their SHA-256 and the
number of images they list, which must all be present.

All 12,995 images (training.txt lines, then testing.txt lines) are decoded
once per image size, resized to a square (bilinear, antialiased) uint8 RGB
array and cached; the protocols then select from that array:

* ``official``: training.txt (10,000) / testing.txt (2,995);
* ``paper``: 9,000 train / 1,000 test drawn with ``seed`` from training.txt,
  stratified on collection x the four labels (``split.SUBSET_RULE``), so
  both parts mix lfw_5590 and net_7876 and every class in proportion.

Each split's ``extras`` hold ``landmarks`` (float32 (N, 10)) and
``collection`` (int64 (N,), an index into ``COLLECTIONS``: the source
collection, the first folder of the image path).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import pathlib
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from . import cache
from .errors import DataError
from .fetch import Remote, require_files
from .spec import DatasetSpec, Task, get_spec
from .split import Split, stratified_indices

__all__ = ["REMOTE", "ANNOTATION_FILES", "PROTOCOLS", "PAPER_TEST_SIZE", "COLLECTIONS", "Annotations", "open_mtfl", "parse_annotations",
           "read_annotations", "collection_codes", "decode_images", "load_mtfl_from", "load_mtfl"]

REMOTE = Remote("MTFL", "mtfl", ("http://mmlab.ie.cuhk.edu.hk/projects/TCDCN/data/",), ("MTFL.zip",))

#: The annotation file of each official split and its SHA-256.
ANNOTATION_FILES = {"train": "training.txt", "test": "testing.txt"}
_ANNOTATION_SHA256 = {
    "training.txt": "3631e6fa753e8934e18ff9ff435ade3fdcbf4a45460d7598d7812507977530d5",
    "testing.txt": "91e3ddbf2fe394728a2c4307de800b77f53bfb9dd1a67d32ff3916ff40f41476",
}
_NUM_IMAGES = 12_995
PROTOCOLS = ("paper", "official")
PAPER_TEST_SIZE = 1_000
#: The source collections of MTFL's images (the first folder of each path).
COLLECTIONS = ("lfw_5590", "net_7876", "AFLW")
_NUM_LANDMARK_COORDS = 10
_DECODE_THREADS = 2
_VERSION = 1  # bump when decoding/resizing changes


class _Archive:
    """The MTFL files inside ``MTFL.zip`` (members under ``MTFL/``)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable zip file ({error})") from error
        self._names = set(self._zip.namelist())
        self._prefix = "MTFL/" if "MTFL/training.txt" in self._names else ""

    def where(self, name: str) -> str:
        return f"{self.path}:{self._prefix}{name}"

    def exists(self, name: str) -> bool:
        return self._prefix + name in self._names

    def read(self, name: str) -> bytes:
        try:
            return self._zip.read(self._prefix + name)
        except KeyError:
            raise DataError(f"{self.where(name)}: not in the archive") from None
        except (OSError, zipfile.BadZipFile, EOFError) as error:  # e.g. bad CRC, truncated member
            raise DataError(f"{self.where(name)}: cannot read ({error})") from error

    def reopen(self) -> "_Archive":
        """A separate handle, for use from another thread."""
        return _Archive(self.path)

    def close(self) -> None:
        self._zip.close()


class _Folder:
    """The MTFL files in an extracted ``MTFL/`` folder."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def where(self, name: str) -> str:
        return str(self.path / name)

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as error:
            raise DataError(f"{self.where(name)}: cannot read ({error})") from error

    def reopen(self) -> "_Folder":
        return self

    def close(self) -> None:
        pass


def open_mtfl(path: pathlib.Path):
    """A reader for ``MTFL.zip`` or an extracted ``MTFL/`` folder."""
    path = pathlib.Path(path)
    return _Folder(path) if path.is_dir() else _Archive(path)


@dataclasses.dataclass
class Annotations:
    """The parsed lines of one annotation file."""

    source: str                  # the file, for messages
    paths: List[str]             # image paths relative to the MTFL root, '/'-separated
    line_numbers: List[int]      # 1-based line of each image
    landmarks: np.ndarray        # float32 (N, 10): x1..x5, y1..y5 in original image pixels
    labels: Dict[str, np.ndarray]  # int64 (N,), 0-based, keyed by task name
    sha256: str


def _parse_line(fields: Sequence[str], tasks: Sequence[Task], where: str) -> Tuple[List[float], List[int]]:
    try:
        coords = [float(f) for f in fields[1:1 + _NUM_LANDMARK_COORDS]]
    except ValueError:
        raise DataError(f"{where}: landmark coordinates are not numbers: {' '.join(fields[1:11])}") from None
    labels = []
    for task, field in zip(tasks, fields[1 + _NUM_LANDMARK_COORDS:]):
        try:
            value = int(field) - 1
        except ValueError:
            value = -1
        if not 0 <= value < task.num_classes:
            raise DataError(f"{where}: {task.name} label {field!r} is not one of 1..{task.num_classes}")
        labels.append(value)
    return coords, labels


def parse_annotations(data: bytes, source: str, tasks: Sequence[Task]) -> Annotations:
    """Parse the bytes of an annotation file (``source`` names it in messages)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not an MTFL annotation file (not ASCII text: {error})") from None
    num_fields = 1 + _NUM_LANDMARK_COORDS + len(tasks)
    paths, lines, coords, labels = [], [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # the files end with a line holding a single space
        where = f"{source}, line {number}"
        if len(fields) != num_fields:
            raise DataError(f"{where}: expected {num_fields} fields (path, {_NUM_LANDMARK_COORDS} landmark "
                            f"coordinates, {len(tasks)} labels), got {len(fields)}")
        xy, values = _parse_line(fields, tasks, where)
        paths.append(fields[0].replace("\\", "/"))
        lines.append(number)
        coords.append(xy)
        labels.append(values)
    if not paths:
        raise DataError(f"{source}: lists no images")
    columns = np.array(labels, dtype=np.int64)
    return Annotations(source, paths, lines, np.array(coords, dtype=np.float32),
                       {task.name: columns[:, k] for k, task in enumerate(tasks)},
                       hashlib.sha256(data).hexdigest())


def read_annotations(reader, name: str, tasks: Sequence[Task], sha256: Optional[str] = None) -> Annotations:
    """Read, parse and check one annotation file: its digest (if ``sha256`` is given)
    and that every image it lists is present."""
    annotations = parse_annotations(reader.read(name), reader.where(name), tasks)
    if sha256 is not None and annotations.sha256 != sha256:
        raise DataError(f"{reader.where(name)}: checksum mismatch: SHA-256 {annotations.sha256}, expected {sha256} "
                        f"(not the MTFL v1.0 annotations, or corrupted)")
    missing = [(p, n) for p, n in zip(annotations.paths, annotations.line_numbers) if not reader.exists(p)]
    if missing:
        listed = "; ".join(f"{p} (line {n})" for p, n in missing[:5])
        raise DataError(f"{reader.where(name)}: {len(missing)} listed image(s) missing, e.g. {listed}")
    return annotations


def _decode_one(reader, path: str, size: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(reader.read(path))) as image:
            image.load()
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{reader.where(path)} (listed at {where}): cannot decode the image ({error})") from error
    return np.asarray(rgb, dtype=np.uint8)


def decode_images(reader, paths: Sequence[str], origins: Sequence[str], size: int, out: np.ndarray,
                  threads: int = _DECODE_THREADS) -> None:
    """Decode ``paths`` into ``out`` (N, size, size, 3) uint8, RGB, resized with an
    antialiased bilinear filter; ``origins`` says where each was listed (for messages)."""
    def work(chunk: range) -> None:
        own = reader.reopen()
        try:
            for k in chunk:
                out[k] = _decode_one(own, paths[k], size, origins[k])
        finally:
            if own is not reader:
                own.close()

    step = max(1, -(-len(paths) // (threads * 8)))
    chunks = [range(start, min(start + step, len(paths))) for start in range(0, len(paths), step)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work, chunk) for chunk in chunks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def collection_codes(annotations: Annotations) -> np.ndarray:
    """The index in ``COLLECTIONS`` of each image's source collection (int64 (N,))."""
    codes = []
    for path, line in zip(annotations.paths, annotations.line_numbers):
        name = path.split("/", 1)[0]
        if name not in COLLECTIONS:
            raise DataError(f"{annotations.source}, line {line}: image {path} is in no MTFL collection "
                            f"({', '.join(COLLECTIONS)})")
        codes.append(COLLECTIONS.index(name))
    return np.array(codes, dtype=np.int64)


def _protocol_indices(protocol: str, num_train_lines: int, num_test_lines: int, seed: int,
                      strata: Sequence[np.ndarray] = ()) -> Dict[str, np.ndarray]:
    """Rows of the (training.txt + testing.txt) array that make up each split.

    strata: columns over the training.txt lines the paper draw is stratified on
    (collection and labels); none: a uniform draw.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"MTFL protocol must be one of {PROTOCOLS}; got {protocol!r}")
    if protocol == "official":
        return {"train": np.arange(num_train_lines),
                "test": np.arange(num_train_lines, num_train_lines + num_test_lines)}
    if num_train_lines <= PAPER_TEST_SIZE:
        raise DataError(f"the paper protocol needs more than {PAPER_TEST_SIZE} training images; "
                        f"training.txt lists {num_train_lines}")
    test = stratified_indices(list(strata) or [np.zeros(num_train_lines, np.int64)], PAPER_TEST_SIZE, seed)
    return {"train": np.setdiff1d(np.arange(num_train_lines), test), "test": test}


def _sized_spec(spec: DatasetSpec, size: int) -> DatasetSpec:
    """``spec`` with its input shape set to size x size."""
    if spec.input_shape[:2] == (size, size):
        return spec
    return dataclasses.replace(spec, input_shape=(size, size, spec.input_shape[2]))


def _all_annotations(reader, tasks: Sequence[Task], sha256: Optional[Dict[str, str]],
                     num_images: Optional[int]) -> List[Annotations]:
    """training.txt and testing.txt, checked (digests, images present, total count)."""
    names = (ANNOTATION_FILES["train"], ANNOTATION_FILES["test"])
    parts = [read_annotations(reader, name, tasks, (sha256 or {}).get(name)) for name in names]
    total = sum(len(a.paths) for a in parts)
    if num_images is not None and total != num_images:
        raise DataError(f"{reader.where(names[0])} and {names[1]} list {total} images, expected {num_images}")
    return parts


def _decoded_images(reader, parts: Sequence[Annotations], size: int, channels: int) -> np.ndarray:
    """Every listed image, decoded at ``size`` -- from the cache when it is there."""
    paths = [p for a in parts for p in a.paths]
    origins = [f"{a.source}, line {n}" for a in parts for n in a.line_numbers]
    key = {"annotations": [a.sha256 for a in parts], "size": size, "version": _VERSION}
    return cache.cached_array(f"mtfl-{size}", key, (len(paths), size, size, channels), np.uint8,
                              lambda out: decode_images(reader, paths, origins, size, out))


def load_mtfl_from(path: pathlib.Path, split: str, protocol: str, image_size: Optional[int] = None,
                   seed: int = 0, sha256: Optional[Dict[str, str]] = None,
                   num_images: Optional[int] = None) -> Split:
    """An MTFL split from ``path`` (``MTFL.zip`` or an extracted ``MTFL/`` folder).

    image_size: side of the square images (default: the spec's).
    sha256 / num_images: the expected annotation digests (by file name) and total
    image count; ``None`` skips those checks (used for hand-made test data).
    """
    spec = get_spec("mtfl")
    size = spec.input_shape[0] if image_size is None else image_size
    reader = open_mtfl(path)
    try:
        parts = _all_annotations(reader, spec.tasks, sha256, num_images)
        images = _decoded_images(reader, parts, size, spec.input_shape[2])
    finally:
        reader.close()
    collection = np.concatenate([collection_codes(a) for a in parts])
    training = parts[0]
    strata = [collection[:len(training.paths)], *(training.labels[task] for task in spec.task_names)]
    rows = _protocol_indices(protocol, len(training.paths), len(parts[1].paths), seed, strata)[split]
    labels = {task: np.concatenate([a.labels[task] for a in parts])[rows] for task in spec.task_names}
    landmarks = np.concatenate([a.landmarks for a in parts])[rows]
    contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
    images = images[rows[0]:rows[-1] + 1] if contiguous else images[rows]  # a slice keeps the memory map
    return Split(images, labels, _sized_spec(spec, size), extras={"landmarks": landmarks, "collection": collection[rows]})


def load_mtfl(split: str, data_dir: pathlib.Path, *, protocol: str, image_size: int, seed: int) -> Split:
    """The ``mtfl`` data set from the data directory, checked against MTFL v1.0
    (``load`` supplies the option defaults)."""
    path = require_files(data_dir, REMOTE, {"MTFL.zip": ("MTFL",)})["MTFL.zip"]
    return load_mtfl_from(path, split, protocol, image_size, seed, _ANNOTATION_SHA256, _NUM_IMAGES)
