"""TensorFlow Lite conversion of an exported SavedModel, and inference with LiteRT.

The converter reads the ``serving_default`` signature of a SavedModel written
by :mod:`tf_mtvib.export` (the deterministic mean-of-z network, which holds no
random op, so every model converts). The ``.tflite`` file keeps the signature:
input ``image`` (float32 ``[batch, H, W, C]``, pixels in [0, 1]) and outputs
``<task>_probs`` (float32 ``[batch, classes]``) and ``<task>_class`` (int64
``[batch]``, TFLite's ARG_MAX with an int64 output).

Variants (``quantize``):

``None``       float32 weights and activations.
``"float16"``  float16 weights, dequantised to float32 at load; float32 compute.
``"int8"``     full-integer post-training quantisation: int8 weights and
               activations with ranges calibrated on representative images
               (``TFLITE_BUILTINS_INT8`` only, so conversion fails rather than
               leave a float op behind). The model's input and outputs stay
               float32 (a QUANTIZE op after ``image`` and DEQUANTIZE ops before
               the outputs), so a client feeds the same tensor to every variant.

Inference uses the LiteRT interpreter (``ai_edge_litert``), the successor of
the deprecated ``tf.lite.Interpreter``.
"""
from __future__ import annotations

import pathlib
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

__all__ = ["QUANTIZATIONS", "SERVING_SIGNATURE", "INPUT_NAME", "tflite_filename", "convert_saved_model",
           "LiteModel", "predict_batches", "describe_quantization"]

QUANTIZATIONS = ("float16", "int8")
#: The signature every artifact serves (mean of z) and its input; :mod:`tf_mtvib.export` writes them.
SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "image"
#: The signature of models whose tasks have their own images (VMTL): pixels and a task index per image in,
#: that task's probabilities, class and predictive entropy out
TASK_SIGNATURE = "predict_task"
TASK_INPUT_NAME = "task"
CALIBRATION_BATCH = 16


def tflite_filename(model_name: str, quantize: Optional[str] = None) -> str:
    """``<model_name>.tflite`` (float32) or ``<model_name>_<quantize>.tflite``."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None; got {quantize!r}")
    return f"{model_name}.tflite" if quantize is None else f"{model_name}_{quantize}.tflite"


def describe_quantization(quantize: Optional[str]) -> str:
    return {
        None: "float32",
        "float16": "float16 weights, float32 compute and input/outputs",
        "int8": "int8 weights and activations, float32 input/outputs",
    }[quantize]


def _representative(images: np.ndarray, batch: int = CALIBRATION_BATCH,
                    with_task: bool = False) -> Callable[[], Iterator[Dict[str, np.ndarray]]]:
    images = np.asarray(images, np.float32)

    def generate():
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            # predict_task computes every task's head and then picks one: any task index calibrates them all
            yield {INPUT_NAME: chunk, TASK_INPUT_NAME: np.zeros(len(chunk), np.int32)} if with_task else {INPUT_NAME: chunk}

    return generate


def _signature_keys(saved_model_dir) -> List[str]:
    """The serving signatures' names, read from ``saved_model.pb`` (its first meta graph, the serving one)
    without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return [k for k in proto.meta_graphs[0].signature_def if not k.startswith("__")]


def convert_saved_model(saved_model_dir, quantize: Optional[str] = None,
                        representative_images: Optional[np.ndarray] = None) -> bytes:
    """Convert the ``serving_default`` signature of ``saved_model_dir`` to a TFLite flatbuffer (its
    ``predict_task`` signature instead where it has one).

    ``representative_images`` (float32 in [0, 1], shape ``[N, H, W, C]``) are
    required for ``quantize="int8"``: the calibration data, drawn from the
    training set the model was trained on.
    """
    import tensorflow as tf

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None; got {quantize!r}")
    # a model whose tasks have their own images (VMTL) ships predict_task (pixels and a task index per image);
    # given it beside serving_default, the converter (TF 2.21) keeps serving_default alone, so it goes alone
    with_task = TASK_SIGNATURE in _signature_keys(saved_model_dir)
    key = TASK_SIGNATURE if with_task else SERVING_SIGNATURE
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[key])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("int8 quantisation needs representative images (calibration data)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_images, with_task=with_task)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # inference_input_type / inference_output_type stay float32 (see the module docstring)
    with warnings.catch_warnings():
        # int8 calibration runs TF's own (deprecated) tf.lite.Interpreter, which warns about itself
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return converter.convert()


class LiteModel:
    """A ``.tflite`` file run with the LiteRT interpreter through its ``serving_default`` signature, or
    its ``predict_task`` one (:meth:`predict_task`; models whose tasks have their own images)."""

    def __init__(self, path, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = pathlib.Path(path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        self.signature_key = next((k for k in (SERVING_SIGNATURE, TASK_SIGNATURE) if k in signatures), None)
        if self.signature_key is None:
            raise ValueError(f"{self.path}: no {SERVING_SIGNATURE!r} or {TASK_SIGNATURE!r} signature "
                             f"(has {sorted(signatures)})")
        self.signature = signatures[self.signature_key]
        self.runner = self.interpreter.get_signature_runner(self.signature_key)

    @property
    def input_names(self) -> Sequence[str]:
        return list(self.signature["inputs"])

    @property
    def output_names(self) -> Sequence[str]:
        return list(self.signature["outputs"])

    def input_details(self):
        return self.runner.get_input_details()

    def output_details(self):
        return self.runner.get_output_details()

    def tensor_dtypes(self) -> set:
        """The dtypes of every tensor in the model (int8 ones show a quantised graph)."""
        return {np.dtype(d["dtype"]) for d in self.interpreter.get_tensor_details()}

    def __call__(self, images) -> Dict[str, np.ndarray]:
        """One batch: ``{output name: array}`` (the runner resizes the batch dimension)."""
        if self.signature_key != SERVING_SIGNATURE:
            raise ValueError(f"{self.path} holds {self.signature_key!r}: call predict_task(images, tasks)")
        out = self.runner(**{INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})
        return {k: np.array(v) for k, v in out.items()}

    def predict(self, images, batch_size: int = 256) -> Dict[str, np.ndarray]:
        """All of ``images`` in batches, outputs concatenated."""
        return predict_batches(self, images, batch_size)

    def predict_task(self, images, tasks, batch_size: int = 256) -> Dict[str, np.ndarray]:
        """The ``predict_task`` signature (models whose tasks have their own images): ``probs``, ``class``
        and ``entropy`` of each image's task, in batches."""
        if self.signature_key != TASK_SIGNATURE:
            raise ValueError(f"{self.path}: no {TASK_SIGNATURE!r} signature")
        runner = self.runner
        tasks = np.asarray(tasks, np.int32)
        parts = [runner(**{INPUT_NAME: np.ascontiguousarray(images[i:i + batch_size], np.float32),
                           TASK_INPUT_NAME: np.ascontiguousarray(tasks[i:i + batch_size])})
                 for i in range(0, len(images), batch_size)]
        return {k: np.concatenate([np.array(p[k]) for p in parts]) for k in parts[0]}


def predict_batches(fn: Callable[[np.ndarray], Dict[str, np.ndarray]], images,
                    batch_size: int = 256) -> Dict[str, np.ndarray]:
    """``fn`` (one batch of images -> ``{name: array}``) over all of ``images`` in batches of
    ``batch_size``, the outputs concatenated along the batch axis."""
    parts: Dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        for k, v in fn(images[i:i + batch_size]).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}
