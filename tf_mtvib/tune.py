"""Hyper-parameter search: ``python -m tf_mtvib.tune --dataset multimnist --model gs``.

Runs a keras-tuner search on a validation split carved from the *training*
data (``datasets.train_val_split``; the test split is never loaded) and
writes, in ``--output-dir``::

    best.json        {"hparams": {...}, "objective": value, "trials": [...], ...}:
                     the format ``train.py --hparams best.json`` reads
    tune_config.json the settings of the search (a later call on the same
                     directory continues the search only with the same settings)
    tuner/           keras-tuner's own directory (oracle and one folder per trial)

Search spaces (``SEARCH_SPACES``):

* ``gs``: the fixed task weights, the paper's grid search (``kt.GridSearch``
  by default). The grid points are weight vectors on the simplex, see
  :func:`simplex_grid`, given to keras-tuner as one ``hp.Choice`` of
  string-encoded vectors (``"0.3,0.7"``).
* ``mtvib``: beta (log scale, 1e-5..1e-1), learning rate (log, 1e-5..1e-2)
  and latent dimension (64, 128, 256); Bayesian optimisation by default.
* ``uwl``: the learning rate (its task weights are learned).

The objective is ``val_mean_task_accuracy``, the mean over tasks of the
validation accuracies ``val_<task>_accuracy``, maximised; a trial's score is
its best epoch's value (keras-tuner's rule). Data sizes, epochs, batch size
and the learning rate not searched come from ``train.py``'s presets
(:func:`tf_mtvib.train.build_config`).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import math
import pathlib
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import catalogue, runs
from . import train as train_module
from .config import TrainingConfig
from .datasets import to_dataset, train_val_split
from .datasets.spec import SPECS, get_spec
from .precision import PRECISIONS

__all__ = ["OBJECTIVE", "SEARCH_SPACES", "DEFAULT_GRID", "DEFAULT_RANGES", "simplex_grid", "encode_weights",
           "decode_weights", "add_mean_task_accuracy", "mean_task_accuracy_callback", "with_fit_seconds",
           "make_hypermodel", "make_tuner", "tune", "trial_table", "main", "parse_args"]

#: What the tuner maximises (added to the logs by :func:`mean_task_accuracy_callback`).
OBJECTIVE = "val_mean_task_accuracy"
#: The trial metric holding the wall-clock seconds of the trial's whole fit (every epoch,
#: validation included, model building not): :func:`with_fit_seconds`.
FIT_SECONDS = "fit_seconds"
def search_spaces() -> Dict[str, Tuple[str, ...]]:
    """The hyper-parameters searched for each tunable family (its spec's ``search``)."""
    from .families import families

    return {n: f.search for n, f in families().items() if f.search}


def default_search(model: str) -> str:
    """The search used when --search is not given (the family's ``default_search``)."""
    from .families import get_family

    return get_family(model).default_search


#: The package's search spaces (gs, uwl, mtvib), read from their family specs.
SEARCH_SPACES: Dict[str, Tuple[str, ...]] = search_spaces()
DEFAULT_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Ranges of the continuous hyper-parameters (log scale) and the latent dimensions.
DEFAULT_RANGES: Dict[str, Any] = {"beta": (1e-5, 1e-1), "learning_rate": (1e-5, 1e-2), "latent_dim": (64, 128, 256)}
#: --max-trials when not given (grid: the whole grid).
DEFAULT_MAX_TRIALS = {"grid": None, "bayesian": 10, "random": 10}
BEST = "best.json"
TUNE_CONFIG = "tune_config.json"
TUNER_DIR = "tuner"


class TuneError(Exception):
    """A search that cannot be set up (bad grid, nothing to search, clashing output directory)."""


# --------------------------------------------------------------------------
# The search space
# --------------------------------------------------------------------------
def simplex_grid(num_tasks: int, grid: Sequence[float] = DEFAULT_GRID) -> List[Tuple[float, ...]]:
    """Task-weight vectors on the simplex for a grid search.

    The first ``K - 1`` weights take every combination of ``grid`` values and
    the last one is ``1 - sum(others)``; combinations with a negative last
    weight are dropped. For two tasks this is ``w1 in grid, w2 = 1 - w1``.
    For a grid closed under ``w -> 1 - w`` such as the default
    0.1, 0.3, ..., 0.9, every point's coordinates are grid values and the set
    is symmetric in the tasks (four tasks: 20 points).
    """
    if num_tasks < 2:
        raise TuneError(f"task weights need at least two tasks; this data set has {num_tasks}")
    values = sorted({float(g) for g in grid})
    if not values or any(not 0.0 <= g <= 1.0 for g in values):
        raise TuneError(f"grid values must be in [0, 1]; got {list(grid)}")
    points = []
    for head in itertools.product(values, repeat=num_tasks - 1):
        last = round(1.0 - sum(head), 10)
        if last < 0:
            continue
        points.append(tuple(round(w, 10) for w in head) + (abs(last),))
    if not points:
        raise TuneError(f"no weight vector of {num_tasks} tasks from grid {values} sums to 1")
    return points


def encode_weights(weights: Sequence[float]) -> str:
    """(0.3, 0.7) -> "0.3,0.7" (the hp.Choice value)."""
    return ",".join(format(float(w), ".10g") for w in weights)


def decode_weights(text: str, task_names: Sequence[str]) -> Dict[str, float]:
    """"0.3,0.7" -> {task: w} in task order (the format train.py --hparams reads)."""
    weights = [float(w) for w in text.split(",")]
    if len(weights) != len(task_names):
        raise ValueError(f"{text!r} has {len(weights)} weights for {len(task_names)} tasks")
    return dict(zip(task_names, weights))


def _log_values(low: float, high: float) -> List[float]:
    """Grid search on a log-scale range: the ends and the powers of ten between them."""
    decades = [10.0 ** k for k in range(math.ceil(math.log10(low) - 1e-9), math.floor(math.log10(high) + 1e-9) + 1)]
    return sorted({float(low), float(high), *decades})


def declare(hp, space: Sequence[str], search: str, ranges: Dict[str, Any], weight_points: Sequence[str]):
    """Declare the hyper-parameters of ``space`` on ``hp`` and return their values.

    Grid search: every hyper-parameter is an ``hp.Choice`` (log ranges become
    their ends and the powers of ten between them). Bayesian / random search:
    beta and the learning rate are ``hp.Float(..., sampling="log")``.
    """
    values = {}
    for name in space:
        if name == "task_weights":
            values[name] = hp.Choice("task_weights", list(weight_points))
        elif name == "latent_dim":
            values[name] = hp.Choice("latent_dim", [int(d) for d in ranges["latent_dim"]])
        elif search == "grid":
            values[name] = hp.Choice(name, _log_values(*ranges[name]))
        else:
            low, high = ranges[name]
            values[name] = hp.Float(name, float(low), float(high), sampling="log")
    return values


# --------------------------------------------------------------------------
# Keras pieces
# --------------------------------------------------------------------------
def add_mean_task_accuracy(logs: Optional[Dict[str, Any]], task_names: Sequence[str]) -> None:
    """Add ``mean_task_accuracy`` and ``val_mean_task_accuracy`` (mean of the
    ``<task>_accuracy`` logs) to an epoch's ``logs``, where all its tasks' are there."""
    if logs is None:
        return
    for prefix in ("", "val_"):
        keys = [f"{prefix}{t}_accuracy" for t in task_names]
        if all(k in logs for k in keys):
            logs[f"{prefix}mean_task_accuracy"] = float(sum(float(logs[k]) for k in keys) / len(keys))


def mean_task_accuracy_callback(task_names: Sequence[str]):
    """A Keras callback running :func:`add_mean_task_accuracy` at every epoch's end; list it
    before the callbacks that read the mean (History, the tuner's)."""
    import keras

    names = tuple(task_names)
    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: add_mean_task_accuracy(logs, names))


def with_fit_seconds(history, seconds: float):
    """``history`` with :data:`FIT_SECONDS` = the whole fit's ``seconds`` at every epoch.
    keras-tuner keeps a trial's metrics at its best epoch only, so the trial's cost must
    stand in every epoch's logs to reach its record whichever epoch is best."""
    history.history[FIT_SECONDS] = [float(seconds)] * len(history.epoch)
    return history


def make_hypermodel(config: Dict[str, Any], space: Sequence[str], search: str, ranges: Dict[str, Any],
                    weight_points: Sequence[str], steps_per_epoch: int, keep_models: bool = False):
    """A ``kt.HyperModel``: ``build(hp)`` returns the compiled model of ``config['model']``
    with the searched values; ``fit`` adds :func:`mean_task_accuracy_callback`."""
    import keras
    import keras_tuner as kt

    from .models import build_model
    from .precision import policy_scope

    spec = get_spec(config["dataset"])

    class MultiTaskHyperModel(kt.HyperModel):
        def values(self, hp) -> Tuple[Dict[str, Any], Dict[str, Any]]:
            """(model hyper-parameters, training settings) of a trial."""
            searched = declare(hp, space, search, ranges, weight_points)
            hparams = dict(config["hparams"])
            training = dict(config["training"])
            for name, value in searched.items():
                if name == "task_weights":
                    hparams[name] = decode_weights(value, spec.task_names)
                elif name == "learning_rate":
                    training[name] = float(value)
                else:
                    hparams[name] = value
            return hparams, training

        def declare_hyperparameters(self, hp):
            declare(hp, space, search, ranges, weight_points)

        def build(self, hp):
            hparams, training = self.values(hp)
            training = TrainingConfig.from_dict(training)
            keras.utils.set_random_seed(training.seed)  # every trial starts from the same initialisation
            with policy_scope(training.precision):
                model = build_model(config["model"], spec, **hparams)
            model.compile(optimizer=train_module.make_optimizer(training, steps_per_epoch),
                          jit_compile=bool(training.jit_compile))
            return model

        def fit(self, hp, model, *args, callbacks=None, **kwargs):
            callbacks = list(callbacks or [])
            if not keep_models:
                checkpoint = trial_checkpoint_callback_class()
                callbacks = [c for c in callbacks if not isinstance(c, checkpoint)]
            callbacks = [mean_task_accuracy_callback(spec.task_names), keras.callbacks.TerminateOnNaN(), *callbacks]
            start = time.perf_counter()
            history = model.fit(*args, callbacks=callbacks, shuffle=False, **kwargs)  # tf.data shuffles
            return with_fit_seconds(history, time.perf_counter() - start)

    return MultiTaskHyperModel(name=f"{config['model']}_{config['dataset']}")


def trial_checkpoint_callback_class():
    """The callback class keras-tuner adds to every trial's ``fit`` to save the
    trial's best epoch (``SaveBestEpoch``); :func:`make_hypermodel` drops it
    unless ``keep_models``.

    The one private keras-tuner name this module uses: keras-tuner 1.4 exports
    no public class or option for it. If a keras-tuner release moves it, this
    import fails (and tests/test_tune.py with it) instead of the filter
    silently keeping every trial's weights.
    """
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    return SaveBestEpoch


def make_tuner(search: str, hypermodel, max_trials: Optional[int], seed: int, directory: pathlib.Path,
               overwrite: bool = False, strategy=None):
    """The keras-tuner tuner of ``search`` ("grid", "bayesian" or "random") maximising
    :data:`OBJECTIVE`, keeping its state in ``directory/tuner``. A new search
    learns its space from the hypermodel's ``declare_hyperparameters`` and
    one ``build`` (keras-tuner's own start-up; a reloaded search skips it)."""
    import keras_tuner as kt

    base = {"grid": kt.GridSearch, "bayesian": kt.BayesianOptimization, "random": kt.RandomSearch}[search]

    return base(hypermodel, objective=kt.Objective(OBJECTIVE, "max"), max_trials=max_trials, seed=seed,
                 directory=str(directory), project_name=TUNER_DIR, overwrite=overwrite,
                 distribution_strategy=strategy)


# --------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------
def _trial_records(tuner, space, spec) -> List[Dict[str, Any]]:
    rows = []
    for trial_id in sorted(tuner.oracle.trials, key=lambda i: (int(i), i) if i.isdigit() else (math.inf, i)):
        trial = tuner.oracle.trials[trial_id]
        values = {k: trial.hyperparameters.values[k] for k in space if k in trial.hyperparameters.values}
        hparams = {k: decode_weights(v, spec.task_names) if k == "task_weights" else v for k, v in values.items()}
        row = {"trial_id": trial_id, "status": str(trial.status), "hparams": hparams, "values": values,
               "objective": None if trial.score is None else float(trial.score),
               "best_epoch": None if trial.score is None else int(trial.best_step) + 1, "val_accuracy": {},
               # the fit's seconds; None for a trial run before trials were timed
               "seconds": (float(trial.metrics.get_last_value(FIT_SECONDS))
                           if trial.metrics.exists(FIT_SECONDS) else None)}
        for t in spec.task_names:
            name = f"val_{t}_accuracy"
            if trial.metrics.exists(name):
                row["val_accuracy"][t] = float(trial.metrics.get_last_value(name))  # recorded at the best epoch
        rows.append(row)
    return rows


def search_seconds(trials: Sequence[Dict[str, Any]]) -> Optional[float]:
    """The fit seconds of a whole search (its trials'), None unless every trial was timed."""
    seconds = [t.get("seconds") for t in trials]
    return None if not seconds or None in seconds else float(sum(seconds))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_table(trials: Sequence[Dict[str, Any]], space: Sequence[str], task_names: Sequence[str],
                best_id: Optional[str] = None) -> str:
    """A plain-text table of the trials (the best one marked with ``*``)."""
    header = ["trial"] + [f"task_weights ({','.join(task_names)})" if k == "task_weights" else k for k in space]
    header += [OBJECTIVE, "epoch"] + [f"val_{t}_acc" for t in task_names] + ["seconds", "status"]
    lines = []
    for r in trials:
        cells = [("*" if r["trial_id"] == best_id else " ") + r["trial_id"]]
        cells += [_fmt(r["values"].get(k)) for k in space]
        cells += [_fmt(r["objective"]), _fmt(r["best_epoch"])]
        seconds = r.get("seconds")
        cells += [_fmt(r["val_accuracy"].get(t)) for t in task_names]
        cells += ["-" if seconds is None else f"{seconds:.0f}", r["status"]]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *lines]]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def tune(config: Dict[str, Any], output_dir: pathlib.Path, *, search: Optional[str] = None,
         grid: Sequence[float] = DEFAULT_GRID, max_trials: Optional[int] = None,
         ranges: Optional[Dict[str, Any]] = None, data_dir=None, overwrite: bool = False,
         keep_models: bool = False, fixed: Sequence[str] = (), verbose: int = 1) -> Dict[str, Any]:
    """Search the hyper-parameters of ``config['model']`` and write ``best.json`` into ``output_dir``.

    ``config`` is a :func:`tf_mtvib.train.build_config` result: its training
    settings are every trial's, ``config['training']['val_fraction']`` is the
    share of the training split held out for validation, and the model
    hyper-parameters in ``config['hparams']`` are fixed (not searched), as is
    ``learning_rate`` when named in ``fixed``. Returns the content of best.json.
    """
    model, dataset = config["model"], config["dataset"]
    spaces = search_spaces()
    if model not in spaces:
        raise TuneError(f"no search space for model {model!r}; choose one of: {', '.join(spaces)}")
    search = search or default_search(model)
    if search not in DEFAULT_MAX_TRIALS:
        raise TuneError(f"search must be one of {', '.join(DEFAULT_MAX_TRIALS)}; got {search!r}")
    if search == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise TuneError("keras-tuner's Bayesian optimisation needs scikit-learn (pip install scikit-learn); "
                        "or use --search random")
    fixed = set(config["hparams"]) | set(fixed)
    space = tuple(k for k in spaces[model] if k not in fixed)
    if not space:
        raise TuneError(f"nothing to search: {', '.join(spaces[model])} fixed by flags")
    try:
        wname = catalogue.check_weighting(model, config["hparams"].get("weighting"), config["hparams"])
    except ValueError as e:
        raise TuneError(str(e)) from None
    foreign = [k for k in space if catalogue.owner_of(k) not in (None, wname)]
    if foreign:
        raise TuneError(f"{model}'s search space has {', '.join(foreign)}, a hyper-parameter of the "
                        f"{catalogue.owner_of(foreign[0])!r} weighting, not of {wname!r}")
    ranges = {**DEFAULT_RANGES, **(ranges or {})}
    for name in ("beta", "learning_rate"):
        low, high = ranges[name]
        if not 0 < low <= high:
            raise TuneError(f"{name} range must satisfy 0 < low <= high; got {low}, {high}")
    spec = get_spec(dataset)
    weight_points = [encode_weights(w) for w in simplex_grid(len(spec.tasks), grid)] if "task_weights" in space else []
    if max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS[search]
    training = TrainingConfig.from_dict(config["training"])
    val_fraction = training.val_fraction
    if not 0 < val_fraction < 1:
        raise TuneError(f"the validation fraction must be in (0, 1); got {val_fraction}")

    output_dir = pathlib.Path(output_dir)
    settings = {"config": config, "search": search, "space": list(space), "ranges": {k: ranges[k] for k in space
                if k in ranges}, "grid": weight_points, "max_trials": max_trials}
    settings = _roundtrip(settings)
    config_path = output_dir / TUNE_CONFIG
    if overwrite:
        for stale in (output_dir / TUNER_DIR, output_dir / BEST, config_path):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
    elif config_path.exists() and _without_max_trials(runs.read_json(config_path)) != _without_max_trials(settings):
        raise TuneError(f"{output_dir} holds a search with other settings ({config_path}); "
                        f"use --overwrite or another --output-dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json(config_path, settings)

    import keras

    from .families import get_family, prepare_family

    full = runs.load_split(config, "train", data_dir)
    train_split, val_split = train_val_split(full, val_fraction, seed=training.seed)
    batch = training.batch_size
    train_ds = to_dataset(train_split, batch, shuffle=True, seed=training.seed)
    val_ds = to_dataset(val_split, batch)
    strategy = train_module.make_strategy(training.strategy)
    if verbose:
        print(f"[tf_mtvib] tuning {model} on {dataset} ({search} search over {', '.join(space)}): "
              f"{len(train_split):,} train / {len(val_split):,} validation images from the training split, "
              f"{training['epochs']} epoch(s) per trial, {strategy.num_replicas_in_sync} replica(s)", flush=True)
    keras.utils.set_random_seed(training.seed)
    prepare_family(get_family(config["model"]), data_dir)     # what the trials' builds then find cached
    hypermodel = make_hypermodel(config, space, search, ranges, weight_points,
                                 math.ceil(len(train_split) / batch), keep_models=keep_models)
    tuner = make_tuner(search, hypermodel, max_trials, training.seed, output_dir,
                       strategy=strategy if strategy.num_replicas_in_sync > 1 else None)
    tuner.search(train_ds, validation_data=val_ds, epochs=training.epochs, verbose=verbose)

    trials = _trial_records(tuner, space, spec)
    scored = [t for t in trials if t["objective"] is not None and math.isfinite(t["objective"])]
    if not scored:
        raise TuneError(f"no trial finished with a {OBJECTIVE}; see the trials in {output_dir / TUNER_DIR}")
    best = max(scored, key=lambda t: t["objective"])
    hparams = dict(config["hparams"])
    if "learning_rate" in fixed:
        hparams["learning_rate"] = training.learning_rate
    hparams.update(best["hparams"])
    result = {"hparams": hparams, "objective": best["objective"], "objective_name": OBJECTIVE, "direction": "max",
              "best_trial": best["trial_id"], "best_epoch": best["best_epoch"], "trials": trials,
              "dataset": dataset, "model": model, "preset": config["preset"], "search": search,
              "num_train": len(train_split), "num_val": len(val_split), "config": config,
              "seconds": search_seconds(trials),
              "tuner_dir": TUNER_DIR}
    runs.write_json(output_dir / BEST, result)
    print(trial_table(trials, space, spec.task_names, best["trial_id"]), flush=True)
    print(f"[tf_mtvib] best trial {best['trial_id']}: {OBJECTIVE}={best['objective']:.4f} "
          f"{hparams}; written to {output_dir / BEST}", flush=True)
    return result


def _without_max_trials(settings):
    """The settings a continued search must share (--max-trials may grow)."""
    return {k: v for k, v in settings.items() if k != "max_trials"}


def _roundtrip(obj):
    """``obj`` as it reads back from JSON (tuples become lists), to compare with a saved file."""
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=runs._jsonable))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def _floats(text: str) -> List[float]:
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _range(text: str) -> Tuple[float, float]:
    values = _floats(text)
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with 0 < LOW <= HIGH, got {text!r}")
    return values[0], values[1]


def _ints(text: str) -> List[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def make_parser() -> argparse.ArgumentParser:
    pos_int, pos_float = train_module.positive(int), train_module.positive(float)
    p = argparse.ArgumentParser(prog="python -m tf_mtvib.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, choices=list(SPECS), help="data set")
    p.add_argument("--model", required=True, choices=list(search_spaces()),
                   help="model (a family whose spec names what to search)")
    p.add_argument("--preset", choices=list(train_module.PRESETS), default="paper",
                   help="train.py's budget (data size, epochs, batch size, learning rate) for every trial")
    s = p.add_argument_group("search")
    s.add_argument("--search", choices=list(DEFAULT_MAX_TRIALS),
                   help="default: grid for gs, bayesian for mtvib and uwl")
    s.add_argument("--max-trials", type=pos_int, help="default: the whole grid; 10 for bayesian/random")
    s.add_argument("--grid", type=_floats, default=list(DEFAULT_GRID),
                   help="GS weight values; K tasks: w_1..w_{K-1} from the grid, w_K = 1 - their sum")
    s.add_argument("--beta-range", type=_range, default=DEFAULT_RANGES["beta"], metavar="LOW,HIGH",
                   help="beta (log scale)")
    s.add_argument("--lr-range", type=_range, default=DEFAULT_RANGES["learning_rate"], metavar="LOW,HIGH",
                   help="learning rate (log scale)")
    s.add_argument("--latent-dims", type=_ints, default=list(DEFAULT_RANGES["latent_dim"]),
                   help="latent dimensions to choose from")
    s.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training split held out for validation")
    s.add_argument("--overwrite", action="store_true", help="discard a previous search in --output-dir")
    s.add_argument("--keep-models", action="store_true", help="keep each trial's best weights in the tuner directory")
    g = p.add_argument_group("fixed values (override the preset; a fixed value is not searched)")
    g.add_argument("--epochs", type=pos_int)
    g.add_argument("--batch-size", type=pos_int)
    g.add_argument("--learning-rate", type=pos_float)
    g.add_argument("--beta", type=train_module.nonneg_float)
    g.add_argument("--latent-dim", type=pos_int)
    catalogue.add_weighting_arguments(g)   # --weighting and each weighting's hyper-parameters
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    d.add_argument("--num-train", type=pos_int, help="MultiMNIST/MultiFashion: training composites to generate")
    d.add_argument("--protocol", choices=["paper", "official"], help="MTFL split protocol")
    d.add_argument("--data-seed", type=int, help="seed of the data generation / MTFL paper split")
    d.add_argument("--max-train", type=pos_int, help="use only the first N training examples")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", type=pathlib.Path, help="default runs/tune-<dataset>-<model>-<time>")
    r.add_argument("--seed", type=int, help="seed of the validation split, the initialisation and the search")
    r.add_argument("--precision", choices=PRECISIONS, help="as train.py's --precision, for every trial")
    r.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="Keras progress output")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be in (0, 1)")
    return args


def build_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The training configuration of every trial, resolved by ``train.build_config``
    (the preset, then the flags given here)."""
    targs = train_module.parse_args(["--dataset", args.dataset, "--model", args.model, "--preset", args.preset])
    shared = vars(targs).keys() & vars(args).keys()
    for key in shared - {"output_dir", "verbose", "hparams"}:
        setattr(targs, key, getattr(args, key))
    return train_module.build_config(targs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    output_dir = args.output_dir or runs.DEFAULT_ROOT / (
        f"tune-{args.dataset}-{args.model}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    ranges = {"beta": args.beta_range, "learning_rate": args.lr_range, "latent_dim": args.latent_dims}
    from .datasets import DataError

    try:
        tune(config, output_dir, search=args.search, grid=args.grid, max_trials=args.max_trials, ranges=ranges,
             data_dir=args.data_dir, overwrite=args.overwrite, keep_models=args.keep_models,
             fixed=("learning_rate",) if args.learning_rate is not None else (), verbose=args.verbose)
    except TuneError as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"tune: data error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
