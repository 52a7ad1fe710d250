"""Saturated images: where a cross-entropy computed from clipped probabilities has no gradient.

Keras 2 (and tf.keras run eagerly, as in the TF 2019-2020 FGSM tutorial)
computed a cross-entropy from softmax *probabilities* by clipping them to
``[epsilon, 1 - epsilon]`` (``epsilon = 1e-7``) before the log
(:func:`tf_mtvib.attacks.clipped_probability_ce` writes it out). Where the
true class's float32 probability is above ``float32(1 - 1e-7)``, a logit
margin of about 16 or more, the clip cuts the gradient: the input gradient
of that task's loss is exactly 0 in every pixel, ``sign(0) = 0``, and FGSM
(MTVIB eq. 25) leaves the image unmoved at every eta. Accuracy under such an
attack cannot fall below

    S_k = share of test images, for task k, with float32 p_true > float32(1 - 1e-7)

(every such image is also correct: p_true > 1/2). Images whose true class
is below the lower clip (``p_true < 1e-7``: confidently wrong) have a zero
gradient too, but are wrong whatever the attack does. So, for task k's own
clipped loss, the share of images with an exactly-zero input gradient is
``S_k`` plus that confidently-wrong share (:func:`saturation_of`).

The functions here take logits, compute the softmax in float32 (as the
attack does) and compare with the same float32 thresholds that
``tf.clip_by_value`` applies; ``clip_by_value`` passes the gradient at
equality, hence the strict inequalities.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

#: Keras's fuzz factor ``keras.config.epsilon()``: the clip of ``from_logits=False``
CLIP_EPSILON = 1e-7

#: The share above which a robustness result warns of gradient masking
MASKING_WARN_SHARE = 0.01

#: Quantiles of the true-class logit margin recorded with S_k
MARGIN_QUANTILES = (0.1, 0.5, 0.9)


def upper_threshold(epsilon: float = CLIP_EPSILON) -> np.float32:
    """``float32(1 - epsilon)``: the clip's upper bound as TensorFlow computes it
    (``1.0 - epsilon`` in Python, then float32): 0.99999988 for 1e-7."""
    return np.float32(1.0 - epsilon)


def lower_threshold(epsilon: float = CLIP_EPSILON) -> np.float32:
    return np.float32(epsilon)


def _softmax32(logits) -> np.ndarray:
    """Softmax in float32, the way ``tf.nn.softmax`` computes it on float32 logits."""
    import tensorflow as tf

    return tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()


def saturation_of(logits: Mapping[str, Any], labels: Mapping[str, Any],
                  epsilon: float = CLIP_EPSILON) -> Dict[str, Dict[str, np.ndarray]]:
    """Per task, boolean arrays ``(B,)``:

    * ``saturated``: float32 ``p_true > float32(1 - epsilon)`` (right, and no gradient
      through the clip: the images that count towards ``S_k``);
    * ``saturated_wrong``: ``p_true < float32(epsilon)`` (wrong, no gradient either);
    * ``correct``: argmax equals the label;

    and ``margin`` (float ``(B,)``): the true logit minus the largest other one.
    ``logits`` are ``{task: (B, C)}`` (mean mode: one pass, z = posterior mean).
    """
    out = {}
    for t, lg in logits.items():
        lg = np.asarray(lg, dtype=np.float32)
        y = np.asarray(labels[t]).astype(np.int64).reshape(-1)
        rows = np.arange(len(y))
        p_true = _softmax32(lg)[rows, y]
        others = lg.copy()
        others[rows, y] = -np.inf
        out[t] = {
            "saturated": p_true > upper_threshold(epsilon),
            "saturated_wrong": p_true < lower_threshold(epsilon),
            "correct": np.argmax(lg, axis=1) == y,
            "margin": lg[rows, y] - others.max(axis=1),
        }
    return out


def summarize(parts: Sequence[Dict[str, Dict[str, np.ndarray]]], tasks: Sequence[str]) -> Dict[str, Any]:
    """The shares of :func:`saturation_of` over several batches, JSON-able:
    ``S`` ({task: share}), ``saturated_wrong``, ``correct``, ``all_tasks_saturated``
    (saturated on every task: FGSM through the *summed* clipped loss leaves just
    these unmoved), ``margin_quantiles`` ({task: {q: value}}) and ``n``."""
    joined = {t: {k: np.concatenate([p[t][k] for p in parts]) for k in parts[0][t]} for t in tasks}
    n = len(next(iter(joined.values()))["saturated"])
    every = np.logical_and.reduce([joined[t]["saturated"] for t in tasks])
    return {
        "S": {t: float(np.mean(joined[t]["saturated"])) for t in tasks},
        "saturated_wrong": {t: float(np.mean(joined[t]["saturated_wrong"])) for t in tasks},
        "correct": {t: float(np.mean(joined[t]["correct"])) for t in tasks},
        "all_tasks_saturated": float(np.mean(every)),
        "margin_quantiles": {t: {f"{q:g}": float(np.quantile(joined[t]["margin"], q)) for q in MARGIN_QUANTILES}
                             for t in tasks},
        "n": int(n),
        "threshold": {"epsilon": CLIP_EPSILON, "p_true_above": float(upper_threshold())},
    }


def measure(model, dataset, batch_size: int = 200, max_examples: Optional[int] = None,
            seed: Optional[int] = 0) -> Dict[str, Any]:
    """``S_k`` and the rest of :func:`summarize` for ``model`` (a MultiTaskModel) on
    ``dataset`` (a :class:`tf_mtvib.datasets.Split` or a batched ``tf.data.Dataset``
    of ``(images, {task: labels})``), in mean mode (z = posterior mean,
    BatchNorm in inference), the logits in float32."""
    import tensorflow as tf

    from . import attacks as A
    from .datasets import evaluation_batches

    tasks = list(model.task_names)
    logits_fn = tf.function(A.model_fn_for(model), reduce_retracing=True)
    batches, _ = evaluation_batches(dataset, batch_size, max_examples, seed)
    parts, seen = [], 0
    for images, labels in batches:
        if max_examples is not None and seen >= max_examples:
            break
        if max_examples is not None and seen + len(images) > max_examples:
            keep = max_examples - seen
            images, labels = images[:keep], {t: v[:keep] for t, v in labels.items()}
        seen += len(images)
        logits = logits_fn(tf.convert_to_tensor(images, tf.float32))
        parts.append(saturation_of({t: logits[t].numpy() for t in tasks},
                                   {t: np.asarray(labels[t]) for t in tasks}))
    if not parts:
        raise ValueError("the data set is empty")
    return summarize(parts, tasks)


# --------------------------------------------------------------------------
# Along training: S_k and the FGSM sweeps at fixed epochs (train.py --measure-at)
# --------------------------------------------------------------------------
#: What train.py's ``--measure-at`` records at each of its epochs, besides S_k:
#: FGSM at the paper's eta, name -> evaluate_robustness options (mean mode)
ALONG_SWEEPS = {
    "logits-sum": {"loss": "sum", "mode": "mean"},
    "clipped-per_task": {"loss": "clipped_prob_ce:per_task", "mode": "mean"},
    "clipped-sum": {"loss": "clipped_prob_ce", "mode": "mean"},
}
#: The file it writes in the run directory
ALONG_JSON = "along.json"
