"""The spurious score rho_spur of MT-CRL's Table 1 (Hu et al. 2022, §2): how much of a task's input-gradient
saliency falls on pixels that do not cause its label.

For each test image and task t, the saliency of pixel F is ``|d logit_t[y_t] / dF|``, the gradient of
the true class's logit (mean mode: z = posterior mean, BatchNorm in inference) with respect to the
input; ``Grad_t(F)`` sums it over the data set, and

    rho_spur(t) = sum_{F not causal for t} Grad_t(F) / sum_F Grad_t(F).

The paper's formula is garbled in the arXiv text; this is its reading in the project's scope notes.
On the pair-split Multi-MNIST (:mod:`tf_mtvib.datasets.pairs`) the causal pixels of the left-digit
task are the canvas's left half and those of the right-digit task its right half
(:func:`causal_masks`); 0 means the task reads only its own digit, 0.5 that it reads both alike.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

__all__ = ["causal_masks", "spurious_score"]


def causal_masks(dataset_spec) -> Dict[str, np.ndarray]:
    """``{task: (H, W) bool}``: each task's causal pixels, for the data sets that define them (the pair
    data sets: left task, left half; right task, right half). ValueError for the others."""
    if dataset_spec.name not in ("pairmnist", "pairmnist64"):
        raise ValueError(f"data set {dataset_spec.name!r} defines no causal pixels; the spurious score needs "
                         "pairmnist or pairmnist64")
    h, w = dataset_spec.input_shape[:2]
    left = np.zeros((h, w), bool)
    left[:, : w // 2] = True
    return {"left": left, "right": ~left}


def spurious_score(model, split, masks: Mapping[str, np.ndarray] = None, batch_size: int = 500) -> Dict[str, float]:
    """``{task: rho_spur}`` of ``model`` (a MultiTaskModel) on ``split`` (a :class:`~tf_mtvib.datasets.Split`);
    ``masks`` ``{task: (H, W) bool}`` the causal pixels (default: :func:`causal_masks` of the split's data set)."""
    import tensorflow as tf

    from .datasets import to_dataset

    masks = causal_masks(split.spec) if masks is None else masks
    causal = {t: 0.0 for t in model.task_names}
    total = {t: 0.0 for t in model.task_names}
    for images, labels in to_dataset(split, batch_size):
        for t in model.task_names:
            with tf.GradientTape() as tape:
                tape.watch(images)
                logits = model.mean_logits(images)[t]
                picked = tf.reduce_sum(tf.gather(logits, tf.cast(labels[t], tf.int32), axis=1, batch_dims=1))
            saliency = tf.reduce_sum(tf.abs(tape.gradient(picked, images)), axis=(0, 3)).numpy()
            causal[t] += float(saliency[masks[t]].sum())
            total[t] += float(saliency.sum())
    return {t: (1.0 - causal[t] / total[t]) if total[t] > 0 else float("nan") for t in model.task_names}
