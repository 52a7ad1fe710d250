"""Export a trained run as deployable artifacts: a TF Serving SavedModel and TFLite files.

    python -m tf_mtvib.export --run RUN_DIR [--tflite] [--quantize float16|int8]
                              [--output export/] [--name NAME] [--version N] [--force]
                              [--mc-samples N] [--no-check]

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
from .export_lite import QUANTIZATIONS, LiteModel, convert_saved_model, describe_quantization, tflite_filename

__all__ = [
    "SERVING_SIGNATURE", "MC_SIGNATURE", "INPUT_NAME", "DEFAULT_OUTPUT", "DEFAULT_MC_SAMPLES", "MODELS_CONFIG",
    "INFO_FILE", "ExportError", "ExportResult", "signature_outputs", "build_serving_module",
    "existing_versions", "models_config_text", "write_models_config", "export_run", "main",
]

PROG = "tf_mtvib.export"
SERVING_SIGNATURE = "serving_default"
MC_SIGNATURE = "predict_mc"
INPUT_NAME = "image"
DEFAULT_OUTPUT = pathlib.Path("export")
DEFAULT_MC_SAMPLES = 12
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


def build_serving_module(network, spec, mc_samples: int = DEFAULT_MC_SAMPLES):
    """A ``tf.Module`` with the network's variables and the two signature functions.

    Returns ``(module, signatures)`` for ``tf.saved_model.save(module, path,
    signatures=signatures)``. The module tracks the network's ``tf.Variable``
    objects themselves (not the Keras layers), so the SavedModel's object
    graph holds no Keras objects, and the TFLite converter freezes the
    weights into constants.
    """
    import tensorflow as tf

    from .layers import GaussianLatent
    from .models import probabilities_of

    if int(mc_samples) < 1:
        raise ValueError(f"mc_samples must be >= 1; got {mc_samples}")
    tasks = tuple(spec.task_names)
    stochastic = any(isinstance(l, GaussianLatent) for l in network._flatten_layers(include_self=False))
    samples = int(mc_samples) if stochastic else 0

    module = tf.Module(name="tf_mtvib_serving")
    module.model_variables = [_tf_variable(v) for v in network.variables]
    image_spec = tf.TensorSpec([None, *spec.input_shape], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[image_spec])
    def serve(image):
        probs = probabilities_of(network, image, 0)
        out = {}
        for t in tasks:
            out[f"{t}_probs"] = probs[t]
            out[f"{t}_class"] = tf.argmax(probs[t], axis=-1, output_type=tf.int64)
        return out

    @tf.function(input_signature=[image_spec])
    def predict_mc(image):
        probs = probabilities_of(network, image, samples)  # samples > 0: traced with z sampled
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


def _calibration_images(run, size: int, data_dir, seed: int = 0) -> np.ndarray:
    """``size`` images of the run's training split, a seeded stratified subset."""
    return run.load_split("train", data_dir).sample(size, seed=seed).images.astype(np.float32) / 255.0


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

    def tflite_path(self, quantize: Optional[str] = None) -> Optional[pathlib.Path]:
        for a in self.artifacts:
            if a.kind == "tflite" and a.quantize == quantize:
                return a.path
        return None


def _info(run, model, name, version, mc_samples, variants, calibration) -> Dict[str, Any]:
    import tensorflow as tf

    spec = model.dataset_spec
    outs = signature_outputs(spec.task_names)
    return {
        "name": name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "run": run.path.name,
        "dataset": spec.name,
        "model": model.model_name,
        "hparams": model.hparams,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *spec.input_shape], "range": [0.0, 1.0]},
        "tasks": [{"name": t.name, "classes": list(t.class_names)} for t in spec.tasks],
        "signatures": {
            SERVING_SIGNATURE: {"outputs": outs[SERVING_SIGNATURE], "z": "posterior mean"},
            MC_SIGNATURE: {"outputs": outs[MC_SIGNATURE], "z": "posterior samples",
                           "samples": mc_samples if model.is_stochastic else 0},
        },
        "tflite": {("float32" if q is None else q): tflite_filename(name, q) for q in variants},
        "int8_calibration": calibration,
        "run_test_accuracy": (run.metrics() or {}).get("test"),
    }


def export_run(run_dir, output=DEFAULT_OUTPUT, name: Optional[str] = None, version: Optional[int] = None,
               force: bool = False, tflite: bool = False, quantize: Sequence[str] = (),
               mc_samples: int = DEFAULT_MC_SAMPLES, calibration_dataset: Optional[str] = None,
               calibration_size: int = DEFAULT_CALIBRATION_SIZE, data_dir=None, check: Optional[bool] = None,
               check_limit: Optional[int] = None, serving_root: str = DEFAULT_SERVING_ROOT,
               log=None) -> ExportResult:
    """Export run ``run_dir``; see the module docstring. Raises :class:`ExportError`.

    Everything that can fail for a reason the user can fix (the run, the
    data, the output directory) is checked before anything is written.
    ``check``: ``None`` checks the artifacts on the run's test split when the
    data is available, ``True`` requires it, ``False`` skips it.
    """
    log = log or (lambda msg: None)
    output = pathlib.Path(output)
    for q in quantize:
        if q not in QUANTIZATIONS:
            raise ExportError(f"unknown quantisation {q!r}; choose from {', '.join(QUANTIZATIONS)}")
    quantize = tuple(q for q in QUANTIZATIONS if q in quantize)
    variants: List[Optional[str]] = ([None] if (tflite or quantize) else []) + list(quantize)
    if int(mc_samples) < 1:
        raise ExportError(f"--mc-samples must be >= 1; got {mc_samples}")
    if version is not None and int(version) < 1:
        raise ExportError(f"--version must be a positive integer; got {version}")
    if calibration_size < 1:
        raise ExportError(f"--calibration-size must be >= 1; got {calibration_size}")

    # -- the run -----------------------------------------------------------
    try:
        run = runs.load_run(run_dir)
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    from .datasets import DEFAULT_SUBSET_SEED, DataError, get_spec

    if calibration_dataset is not None:
        try:
            get_spec(calibration_dataset)
        except ValueError as e:
            raise ExportError(f"--calibration-dataset: {e}") from None
        if calibration_dataset != run.dataset:
            raise ExportError(f"--calibration-dataset {calibration_dataset!r} is not the data set the model was "
                              f"trained on ({run.dataset!r}); int8 calibration must use the model's own inputs")
    log(f"loading {run.path / runs.MODEL} ...")
    try:
        model = run.model
    except runs.RunError as e:
        raise ExportError(str(e)) from None
    except Exception as e:  # a corrupt or foreign .keras file
        raise ExportError(f"cannot load {run.path / runs.MODEL}: {_one_line(e)}") from None
    _check_model_matches_run(model, run)
    spec = model.dataset_spec
    name = name or f"{run.dataset}_{run.model_name}"
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '.', '-' (not starting with '.' or '-')")

    # -- data: calibration (needed) and test (for the check) ----------------
    calibration = None
    calib_info = None
    if "int8" in quantize:
        try:
            calibration = _calibration_images(run, calibration_size, data_dir)
        except DataError as e:
            raise ExportError(f"int8 calibration needs the {run.dataset} training split: {_one_line(e)}") from None
        except runs.RunError as e:
            raise ExportError(str(e)) from None
        calib_info = {"dataset": run.dataset, "split": "train", "images": int(len(calibration)), "seed": 0}
    test = None
    notes: List[str] = []
    if check is not False:
        try:
            test = run.load_split("test", data_dir)
            if check_limit:  # a stratified subset drawn with the run's seed
                seed = run.subsets["seed"]
                test = test.sample(int(check_limit), seed=DEFAULT_SUBSET_SEED if seed is None else seed)
        except runs.RunError as e:
            raise ExportError(str(e)) from None
        except DataError as e:
            if check:
                raise ExportError(f"--check needs the {run.dataset} test split: {_one_line(e)}") from None
            notes.append(f"check skipped: no test data ({_one_line(e)})")

    # -- the output: writable, version free --------------------------------
    _prepare_output_root(output)
    model_dir = output / name
    if model_dir.exists() and not model_dir.is_dir():
        raise ExportError(f"{model_dir} exists and is not a directory")
    versions = existing_versions(model_dir)
    version = int(version) if version is not None else (versions[-1] + 1 if versions else 1)
    final_dir = model_dir / str(version)
    if final_dir.exists() and not force:
        raise ExportError(f"{final_dir} exists; an exported version is never overwritten "
                          f"(omit --version for the next one, {versions[-1] + 1 if versions else 1}, or pass --force)")
    if model_dir.is_dir():
        _probe_writable(model_dir)

    # -- stage everything in temporary names next to the targets -----------
    import tensorflow as tf

    created_model_dir = not model_dir.exists()
    staged: List[pathlib.Path] = []
    tflite_tmp: Dict[Optional[str], pathlib.Path] = {}
    try:
        model_dir.mkdir(exist_ok=True)
        stage = pathlib.Path(tempfile.mkdtemp(dir=model_dir, prefix=f"{_TMP_PREFIX}{version}-"))
        staged.append(stage)
        log(f"writing the SavedModel (signatures {SERVING_SIGNATURE}, {MC_SIGNATURE}) ...")
        module, signatures = build_serving_module(model.network, spec, mc_samples)
        tf.saved_model.save(module, str(stage), signatures=signatures)
        info = _info(run, model, name, version, int(mc_samples), variants, calib_info)
        (stage / INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(stage / INFO_FILE, info)
        for q in variants:
            log(f"converting to TFLite ({describe_quantization(q)}) ...")
            try:
                flat = convert_saved_model(stage, q, calibration if q == "int8" else None)
            except Exception as e:
                raise ExportError(f"TFLite conversion ({q or 'float32'}) failed: {_one_line(e)}") from None
            fd, tmp = tempfile.mkstemp(dir=output, prefix=f"{_TMP_PREFIX}{tflite_filename(name, q)}-")
            staged.append(pathlib.Path(tmp))
            with os.fdopen(fd, "wb") as f:
                f.write(flat)
            os.chmod(tmp, 0o644)
            tflite_tmp[q] = pathlib.Path(tmp)
        _make_readable(stage)
    except BaseException as e:
        for p in staged:
            _remove(p)
        if created_model_dir:
            try:
                model_dir.rmdir()
            except OSError:
                pass
        if isinstance(e, (ExportError, KeyboardInterrupt)):
            raise
        if isinstance(e, OSError):
            raise ExportError(f"writing the export failed: {e}") from None
        raise

    # -- commit: rename into place -----------------------------------------
    artifacts: List[Artifact] = []
    replaced_version = final_dir.exists()
    old = None
    if replaced_version:
        old = model_dir / f"{_TMP_PREFIX}old-{version}-{os.getpid()}"
        os.rename(final_dir, old)
    try:
        os.rename(stage, final_dir)
    except OSError as e:
        if old is not None:
            os.rename(old, final_dir)
        for p in staged:
            _remove(p)
        raise ExportError(f"cannot move the export into {final_dir}: {e.strerror or e}") from None
    if old is not None:
        _remove(old)
    artifacts.append(Artifact("savedmodel", final_dir, _dir_size(final_dir),
                              f"SavedModel ({SERVING_SIGNATURE}; {MC_SIGNATURE}: "
                              f"{int(mc_samples) if model.is_stochastic else 0} samples)", replaced=replaced_version))
    for q, tmp in tflite_tmp.items():
        target = output / tflite_filename(name, q)
        existed = target.exists()
        os.replace(tmp, target)
        artifacts.append(Artifact("tflite", target, target.stat().st_size, describe_quantization(q), q, existed))
    for q in (None,) + QUANTIZATIONS:
        stale = output / tflite_filename(name, q)
        if q not in tflite_tmp and stale.exists():
            notes.append(f"{stale} is left from an earlier export; it is not version {version}")
    names = write_models_config(output, serving_root)
    artifacts.append(Artifact("config", output / MODELS_CONFIG, (output / MODELS_CONFIG).stat().st_size,
                              f"TF Serving model_config_list, {len(names)} model(s)"))
    result = ExportResult(name, version, final_dir, output, artifacts, names, notes=notes)

    # -- check ------------------------------------------------------------
    if test is not None:
        log(f"checking on {len(test)} {run.dataset} test images ...")
        result.check = check_export(model, result, test)
    return result


def _make_readable(path: pathlib.Path) -> None:
    """mkdtemp makes 0700 folders; a serving container often runs as another user."""
    os.chmod(path, 0o755)
    for p in path.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# --------------------------------------------------------------------------
# Check: accuracies of every artifact on the test split
# --------------------------------------------------------------------------
def _batched(fn, images: np.ndarray, batch_size: int = 256) -> Dict[str, np.ndarray]:
    parts: Dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        for k, v in fn(images[i:i + batch_size]).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def check_export(model, result: ExportResult, test) -> Dict[str, Any]:
    """Accuracies of the Keras model, the SavedModel (both signatures) and each TFLite file on ``test``,
    and the largest probability difference of each to the SavedModel's ``serving_default``."""
    import tensorflow as tf

    from .metrics import accuracies, correct_from_probs

    tasks = list(model.task_names)
    images = test.images.astype(np.float32) / 255.0
    labels = {t: test.labels[t] for t in tasks}
    rows: Dict[str, Dict[str, Any]] = {}

    def probs_of(outputs):
        return {t: np.asarray(outputs[f"{t}_probs"]) for t in tasks}

    keras_probs = _batched(lambda x: {t: p.numpy() for t, p in model.probabilities(x).items()}, images)
    loaded = tf.saved_model.load(str(result.saved_model_dir))
    serve = loaded.signatures[SERVING_SIGNATURE]
    mc = loaded.signatures[MC_SIGNATURE]
    sm = _batched(lambda x: {k: v.numpy() for k, v in serve(image=tf.constant(x)).items()}, images)
    ref = probs_of(sm)

    def row(probs, classes=None):
        r: Dict[str, Any] = {"accuracy": accuracies(correct_from_probs(probs, labels))}
        r["max_abs_diff"] = float(max(np.max(np.abs(probs[t] - ref[t])) for t in tasks))
        r["agreement"] = float(np.mean([np.mean(np.argmax(probs[t], -1) == np.argmax(ref[t], -1)) for t in tasks]))
        if classes is not None:
            r["class_matches_argmax"] = bool(all(np.array_equal(classes[t], np.argmax(probs[t], -1)) for t in tasks))
        return r

    rows["keras"] = row(keras_probs)
    rows["savedmodel"] = row(ref, {t: sm[f"{t}_class"] for t in tasks})
    mc_out = _batched(lambda x: {k: v.numpy() for k, v in mc(image=tf.constant(x)).items()}, images)
    rows["savedmodel_mc"] = row(probs_of(mc_out))
    rows["savedmodel_mc"]["mean_entropy"] = {t: float(np.mean(mc_out[f"{t}_entropy"])) for t in tasks}
    del loaded
    for a in result.artifacts:
        if a.kind != "tflite":
            continue
        out = LiteModel(a.path).predict(images)
        rows[f"tflite_{a.quantize or 'float32'}"] = row(probs_of(out), {t: out[f"{t}_class"] for t in tasks})
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
    "tflite_float32": "TFLite float32",
    "tflite_float16": "TFLite float16",
    "tflite_int8": "TFLite int8",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n / 1e3:.2f} kB"


def format_summary(result: ExportResult) -> str:
    lines = [f"exported {result.name} version {result.version} to {result.output_root}"]
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
        cols = tasks + ["joint"]
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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=pathlib.Path, help="run directory written by train.py")
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
    p.add_argument("--calibration-dataset",
                   help="data set of the int8 calibration images (must be the run's; default: the run's)")
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
        "artifacts": [{"kind": a.kind, "path": str(a.path), "bytes": a.size, "description": a.description,
                       "quantize": a.quantize, "replaced": a.replaced} for a in result.artifacts],
        "models": result.models, "check": result.check, "notes": result.notes,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[{PROG}] {msg}", file=sys.stderr, flush=True))
    try:
        result = export_run(args.run, output=args.output, name=args.name, version=args.version, force=args.force,
                            tflite=args.tflite, quantize=_quantize_list(args.quantize), mc_samples=args.mc_samples,
                            calibration_dataset=args.calibration_dataset, calibration_size=args.calibration_size,
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
