"""Run directories: what ``train.py`` writes and everything else reads.

A run directory holds::

    config.json    the resolved configuration (data set, data options, model, hparams, training)
    model.keras    the trained model (a :class:`tf_mtvib.models.MultiTaskModel`)
    history.json   per-epoch logs, one entry per epoch
    metrics.json   test accuracies per task and joint (all tasks right)
    logs/          TensorBoard
    backup/        the BackupAndRestore checkpoint used by ``--resume``
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Dict, Optional

from .datasets import DatasetSpec, Split, get_spec, load

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.json"
METRICS = "metrics.json"
LOGS = "logs"
BACKUP = "backup"

__all__ = ["CONFIG", "MODEL", "HISTORY", "METRICS", "LOGS", "BACKUP", "RunError", "Run", "load_run",
           "write_json", "read_json"]


class RunError(Exception):
    """A run directory is missing, incomplete or inconsistent."""


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON atomically (write a temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    tmp.replace(path)


def read_json(path) -> Any:
    return json.loads(pathlib.Path(path).read_text())


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclasses.dataclass
class Run:
    """A run directory and its configuration; the model loads on first use."""

    path: pathlib.Path
    config: Dict[str, Any]
    _model: Any = None

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def model_name(self) -> str:
        return self.config["model"]

    @property
    def spec(self) -> DatasetSpec:
        return get_spec(self.dataset)

    @property
    def data_options(self) -> Dict[str, Any]:
        return dict(self.config.get("data", {}))

    @property
    def model(self):
        if self._model is None:
            import keras

            from . import models  # noqa: F401  (registers the custom objects)

            path = self.path / MODEL
            if not path.exists():
                raise RunError(f"{self.path}: no trained model ({MODEL}); has the run finished?")
            self._model = keras.models.load_model(path)
        return self._model

    def load_split(self, split: str = "test", data_dir=None) -> Split:
        """The run's data set split, with the run's data options (sizes, protocol, seed)."""
        return load(self.dataset, split, data_dir=data_dir, **self.data_options)

    def metrics(self) -> Optional[Dict[str, Any]]:
        p = self.path / METRICS
        return read_json(p) if p.exists() else None


def load_run(path, require_model: bool = True) -> Run:
    """Open run directory ``path``; :class:`RunError` with a clear message if it is not one."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    cfg = path / CONFIG
    if not cfg.exists():
        raise RunError(f"{path}: not a run directory (no {CONFIG}); train one with `python train.py`")
    try:
        config = read_json(cfg)
    except json.JSONDecodeError as e:
        raise RunError(f"{cfg}: not valid JSON ({e})") from None
    for key in ("dataset", "model"):
        if key not in config:
            raise RunError(f"{cfg}: missing key {key!r}")
    if require_model and not (path / MODEL).exists():
        raise RunError(f"{path}: no trained model ({MODEL}); has the run finished?")
    return Run(path, config)
