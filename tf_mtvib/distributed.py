"""Training past one machine: a custom loop for ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (MWMS) with
TensorFlow 2.21 (keras-team/keras#20585: ``Attempt to convert a value
(PerReplica:{...})``). :func:`custom_fit` is the training loop ``train.py``
runs instead (``--strategy multi-worker``, or ``--loop custom`` under any
strategy, so that it can be compared with ``fit``):

* every step is ``strategy.run(model.train_step, ...)``: the model's own
  step, i.e. :meth:`MultiTaskModel.compute_loss` (the MTVIB loss with its
  ``log_sigma`` and ``beta * KL`` terms, divided by the number of replicas)
  and ``compute_metrics``; the optimizer all-reduces (sums) the gradients
  across every replica of every worker;
* the input is the same ``to_dataset`` pipeline ``fit`` gets, batched by the
  *global* batch and sharded by data through
  ``strategy.distribute_datasets_from_function`` (:func:`distributed_batches`):
  every worker builds the same shuffled pipeline and keeps, of each global
  batch, the slices of its own replicas, which is the split
  ``MirroredStrategy`` makes of a batch across devices. Epoch ``e`` shuffles
  with seed ``seed + e``, so a resumed run sees the data an uninterrupted one
  would;
* the callbacks are ``train.py``'s (history, NaN guard, TensorBoard, progress
  bar), run by the chief only, except the NaN guard, which every worker runs
  on the same all-reduced loss so that all of them stop together;
* fault tolerance: after every epoch the run's resume checkpoint
  (:class:`tf_mtvib.checkpoints.ResumeCheckpoint`, the format ``fit`` writes
  too) of the model, the optimizer and the epoch counter. Every worker
  saves (saving reads distributed variables, a collective operation); the
  chief into ``<run>/backup``, the others into a temporary directory that is
  removed afterwards, as TensorFlow requires. The manager writes its
  ``checkpoint`` state file only after the checkpoint's files are complete,
  and only through it is a checkpoint found, so a kill during a save leaves
  the previous checkpoint in force. On restart every worker restores the
  chief's latest checkpoint (the run directory must be on a file system all
  workers see, as for Keras' ``BackupAndRestore``) and the workers check that
  they all resume from the same epoch.

``TF_CONFIG`` (the standard variable Kubernetes, Vertex AI and Slurm
launchers set) describes the cluster; :func:`cluster_from_env` validates it
before TensorFlow starts, so that a missing or malformed one is a clear error
instead of a hang. ``python -m tf_mtvib.launch`` starts workers on localhost.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from . import runs
from .checkpoints import ResumeCheckpoint

__all__ = ["MULTI_WORKER", "ClusterConfigError", "DistributedSetupError", "ClusterTask", "cluster_from_env", "tf_config",
           "make_multi_worker_strategy", "is_chief", "worker_id", "num_workers", "steps_per_epoch", "distributed_batches",
           "custom_fit", "save_model", "gradient_bytes"]

MULTI_WORKER = "multi-worker"
#: The task types MultiWorkerMirroredStrategy trains with ("chief" is optional).
_TASK_TYPES = ("chief", "worker")


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` is missing or does not describe a MultiWorkerMirroredStrategy cluster."""


class DistributedSetupError(ValueError):
    """The run cannot be distributed as asked: a global batch the replicas cannot share, or
    workers that found different checkpoints (a run directory not every worker sees)."""


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """One task of a cluster as ``TF_CONFIG`` describes it."""

    cluster: Dict[str, List[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        return sum(len(self.cluster.get(t, ())) for t in _TASK_TYPES)

    @property
    def worker_id(self) -> int:
        """0 for the chief, then the workers in order (TensorFlow's numbering)."""
        offset = len(self.cluster.get("chief", ())) if self.task_type == "worker" else 0
        return offset + self.task_index

    @property
    def is_chief(self) -> bool:
        """The task that writes the run directory: ``chief``, else worker 0."""
        return self.worker_id == 0

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]


_HELP = ('set it to JSON like {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
         '"task": {"type": "worker", "index": 0}} (index 1 on the second machine), or start the workers '
         'on this machine with python -m tf_mtvib.launch --workers 2 -- <train.py arguments>')


def cluster_from_env(environ: Optional[Mapping[str, str]] = None) -> ClusterTask:
    """Parse and validate ``TF_CONFIG``; :class:`ClusterConfigError` says what is wrong."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise ClusterConfigError(f"--strategy {MULTI_WORKER} needs the TF_CONFIG environment variable: {_HELP}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({e}): {_HELP}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cluster"), dict) or not isinstance(doc.get("task"), dict):
        raise ClusterConfigError(f'TF_CONFIG needs a "cluster" object and a "task" object: {_HELP}')
    cluster = doc["cluster"]
    other = sorted(set(cluster) - set(_TASK_TYPES))
    if other:
        raise ClusterConfigError(f"TF_CONFIG: MultiWorkerMirroredStrategy trains with \"chief\" and \"worker\" "
                                 f"tasks only; got {other}")
    for kind in _TASK_TYPES:
        addresses = cluster.get(kind, [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ClusterConfigError(f"TF_CONFIG: cluster.{kind} must be a list of \"host:port\" strings")
        for a in addresses:
            host, _, port = a.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ClusterConfigError(f"TF_CONFIG: {a!r} in cluster.{kind} is not host:port")
    if len(cluster.get("chief", [])) > 1:
        raise ClusterConfigError("TF_CONFIG: a cluster has at most one chief")
    if not cluster.get("worker") and not cluster.get("chief"):
        raise ClusterConfigError(f"TF_CONFIG: the cluster lists no worker: {_HELP}")
    task = doc["task"]
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in _TASK_TYPES or not cluster.get(kind):
        raise ClusterConfigError(f"TF_CONFIG: task.type must be one of the cluster's task types "
                                 f"{[k for k in _TASK_TYPES if cluster.get(k)]}; got {kind!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ClusterConfigError(f"TF_CONFIG: task.index must be an integer in [0, {len(cluster[kind])}) "
                                 f"for the {len(cluster[kind])} {kind} address(es); got {index!r}")
    return ClusterTask({k: list(v) for k, v in cluster.items()}, kind, index)


def tf_config(workers: Sequence[str], index: int) -> str:
    """``TF_CONFIG`` for worker ``index`` of a cluster of ``workers`` ("host:port")."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": int(index)}})


# --------------------------------------------------------------------------
# The strategy and who writes
# --------------------------------------------------------------------------
def make_multi_worker_strategy():
    """``MultiWorkerMirroredStrategy`` from the (validated) ``TF_CONFIG``.

    It must be created before TensorFlow runs any operation in the process.
    """
    cluster_from_env()
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def _is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_id(strategy) -> int:
    """This process's place in the cluster (0 = chief); 0 for single-process strategies."""
    if not _is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    if resolver.task_type is None:
        return 0
    return ClusterTask(resolver.cluster_spec().as_dict(), resolver.task_type, int(resolver.task_id)).worker_id


def num_workers(strategy) -> int:
    """Processes training together (1 for single-process strategies)."""
    if not _is_multi_worker(strategy):
        return 1
    return max(1, ClusterTask(strategy.cluster_resolver.cluster_spec().as_dict(), "worker", 0).num_workers)


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory (always, outside multi-worker training)."""
    return worker_id(strategy) == 0


@contextlib.contextmanager
def write_dir(path: pathlib.Path, strategy) -> Iterator[pathlib.Path]:
    """``path`` on the chief; a temporary directory, removed on exit, on the other workers.

    Every worker must take part in a save (saving reads distributed variables,
    which is a collective operation), but only the chief's files are kept.
    """
    if is_chief(strategy):
        yield pathlib.Path(path)
        return
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"tf_mtvib-worker{worker_id(strategy)}-"))
    try:
        yield tmp / pathlib.Path(path).name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(model, path: pathlib.Path, strategy) -> None:
    """``model.save(path)`` atomically on the chief; the other workers save to a temporary path."""
    path = pathlib.Path(path)
    with write_dir(path.parent, strategy) as directory:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (path.name + ".tmp.keras")
        model.save(tmp)
        tmp.replace(directory / path.name)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def steps_per_epoch(num_examples: int, global_batch: int, replicas: int) -> int:
    """Steps in one epoch of the custom loop.

    With several replicas the last, partial global batch is dropped: split
    across replicas it could leave one with no example (a NaN mean loss).
    """
    if replicas > 1:
        return num_examples // global_batch
    return math.ceil(num_examples / global_batch)


def _check_batch(global_batch: int, replicas: int) -> None:
    if global_batch % replicas:
        raise DistributedSetupError(f"the global batch ({global_batch}) must be a multiple of the {replicas} "
                                    f"replicas; change --batch-size")


def distributed_batches(strategy, split, global_batch: int, shuffle: bool = False, seed: Optional[int] = None,
                        extras: Sequence[str] = ()):
    """One epoch of ``split`` in global batches of ``global_batch``, split by data across the replicas
    of every worker, as ``MirroredStrategy`` splits a batch across devices.

    Every worker builds the same pipeline (``to_dataset``: shuffled with ``seed``, which with the same
    global seed gives the same order everywhere) and keeps, of each global batch, the slices of its own
    replicas: replica ``r`` of ``R`` gets examples ``[r * B/R, (r + 1) * B/R)``. Under several replicas
    the last, partial global batch is dropped (:func:`steps_per_epoch`).
    """
    import tensorflow as tf

    from .datasets import to_dataset

    replicas = strategy.num_replicas_in_sync
    _check_batch(global_batch, replicas)

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(global_batch)
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        ds = to_dataset(split, global_batch, shuffle=shuffle, seed=seed, drop_remainder=replicas > 1, extras=extras)
        if replicas == 1:
            return ds

        def own_slices(inputs, labels):
            mine = lambda t: tf.reshape(t, [replicas, per_replica, *t.shape[1:]])[first:first + local]
            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(mine, (inputs, labels)))

        return ds.flat_map(own_slices)

    return strategy.distribute_datasets_from_function(dataset_fn)


def gradient_bytes(model) -> int:
    """Bytes of the gradients all-reduced per step: one per trainable variable, of its size
    (synchronised BatchNorm adds :func:`sync_batchnorm_bytes`)."""
    return int(sum(int(v.numpy().nbytes) for v in model.trainable_variables))


def sync_batchnorm_bytes(model, dtype_bytes: int = 4) -> int:
    """Bytes all-reduced per step by synchronised BatchNorm layers: per channel, the sum, the sum of
    squares and the count in the forward pass (Keras' ``_compute_moments_sync``), and the gradients
    of the two sums in the backward pass (``ReplicaContext.all_reduce`` is differentiable that way)."""
    import keras

    from .layers import all_sublayers

    total = 0
    for layer in all_sublayers(model, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized:
            total += (3 + 2) * int(layer.moving_mean.shape[0]) * dtype_bytes
    return total


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
def _pythonify(logs) -> Dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


def _same_everywhere(strategy, value: int) -> bool:
    """Whether every replica of every worker holds ``value`` (a collective: all workers must call it)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return True

    @tf.function
    def summed(local):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(local,)), axis=None)

    return float(summed(tf.constant(float(value)))) == float(value) * strategy.num_replicas_in_sync


#: Offset between the workers' global seeds for the training step's random ops (z noise).
_NOISE_SEED_STRIDE = 7919


def _make_train_function(model, strategy):
    import tensorflow as tf

    # as Keras's fit: the step is not converted by autograph (its Python control flow is static)
    step = tf.autograph.experimental.do_not_convert(model.train_step)

    @tf.function
    def train_function(iterator):
        per_replica = strategy.run(step, args=(next(iterator),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    return train_function


def _make_test_function(model, strategy):
    import tensorflow as tf

    step = tf.autograph.experimental.do_not_convert(model.test_step)

    @tf.function
    def test_function(iterator):
        per_replica = strategy.run(step, args=(next(iterator),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    return test_function


def custom_fit(model, strategy, train_split, batch_size: int, epochs: int, run_dir: pathlib.Path,
               callbacks: Sequence[Any] = (), chief_callbacks: Sequence[Any] = (), seed: int = 0,
               val_split=None, verbose: int = 1, extras: Sequence[str] = ()) -> Dict[str, Any]:
    """Train the compiled ``model`` (built under ``strategy.scope()``) for ``epochs`` epochs.

    Resumes from the latest checkpoint in ``run_dir/backup`` if there is one.
    ``callbacks`` run on every worker, ``chief_callbacks`` (history,
    TensorBoard) and the progress bar on the chief only. Epoch ``e`` shuffles
    with seed ``seed + e``, so a resumed run sees the data in the order an
    uninterrupted one would. ``extras``: the per-example fields the batches carry
    (``FamilySpec.needs``). Returns ``{"initial_epoch", "steps_per_epoch", "epochs_run"}``.
    """
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    steps = steps_per_epoch(len(train_split), batch_size, replicas)
    _check_batch(batch_size, replicas)
    if steps < 1:
        raise DistributedSetupError(f"{len(train_split)} training examples make no full global batch of "
                                    f"{batch_size} for {replicas} replicas; lower --batch-size")
    chief = is_chief(strategy)

    backup = pathlib.Path(run_dir) / runs.BACKUP
    with strategy.scope():
        checkpoint = ResumeCheckpoint(model, backup)
    latest = checkpoint.latest()
    initial_epoch = checkpoint.restore()
    if not _same_everywhere(strategy, initial_epoch):
        raise DistributedSetupError(
            f"the workers found different checkpoints in {backup} (this worker: epoch {initial_epoch}); "
            f"resuming a multi-worker run needs --output-dir on a file system every worker sees")
    if verbose and chief and initial_epoch:
        print(f"[tf_mtvib] restored {latest or backup} (end of epoch {initial_epoch}); continuing at epoch "
              f"{initial_epoch + 1} of {epochs}", flush=True)

    # the weighting's own callbacks first (DWA's epoch-end update), as MultiTaskModel.fit puts them
    cbs = keras.callbacks.CallbackList(list(model.weighting.callbacks()) + list(callbacks)
                                       + (list(chief_callbacks) if chief else []),
                                       add_history=False, add_progbar=bool(verbose) and chief,
                                       model=model, verbose=verbose, epochs=epochs, steps=steps)
    train_function = _make_train_function(model, strategy)
    test_function = _make_test_function(model, strategy) if val_split is not None else None
    val_steps = steps_per_epoch(len(val_split), batch_size, replicas) if val_split is not None else 0

    with write_dir(backup, strategy) as save_dir:
        model.stop_training = False
        cbs.on_train_begin()
        epoch_logs: Dict[str, float] = {}
        epochs_run = 0
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            cbs.on_epoch_begin(epoch)
            tf.random.set_seed(seed)   # the same global seed everywhere: the same data order on every worker
            iterator = iter(distributed_batches(strategy, train_split, batch_size, shuffle=True, seed=seed + epoch,
                                                extras=extras))
            # ... and a different one per worker for the random ops of the step (traced at its first call):
            # otherwise every worker would draw the same z noise for its share of the batch
            tf.random.set_seed(seed + _NOISE_SEED_STRIDE * worker_id(strategy))
            for step in range(steps):
                cbs.on_train_batch_begin(step)
                logs = _pythonify(train_function(iterator))
                cbs.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            if model.stop_training:   # a non-finite loss: neither logged nor saved
                break
            epoch_logs = _pythonify(model.get_metrics_result())
            if test_function is not None and val_steps:
                model.reset_metrics()
                val_iterator = iter(distributed_batches(strategy, val_split, batch_size, extras=extras))
                for _ in range(val_steps):
                    test_function(val_iterator)
                epoch_logs.update({f"val_{k}": v for k, v in _pythonify(model.get_metrics_result()).items()})
            cbs.on_epoch_end(epoch, epoch_logs)   # history.json first, then the checkpoint (as with fit)
            checkpoint.save(epoch + 1, save_dir)
            epochs_run += 1
        if epochs_run and model.optimizer is not None:
            model.optimizer.finalize_variable_values(model.trainable_variables)
        cbs.on_train_end(epoch_logs)
    return {"initial_epoch": initial_epoch, "steps_per_epoch": steps, "epochs_run": epochs_run}
