"""Finding a data set's files in the data directory, downloading missing ones.

A data set's files live in ``<data_dir>/<folder>/`` under their distributed
names. A file not found there (nor in the download cache) is fetched from
the data set's public URL(s) into the data directory, or into the cache
directory when the data directory is not writable. When that fails too, a
``DataError`` says which files are needed, where to put them and where they
come from. Whatever is found or fetched is then checked by content by the
caller, the same way either way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import socket
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .errors import DataError
from .paths import DATA_DIR_ENV, cache_dir, is_writable_dir

__all__ = ["Remote", "require_files", "download_dir"]

#: Seconds a download may wait on the network before giving up.
DOWNLOAD_TIMEOUT_S = 20.0


@dataclasses.dataclass(frozen=True)
class Remote:
    """Where a data set's files live locally and where they come from."""

    title: str                 # e.g. "MNIST"
    folder: str                # sub-folder of the data directory, e.g. "mnist"
    base_urls: Tuple[str, ...]  # a file is downloaded from base_url + its name, first that works
    files: Tuple[str, ...]     # every file of the data set, as distributed


def download_dir(remote: Remote) -> pathlib.Path:
    """Where downloads go when the data directory is not writable."""
    return cache_dir() / "downloads" / remote.folder


def _find(folders: Sequence[pathlib.Path], names: Sequence[str]) -> Optional[pathlib.Path]:
    for folder in folders:
        for name in names:
            if (folder / name).exists():
                return folder / name
    return None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _get_file(name: str, origin: str, target: pathlib.Path) -> pathlib.Path:
    """``keras.utils.get_file`` into ``target`` (a writable folder)."""
    import keras  # imported here: only needed when something must be downloaded

    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        return pathlib.Path(keras.utils.get_file(
            fname=name, origin=origin, cache_dir=str(target), cache_subdir=""))


def _download(remote: Remote, name: str, data_dir: pathlib.Path, errors: List[str]) -> Optional[pathlib.Path]:
    """Try each of the remote's URLs; the downloaded file, or None (reasons appended to ``errors``)."""
    target = data_dir / remote.folder
    existed = target.exists()
    if not is_writable_dir(target):
        target = download_dir(remote)
        existed = target.exists()
        if not is_writable_dir(target):
            errors.append(f"no writable folder to download {name} into")
            return None
    for base in remote.base_urls:
        try:
            return _get_file(name, base + name, target)
        except Exception as error:  # get_file raises bare Exception on network errors
            errors.append(f"{base + name}: {error}")
    if not existed and not any(target.iterdir()):
        shutil.rmtree(target, ignore_errors=True)
    return None


def _missing_message(remote: Remote, missing: Sequence[str], data_dir: pathlib.Path,
                     errors: Sequence[str]) -> str:
    reasons = "".join(f"\n  - {e}" for e in errors) or " (nothing tried)"
    return (
        f"{remote.title} file(s) not found: {', '.join(missing)}.\n"
        f"Looked in {data_dir / remote.folder} and {download_dir(remote)}; downloading failed:{reasons}\n"
        f"Put the file(s) in <data_dir>/{remote.folder}/, here {data_dir / remote.folder}/ "
        f"(the data directory is set by the --data-dir option or the {DATA_DIR_ENV} environment "
        f"variable; now {data_dir}). The complete set is: {', '.join(remote.files)}; "
        f"they come from {' or '.join(remote.base_urls)}."
    )


def require_files(data_dir: pathlib.Path, remote: Remote,
                  names: Mapping[str, Sequence[str]]) -> Dict[str, pathlib.Path]:
    """The local path of each file in ``names``, downloading any that is missing.

    ``names`` maps a distributed file name to other local names that stand for it
    (an uncompressed copy, an extracted folder). Raises ``DataError`` naming every
    file still missing, the folder to put them in and where they come from.
    """
    folders = [data_dir / remote.folder, download_dir(remote)]
    found: Dict[str, pathlib.Path] = {}
    errors: List[str] = []
    for name, alternatives in names.items():
        path = _find(folders, (name, *alternatives)) or _download(remote, name, data_dir, errors)
        if path is not None:
            found[name] = path
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(_missing_message(remote, missing, data_dir, errors))
    return found
