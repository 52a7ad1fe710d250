"""The Carlini-Wagner L2 attack (Carlini & Wagner 2017), written against its equations, one task at a time.

For an image x in [lo, hi] and the logits Z of one task, CW-L2 searches in tanh space,
``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` (so x' never leaves the valid range), for

    minimise  ||x' - x||_2^2 + c * f(x')

with the margin loss (their f_6)

    untargeted:  f(x') = max(Z(x')_y - max_{i != y} Z(x')_i, -kappa)
    targeted:    f(x') = max(max_{i != t} Z(x')_i - Z(x')_t, -kappa)

by Adam on w for ``max_iterations`` steps, and a binary search over the constant c per
example (``binary_steps`` rounds from ``initial_const``: after a success c is bisected down,
after a failure it is bisected up, or multiplied by 10 while no success bounds it). Among the
successful x' of every round it keeps the one closest to x. This is the structure of the
authors' code and of CleverHans' TF2 port; the defaults here are a budget, stated by the caller.

Stochastic models (Deep VIB, MTVIB): ``model_fn`` may return ``(M, B, classes)`` logits, M
posterior draws per image (:func:`tf_mtvib.models.posterior_logits`); Z is then their mean over the
draws (expectation over the posterior inside the attack), and the success check uses the same
``model_fn``. Alemi et al. (2017, §4.2.2) use 12 draws in the attack and in its success check.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import numpy as np
import tensorflow as tf

__all__ = ["cw_l2", "adam_step", "cw_objective", "margin_loss", "evaluate_cw", "markdown_table"]

ModelFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def _task_logits(model_fn: ModelFn, x, task: str) -> tf.Tensor:
    """The task's logits ``(B, classes)``, averaged over posterior draws when ``model_fn`` returns
    ``(M, B, classes)``."""
    logits = tf.cast(model_fn(x)[task], tf.float32)
    return tf.reduce_mean(logits, axis=0) if logits.shape.rank == 3 else logits


def margin_loss(logits, labels, targeted: bool, kappa: float = 0.0) -> tf.Tensor:
    """CW's f_6 per example, ``(B,)``: the logit margin of the true class (untargeted) or of the
    other classes over the target (targeted), floored at ``-kappa``."""
    classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(labels, classes, dtype=logits.dtype)
    own = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    margin = other - own if targeted else own - other
    return tf.maximum(margin, -kappa)


def cw_objective(x_adv, x, logits, labels, const, targeted: bool, kappa: float = 0.0):
    """``(||x' - x||^2 + c f(x'))`` per example, and the squared L2 distance alone."""
    l2sq = tf.reduce_sum(tf.square(tf.reshape(x_adv - x, [tf.shape(x)[0], -1])), axis=-1)
    return l2sq + const * margin_loss(logits, labels, targeted, kappa), l2sq


def _success(logits, labels, targeted: bool) -> tf.Tensor:
    pred = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.equal(pred, labels) if targeted else tf.not_equal(pred, labels)


#: Adam's constants (Keras' defaults, which the authors' code and CleverHans use through their optimiser)
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


def adam_step(model_fn: ModelFn, task: str, targeted: bool = False, kappa: float = 0.0, clip_min: float = 0.0,
              clip_max: float = 1.0, learning_rate: float = 1e-2):
    """One Adam step on w for the summed objective, as a ``tf.function`` traced once and reused across the
    binary-search rounds, and across batches when the caller passes it to :func:`cw_l2` as ``step`` (Adam
    written out: the state is passed in and returned, no variables). It holds ``model_fn`` only as long
    as the caller holds it."""
    targeted, kappa, learning_rate = bool(targeted), float(kappa), float(learning_rate)
    clip_min, clip_max = float(clip_min), float(clip_max)
    span = clip_max - clip_min

    @tf.function(reduce_retracing=True)
    def step(w, m, v, t, x, labels, c):
        with tf.GradientTape() as tape:
            tape.watch(w)
            x_adv = clip_min + span * (tf.tanh(w) + 1) / 2
            logits = _task_logits(model_fn, x_adv, task)
            per_example, l2sq = cw_objective(x_adv, x, logits, labels, c, targeted, kappa)
            total = tf.reduce_sum(per_example)
        g = tape.gradient(total, w)
        m = ADAM_BETA_1 * m + (1 - ADAM_BETA_1) * g
        v = ADAM_BETA_2 * v + (1 - ADAM_BETA_2) * tf.square(g)
        alpha = learning_rate * tf.sqrt(1 - ADAM_BETA_2 ** t) / (1 - ADAM_BETA_1 ** t)
        w = w - alpha * m / (tf.sqrt(v) + ADAM_EPSILON)
        return w, m, v, total, l2sq, _success(logits, labels, targeted), x_adv

    step.settings = (model_fn, task, targeted, kappa, clip_min, clip_max, learning_rate)
    return step


def cw_l2(model_fn: ModelFn, x, labels, task: str, *, targeted: bool = False, kappa: float = 0.0,
          initial_const: float = 1e-2, binary_steps: int = 5, max_iterations: int = 1000,
          learning_rate: float = 1e-2, clip_min: float = 0.0, clip_max: float = 1.0,
          abort_early: bool = True, step=None) -> Dict[str, np.ndarray]:
    """CW-L2 on task ``task`` of the batch ``x`` (images in ``[clip_min, clip_max]``).

    ``labels``: the true labels (untargeted) or the targets (targeted), int ``(B,)``.
    Returns NumPy arrays: ``x_adv`` (the closest successful image, or ``x`` where none was
    found), ``success`` (bool ``(B,)``) and ``l2`` (the L2 norm of ``x_adv - x``; 0 where no success).
    ``step``: an :func:`adam_step` of the same ``model_fn``, task and settings, to trace once for many
    batches (built here when None; one of other settings is refused).
    """
    settings = (model_fn, task, bool(targeted), float(kappa), float(clip_min), float(clip_max), float(learning_rate))
    if step is None:
        step = adam_step(*settings)
    elif getattr(step, "settings", None) != settings:
        raise ValueError("step was built for another model_fn, task or settings than this cw_l2 call's")
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.convert_to_tensor(labels, tf.int64)
    b = int(x.shape[0])
    span = clip_max - clip_min
    # w with x' = x at the start; the clip keeps atanh finite at the range's ends
    unit = tf.clip_by_value((x - clip_min) / span * 2 - 1, -1 + 1e-6, 1 - 1e-6)
    w0 = tf.atanh(unit)
    lower = np.zeros(b)
    upper = np.full(b, np.inf)
    const = np.full(b, initial_const)
    best_l2sq = np.full(b, np.inf)
    best = x.numpy().copy()
    for _ in range(binary_steps):
        w, m, v = w0, tf.zeros_like(w0), tf.zeros_like(w0)     # a fresh Adam per round: moments and step count
        c = tf.constant(const, tf.float32)
        found = np.zeros(b, bool)
        previous = np.inf
        for i in range(max_iterations):
            w, m, v, total, l2sq, ok, x_adv = step(w, m, v, tf.constant(i + 1, tf.float32), x, labels, c)
            l2sq, ok = l2sq.numpy(), ok.numpy()
            better = ok & (l2sq < best_l2sq)
            if better.any():
                best_l2sq[better] = l2sq[better]
                best[better] = x_adv.numpy()[better]
            found |= ok
            if abort_early and i % max(1, max_iterations // 10) == 0:
                if float(total) > previous * 0.9999:   # no progress over the last tenth: stop this round
                    break
                previous = float(total)
        upper = np.where(found, np.minimum(upper, const), upper)
        lower = np.where(found, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2, const * 10)
    success = np.isfinite(best_l2sq)
    return {"x_adv": best, "success": success, "l2": np.where(success, np.sqrt(np.where(success, best_l2sq, 0)), 0.0)}


def evaluate_cw(model, split, *, targeted: bool = False, binary_steps: int = 5, max_iterations: int = 1000,
                learning_rate: float = 1e-2, initial_const: float = 1e-2, eot_samples: int = 0,
                batch_size: int = 100, seed: int = 0, verbose: int = 0) -> Dict[str, object]:
    """Each task of ``model`` (a MultiTaskModel) attacked by CW-L2 on ``split``, one task at a time (where the
    tasks have their own images, labels -1 elsewhere, each on its own images).

    Untargeted: the true label; targeted: a random other label per example (seeded). The prediction and
    the success check use the attack's own ``model_fn`` (``eot_samples`` posterior draws averaged, or the
    mean mode). Returns a JSON-able dict: per task the clean accuracy, the accuracy on the attacked
    images, the success rate and the median L2 of the successful perturbations (of the images the attack
    had to move: one already misclassified, or already on its target, succeeds at distance 0 and is left out).
    """
    from .attacks import model_fn_for

    eot_samples = int(eot_samples) if model.is_stochastic else 0     # a deterministic model has no posterior
    model_fn = model_fn_for(model, eot_samples)
    rng = np.random.default_rng(seed)
    images = split.images.astype(np.float32) / 255.0
    tasks = {}
    for t in model.task_names:
        y = split.labels[t].astype(np.int64)
        own = y >= 0                   # tasks with their own images (labels -1 elsewhere): each on its own
        y, task_images = y[own], images[own]
        classes = split.spec.task(t).num_classes
        goal = (y + rng.integers(1, classes, size=len(y))) % classes if targeted else y
        clean, correct, success, l2 = [], [], [], []
        step = adam_step(model_fn, t, targeted, learning_rate=learning_rate)     # traced once for the task
        for start in range(0, len(y), batch_size):
            x, yb, gb = task_images[start:start + batch_size], y[start:start + batch_size], goal[start:start + batch_size]
            clean.append(np.argmax(_task_logits(model_fn, tf.constant(x), t).numpy(), -1) == yb)
            out = cw_l2(model_fn, x, gb, t, targeted=targeted, binary_steps=binary_steps,
                        max_iterations=max_iterations, learning_rate=learning_rate, initial_const=initial_const,
                        step=step)
            pred = np.argmax(_task_logits(model_fn, tf.constant(out["x_adv"]), t).numpy(), -1)
            correct.append(pred == yb)
            success.append(out["success"])
            l2.append(out["l2"][out["success"] & (out["l2"] > 0)])   # images it had to move (not already wrong)
            if verbose:
                print(f"  {t}: {start + len(yb)} / {len(y)}", flush=True)
        ok, l2 = np.concatenate(success), np.concatenate(l2)
        tasks[t] = {"clean": float(np.mean(np.concatenate(clean))), "accuracy": float(np.mean(np.concatenate(correct))),
                    "success_rate": float(np.mean(ok)), "median_l2": float(np.median(l2)) if len(l2) else None,
                    "num_examples": int(len(y))}
    return {"attack": "cw_l2", "targeted": bool(targeted), "eot_samples": int(eot_samples),
            "budget": {"binary_steps": binary_steps, "max_iterations": max_iterations, "learning_rate": learning_rate,
                       "initial_const": initial_const},
            "num_examples": int(len(split)), "model": getattr(model, "model_name", None),
            "dataset": split.spec.name, "tasks": tasks}


def markdown_table(results) -> str:
    """One row per (run, task): clean, attacked accuracy, success rate and median L2 (in [0, 1] pixel units)."""
    lines = ["| run | task | clean | under CW-L2 | success | median L2 |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for t, v in r["tasks"].items():
            med = "-" if v["median_l2"] is None else f"{v['median_l2']:.3f}"
            lines.append(f"| {r.get('label', r['model'])} | {t} | {100 * v['clean']:.1f} | {100 * v['accuracy']:.1f} | "
                         f"{100 * v['success_rate']:.1f} | {med} |")
    return "\n".join(lines) + "\n"
