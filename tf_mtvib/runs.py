"""Run directories: what ``train.py`` writes and everything else reads.

A run directory holds::

    config.json    the resolved configuration (data set, data options, caps (``limits``),
                   the subset rule (``subsets``), model, hparams, training)
    model.keras    the trained model (a :class:`tf_mtvib.models.MultiTaskModel`)
    history.json   per-epoch logs, one entry per epoch
    metrics.json   test accuracies per task and joint (all tasks right)
    logs/          TensorBoard
    backup/        the checkpoint ``--resume`` continues from, one format for both loops
                   (:class:`tf_mtvib.checkpoints.ResumeCheckpoint`)
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from typing import Any, Dict, List, Optional

from .datasets import SUBSET_RULE, DatasetSpec, Split, get_spec, load

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.json"
METRICS = "metrics.json"
#: the test accuracy at the epochs of ``--test-at`` (train.py), written as each is reached
TEST_ALONG = "test_along.json"
LOGS = "logs"
BACKUP = "backup"
#: Where ``train.py`` writes a run when ``--output-dir`` is not given (relative
#: to the working directory), and where ``tf_mtvib.export`` looks without ``--run``.
DEFAULT_ROOT = pathlib.Path("runs")

#: The cap of each split in a config's ``limits``.
LIMIT_KEYS = {"train": "max_train", "test": "max_test"}
#: The rule of runs made before caps were drawn at random: a cap kept the first N items.
LEGACY_SUBSET_RULE = "first-n"

__all__ = ["CONFIG", "MODEL", "HISTORY", "METRICS", "LOGS", "BACKUP", "DEFAULT_ROOT", "LIMIT_KEYS", "RunError", "Run", "write_epoch_record",
           "load_run", "is_finished", "latest_finished_run", "write_json", "read_json", "subsets_record", "subsets_of",
           "load_split", "default_run_dir"]


class RunError(Exception):
    """A run directory is missing, incomplete or inconsistent."""


def default_run_dir(dataset: str, model: str) -> pathlib.Path:
    """``runs/<dataset>-<model>-<YYYYmmdd-HHMMSS>``, where ``train.py`` writes without ``--output-dir``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_ROOT / f"{dataset}-{model}-{stamp}"


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON atomically (write a temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    tmp.replace(path)


def read_json(path) -> Any:
    return json.loads(pathlib.Path(path).read_text())


def write_epoch_record(path, epoch: int, record: Dict[str, Any]) -> None:
    """Add (or replace) ``record`` as epoch ``epoch`` (1-based) of the JSON file ``{"epochs": {"10": {...}}}``
    at ``path``, written atomically: the measurements a long run keeps as it goes (``along.json``,
    ``test_along.json``)."""
    path = pathlib.Path(path)
    doc = read_json(path) if path.exists() else {"epochs": {}}
    doc["epochs"][str(int(epoch))] = record
    write_json(path, doc)


def read_history(run_dir) -> List[Dict[str, Any]]:
    """The per-epoch records of the run in ``run_dir`` (``history.json``), oldest first; empty before its
    first epoch has ended."""
    path = pathlib.Path(run_dir) / HISTORY
    return read_json(path) if path.exists() else []


def training_status(history) -> Optional[str]:
    """How a run's epochs were trained, read from its ``history.json`` rows: ``"trained"`` when one
    process ran them all, ``"resumed"`` when several did (an interrupted run continued with
    ``--resume``). ``None`` when that cannot be told: no rows, or rows written before each epoch
    named its process."""
    procs = [r.get("process") for r in history]
    if not procs or None in procs:
        return None
    return "trained" if len(set(procs)) == 1 else "resumed"


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def subsets_record(seed: int) -> Dict[str, Any]:
    """A config's ``subsets`` entry: how its caps are drawn (``datasets.SUBSET_RULE``) and with which seed."""
    return {"rule": SUBSET_RULE, "seed": int(seed)}


def subsets_of(config: Dict[str, Any]) -> Dict[str, Any]:
    """How a run's caps are drawn: its ``subsets`` entry, or the legacy rule of a run
    made before it (RunError where that run's split cannot be rebuilt)."""
    record = config.get("subsets")
    if record is not None:
        return dict(record)
    # A run made before caps were drawn at random. Its caps can be rebuilt (the first N
    # items); MTFL's paper-protocol draw, which changed with them, cannot.
    data = config.get("data") or {}
    if config.get("dataset") == "mtfl" and data.get("protocol", "paper") == "paper":
        raise RunError("this MTFL run predates the stratified paper-protocol split (its config has no "
                       "'subsets' entry), so its train/test images cannot be rebuilt; train it again")
    return {"rule": LEGACY_SUBSET_RULE, "seed": None}


def load_split(config: Dict[str, Any], split: str, data_dir=None) -> Split:
    """Split ``split`` of a run's data set as the run uses it: ``datasets.load`` with the
    config's data options, then its cap (``limits``: ``max_train`` / ``max_test``) drawn
    by the config's ``subsets`` rule (:meth:`Split.sample` with its seed).

    The one place that turns a run configuration into data: train, tune, evaluate,
    export and reproduce all call it (through :meth:`Run.load_split` where a run
    directory exists). Raises RunError for a run whose split cannot be rebuilt.
    """
    record = subsets_of(config)
    if split not in LIMIT_KEYS:
        raise ValueError(f"split must be one of {tuple(LIMIT_KEYS)}; got {split!r}")
    data = load(config["dataset"], split, data_dir=data_dir, **(config.get("data") or {}))
    cap = (config.get("limits") or {}).get(LIMIT_KEYS[split])
    if cap is None or cap >= len(data):
        return data
    if record["rule"] == LEGACY_SUBSET_RULE:
        return data.take(int(cap))
    if record["rule"] != SUBSET_RULE:
        raise RunError(f"unknown subset rule {record['rule']!r} (this version draws {SUBSET_RULE!r})")
    return data.sample(int(cap), seed=record["seed"])


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
    def subsets(self) -> Dict[str, Any]:
        """How the run's caps were drawn: ``{"rule": ..., "seed": ...}``."""
        return subsets_of(self.config)

    @property
    def model(self):
        if self._model is None:
            import keras

            from . import models  # noqa: F401  (registers the custom objects)
            from .families import import_family

            import_family(self.model_name)   # a family's own layers register for loading

            path = self.path / MODEL
            if not path.exists():
                raise RunError(f"{self.path}: no trained model ({MODEL}); has the run finished?")
            self._model = keras.models.load_model(path)
        return self._model

    def load_split(self, split: str = "test", data_dir=None) -> Split:
        """The run's data set split as the run used it: its data options and its cap (:func:`load_split`)."""
        return load_split(self.config, split, data_dir)

    def history(self) -> List[Dict[str, Any]]:
        """The run's per-epoch records (:func:`read_history`)."""
        return read_history(self.path)

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


def is_finished(path) -> bool:
    """Whether ``path`` is a finished run: it has its config, its trained model and its metrics."""
    path = pathlib.Path(path)
    return all((path / f).is_file() for f in (CONFIG, MODEL, METRICS))


def latest_finished_run(root=DEFAULT_ROOT) -> pathlib.Path:
    """The finished run under ``root`` (searched recursively) whose ``metrics.json``,
    the last file training writes, is the newest; :class:`RunError` if there is none."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise RunError(f"no runs folder {root} (in {pathlib.Path.cwd()}); train one with "
                       f"`python train.py --dataset DATASET` or name a run directory")
    finished = [p.parent for p in root.rglob(METRICS) if is_finished(p.parent)]
    if not finished:
        raise RunError(f"no finished run under {root} (a folder with {CONFIG}, {MODEL} and {METRICS}); "
                       f"train one with `python train.py --dataset DATASET` or name a run directory")
    return max(finished, key=lambda p: ((p / METRICS).stat().st_mtime_ns, str(p)))
