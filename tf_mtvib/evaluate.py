"""Robustness of trained models to FGSM / PGD: accuracy per task and joint vs eps.

Command line::

    python -m tf_mtvib.evaluate --run RUN_DIR [--run RUN_DIR2 ...] --attack fgsm|pgd|random_sign \\
        --eps 0,0.05,0.1,0.15,0.2,0.25,0.3 [--mode mean|sampled|eot] [--eval-samples N] \\
        [--eot-samples M] [--loss sum|training|clipped_prob_ce|TASK] [--space unit|standardized|pixel255] \\
        [--no-clip] [--batchnorm inference|batch] [--restarts R] \\
        [--batch-size B] [--max-examples N] [--data-dir D] [--output DIR]

writes ``robustness.json``, ``robustness.md`` (the layout of the paper's
Tables III-V: one row per task plus the joint accuracy, one column per eps;
with several runs one row per model and task) and ``robustness.png``
(accuracy vs eps, one panel per task plus joint, one line per model, as in
Fig. 5) into the run directory (one run) or ``--output`` (default
``./robustness-<dataset>``).

Every number says how it was produced:

* ``eval=mean``: predictions with z = posterior mean; ``eval=mc<N>``: the
  probabilities averaged over N posterior samples;
* ``attack_grad=mean``: the attack differentiates the mean-mode network;
  ``attack_grad=eot<M>``: the gradient is averaged over M posterior samples
  (expectation over transformation).

Deterministic models have no posterior; for them both modes read ``mean``.
The named ``mode`` (``mean``, ``sampled``: one draw of z per prediction and
one for the gradient, i.e. ``eval=mc1, attack_grad=eot1``; ``eot``) and the
attack protocol (input space, clipping, attack loss, BatchNorm statistics)
are recorded with every result; their defaults are the behaviour before the
options existed.

Python: :func:`evaluate_robustness` (one model, one data set) and
:func:`write_report` (the three files for one or more results).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import pathlib
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .metrics import EOT_SAMPLES, MC_SAMPLES, accuracies, correct_from_probs
from .saturation import MASKING_WARN_SHARE, saturation_of, summarize

__all__ = [
    "DEFAULT_EPS", "JSON_NAME", "TABLE_NAME", "PLOT_NAME", "evaluate_robustness", "evaluate_robustness_by_task",
    "parse_eps",
    "check_eps", "eval_mode_name", "MODES", "mode_of", "resolve_mode", "input_statistics", "run_input_statistics",
    "protocol_desc", "markdown_table", "plot_robustness", "write_report", "main",
]

DEFAULT_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
JSON_NAME = "robustness.json"
TABLE_NAME = "robustness.md"
PLOT_NAME = "robustness.png"
JOINT = "joint"
#: The tasks' mean accuracy, where tasks have their own examples and no joint accuracy exists
AVERAGE = "average"


# --------------------------------------------------------------------------
# eps lists
# --------------------------------------------------------------------------
def check_eps(eps_list: Sequence[float], upper: Optional[float] = 1.0) -> List[float]:
    """The eps values sorted ascending; ValueError for an empty list, a duplicate,
    or a value outside [0, 1] (images live in [0, 1]; ``upper=None`` lifts the
    bound, for eps in pixel255 or standardized units)."""
    values = [float(e) for e in eps_list]
    if not values:
        raise ValueError("the eps list is empty")
    for e in values:
        if not math.isfinite(e) or e < 0.0 or (upper is not None and e > upper):
            raise ValueError(f"eps must lie in [0, 1] (images are in [0, 1]); got {e:g}" if upper == 1.0 else
                             f"eps must be finite and in [0, {upper if upper is not None else 'inf'}]; got {e:g}")
    if len(set(values)) != len(values):
        raise ValueError(f"the eps list repeats a value: {', '.join(f'{e:g}' for e in values)}")
    return sorted(values)


def parse_eps(text: str, upper: Optional[float] = 1.0) -> List[float]:
    """``"0,0.05,0.1"`` -> ``[0.0, 0.05, 0.1]`` (checked by :func:`check_eps`)."""
    parts = [p.strip() for p in str(text).split(",")]
    values = []
    for p in parts:
        if not p:
            raise ValueError(f"bad eps list {text!r}: empty entry (expected e.g. 0,0.05,0.1)")
        try:
            values.append(float(p))
        except ValueError:
            raise ValueError(f"bad eps list {text!r}: {p!r} is not a number") from None
    return check_eps(values, upper)


def eval_mode_name(model, eval_samples: int = 0) -> str:
    """``"mean"`` or ``"mc<N>"``: how the predictions of ``model`` are made."""
    return f"mc{int(eval_samples)}" if eval_samples and model.is_stochastic else "mean"


# --------------------------------------------------------------------------
# Modes (how z is used) and input statistics
# --------------------------------------------------------------------------
#: mode -> (eval_samples, eot_samples). ``mean``: z = posterior mean for the
#: prediction and the gradient. ``sampled`` (the paper's wording): one fresh
#: draw of z per prediction, and the attack's gradient through one draw.
#: ``eot``: predictions averaged over MC_SAMPLES (12) draws (Alemi et al.), gradient
#: averaged over EOT_SAMPLES (8) draws (Athalye et al.); both counts can be overridden.
MODES: Dict[str, tuple] = {"mean": (0, 0), "sampled": (1, 1), "eot": (MC_SAMPLES, EOT_SAMPLES)}


def mode_of(eval_samples: int, eot_samples: int) -> str:
    """The mode that ``(eval_samples, eot_samples)`` express: ``mean``, ``sampled``,
    ``eot`` (a gradient over several draws) or ``mixed`` (any other pair)."""
    pair = (int(eval_samples), int(eot_samples))
    for name, samples in MODES.items():
        if name != "eot" and pair == samples:
            return name
    return "eot" if pair[0] >= 1 and pair[1] > 1 else "mixed"


def resolve_mode(mode: Optional[str] = None, eval_samples: Optional[int] = None,
                 eot_samples: Optional[int] = None) -> tuple:
    """``(mode, eval_samples, eot_samples)`` from a mode name and/or explicit sample counts.

    ``mode=None``: the counts (default 0, 0) say it (:func:`mode_of`). ``mean``
    and ``sampled`` fix both counts (an explicit different count is an
    error); ``eot`` takes its defaults (MC_SAMPLES, EOT_SAMPLES) for any count not given.
    """
    for name, value in (("eval_samples", eval_samples), ("eot_samples", eot_samples)):
        if value is not None and int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if mode is None:
        ev, eot = int(eval_samples or 0), int(eot_samples or 0)
        return mode_of(ev, eot), ev, eot
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    default_ev, default_eot = MODES[mode]
    ev = default_ev if eval_samples is None else int(eval_samples)
    eot = default_eot if eot_samples is None else int(eot_samples)
    if mode != "eot" and (ev, eot) != (default_ev, default_eot):
        raise ValueError(f"mode {mode!r} means eval_samples={default_ev}, eot_samples={default_eot}; "
                         f"got {ev}, {eot}")
    if mode == "eot" and (ev < 1 or eot < 1):
        raise ValueError(f"mode 'eot' needs eval_samples >= 1 and eot_samples >= 1; got {ev}, {eot}")
    return mode, ev, eot


def input_statistics(images, chunk: int = 4096) -> Dict[str, List[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, H, W, C), in [0, 1] units."""
    images = np.asarray(images)
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
        count += part.shape[0]
    if count == 0:
        raise ValueError("no images to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return {"mean": mean.tolist(), "std": std.tolist()}


def run_input_statistics(run, data_dir=None) -> Dict[str, List[float]]:
    """:func:`input_statistics` of the training split of ``run``'s data set (its data
    options, the whole split: the data set's statistics), computed once and cached."""
    from .datasets import load
    from .datasets.cache import cached_arrays

    def build():   # the whole training split: datasets.load, not the run's capped subset
        images = load(run.dataset, "train", data_dir=data_dir, **run.data_options).images
        return {k: np.asarray(v) for k, v in input_statistics(images).items()}

    key = {"dataset": run.dataset, "data": run.data_options, "split": "train", "version": 1}
    arrays = cached_arrays("input-stats", key, build)
    return {k: [float(v) for v in np.ravel(arrays[k])] for k in ("mean", "std")}


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------
class GradientMaskingWarning(UserWarning):
    """More than :data:`tf_mtvib.saturation.MASKING_WARN_SHARE` of the attacked images
    have an input gradient of exactly 0: the attack cannot move them."""


def masked_shares(result: Dict[str, Any]) -> Dict[str, float]:
    """``{what: share}`` of a robustness result's zero-gradient shares above the warning
    share: per task under its own loss (``zero_gradient.<task>``) and under the attack's loss."""
    m = result.get("masking")
    if not m:
        return {}
    shares = {f"zero_gradient.{t}": v for t, v in m["zero_gradient"].items()}
    shares["attack_loss_zero_gradient"] = m["attack_loss_zero_gradient"]
    return {k: v for k, v in shares.items() if v > MASKING_WARN_SHARE}


def warn_if_masked(result: Dict[str, Any]) -> None:
    """Warn (:class:`GradientMaskingWarning`) when an attack's gradient is exactly 0 on
    more than 1 % of the images: FGSM/PGD leave them unmoved, so the accuracy under
    attack is an upper bound there, not a robustness figure."""
    high = masked_shares(result)
    if not high:
        return
    from .attacks import is_clipped

    m = result["masking"]
    what = ", ".join(f"{k} {100 * v:.1f} %" for k, v in high.items())
    sat = ", ".join(f"{t} {100 * v:.1f} %" for t, v in m["S"].items())
    if is_clipped(result["loss"]):
        remedy = ("the loss clips probabilities (Keras's from_logits=False), whose gradient is 0 on every "
                  f"image with p_true > 1 - 1e-7 (S_k: {sat}); attack with a logits loss "
                  "(--loss sum or per_task)")
    else:
        remedy = ("the logits are so large that the cross-entropy's gradient underflows in float32; "
                  "check with the gradient-free control (--attack random_sign) and PGD with random "
                  "restarts (--attack pgd --restarts N), which do not rest on this gradient")
    warnings.warn(GradientMaskingWarning(
        f"{result.get('model')} on {result.get('dataset')}: {result['attack'].upper()} (loss={result['loss']}) "
        f"has an input gradient of exactly 0 on more than {100 * MASKING_WARN_SHARE:g} % of the images "
        f"({what}); those images are never moved, so the accuracy under attack overstates robustness. "
        f"Remedy: {remedy}."), stacklevel=3)


def evaluate_robustness(model, dataset, attack: str = "fgsm", eps_list: Sequence[float] = DEFAULT_EPS,
                        eval_samples: Optional[int] = None, eot_samples: Optional[int] = None, loss: str = "sum",
                        steps: int = 10, step_size: Optional[float] = None, random_start: bool = True,
                        batch_size: int = 100, max_examples: Optional[int] = None,
                        seed: Optional[int] = 0, verbose: int = 1, *, mode: Optional[str] = None,
                        space: str = "unit", input_stats: Optional[Dict[str, Sequence[float]]] = None,
                        clip: bool = True, batchnorm: str = "inference", restarts: int = 1,
                        only_tasks: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Accuracy of ``model`` (a MultiTaskModel) under ``attack`` at every eps in ``eps_list``.

    dataset:      a :class:`tf_mtvib.datasets.Split` (batched here with ``batch_size``)
                  or a batched ``tf.data.Dataset`` of ``(images in [0, 1], {task: labels})``.
    attack:       ``"fgsm"``, ``"pgd"`` (``steps`` steps of ``step_size``, default
                  ``2.5 * eps / steps``, from a random start unless ``random_start=False``)
                  or ``"random_sign"`` (the gradient-free control: every pixel moved by
                  +-eps at random).
    mode:         ``"mean"``, ``"sampled"`` or ``"eot"`` (:data:`MODES`); or leave it None
                  and give the counts:
    eval_samples: 0 = mean mode (z = posterior mean); N = probabilities averaged over N samples.
    eot_samples:  0 = attack gradient in mean mode; M = averaged over M posterior samples.
    loss:         ``"sum"`` (unweighted sum of the tasks' cross-entropies, the default),
                  ``"training"`` (the model's own loss: task weights and ``beta * KL``),
                  ``"clipped_prob_ce"`` (the sum of cross-entropies of probabilities clipped
                  as Keras does: zero gradient on saturated examples), a task name or
                  ``"clipped_prob_ce:TASK"`` (one task's loss; every task is scored), or
                  ``"per_task"`` / ``"clipped_prob_ce:per_task"``: each task attacked with
                  its own loss and scored alone, as a single-task network is attacked (the
                  result then has no joint accuracy).
    space:        where the attack and eps act: ``"unit"`` (pixels in [0, 1], the default),
                  ``"pixel255"`` ([0, 255]) or ``"standardized"`` ((x - mean) / std per
                  channel; ``input_stats = {"mean": [...], "std": [...]}`` in [0, 1] units,
                  e.g. from :func:`run_input_statistics`).
    clip:         clip the adversarial input to the valid range of ``space`` (the image
                  of [0, 1]); False leaves it unclipped.
    batchnorm:    ``"inference"`` (moving statistics, the default) or ``"batch"`` (the
                  attacked batch's statistics) for the attack's gradient; predictions
                  always use inference statistics.
    restarts:     PGD / random_sign: an example counts as correct only if it is correct
                  after every one of ``restarts`` independent random starts / draws.
    max_examples: evaluate only this many: of a Split, a random subset stratified on the labels
                  (``Split.sample`` with ``seed``, or ``DEFAULT_SUBSET_SEED`` when None;
                  recorded as ``subset`` in the result); of a tf.data.Dataset, its first items.
    seed:         seeds TensorFlow's global generator (PGD start, posterior samples); None leaves it.
    only_tasks:   attack, score and check these tasks only (default: every task); with a per-task loss,
                  for data whose tasks have their own examples (:func:`evaluate_robustness_by_task`).

    The clean pass (eps = 0) is computed once per batch; FGSM computes the
    gradient sign once per batch and reuses it for every eps.

    Returns a JSON-able dict: ``eps``, ``accuracy`` ({task: [one per eps], "joint": [...]}),
    ``clean`` ({task: acc, "joint": acc}), ``eval``, ``attack_grad``, ``mode``, ``attack``,
    ``loss``, ``space`` (with ``input_stats`` when standardized), ``clip``, ``batchnorm``,
    ``num_examples``, ``model``, ``dataset``, ``tasks``, for FGSM and PGD ``zero_gradient``
    (the fraction of examples whose input gradient under the attack's loss, at the clean
    image, is exactly 0 everywhere; per task, the largest) and ``masking``: that share per
    task under the task's own loss of the same kind, ``S`` (S_k, :mod:`tf_mtvib.saturation`),
    the confidently-wrong share, the share saturated on every task and the true-class
    logit-margin quantiles; a :class:`GradientMaskingWarning` when a zero-gradient share
    exceeds 1 %. For PGD / random_sign, their settings.
    """
    import keras
    import tensorflow as tf

    from . import attacks as A
    from .datasets import evaluation_batches

    eps_list = check_eps(eps_list, 1.0 if space == "unit" else None)
    if attack not in A.ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(A.ATTACKS)}")
    mode, eval_samples, eot_samples = resolve_mode(mode, eval_samples, eot_samples)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    if int(restarts) < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if attack == "fgsm" and int(restarts) != 1:
        raise ValueError("restarts apply to pgd and random_sign; FGSM has no random start")
    if batchnorm not in A.BATCHNORM:
        raise ValueError(f"unknown batchnorm {batchnorm!r}; choose one of: {', '.join(A.BATCHNORM)}")
    in_space = A.input_space(space, input_stats)
    if seed is not None:
        tf.random.set_seed(seed)

    tasks = list(model.task_names)
    A.check_loss_name(loss, tasks)
    per_task = A.is_per_task(loss)
    if only_tasks is not None:
        unknown = sorted(set(only_tasks) - set(tasks))
        if unknown or not only_tasks:
            raise ValueError(f"only_tasks must name some of the model's tasks {tasks}; got {list(only_tasks)}")
        if not per_task and len(only_tasks) < len(tasks):
            raise ValueError("only_tasks scores some tasks alone: give a per-task loss (per_task)")
        tasks = [t for t in tasks if t in only_tasks]
    model_fn = A.in_space(A.model_fn_for(model, eot_samples, batchnorm), in_space)
    # the attack's loss: one for all tasks, or (per_task) each task's own, that task alone scored
    loss_fns = A.own_task_losses(loss, tasks) if per_task else {None: A.make_loss(loss, model)}
    low, high = in_space.bounds() if clip else (None, None)
    attacked = [e for e in eps_list if e > 0]
    if attack == "fgsm":
        direction_fns = {k: tf.function(functools.partial(A.fgsm_direction, model_fn, loss_fn=f),
                                        reduce_retracing=True) for k, f in loss_fns.items()}
    elif attack == "pgd" or attack == "random_sign":
        attack_fns = {k: A.compile_attack(attack, model_fn, f, steps=steps, step_size=step_size,
                                          random_start=random_start, seed=None, clip_min=low, clip_max=high)
                      for k, f in loss_fns.items()}
    checked = attack != "random_sign"
    if checked:   # the masking check: zero input gradients per task and S_k (tf_mtvib.saturation)
        own = A.own_task_losses(loss, tasks)
        zero_fns = {t: tf.function(functools.partial(A.zero_gradient, model_fn, loss_fn=own[t]),
                                   reduce_retracing=True) for t in tasks}
        if not per_task:
            zero_fns[None] = tf.function(functools.partial(A.zero_gradient, model_fn, loss_fn=loss_fns[None]),
                                         reduce_retracing=True)
        mean_logits = tf.function(A.model_fn_for(model), reduce_retracing=True)

    def correct(images, labels):
        probs = model.probabilities(images, samples=eval_samples)
        return correct_from_probs({t: probs[t].numpy() for t in tasks}, labels)

    batches, n_batches = evaluation_batches(dataset, batch_size, max_examples, seed)
    progbar = (keras.utils.Progbar(n_batches, verbose=verbose, unit_name="batch", stateful_metrics=["clean_joint"])
               if verbose else None)
    clean_parts: Dict[str, list] = {t: [] for t in tasks}
    adv_parts = {e: {t: [] for t in tasks} for e in attacked}
    zero_parts: Dict[Any, list] = {k: [] for k in (zero_fns if checked else {})}
    saturation_parts = []
    seen = 0
    start = time.time()
    for images, labels in batches:
        if max_examples is not None and seen >= max_examples:
            break
        if max_examples is not None and seen + int(images.shape[0]) > max_examples:
            keep = max_examples - seen
            images, labels = images[:keep], {t: v[:keep] for t, v in labels.items()}
        images = tf.convert_to_tensor(images, tf.float32)
        labels = {t: tf.convert_to_tensor(labels[t]) for t in tasks}
        labels_np = {t: labels[t].numpy() for t in tasks}
        if any((v < 0).any() for v in labels_np.values()):
            raise ValueError("this data set's tasks have their own examples (labels -1 on the other tasks', e.g. "
                             "digitdomains): the robustness sweep needs every task labelled on every image and does "
                             "not take them yet")
        seen += int(images.shape[0])
        for t, c in correct(images, labels_np).items():       # eps = 0: once per batch
            clean_parts[t].append(c)
        x = in_space.from_unit(images)                        # the attack works in its input space
        if checked and attacked:
            for k, fn in zero_fns.items():
                zero_parts[k].append(fn(x, labels).numpy())
            logits = mean_logits(images)
            saturation_parts.append(saturation_of({t: logits[t].numpy() for t in tasks}, labels_np))
        if attack == "fgsm" and attacked:                     # sign(grad): the same for every eps
            directions = {k: fn(x, labels) for k, fn in direction_fns.items()}
        for e in attacked:
            for k in loss_fns:   # k: None (one attack, every task scored) or the task attacked and scored
                ok = None
                for _ in range(int(restarts)):
                    if attack == "fgsm":
                        x_adv = A.clip(x + e * directions[k], low, high)   # eq. 25
                    else:
                        x_adv = attack_fns[k](x, labels, tf.constant(e, tf.float32))
                    c = correct(in_space.to_unit(x_adv), labels_np)
                    ok = c if ok is None else {t: ok[t] & c[t] for t in tasks}   # right after every restart
                for t in (tasks if k is None else [k]):
                    adv_parts[e][t].append(ok[t])
        if progbar is not None:   # the clean joint accuracy so far
            so_far = accuracies({t: np.concatenate(v) for t, v in clean_parts.items()})[JOINT]
            progbar.add(1, [("clean_joint", so_far)])
    if seen == 0:
        raise ValueError("the data set is empty")

    clean = accuracies({t: np.concatenate(v) for t, v in clean_parts.items()})
    per_eps = {e: (clean if e == 0 else accuracies({t: np.concatenate(v) for t, v in adv_parts[e].items()}))
               for e in eps_list}
    keys = tasks if per_task else tasks + [JOINT]   # per task: no one perturbation fools every task at once
    spec = getattr(model, "dataset_spec", None)
    result: Dict[str, Any] = {
        "model": getattr(model, "model_name", model.name),
        "dataset": spec.name if spec is not None else None,
        "tasks": tasks,
        "attack": attack,
        "loss": loss,
        "mode": mode,
        "eval": eval_mode_name(model, eval_samples),
        "attack_grad": A.grad_mode_name(model, eot_samples) if attack != "random_sign" else "none",
        "space": space,
        "clip": bool(clip),
        "batchnorm": batchnorm,
        "eps": eps_list,
        "num_examples": seen,
        "accuracy": {k: [per_eps[e][k] for e in eps_list] for k in keys},
        "clean": clean,
        "seconds": round(time.time() - start, 2),
    }
    from .datasets import DEFAULT_SUBSET_SEED, SUBSET_RULE, Split

    if max_examples is not None and isinstance(dataset, Split):  # which images: recorded with the result
        result["subset"] = {"rule": SUBSET_RULE, "seed": DEFAULT_SUBSET_SEED if seed is None else seed,
                            "max_examples": int(max_examples)}
    if space == "standardized":
        result["input_stats"] = {"mean": list(in_space.shift), "std": list(in_space.scale)}
    if saturation_parts:
        shares = {k: float(np.mean(np.concatenate(v))) for k, v in zero_parts.items()}
        sat = summarize(saturation_parts, tasks)
        result["zero_gradient"] = shares[None] if None in shares else max(shares[t] for t in tasks)
        result["masking"] = {
            "zero_gradient": {t: shares[t] for t in tasks},
            "attack_loss_zero_gradient": result["zero_gradient"],
            "task_loss": "clipped_prob_ce:TASK" if A.is_clipped(loss) else "TASK (logits)",
            "S": sat["S"], "saturated_wrong": sat["saturated_wrong"],
            "all_tasks_saturated": sat["all_tasks_saturated"], "margin_quantiles": sat["margin_quantiles"],
        }
        warn_if_masked(result)
    if attack == "pgd":
        result["pgd"] = {"steps": int(steps), "random_start": bool(random_start),
                         "step_size": "2.5*eps/steps" if step_size is None else float(step_size)}
    if attack in ("pgd", "random_sign"):
        result["restarts"] = int(restarts)
    return result


def evaluate_robustness_by_task(model, split, attack: str = "fgsm", eps_list: Sequence[float] = DEFAULT_EPS, *,
                                loss: str = "per_task", **kwargs) -> Dict[str, Any]:
    """:func:`evaluate_robustness` for data whose tasks have their own examples (labels -1 on the other tasks',
    e.g. ``digitdomains``): each task attacked with its own loss on its own examples
    (:func:`tf_mtvib.datasets.per_task_splits`), as ``only_tasks=[task]``; the results merged, with
    ``"average"`` (the mean of the tasks' accuracies, per eps) in place of the joint accuracy, the examples
    per task in ``num_examples_per_task``, and the masking check per task."""
    from . import attacks as A
    from .datasets import per_task_splits

    if not A.is_per_task(loss):
        raise ValueError(f"the tasks of {split.spec.name} have their own examples: each is attacked with its own "
                         f"loss (per_task or clipped_prob_ce:per_task), not {loss!r}")
    parts = {t: evaluate_robustness(model, own, attack, eps_list, loss=loss, only_tasks=[t], **kwargs)
             for t, own in per_task_splits(split).items()}
    first = next(iter(parts.values()))
    tasks = list(parts)
    accuracy = {t: parts[t]["accuracy"][t] for t in tasks}
    accuracy[AVERAGE] = [float(np.mean([accuracy[t][i] for t in tasks])) for i in range(len(first["eps"]))]
    clean = {t: parts[t]["clean"][t] for t in tasks}
    clean[AVERAGE] = float(np.mean(list(clean.values())))
    out = {**first, "tasks": tasks, "accuracy": accuracy, "clean": clean,
           "num_examples": sum(r["num_examples"] for r in parts.values()),
           "num_examples_per_task": {t: parts[t]["num_examples"] for t in tasks},
           "seconds": round(sum(r["seconds"] for r in parts.values()), 2)}
    if all("masking" in r for r in parts.values()):
        out["zero_gradient"] = max(r["zero_gradient"] for r in parts.values())
        out["masking"] = {"zero_gradient": {t: parts[t]["masking"]["zero_gradient"][t] for t in tasks},
                          "S": {t: parts[t]["masking"]["S"][t] for t in tasks}}
    return out


# --------------------------------------------------------------------------
# Reports: Markdown table (Tables III-V), plot (Fig. 5), JSON
# --------------------------------------------------------------------------
def _label(result: Dict[str, Any]) -> str:
    return result.get("label") or result["model"]


def _mode(result: Dict[str, Any]) -> str:
    return f"eval={result['eval']}, attack_grad={result['attack_grad']}"


def _fmt_eps(e: float) -> str:
    return f"{e:g}"


def protocol_desc(result: Dict[str, Any]) -> List[str]:
    """The protocol options of ``result`` that differ from the defaults, as short phrases
    (results written before the options existed read as the defaults)."""
    parts = []
    if result.get("space", "unit") != "unit":
        parts.append(f"space={result['space']}")
    if not result.get("clip", True):
        parts.append("no clip")
    if result.get("batchnorm", "inference") != "inference":
        parts.append(f"batchnorm={result['batchnorm']}")
    if result.get("restarts", 1) != 1:
        parts.append(f"worst of {result['restarts']} {'draws' if result['attack'] == 'random_sign' else 'restarts'}")
    return parts


def _attack_desc(result: Dict[str, Any]) -> str:
    """``FGSM (loss=sum)`` or ``PGD (10 steps of 2.5*eps/steps, random start, loss=sum)``."""
    parts = []
    if "pgd" in result:
        p = result["pgd"]
        parts += [f"{p['steps']} steps of {p['step_size']}", f"{'random' if p['random_start'] else 'clean'} start"]
    if result["attack"] != "random_sign":
        parts.append(f"loss={result['loss']}")
    parts += protocol_desc(result)
    return f"{result['attack'].upper()} ({', '.join(parts)})"


def markdown_table(results: Sequence[Dict[str, Any]]) -> str:
    """Accuracy (%) per task and joint (rows) at each eps (columns).

    One result: rows are the tasks then ``joint`` (Tables III-V). Several: one
    row per model and task, the model column naming its evaluation modes.
    """
    results = list(results)
    if not results:
        raise ValueError("no results to tabulate")
    eps = results[0]["eps"]
    if any(r["eps"] != eps for r in results):
        raise ValueError("the results were computed at different eps values")
    first = results[0]
    lines = [f"Accuracy (%) under {_attack_desc(first)} on {first['dataset']}"
             + (f", {first['num_examples']} test examples" if len({r['num_examples'] for r in results}) == 1 else "")
             + ".", ""]
    cols = [f"eps={_fmt_eps(e)}" for e in eps]
    several = len(results) > 1
    if several:
        lines.append("| Model | Task | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---:|" * len(cols))
    else:
        lines[0] = lines[0][:-1] + f"; {first['model']} ({_mode(first)})."
        lines.append("| Task | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
    for r in results:
        for task in [k for k in list(r["tasks"]) + [JOINT, AVERAGE] if k in r["accuracy"]]:
            cells = " | ".join(f"{100.0 * a:.2f}" for a in r["accuracy"][task])
            head = f"{_label(r)} [{_mode(r)}] | {task}" if several else task
            lines.append(f"| {head} | {cells} |")
    return "\n".join(lines) + "\n"


def accuracy_panels(n: int, width: float = 3.4, height: float = 3.4):
    """(figure, axes): ``n`` side-by-side accuracy-vs-eta panels on a non-interactive
    figure (no display needed), finished by :func:`save_accuracy_panels`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n, squeeze=False)[0]


def save_accuracy_panels(fig, axes, title: str, path, xlabel: str = "eps", legend_size="small",
                         dpi: int = 120) -> pathlib.Path:
    """Label ``axes`` (accuracy in % against ``xlabel``), add the legend and ``title``, write a PNG."""
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=legend_size)
    fig.suptitle(title)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def plot_robustness(results: Sequence[Dict[str, Any]], path) -> pathlib.Path:
    """Accuracy vs eps, one panel per task plus joint, one line per result (Fig. 5); a PNG."""
    results = list(results)
    panels = [k for k in list(results[0]["tasks"]) + [JOINT, AVERAGE] if all(k in r["accuracy"] for r in results)]
    fig, axes = accuracy_panels(len(panels))
    for ax, task in zip(axes, panels):
        for r in results:
            ax.plot(r["eps"], [100.0 * a for a in r["accuracy"][task]], marker="o", markersize=3,
                    label=f"{_label(r)} (eval={r['eval']}, attack_grad={r['attack_grad']})")
        ax.set_title(task)
    return save_accuracy_panels(fig, axes, f"{_attack_desc(results[0])}: {results[0]['dataset']}", path)


def write_report(results: Sequence[Dict[str, Any]], output_dir) -> Dict[str, pathlib.Path]:
    """Write ``robustness.json``, ``robustness.md`` and ``robustness.png`` into ``output_dir``."""
    from .runs import write_json

    results = list(results)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = results[0]
    doc = {"dataset": first["dataset"], "attack": first["attack"], "eps": first["eps"], "results": results}
    paths = {"json": out / JSON_NAME, "table": out / TABLE_NAME, "plot": out / PLOT_NAME}
    write_json(paths["json"], doc)
    paths["table"].write_text(markdown_table(results))
    plot_robustness(results, paths["plot"])
    return paths


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tf_mtvib.evaluate",
        description="Accuracy of trained runs under FGSM / PGD at several eps (Tables III-V, Fig. 5).")
    p.add_argument("--run", action="append", required=True, metavar="RUN_DIR",
                   help="a run directory written by train.py; repeat to compare models on one data set")
    p.add_argument("--attack", choices=("fgsm", "pgd", "random_sign", "cw_l2"), default="fgsm",
                   help="random_sign: the gradient-free control, every pixel moved by +-eps at random; cw_l2: "
                        "Carlini-Wagner L2, each task attacked on its own (tf_mtvib.cw; no eps: it reports the "
                        "accuracy, the success rate and the median L2 of the successes)")
    p.add_argument("--targeted", action="store_true", help="cw_l2: towards a random other label per example")
    p.add_argument("--cw-binary-steps", type=int, default=5, help="cw_l2: binary-search rounds over c (default 5)")
    p.add_argument("--cw-iterations", type=int, default=1000, help="cw_l2: Adam steps per round (default 1000)")
    p.add_argument("--eps", default=",".join(f"{e:g}" for e in DEFAULT_EPS),
                   help="comma-separated L-inf radii, in [0, 1] for --space unit (default: %(default)s)")
    p.add_argument("--mode", choices=tuple(MODES), default=None,
                   help="mean: z = posterior mean; sampled: one draw of z per prediction and for the gradient; "
                        f"eot: {MC_SAMPLES}-draw predictions, {EOT_SAMPLES}-draw gradient (override with the two "
                        "options below)")
    p.add_argument("--eval-samples", type=int, default=None, metavar="N",
                   help="0: predict with z = posterior mean (eval=mean); N: average N posterior samples (eval=mcN)")
    p.add_argument("--eot-samples", type=int, default=None, metavar="M",
                   help="0: attack gradient in mean mode; M: averaged over M posterior samples (attack_grad=eotM)")
    p.add_argument("--loss", default="sum",
                   help="attack loss: sum (unweighted sum of task cross-entropies), training (the model's "
                        "own loss), clipped_prob_ce (cross-entropy of probabilities clipped as Keras does), "
                        "a task name or clipped_prob_ce:TASK (that task's loss), or per_task / "
                        "clipped_prob_ce:per_task (each task attacked with its own loss and scored alone) "
                        "(default: %(default)s)")
    p.add_argument("--space", choices=("unit", "standardized", "pixel255"), default="unit",
                   help="where the attack and eps act: [0, 1] pixels, (x - mean) / std with the training "
                        "split's per-channel statistics, or [0, 255] (default: %(default)s)")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip the adversarial input to the valid range")
    p.add_argument("--batchnorm", choices=("inference", "batch"), default="inference",
                   help="BatchNorm statistics for the attack's gradient (default: %(default)s)")
    p.add_argument("--restarts", type=int, default=1,
                   help="PGD random restarts / random_sign draws; correct only if correct after every one")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default: %(default)s)")
    p.add_argument("--step-size", type=float, default=None, help="PGD step size (default: 2.5 * eps / steps)")
    p.add_argument("--no-random-start", dest="random_start", action="store_false",
                   help="start PGD at the clean image")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="evaluate N test examples of the run's test set, a random subset stratified on the "
                        "labels and seeded by --seed (the same images for every run)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="output directory (default: the run directory for one run, else ./robustness-<dataset>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _fingerprint(split) -> str:
    h = hashlib.sha1(np.ascontiguousarray(split.images).tobytes())
    for t in sorted(split.labels):
        h.update(np.ascontiguousarray(split.labels[t]).tobytes())
    return h.hexdigest()[:12]


def _labels(runs) -> List[str]:
    names = [r.model_name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.path.name})" for n, r in zip(names, runs)]


def _run_cw(args) -> int:
    """``--attack cw_l2``: each run's tasks under CW-L2 (:func:`tf_mtvib.cw.evaluate_cw`)."""
    from .cw import evaluate_cw, markdown_table
    from .runs import load_run

    if args.cw_binary_steps < 1 or args.cw_iterations < 1:
        raise ValueError("--cw-binary-steps and --cw-iterations must be >= 1")
    _, _, eot_samples = resolve_mode(args.mode, args.eval_samples, args.eot_samples)
    runs = [load_run(p) for p in args.run]
    results = []
    for run, label in zip(runs, _labels(runs)):
        split = run.load_split("test", args.data_dir).sample(args.max_examples, seed=args.seed)
        if not args.quiet:
            print(f"{label}: cw_l2 ({'targeted' if args.targeted else 'untargeted'}, {args.cw_binary_steps} x "
                  f"{args.cw_iterations}, attack_grad={'eot%d' % eot_samples if eot_samples else 'mean'}) on "
                  f"{len(split)} test examples", flush=True)
        r = evaluate_cw(run.model, split, targeted=args.targeted, binary_steps=args.cw_binary_steps,
                        max_iterations=args.cw_iterations, eot_samples=eot_samples, batch_size=args.batch_size,
                        seed=args.seed)
        r.update(run=str(run.path), label=label, test_set=_fingerprint(split))
        results.append(r)
    out = pathlib.Path(args.output) if args.output else runs[0].path
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cw_l2{'-targeted' if args.targeted else ''}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(markdown_table(results), end="")
    print(f"wrote {path}")
    return 0


def _run(args) -> int:
    from .attacks import check_loss_name, grad_mode_name, is_per_task
    from .runs import load_run

    if args.attack == "cw_l2":
        return _run_cw(args)

    eps = parse_eps(args.eps, 1.0 if args.space == "unit" else None)
    for name in ("eval_samples", "eot_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    mode, eval_samples, eot_samples = resolve_mode(args.mode, args.eval_samples, args.eot_samples)
    if args.restarts < 1 or (args.restarts > 1 and args.attack == "fgsm"):
        raise ValueError("--restarts must be >= 1, and applies to pgd and random_sign only")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be positive")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError("--max-examples must be positive")
    if args.attack == "pgd" and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    runs = [load_run(p) for p in args.run]
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        raise ValueError("runs of different data sets cannot be compared in one table: "
                         + ", ".join(f"{r.path} ({r.dataset})" for r in runs))
    dataset = datasets[0]
    tasks = runs[0].spec.task_names
    try:
        check_loss_name(args.loss, tasks)
    except ValueError as e:
        raise ValueError(f"--loss: {e}") from None
    if args.output:
        out = pathlib.Path(args.output)
    elif len(runs) == 1:
        out = runs[0].path
    else:
        out = pathlib.Path.cwd() / f"robustness-{dataset}"

    results, splits, prints = [], {}, set()
    for run, label in zip(runs, _labels(runs)):
        # the run's test set (its max_test cap included), then --max-examples of it
        key = json.dumps([run.data_options, run.config.get("limits"), run.subsets], sort_keys=True)
        if key not in splits:
            splits[key] = run.load_split("test", args.data_dir).sample(args.max_examples, seed=args.seed)
        split = splits[key]
        prints.add(_fingerprint(split))
        model = run.model
        if not args.quiet:
            print(f"{label}: {args.attack} at eps {', '.join(f'{e:g}' for e in eps)} on {len(split)} "
                  f"{dataset} test examples (mode {mode}: eval={eval_mode_name(model, eval_samples)}, "
                  f"attack_grad={grad_mode_name(model, eot_samples)})",
                  flush=True)
        stats = run_input_statistics(run, args.data_dir) if args.space == "standardized" else None
        from .families import get_family

        by_task = get_family(run.model_name).inputs == "per_task"   # each task its own images: attacked per task
        if by_task and not is_per_task(args.loss):
            raise ValueError(f"{run.path}: the tasks of {dataset} have their own images; attack each with its own "
                             "loss: --loss per_task")
        evaluate_fn = functools.partial(evaluate_robustness_by_task, model) if by_task else \
            functools.partial(evaluate_robustness, model)
        r = evaluate_fn(split, args.attack, eps, eval_samples=eval_samples,
                                eot_samples=eot_samples, loss=args.loss, steps=args.steps,
                                step_size=args.step_size, random_start=args.random_start,
                                batch_size=args.batch_size, seed=args.seed, verbose=0 if args.quiet else 1,
                                mode=mode, space=args.space, input_stats=stats, clip=args.clip,
                                batchnorm=args.batchnorm, restarts=args.restarts)
        r["run"] = str(run.path)
        r["label"] = label
        r["data"] = run.data_options
        r["test_set"] = _fingerprint(split)
        r["subsets"] = {"run": run.subsets, "max_examples": args.max_examples, "seed": args.seed}
        results.append(r)
    if len(prints) > 1:
        print("warning: the runs' data options give different test sets; compare with care "
              "(see test_set in robustness.json)", file=sys.stderr)
    paths = write_report(results, out)
    print()
    print(paths["table"].read_text(), end="")
    print(f"\nwrote {paths['json']}, {paths['table'].name}, {paths['plot'].name}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 with a one-line error)."""
    args = _parser().parse_args(argv)
    from .datasets import DataError
    from .runs import RunError

    try:
        return _run(args)
    except (RunError, DataError, ValueError, OSError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
