"""Accuracy per task and joint accuracy (every task right, the paper's Fig. 5)."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import numpy as np

__all__ = ["MC_SAMPLES", "EOT_SAMPLES", "accuracies", "correct_from_probs"]

#: Posterior samples of z whose probabilities are averaged in Monte-Carlo
#: evaluation (Alemi et al. 2017 average 12): the default of train.py's
#: ``eval_samples`` (the ``mc12`` test accuracy), export's ``predict_mc``
#: signature and the reproductions.
MC_SAMPLES = 12
#: Posterior draws whose loss gradients are averaged in an EOT attack (Athalye et al.
#: 2018): ``evaluate --mode eot`` and the reproductions' ``fgsm-eot`` setting.
EOT_SAMPLES = 8


def correct_from_probs(probs: Mapping[str, "np.ndarray"], labels: Mapping[str, "np.ndarray"]) -> Dict[str, np.ndarray]:
    """Boolean "predicted class == label" per task and per example."""
    return {t: np.argmax(np.asarray(p), axis=-1) == np.asarray(labels[t]) for t, p in probs.items()}


def accuracies(correct: Mapping[str, np.ndarray], labelled: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, float]:
    """``{task: accuracy, ..., "joint": accuracy of all tasks right}`` from per-example correctness.

    ``labelled`` (``{task: bool (N,)}``): the examples each task is scored on, for data whose tasks have their
    own examples (labels -1 elsewhere, :func:`tf_mtvib.datasets.per_task_splits`). Each task's accuracy is
    then over its own examples, and ``"average"`` (VMTL's tables' figure: the mean of the tasks' accuracies)
    replaces ``"joint"``, which needs examples labelled for every task.
    """
    if labelled is None:
        out = {t: float(np.mean(c)) for t, c in correct.items()}
        out["joint"] = float(np.mean(np.all(np.stack(list(correct.values())), axis=0)))
        return out
    out = {t: float(np.mean(np.asarray(c)[np.asarray(labelled[t], bool)])) for t, c in correct.items()}
    out["average"] = float(np.mean(list(out.values())))
    return out


def evaluate_accuracy(model, dataset: Iterable, samples: int = 0) -> Dict[str, float]:
    """Accuracy of ``model`` (a MultiTaskModel) over a ``tf.data`` set of ``(image, {task: label})``.

    ``samples=0`` is mean mode (z = posterior mean); ``samples=N`` averages
    the probabilities over N posterior draws. For a model trained on tasks with their own
    examples (``partial_labels``) each task is scored on its own examples (:func:`accuracies`).
    """
    parts: Dict[str, list] = {t: [] for t in model.task_names}
    seen: Dict[str, list] = {t: [] for t in model.task_names}
    for images, labels in dataset:
        if isinstance(images, Mapping):
            images = images["image"]
        probs = model.probabilities(images, samples=samples)
        for t, c in correct_from_probs({t: probs[t].numpy() for t in model.task_names},
                                       {t: labels[t].numpy() for t in model.task_names}).items():
            parts[t].append(c)
            seen[t].append(labels[t].numpy() >= 0)
    partial = bool(getattr(model, "partial_labels", False))
    return accuracies({t: np.concatenate(v) for t, v in parts.items()},
                      {t: np.concatenate(v) for t, v in seen.items()} if partial else None)


__all__.append("evaluate_accuracy")
