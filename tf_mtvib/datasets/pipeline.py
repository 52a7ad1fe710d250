"""``tf.data`` input pipelines over splits.

* :func:`to_dataset`: batches of one split, ``(images, labels)``; with ``extras``
  (the per-example fields a family declares in ``FamilySpec.needs``, e.g. an
  environment id for MT-CRL) the inputs become ``{"image": images, <extra>: ...}``.
* :func:`to_multi_input_dataset`: multi-input batches for families whose tasks
  have their own images (VMTL, ``FamilySpec.inputs == "per_task"``): each batch
  holds a class-balanced sub-batch from every task's split, with the task id;
  a task's labels are ``-1`` on the other tasks' examples.
* :func:`evaluation_batches`: the batches an evaluation reads from a split (a seeded
  subset of it) or from a batched ``tf.data`` set.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .errors import DataError
from .split import DEFAULT_SUBSET_SEED, Split

__all__ = ["to_dataset", "to_multi_input_dataset", "evaluation_batches", "TASK_KEY", "IMAGE_KEY", "MISSING_LABEL"]

#: The key of the images in a batch's inputs dict
IMAGE_KEY = "image"
#: The key of the task id in a multi-input batch's inputs
TASK_KEY = "task"
#: The label of an example for a task it does not belong to (multi-input batches)
MISSING_LABEL = -1


def _extras_of(split: Split, extras: Sequence[str]) -> dict:
    missing = [k for k in extras if k not in split.extras]
    if missing:
        raise DataError(f"the {split.spec.name} split has no per-example field(s) {missing} that the model "
                        f"reads; it has: {sorted(split.extras) or 'none'}")
    return {k: np.asarray(split.extras[k]) for k in extras}


def to_dataset(split: Split, batch_size: int, shuffle: bool = False, seed: Optional[int] = None,
               drop_remainder: bool = False, repeat: bool = False, extras: Sequence[str] = ()) -> "tf.data.Dataset":
    """Batches of ``(images, labels)``: images float32 in [0, 1] of shape (B, H, W, C),
    labels a dict ``{task: int64 (B,)}``. With ``extras`` (keys of ``split.extras``) the
    inputs are ``{"image": images, <extra>: (B, ...)}``.

    The uint8 arrays are what the pipeline holds; scaling happens per batch.
    shuffle: reshuffle every epoch (buffer = the whole split; ``seed`` makes it repeatable).
    repeat:  repeat indefinitely, epoch after epoch: each repetition is one epoch of whole batches
             (the last one partial unless ``drop_remainder``), reshuffled, and the same batches as
             iterating the dataset again would give. ``fit`` then takes ``steps_per_epoch =
             ceil(len / batch)`` and keeps one iterator for the whole training: creating one per epoch
             left the first step of some epochs waiting seconds for it (``train.py``).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    fields = _extras_of(split, extras)
    inputs = {IMAGE_KEY: split.images, **fields} if extras else split.images
    ds = tf.data.Dataset.from_tensor_slices((inputs, dict(split.labels)))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(lambda x, labels: (_scaled(x), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _scaled(x):
    import tensorflow as tf

    if isinstance(x, Mapping):
        return {**x, IMAGE_KEY: tf.cast(x[IMAGE_KEY], tf.float32) / 255.0}
    return tf.cast(x, tf.float32) / 255.0


def to_multi_input_dataset(splits: Mapping[str, Split], per_task_batch: int, seed: int = 0,
                           task_names: Optional[Sequence[str]] = None,
                           extras: Sequence[str] = ()) -> "tf.data.Dataset":
    """Endless multi-input batches, one class-balanced sub-batch of ``per_task_batch`` per task.

    ``splits``: ``{task: split}``, each split labelled for its task (``split.labels[task]``);
    the images must share a shape. Each task's examples are drawn class by class in turn
    (round robin over the classes, each class reshuffled on every pass), so a sub-batch of
    ``per_task_batch = m * C`` holds exactly ``m`` examples of each of the task's ``C``
    classes present. A batch is ``({"image": (K*b, H, W, C) float32, "task": (K*b,) int32},
    {task: (K*b,) int64})``, tasks in ``task_names`` order (default: the order of
    ``splits``); a task's labels are :data:`MISSING_LABEL` on the other tasks' examples. With ``extras``
    (keys of every split's ``extras``) each example's extras ride along with its image, concatenated
    in the same order.
    """
    import tensorflow as tf

    names = list(task_names or splits)
    if set(names) != set(splits):
        raise ValueError(f"task_names {names} must name exactly the splits' tasks {sorted(splits)}")
    if per_task_batch < 1:
        raise ValueError(f"per_task_batch must be positive; got {per_task_batch}")
    shapes = {tuple(s.images.shape[1:]) for s in splits.values()}
    if len(shapes) != 1:
        raise DataError(f"the tasks' images differ in shape ({sorted(shapes)}); resize them to one shape first")
    per_task = []
    for k, name in enumerate(names):
        split = splits[name]
        if name not in split.labels:
            raise DataError(f"the split given for task {name!r} has no labels for it (it has {sorted(split.labels)})")
        labels = np.asarray(split.labels[name])
        fields = _extras_of(split, extras)
        by_class = []
        for c, cls in enumerate(np.unique(labels)):
            rows = np.flatnonzero(labels == cls)
            rows_extras = {k: v[rows] for k, v in fields.items()}
            by_class.append(tf.data.Dataset.from_tensor_slices((split.images[rows], labels[rows], rows_extras))
                            .shuffle(len(rows), seed=seed * 1000 + k * 100 + c, reshuffle_each_iteration=True)
                            .repeat())
        order = tf.data.Dataset.range(len(by_class)).repeat()
        balanced = tf.data.Dataset.choose_from_datasets(by_class, order).batch(per_task_batch, drop_remainder=True)
        per_task.append(balanced)

    def join(*batches):
        images = tf.concat([tf.cast(b[0], tf.float32) / 255.0 for b in batches], axis=0)
        task = tf.concat([tf.fill([per_task_batch], k) for k in range(len(names))], axis=0)
        labels = {}
        for k, name in enumerate(names):
            parts = [tf.cast(b[1], tf.int64) if j == k else tf.fill([per_task_batch], tf.constant(MISSING_LABEL, tf.int64))
                     for j, b in enumerate(batches)]
            labels[name] = tf.concat(parts, axis=0)
        fields = {k: tf.concat([b[2][k] for b in batches], axis=0) for k in extras}
        return {IMAGE_KEY: images, TASK_KEY: task, **fields}, labels

    return tf.data.Dataset.zip(tuple(per_task)).map(join, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def evaluation_batches(dataset, batch_size: int, max_examples: Optional[int] = None, seed: Optional[int] = None):
    """``(iterator of (images, labels) batches, number of batches or None when unknown)`` of ``dataset``: a
    :class:`Split` (a seeded stratified subset of ``max_examples``, :meth:`Split.sample`, the same for every
    model) or a batched ``tf.data.Dataset`` (as it is)."""
    if isinstance(dataset, Split):
        split = dataset.sample(max_examples, seed=DEFAULT_SUBSET_SEED if seed is None else seed)
        return iter(to_dataset(split, batch_size)), -(-len(split) // batch_size)
    import tensorflow as tf

    if isinstance(dataset, tf.data.Dataset):
        card = int(dataset.cardinality())
        return iter(dataset), (card if card >= 0 and not max_examples else None)
    raise TypeError(f"dataset must be a Split or a batched tf.data.Dataset of (images, labels); "
                    f"got {type(dataset).__name__}")
