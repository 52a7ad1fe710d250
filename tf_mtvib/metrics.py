"""Accuracy per task and joint accuracy (every task right, the paper's Fig. 5)."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping

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


def accuracies(correct: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """``{task: accuracy, ..., "joint": accuracy of all tasks right}`` from per-example correctness."""
    out = {t: float(np.mean(c)) for t, c in correct.items()}
    out["joint"] = float(np.mean(np.all(np.stack(list(correct.values())), axis=0)))
    return out


def evaluate_accuracy(model, dataset: Iterable, samples: int = 0) -> Dict[str, float]:
    """Accuracy of ``model`` (a MultiTaskModel) over a ``tf.data`` set of ``(image, {task: label})``.

    ``samples=0`` is mean mode (z = posterior mean); ``samples=N`` averages
    the probabilities over N posterior draws.
    """
    parts: Dict[str, list] = {t: [] for t in model.task_names}
    for images, labels in dataset:
        probs = model.probabilities(images, samples=samples)
        for t, c in correct_from_probs({t: probs[t].numpy() for t in model.task_names},
                                       {t: labels[t].numpy() for t in model.task_names}).items():
            parts[t].append(c)
    return accuracies({t: np.concatenate(v) for t, v in parts.items()})


__all__.append("evaluate_accuracy")
