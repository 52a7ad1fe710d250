"""Export a trained run as deployable artifacts: a TF Serving SavedModel and TFLite files.

    python -m tf_mtvib.export [--run RUN_DIR] [--tflite] [--quantize float16|int8]
                              [--output export/] [--name NAME] [--version N] [--force]
                              [--mc-samples N] [--no-check]

(also ``tf-mtvib-export``). Without ``--run`` it exports the most recently
finished run (one with ``model.keras`` and ``metrics.json``) under ``runs/``
in the current directory, where ``train.py`` puts runs, and says which.

SavedModel, in TF Serving's layout ``<output>/<name>/<version>/saved_model.pb``
+ ``variables/`` (``name`` defaults to ``<dataset>_<model>``; ``version`` is
the next integer). A version is written in a temporary folder next to it and
renamed into place, so a half-written export never appears under a version
number, and an existing version is never replaced without ``--force``.
``<output>/models.config`` (for ``tensorflow_model_server
--model_config_file``) lists every model under ``<output>``.

Signatures (input ``image``: float32 ``[batch, H, W, C]``, pixels in [0, 1]):

``serving_default``  z = posterior mean: ``<task>_probs`` (float32 ``[batch, classes]``)
                     and ``<task>_class`` (int64 ``[batch]``, the arg-max).
``predict_mc``       probabilities averaged over N posterior samples of z (N fixed
                     at export, ``--mc-samples``, default 12), ``<task>_class`` and
                     ``<task>_entropy`` (predictive entropy in nats, float32 ``[batch]``).
                     For deterministic models (stl, gs, uwl) it equals the mean mode.

The SavedModel holds only TensorFlow functions and variables: it loads with
``tf.saved_model.load`` in a process that has never imported this package.
Its inputs, outputs and arithmetic are float32 whatever ``--precision`` the
run was trained with (the weights of a mixed-precision model are float32;
its serving functions are traced under
:func:`tf_mtvib.precision.float32_compute`), so TFLite converts every run.

``--tflite`` adds ``<output>/<name>.tflite`` (float32) and ``--quantize``
``<name>_float16.tflite`` / ``<name>_int8.tflite`` (see
:mod:`tf_mtvib.export_lite`); int8 calibration images come from the run's own
training split. With the data available, the exporter then checks every
artifact on the run's test split and prints accuracies and differences.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import runs
from .export_lite import (INPUT_NAME, QUANTIZATIONS, SERVING_SIGNATURE, TASK_INPUT_NAME, TASK_SIGNATURE, LiteModel,
                          convert_saved_model,
                          describe_quantization, predict_batches, tflite_filename)
from .metrics import MC_SAMPLES
from .precision import model_precision

__all__ = [
    "SERVING_SIGNATURE", "MC_SIGNATURE", "INPUT_NAME", "DEFAULT_OUTPUT", "DEFAULT_MC_SAMPLES", "MODELS_CONFIG",
    "INFO_FILE", "ExportError", "ExportResult", "signature_outputs", "build_serving_module",
    "existing_versions", "models_config_text", "write_models_config", "export_run", "main",
]

PROG = "tf_mtvib.export"
MC_SIGNATURE = "predict_mc"
DEFAULT_OUTPUT = pathlib.Path("export")
DEFAULT_MC_SAMPLES = MC_SAMPLES
DEFAULT_CALIBRATION_SIZE = 300
DEFAULT_SERVING_ROOT = "/models"
MODELS_CONFIG = "models.config"
INFO_FILE = pathlib.Path("assets.extra") / "export.json"
INT8_TOLERANCE = 0.01  # the int8 model should be within 1 accuracy point of the float model, per task
FLOAT_TOLERANCE = 1e-4  # the float32 TFLite probabilities should match the SavedModel's this closely

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TMP_PREFIX = ".tmp-"


class ExportError(Exception):
    """The export cannot be done; the message says why in one line."""


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------
def signature_outputs(task_names: Sequence[str]) -> Dict[str, List[str]]:
    """The output tensor names of each signature."""
    serving = [f"{t}_{k}" for t in task_names for k in ("probs", "class")]
    mc = [f"{t}_{k}" for t in task_names for k in ("probs", "class", "entropy")]
    return {SERVING_SIGNATURE: serving, MC_SIGNATURE: mc}


def build_serving_module(model, mc_samples: int = DEFAULT_MC_SAMPLES):
    """A ``tf.Module`` with the model's variables and the two signature functions.

    Returns ``(module, signatures)`` for ``tf.saved_model.save(module, path,
    signatures=signatures)``. The module tracks the network's ``tf.Variable``
    objects themselves (not the Keras layers), so the SavedModel's object
    graph holds no Keras objects, and the TFLite converter freezes the
    weights into constants. ``model`` is asked through the stochastic-model
    protocol (``is_stochastic``, ``mean_logits``, ``sampled_logits``,
    ``float32_compute``; :class:`tf_mtvib.models.MultiTaskModel`).
    """
    import tensorflow as tf

    if int(mc_samples) < 1:
        raise ValueError(f"mc_samples must be >= 1; got {mc_samples}")
    spec = model.dataset_spec
    tasks = tuple(spec.task_names)
    samples = int(mc_samples) if model.is_stochastic else 0

    module = tf.Module(name="tf_mtvib_serving")
    module.model_variables = [_tf_variable(v) for v in model.network.variables]
    image_spec = tf.TensorSpec([None, *spec.input_shape], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[image_spec])
    def serve(image):
        with model.float32_compute():   # float32 arithmetic whatever the training precision
            probs = model._probabilities(image, 0)
        out = {}
        for t in tasks:
            out[f"{t}_probs"] = probs[t]
            out[f"{t}_class"] = tf.argmax(probs[t], axis=-1, output_type=tf.int64)
        return out

    @tf.function(input_signature=[image_spec])
    def predict_mc(image):
        with model.float32_compute():
            probs = model._probabilities(image, samples)  # samples > 0: the mean over posterior draws
        out = {}
        for t in tasks:
            p = probs[t]
            out[f"{t}_probs"] = p
            out[f"{t}_class"] = tf.argmax(p, axis=-1, output_type=tf.int64)
            out[f"{t}_entropy"] = -tf.reduce_sum(tf.math.xlogy(p, p), axis=-1)
        return out

    module.serve = serve
    module.predict_mc = predict_mc
    signatures = {SERVING_SIGNATURE: serve.get_concrete_function(),
                  MC_SIGNATURE: predict_mc.get_concrete_function()}
    if getattr(model, "partial_labels", False):     # each task its own images (VMTL): the task chosen per image
        task_spec = tf.TensorSpec([None], tf.int32, name=TASK_INPUT_NAME)

        @tf.function(input_signature=[image_spec, task_spec])
        def predict_task(image, task):
            with model.float32_compute():
                probs = model._probabilities(image, 0)
            stacked = tf.stack([probs[t] for t in tasks], axis=1)            # (B, T, C)
            p = tf.gather(stacked, task, axis=1, batch_dims=1)               # (B, C): each image's own task
            return {"probs": p, "class": tf.argmax(p, axis=-1, output_type=tf.int64),
                    "entropy": -tf.reduce_sum(tf.math.xlogy(p, p), axis=-1)}

        module.predict_task = predict_task
        signatures[TASK_SIGNATURE] = predict_task.get_concrete_function()
    return module, signatures


def _tf_variable(v):
    """The ``tf.Variable`` behind a Keras 3 variable (Keras wraps it; ``.value`` is the variable)."""
    import tensorflow as tf

    inner = v if isinstance(v, tf.Variable) else getattr(v, "value", None)
    if not isinstance(inner, tf.Variable):
        raise TypeError(f"cannot find the tf.Variable behind {getattr(v, 'path', v)!r}")
    return inner


# --------------------------------------------------------------------------
# Layout: versions, models.config, atomic moves
# --------------------------------------------------------------------------
def existing_versions(model_dir) -> List[int]:
    """The integer version folders under ``model_dir`` (TF Serving's layout), ascending."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _is_model_dir(path: pathlib.Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and any(
        (path / str(v) / "saved_model.pb").is_file() for v in existing_versions(path))


def models_config_text(names: Sequence[str], serving_root: str = DEFAULT_SERVING_ROOT) -> str:
    """A ``model_config_list`` (protobuf text) with one entry per model name."""
    lines = ["# Written by python -m tf_mtvib.export; lists every model exported to this folder.",
             f"# base_path is where the server sees this folder ({serving_root}, e.g. a docker bind mount).",
             "model_config_list {"]
    for name in sorted(names):
        lines += ["  config {",
                  f'    name: "{name}"',
                  f'    base_path: "{serving_root.rstrip("/")}/{name}"',
                  '    model_platform: "tensorflow"',
                  "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(output_root, serving_root: str = DEFAULT_SERVING_ROOT) -> List[str]:
    """(Re)write ``<output_root>/models.config`` from the model folders there; returns their names."""
    output_root = pathlib.Path(output_root)
    names = sorted(p.name for p in output_root.iterdir() if _is_model_dir(p))
    _atomic_write_bytes(output_root / MODELS_CONFIG, models_config_text(names, serving_root).encode())
    return names


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP_PREFIX}{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _remove(pathlib.Path(tmp))
        raise


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _dir_size(path: pathlib.Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _one_line(e: BaseException) -> str:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(lines) <= 1 else text + " ..."


def _probe_writable(directory: pathlib.Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{_TMP_PREFIX}probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ExportError(f"output directory {directory} is not writable ({e.strerror or e})") from None


def _prepare_output_root(output: pathlib.Path) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"output directory {output} is not writable: it is a file")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"output directory {output} is not writable: cannot create it ({e.strerror or e})") from None
    _probe_writable(output)


# --------------------------------------------------------------------------
# The run: consistency checks and data
# --------------------------------------------------------------------------
def _spec_signature(spec) -> tuple:
    return (spec.name, tuple(spec.input_shape), tuple((t.name, t.num_classes) for t in spec.tasks))


def _check_model_matches_run(model, run) -> None:
    from .datasets import get_spec

    try:
        spec = get_spec(run.dataset)
    except ValueError as e:
        raise ExportError(f"{run.path / runs.CONFIG}: {e}") from None
    got = getattr(model, "dataset_spec", None)
    if got is None or not hasattr(model, "network"):
        raise ExportError(f"{run.path / runs.MODEL} is not a tf_mtvib MultiTaskModel ({type(model).__name__})")
    if _spec_signature(got) != _spec_signature(spec):
        raise ExportError(
            f"{run.path / runs.MODEL} was trained for data set {got.name!r} (input {tuple(got.input_shape)}, "
            f"tasks {list(got.task_names)}) but {runs.CONFIG} says {spec.name!r} (input {tuple(spec.input_shape)}, "
            f"tasks {list(spec.task_names)}); refusing to export an inconsistent run")
    inputs = tuple(model.network.input.shape[1:])
    if inputs != tuple(spec.input_shape):
        raise ExportError(f"{run.path / runs.MODEL}: network input {inputs} differs from the data set's "
                          f"{tuple(spec.input_shape)}")


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Artifact:
    kind: str          # "savedmodel", "tflite", "config"
    path: pathlib.Path
    size: int
    description: str
    quantize: Optional[str] = None
    replaced: bool = False


@dataclasses.dataclass
class ExportResult:
    name: str
    version: int
    saved_model_dir: pathlib.Path
    output_root: pathlib.Path
    artifacts: List[Artifact]
    models: List[str]
    check: Optional[Dict[str, Any]] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    run: Optional[pathlib.Path] = None

    def tflite_path(self, quantize: Optional[str] = None) -> Optional[pathlib.Path]:
        for a in self.artifacts:
            if a.kind == "tflite" and a.quantize == quantize:
                return a.path
        return None


@dataclasses.dataclass
class _Calibration:
    """int8 calibration images and what export.json records about them."""
    images: np.ndarray
    seed: int = 0

    def info(self, dataset: str) -> Dict[str, Any]:
        return {"dataset": dataset, "split": "train", "images": int(len(self.images)), "seed": self.seed}


@dataclasses.dataclass
class _Target:
    """Where a version goes: ``<output>/<name>/<version>`` and the TFLite files next to ``<name>``."""
    output: pathlib.Path
    name: str
    version: int

    @property
    def model_dir(self) -> pathlib.Path:
        return self.output / self.name

    @property
    def final_dir(self) -> pathlib.Path:
        return self.model_dir / str(self.version)

    def tflite(self, quantize: Optional[str]) -> pathlib.Path:
        return self.output / tflite_filename(self.name, quantize)


@dataclasses.dataclass
class _Staged:
    """Everything written under temporary names; :meth:`discard` removes it all."""
    stage: Optional[pathlib.Path]  # the SavedModel folder, once created
    created_model_dir: bool
    tflite: Dict[Optional[str], pathlib.Path] = dataclasses.field(default_factory=dict)

    def discard(self, target: _Target) -> None:
        for p in [self.stage, *self.tflite.values()]:
            if p is not None:
                _remove(p)
        if self.created_model_dir:
            try:
                target.model_dir.rmdir()
            except OSError:
                pass


def _info(run, model, target: _Target, mc_samples, variants, calibration: Optional[_Calibration]) -> Dict[str, Any]:
    import tensorflow as tf

    spec = model.dataset_spec
    outs = signature_outputs(spec.task_names)
    return {
        "name": target.name,
        "version": target.version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "run": run.path.name,
        "dataset": spec.name,
        "model": model.model_name,
        "hparams": model.hparams,
        "training_precision": model_precision(model.network),   # the export computes in float32
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *spec.input_shape], "range": [0.0, 1.0]},
        "tasks": [{"name": t.name, "classes": list(t.class_names)} for t in spec.tasks],
        "signatures": {
            SERVING_SIGNATURE: {"outputs": outs[SERVING_SIGNATURE], "z": "posterior mean"},
            MC_SIGNATURE: {"outputs": outs[MC_SIGNATURE], "z": "posterior samples",
                           "samples": mc_samples if model.is_stochastic else 0},
            **({TASK_SIGNATURE: {"inputs": [INPUT_NAME, TASK_INPUT_NAME], "outputs": ["probs", "class", "entropy"],
                                 "task": {t: i for i, t in enumerate(spec.task_names)}}}
               if getattr(model, "partial_labels", False) else {}),
        },
        "tflite": {("float32" if q is None else q): tflite_filename(target.name, q) for q in variants},
        "int8_calibration": None if calibration is None else calibration.info(run.dataset),
        "run_test_accuracy": (run.metrics() or {}).get("test"),
    }


def export_run(run_dir, output=DEFAULT_OUTPUT, name: Optional[str] = None, version: Optional[int] = None,
               force: bool = False, tflite: bool = False, quantize: Sequence[str] = (),
               mc_samples: int = DEFAULT_MC_SAMPLES, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
               data_dir=None, check: Optional[bool] = None, check_limit: Optional[int] = None,
               serving_root: str = DEFAULT_SERVING_ROOT, log=None) -> ExportResult:
    """Export run ``run_dir``; see the module docstring. Raises :class:`ExportError`.

    Everything that can fail for a reason the user can fix (the run, the
    data, the output directory) is checked before anything is written.
    ``check``: ``None`` checks the artifacts on the run's test split when the
    data is available, ``True`` requires it, ``False`` skips it.
    """
    log = log or (lambda msg: None)
    variants = _validate_options(tflite, quantize, mc_samples, version, calibration_size)
    run, model = _load_run_and_model(run_dir, log)
    name = _model_name(name, run)
    calibration = _calibration_data(run, calibration_size, data_dir) if "int8" in variants else None
    notes: List[str] = []
    test = _check_data(run, check, check_limit, data_dir, notes)
    target = _choose_version(pathlib.Path(output), name, version, force)
    staged = _stage(target, run, model, int(mc_samples), variants, calibration, log)
    artifacts = _commit(staged, target, model, int(mc_samples))
    notes += _stale_tflite_notes(target, variants)
    names = write_models_config(target.output, serving_root)
    config = target.output / MODELS_CONFIG
    artifacts.append(Artifact("config", config, config.stat().st_size,
                              f"TF Serving model_config_list, {len(names)} model(s)"))
    result = ExportResult(name, target.version, target.final_dir, target.output, artifacts, names, notes=notes,
                          run=run.path)
    if test is not None:
        log(f"checking on {len(test)} {run.dataset} test images ...")
        result.check = check_export(model, result, test)
    return result


# -- the steps of export_run, in order ------------------------------------
def _validate_options(tflite: bool, quantize: Sequence[str], mc_samples: int, version: Optional[int],
                      calibration_size: int) -> List[Optional[str]]:
    """Check the numeric options; return the TFLite variants to write (``None`` is float32)."""
    for q in quantize:
        if q not in QUANTIZATIONS:
            raise ExportError(f"unknown quantisation {q!r}; choose from {', '.join(QUANTIZATIONS)}")
    quantize = [q for q in QUANTIZATIONS if q in quantize]
    if int(mc_samples) < 1:
        raise ExportError(f"--mc-samples must be >= 1; got {mc_samples}")
    if version is not None and int(version) < 1:
        raise ExportError(f"--version must be a positive integer; got {version}")
    if calibration_size < 1:
        raise ExportError(f"--calibration-size must be >= 1; got {calibration_size}")
    return ([None] if (tflite or quantize) else []) + quantize


def _load_run_and_model(run_dir, log):
    """The run and its trained model, which must match the run's data set."""
    try:
        run = runs.load_run(run_dir)
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    log(f"loading {run.path / runs.MODEL} ...")
    try:
        model = run.model
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    except Exception as e:  # a corrupt or foreign .keras file
        raise ExportError(f"cannot load {run.path / runs.MODEL}: {_one_line(e)}") from None
    _check_model_matches_run(model, run)
    return run, model


def _model_name(name: Optional[str], run) -> str:
    name = name or f"{run.dataset}_{run.model_name}"
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '.', '-' (not starting with '.' or '-')")
    return name


def _calibration_data(run, size: int, data_dir, seed: int = 0) -> _Calibration:
    """``size`` images of the run's own training split, a seeded stratified subset."""
    from .datasets import DataError

    try:
        train = run.load_split("train", data_dir)
    except DataError as e:
        raise ExportError(f"int8 calibration needs the {run.dataset} training split: {_one_line(e)}") from None
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    return _Calibration(train.sample(size, seed=seed).images.astype(np.float32) / 255.0, seed)


def _check_data(run, check: Optional[bool], check_limit: Optional[int], data_dir, notes: List[str]):
    """The run's test split for the check (``check_limit``: a stratified subset drawn with
    the run's seed), or ``None`` (with a note) when it is skipped."""
    from .datasets import DEFAULT_SUBSET_SEED, DataError

    if check is False:
        return None
    try:
        test = run.load_split("test", data_dir)
        seed = run.subsets["seed"]
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    except DataError as e:
        if check:
            raise ExportError(f"--check needs the {run.dataset} test split: {_one_line(e)}") from None
        notes.append(f"check skipped: no test data ({_one_line(e)})")
        return None
    return test.sample(int(check_limit), seed=DEFAULT_SUBSET_SEED if seed is None else seed) if check_limit else test


def _choose_version(output: pathlib.Path, name: str, version: Optional[int], force: bool) -> _Target:
    """A writable output root and a version that is free (or ``force``d)."""
    _prepare_output_root(output)
    model_dir = output / name
    if model_dir.exists() and not model_dir.is_dir():
        raise ExportError(f"{model_dir} exists and is not a directory")
    versions = existing_versions(model_dir)
    following = versions[-1] + 1 if versions else 1
    target = _Target(output, name, int(version) if version is not None else following)
    if target.final_dir.exists() and not force:
        raise ExportError(f"{target.final_dir} exists; an exported version is never overwritten "
                          f"(omit --version for the next one, {following}, or pass --force)")
    if model_dir.is_dir():
        _probe_writable(model_dir)
    return target


def _stage(target: _Target, run, model, mc_samples: int, variants, calibration: Optional[_Calibration],
           log) -> _Staged:
    """Write the SavedModel (with export.json) and the TFLite files under temporary names next to
    their targets; on any failure remove what was written."""
    import tensorflow as tf

    staged = _Staged(None, created_model_dir=not target.model_dir.exists())
    try:
        target.model_dir.mkdir(exist_ok=True)
        staged.stage = pathlib.Path(tempfile.mkdtemp(dir=target.model_dir, prefix=f"{_TMP_PREFIX}{target.version}-"))
        log(f"writing the SavedModel (signatures {SERVING_SIGNATURE}, {MC_SIGNATURE}) ...")
        module, signatures = build_serving_module(model, mc_samples)
        tf.saved_model.save(module, str(staged.stage), signatures=signatures)
        (staged.stage / INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(staged.stage / INFO_FILE, _info(run, model, target, mc_samples, variants, calibration))
        for q in variants:
            log(f"converting to TFLite ({describe_quantization(q)}) ...")
            flat = _convert(staged.stage, q, calibration)
            fd, tmp = tempfile.mkstemp(dir=target.output, prefix=f"{_TMP_PREFIX}{target.tflite(q).name}-")
            staged.tflite[q] = pathlib.Path(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(flat)
            os.chmod(tmp, 0o644)
        _make_readable(staged.stage)
    except BaseException as e:
        staged.discard(target)
        if isinstance(e, OSError):
            raise ExportError(f"writing the export failed: {e}") from None
        raise
    return staged


def _convert(saved_model_dir: pathlib.Path, quantize: Optional[str], calibration: Optional[_Calibration]) -> bytes:
    """One TFLite conversion; its failure is an :class:`ExportError`."""
    try:
        return convert_saved_model(saved_model_dir, quantize,
                                   calibration.images if quantize == "int8" else None)
    except Exception as e:
        raise ExportError(f"TFLite conversion ({quantize or 'float32'}) failed: {_one_line(e)}") from None


def _commit(staged: _Staged, target: _Target, model, mc_samples: int) -> List[Artifact]:
    """Rename the staged version into place (an old one under ``--force`` is moved aside first and
    put back if the rename fails), then the TFLite files."""
    final_dir = target.final_dir
    replaced = final_dir.exists()
    old = target.model_dir / f"{_TMP_PREFIX}old-{target.version}-{os.getpid()}" if replaced else None
    if old is not None:
        os.rename(final_dir, old)
    try:
        os.rename(staged.stage, final_dir)
    except OSError as e:
        if old is not None:
            os.rename(old, final_dir)
        staged.discard(target)
        raise ExportError(f"cannot move the export into {final_dir}: {e.strerror or e}") from None
    if old is not None:
        _remove(old)
    samples = mc_samples if model.is_stochastic else 0
    extra = f"; {TASK_SIGNATURE}" if getattr(model, "partial_labels", False) else ""
    artifacts = [Artifact("savedmodel", final_dir, _dir_size(final_dir),
                          f"SavedModel ({SERVING_SIGNATURE}; {MC_SIGNATURE}: {samples} samples{extra})", replaced=replaced)]
    for q, tmp in staged.tflite.items():
        path = target.tflite(q)
        existed = path.exists()
        os.replace(tmp, path)
        artifacts.append(Artifact("tflite", path, path.stat().st_size, describe_quantization(q), q, existed))
    return artifacts


def _stale_tflite_notes(target: _Target, variants) -> List[str]:
    """TFLite files of this name that this export did not rewrite (they belong to an older version)."""
    return [f"{target.tflite(q)} is left from an earlier export; it is not version {target.version}"
            for q in (None,) + QUANTIZATIONS if q not in variants and target.tflite(q).exists()]


def _make_readable(path: pathlib.Path) -> None:
    """mkdtemp makes 0700 folders; a serving container often runs as another user."""
    os.chmod(path, 0o755)
    for p in path.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# --------------------------------------------------------------------------
# Check: accuracies of every artifact on the test split
# --------------------------------------------------------------------------
def _saved_task_outputs(saved_model_dir, images, tasks) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
    fn = loaded.signatures[TASK_SIGNATURE]
    parts = [{k: v.numpy() for k, v in fn(image=tf.constant(images[i:i + 256]),
                                           task=tf.constant(tasks[i:i + 256])).items()}
             for i in range(0, len(images), 256)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_export(model, result: ExportResult, test) -> Dict[str, Any]:
    """Accuracies of the Keras model, the SavedModel (both signatures) and each TFLite file on ``test``,
    and the largest probability difference of each to the SavedModel's ``serving_default``."""
    import tensorflow as tf

    from .metrics import accuracies, correct_from_probs

    tasks = list(model.task_names)
    images = test.images.astype(np.float32) / 255.0
    labels = {t: test.labels[t] for t in tasks}
    # tasks with their own images (VMTL): each task scored on its own, with the average
    labelled = {t: labels[t] >= 0 for t in tasks} if getattr(model, "partial_labels", False) else None

    def probs_of(outputs):
        return {t: np.asarray(outputs[f"{t}_probs"]) for t in tasks}

    def signature(fn):
        return lambda x: {k: v.numpy() for k, v in fn(image=tf.constant(x)).items()}

    keras_probs = predict_batches(lambda x: {t: p.numpy() for t, p in model.probabilities(x).items()}, images)
    loaded = tf.saved_model.load(str(result.saved_model_dir))  # kept alive while its signatures run
    sm = predict_batches(signature(loaded.signatures[SERVING_SIGNATURE]), images)
    mc = predict_batches(signature(loaded.signatures[MC_SIGNATURE]), images)
    del loaded
    ref = probs_of(sm)
    ref_classes = {t: np.argmax(ref[t], -1) for t in tasks}

    def row(probs, classes=None):
        agreement = accuracies(correct_from_probs(probs, ref_classes))  # accuracy against the reference's classes
        r: Dict[str, Any] = {"accuracy": accuracies(correct_from_probs(probs, labels), labelled),
                             "max_abs_diff": float(max(np.max(np.abs(probs[t] - ref[t])) for t in tasks)),
                             "agreement": float(np.mean([agreement[t] for t in tasks]))}
        if classes is not None:
            r["class_matches_argmax"] = bool(all(np.array_equal(classes[t], np.argmax(probs[t], -1)) for t in tasks))
        return r

    rows: Dict[str, Dict[str, Any]] = {"keras": row(keras_probs),
                                       "savedmodel": row(ref, {t: sm[f"{t}_class"] for t in tasks}),
                                       "savedmodel_mc": row(probs_of(mc))}
    rows["savedmodel_mc"]["mean_entropy"] = {t: float(np.mean(mc[f"{t}_entropy"])) for t in tasks}
    for a in result.artifacts:
        if a.kind == "tflite" and labelled is None:
            out = LiteModel(a.path).predict(images)
            rows[f"tflite_{a.quantize or 'float32'}"] = row(probs_of(out), {t: out[f"{t}_class"] for t in tasks})
    if labelled is not None:       # predict_task: each image's own task, against the heads of serving_default
        own = np.asarray(test.extras["task"], np.int32)
        heads = np.stack([ref[t] for t in tasks], axis=1)[np.arange(len(own)), own]

        def task_row(out):
            acc = {t: float(np.mean(out["class"][own == i] == labels[t][own == i])) for i, t in enumerate(tasks)}
            acc["average"] = float(np.mean(list(acc.values())))
            return {"accuracy": acc, "max_abs_diff": float(np.max(np.abs(out["probs"] - heads))),
                    "agreement": float(np.mean(out["class"] == np.argmax(heads, -1))),
                    "class_matches_argmax": bool(np.array_equal(out["class"], np.argmax(out["probs"], -1))),
                    "mean_entropy": float(np.mean(out["entropy"]))}

        rows[f"savedmodel_{TASK_SIGNATURE}"] = task_row(_saved_task_outputs(result.saved_model_dir, images, own))
        for a in result.artifacts:
            if a.kind == "tflite":
                rows[f"tflite_{a.quantize or 'float32'}"] = task_row(LiteModel(a.path).predict_task(images, own))
    report: Dict[str, Any] = {"images": int(len(images)), "tasks": tasks, "rows": rows}
    if "tflite_int8" in rows and "tflite_float32" in rows:
        drop = {t: rows["tflite_float32"]["accuracy"][t] - rows["tflite_int8"]["accuracy"][t] for t in tasks}
        report["int8_drop"] = drop
        report["int8_within_tolerance"] = bool(all(d <= INT8_TOLERANCE + 1e-12 for d in drop.values()))
    return report


# --------------------------------------------------------------------------
# Summary and command line
# --------------------------------------------------------------------------
_ROW_LABELS = {
    "keras": "Keras model (run)",
    "savedmodel": "SavedModel serving_default",
    "savedmodel_mc": "SavedModel predict_mc",
    "savedmodel_predict_task": "SavedModel predict_task",
    "tflite_float32": "TFLite float32",
    "tflite_float16": "TFLite float16",
    "tflite_int8": "TFLite int8",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n / 1e3:.2f} kB"


def format_summary(result: ExportResult) -> str:
    lines = [f"exported {result.name} version {result.version} to {result.output_root}"
             + (f" from run {result.run}" if result.run is not None else "")]
    w = max(len(str(a.path)) for a in result.artifacts) + 1
    for a in result.artifacts:
        path = str(a.path) + ("/" if a.kind == "savedmodel" else "")
        lines.append(f"  {path:<{w}} {_mb(a.size):>10}  {a.description}{'  (replaced)' if a.replaced else ''}")
    lines.append(f"  models.config lists: {', '.join(result.models)}")
    for n in result.notes:
        lines.append(f"  note: {n}")
    c = result.check
    if c:
        tasks = c["tasks"]
        cols = tasks + [k for k in ("joint", "average") if k in next(iter(c["rows"].values()))["accuracy"]]
        lines.append(f"check on {c['images']} test images (accuracy; max |diff| of probabilities and arg-max "
                     f"agreement vs SavedModel serving_default):")
        head = f"  {'artifact':<28}" + "".join(f"{t:>14}" for t in cols) + f"{'max|diff|':>12}{'agree':>8}"
        lines.append(head)
        for key, r in c["rows"].items():
            acc = "".join(f"{r['accuracy'][t]:>14.4f}" for t in cols)
            lines.append(f"  {_ROW_LABELS.get(key, key):<28}{acc}{r['max_abs_diff']:>12.2e}{r['agreement']:>8.3f}")
        if "int8_drop" in c:
            drops = ", ".join(f"{t} {100 * d:+.2f}" for t, d in c["int8_drop"].items())
            verdict = "within" if c["int8_within_tolerance"] else "WARNING: more than"
            lines.append(f"  int8 accuracy drop vs float32 (points): {drops} ({verdict} "
                         f"{100 * INT8_TOLERANCE:.0f} point; one image is {100 / c['images']:.2f} points)")
        f32 = c["rows"].get("tflite_float32")
        if f32 is not None and f32["max_abs_diff"] > FLOAT_TOLERANCE:
            lines.append(f"  WARNING: TFLite float32 differs from the SavedModel by {f32['max_abs_diff']:.2e} "
                         f"(> {FLOAT_TOLERANCE:g})")
    return "\n".join(lines)


def check_markdown(doc: Dict[str, Any]) -> str:
    """The exporter's check (``--json`` output, :func:`result_to_json`) as a Markdown table:
    size, accuracy per task and joint, largest probability difference and arg-max agreement
    of every artifact against the SavedModel's ``serving_default``."""
    c = doc["check"]
    cols = c["tasks"] + [k for k in ("joint", "average") if k in next(iter(c["rows"].values()))["accuracy"]]
    sizes = {f"tflite_{a['quantize'] or 'float32'}" if a["kind"] == "tflite" else a["kind"]: a["bytes"]
             for a in doc["artifacts"]}
    lines = ["| artifact | size | " + " | ".join(cols) + " | max \\|Δp\\| vs SavedModel | arg-max agreement |",
             "|---|---:|" + "---:|" * (len(cols) + 2)]
    for key, r in c["rows"].items():
        size = _mb(sizes[key]) if key in sizes else ("(same)" if key == "savedmodel_mc" else "-")
        diff = "-" if key == "savedmodel" else f"{r['max_abs_diff']:.1e}"
        agree = "-" if key == "savedmodel" else f"{r['agreement']:.3f}"
        lines.append(f"| {_ROW_LABELS.get(key, key)} | {size} | " + " | ".join(f"{r['accuracy'][t]:.4f}" for t in cols)
                     + f" | {diff} | {agree} |")
    return "\n".join(lines) + "\n"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=pathlib.Path,
                   help=f"run directory written by train.py (default: the most recently finished run under "
                        f"{runs.DEFAULT_ROOT}/ in the current directory)")
    p.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT,
                   help="output root (default: export/ in the current directory)")
    p.add_argument("--name", help="model name (default <dataset>_<model>)")
    p.add_argument("--version", type=int, help="version number (default: the next integer)")
    p.add_argument("--force", action="store_true", help="replace an existing --version")
    p.add_argument("--mc-samples", type=int, default=DEFAULT_MC_SAMPLES,
                   help=f"posterior samples averaged by the {MC_SIGNATURE} signature (default {DEFAULT_MC_SAMPLES})")
    p.add_argument("--tflite", action="store_true", help="also write <output>/<name>.tflite (float32)")
    p.add_argument("--quantize", action="append", default=[], metavar="float16|int8",
                   help="also write <name>_float16.tflite / <name>_int8.tflite (implies --tflite; repeat or "
                        "comma-separate for both)")
    p.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE,
                   help=f"training images used for int8 calibration (default {DEFAULT_CALIBRATION_SIZE})")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate every artifact on the run's test split (default: when the data is available)")
    p.add_argument("--check-limit", type=int,
                   help="check on N test images only, a random subset stratified on the labels (the run's seed)")
    p.add_argument("--serving-root", default=DEFAULT_SERVING_ROOT,
                   help=f"where the server sees the output root, for models.config (default {DEFAULT_SERVING_ROOT})")
    p.add_argument("--json", type=pathlib.Path, help="also write the summary (files, sizes, check) as JSON here")
    p.add_argument("--quiet", action="store_true", help="print the summary only")
    return p


def _quantize_list(values: Sequence[str]) -> List[str]:
    out: List[str] = []
    for v in values:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def result_to_json(result: ExportResult) -> Dict[str, Any]:
    return {
        "name": result.name, "version": result.version, "saved_model_dir": str(result.saved_model_dir),
        "run": None if result.run is None else str(result.run),
        "artifacts": [{"kind": a.kind, "path": str(a.path), "bytes": a.size, "description": a.description,
                       "quantize": a.quantize, "replaced": a.replaced} for a in result.artifacts],
        "models": result.models, "check": result.check, "notes": result.notes,
    }


def _latest_run(log) -> pathlib.Path:
    """The run to export when ``--run`` is not given; :class:`ExportError` when there is none."""
    try:
        path = runs.latest_finished_run(runs.DEFAULT_ROOT)
    except runs.RunError as e:
        raise ExportError(f"no --run given and {e}") from None
    log(f"no --run given: exporting {path}, the most recently finished run under {runs.DEFAULT_ROOT}/")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[{PROG}] {msg}", file=sys.stderr, flush=True))
    try:
        run_dir = args.run if args.run is not None else _latest_run(log)
        result = export_run(run_dir, output=args.output, name=args.name, version=args.version, force=args.force,
                            tflite=args.tflite, quantize=_quantize_list(args.quantize), mc_samples=args.mc_samples,
                            calibration_size=args.calibration_size,
                            data_dir=args.data_dir, check=args.check, check_limit=args.check_limit,
                            serving_root=args.serving_root, log=log)
    except ExportError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(format_summary(result))
    if args.json:
        runs.write_json(args.json, result_to_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
