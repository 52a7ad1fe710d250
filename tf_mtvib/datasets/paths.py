"""Where data is read from and where derived arrays are cached."""
from __future__ import annotations

import os
import pathlib
from typing import Optional, Union

__all__ = ["DATA_DIR_ENV", "CACHE_DIR_ENV", "RUNS_DIR_ENV", "resolve_data_dir", "cache_dir", "runs_dir", "is_writable_dir"]

DATA_DIR_ENV = "TF_MTVIB_DATA_DIR"
CACHE_DIR_ENV = "TF_MTVIB_CACHE_DIR"

PathLike = Union[str, os.PathLike]


def _user_cache_root() -> pathlib.Path:
    """``$XDG_CACHE_HOME/tf_mtvib`` or ``~/.cache/tf_mtvib``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tf_mtvib"


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """The data directory: ``data_dir`` if given, else ``$TF_MTVIB_DATA_DIR``,
    else a per-user cache folder (``~/.cache/tf_mtvib/data``, XDG aware)."""
    if data_dir is not None and str(data_dir) != "":
        return pathlib.Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return _user_cache_root() / "data"


def cache_dir() -> pathlib.Path:
    """Where decoded and generated arrays are cached (never the data directory,
    which may be read-only): ``$TF_MTVIB_CACHE_DIR``, else ``~/.cache/tf_mtvib/cache``
    (XDG aware). Not created here."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return _user_cache_root() / "cache"


def is_writable_dir(path: pathlib.Path) -> bool:
    """Create ``path`` if needed; True when files can be written into it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


RUNS_DIR_ENV = "TF_MTVIB_RUNS_DIR"


def runs_dir() -> pathlib.Path:
    """Where commands that train many runs keep their run directories and
    checkpoints by default (outside any repository): ``$TF_MTVIB_RUNS_DIR``,
    else ``~/.cache/tf_mtvib/runs`` (XDG aware). Not created here."""
    env = os.environ.get(RUNS_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return _user_cache_root() / "runs"
