"""``to_dataset``: a ``tf.data`` input pipeline over a ``Split``."""
from __future__ import annotations

from typing import Optional

from .split import Split

__all__ = ["to_dataset"]


def to_dataset(split: Split, batch_size: int, shuffle: bool = False, seed: Optional[int] = None,
               drop_remainder: bool = False, repeat: bool = False) -> "tf.data.Dataset":
    """Batches of ``(images, labels)``: images float32 in [0, 1] of shape (B, H, W, C),
    labels a dict ``{task: int64 (B,)}``.

    The uint8 arrays are what the pipeline holds; scaling happens per batch.
    shuffle: reshuffle every epoch (buffer = the whole split; ``seed`` makes it repeatable).
    repeat:  repeat indefinitely (each repetition reshuffled).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((split.images, dict(split.labels)))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
