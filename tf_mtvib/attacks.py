"""White-box L-inf attacks: FGSM and PGD, written against the equations.

FGSM (Goodfellow et al. 2015; MTVIB eq. 25)::

    x_adv = clip(x + eps * sign(grad_x L(f(x), y)), 0, 1)

PGD (Madry et al. 2018): iterated FGSM steps of size ``step_size``, each
projected back onto the L-inf ball of radius ``eps`` around ``x`` and onto the
image range [0, 1], from a uniformly random start in the ball.

The functions follow CleverHans' style: ``model_fn`` maps a batch of images
in [0, 1] to ``{task: logits}``, ``loss_fn(y, logits)`` maps labels
``{task: int (B,)}`` and those logits to a scalar, and the gradient comes
from :class:`tf.GradientTape`. They are plain TensorFlow functions that run
eagerly or inside :func:`tf.function` (:func:`compile_attack` gives a traced
version that takes ``eps`` as a tensor, so a sweep over eps traces once).

The loss
--------
The default :func:`sum_of_task_losses` is the unweighted sum of the tasks'
cross-entropies, the same attack objective for every model, so that models
trained with different task weightings are compared under the same attack.
:func:`task_loss` attacks one task; :func:`training_loss` uses the model's own
training objective (:meth:`MultiTaskModel.compute_loss`: learned or fixed task
weights and ``beta * KL``).

The losses are summed over the batch, not averaged: the sign of an example's
gradient does not depend on the batch size, and per-example gradients are not
scaled by 1/B (which can underflow to 0 in float32 and leave pixels unmoved).

Stochastic models and expectation over transformation (EOT)
-----------------------------------------------------------
In inference a :class:`tf_mtvib.layers.GaussianLatent` returns its posterior
mean, so ``model_fn = network_logits(network)`` differentiates the mean-mode
network. A gradient through a single posterior sample of z is noisy and can
make a VIB look more robust than it is; :func:`posterior_logits` returns
logits for ``M`` posterior samples per image (shape ``(M, B, classes)``), and
the losses here average over that leading sample axis, so the gradient is the
average of ``M`` sampled gradients, i.e. the gradient of ``E_z[L]`` (Athalye
et al. 2018).

A pixel whose loss gradient is exactly 0 has ``sign = 0`` and stays where it
is (as in CleverHans).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf

from .layers import posterior_sampling
from .models import sampled_logits, split_at_latents

__all__ = [
    "ATTACKS", "LOSSES", "fgsm", "fgsm_direction", "pgd", "loss_gradient",
    "sum_of_task_losses", "task_loss", "training_loss", "make_loss",
    "network_logits", "posterior_logits", "split_at_latents", "model_fn_for", "grad_mode_name", "compile_attack",
]

ATTACKS = ("fgsm", "pgd")
#: loss names understood by :func:`make_loss` (besides a task name)
LOSSES = ("sum", "training")

ModelFn = Callable[[tf.Tensor], Dict[str, tf.Tensor]]
LossFn = Callable[[Mapping[str, tf.Tensor], Mapping[str, tf.Tensor]], tf.Tensor]


# --------------------------------------------------------------------------
# Losses: (y, logits) -> scalar. Logits are (B, C) or (M, B, C) for M samples.
# --------------------------------------------------------------------------
def _per_example_ce(labels, logits) -> tf.Tensor:
    """Cross-entropy per example, shape ``logits.shape[:-1]`` (labels broadcast over samples)."""
    labels = tf.cast(labels, tf.int32)
    labels = tf.broadcast_to(labels, tf.shape(logits)[:-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _sum_over_batch_mean_over_samples(per_example: tf.Tensor) -> tf.Tensor:
    """Sum over the batch (last) axis, mean over any leading sample axes."""
    total = tf.reduce_sum(per_example)
    batch = tf.shape(per_example)[-1]
    count = tf.cast(tf.size(per_example) // batch, total.dtype)
    return total / count


def sum_of_task_losses(y: Mapping[str, tf.Tensor], logits: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """``sum_k CE_k``: the unweighted sum of every task's cross-entropy (the default)."""
    return tf.add_n([_sum_over_batch_mean_over_samples(_per_example_ce(y[t], logits[t])) for t in logits])


def task_loss(task: str) -> LossFn:
    """The cross-entropy of one task only."""
    def loss(y, logits):
        if task not in logits:
            raise ValueError(f"no task {task!r}; tasks: {', '.join(logits)}")
        return _sum_over_batch_mean_over_samples(_per_example_ce(y[task], logits[task]))
    loss.__name__ = f"task_loss_{task}"
    return loss


def training_loss(model) -> LossFn:
    """The model's own training loss, :meth:`MultiTaskModel.compute_loss` (task
    weighting + ``beta * KL``), times the batch size (a sum over examples).

    ``model_fn`` must call ``model.network`` (or ``model``) in the same trace:
    the KL terms are the layer losses of that call.
    """
    def loss(y, logits):
        first = next(iter(logits.values()))
        if first.shape.rank == 3:            # (M, B, C): flatten the samples into the batch
            samples, batch = tf.shape(first)[0], tf.shape(first)[1]
            logits = {t: tf.reshape(l, [-1, tf.shape(l)[-1]]) for t, l in logits.items()}
            y = {t: tf.tile(tf.reshape(v, [-1]), [samples]) for t, v in y.items()}
        else:
            batch = tf.shape(first)[0]
        total = model.compute_loss(None, y, logits, training=False)
        return total * tf.cast(batch, total.dtype)
    return loss


def make_loss(name: str, model) -> LossFn:
    """``"sum"`` (default), ``"training"``, or a task name of ``model``."""
    if name == "sum":
        return sum_of_task_losses
    if name == "training":
        return training_loss(model)
    if name in model.task_names:
        return task_loss(name)
    raise ValueError(f"unknown attack loss {name!r}; choose sum, training or a task ({', '.join(model.task_names)})")


# --------------------------------------------------------------------------
# Model functions: images -> {task: logits}
# --------------------------------------------------------------------------
def network_logits(network: keras.Model) -> ModelFn:
    """Logits of ``network`` in inference (BatchNorm statistics fixed; z = posterior mean)."""
    def model_fn(x):
        return network(x, training=False)
    return model_fn


def posterior_logits(network: keras.Model, samples: int) -> ModelFn:
    """Logits of ``network`` for ``samples`` posterior draws of z per image, shape
    ``(samples, B, classes)`` (:func:`tf_mtvib.models.sampled_logits`: the
    deterministic encoder runs once, so EOT costs little more than one pass)."""
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    parts = split_at_latents(network) or False

    def model_fn(x):
        return sampled_logits(network, x, samples, parts)
    return model_fn


def model_fn_for(model, eot_samples: int = 0) -> ModelFn:
    """Mean-mode logits (``eot_samples=0``, or a deterministic model) or the
    logits of ``eot_samples`` posterior draws (EOT)."""
    if eot_samples and model.is_stochastic:
        return posterior_logits(model.network, eot_samples)
    return network_logits(model.network)


def grad_mode_name(model, eot_samples: int = 0) -> str:
    """``"mean"`` or ``"eot<M>"``: how the attack gradient of ``model`` is taken."""
    return f"eot{int(eot_samples)}" if eot_samples and model.is_stochastic else "mean"


# --------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------
def _like(value, x: tf.Tensor) -> tf.Tensor:
    """``value`` in the dtype of ``x`` (a Python float is converted directly, not via float32)."""
    return tf.cast(value, x.dtype) if tf.is_tensor(value) else tf.convert_to_tensor(value, x.dtype)


def loss_gradient(model_fn: ModelFn, x, y, loss_fn: LossFn = sum_of_task_losses) -> tf.Tensor:
    """``grad_x L(model_fn(x), y)`` by :class:`tf.GradientTape`."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, model_fn(x))
    grad = tape.gradient(loss, x)
    if grad is None:
        raise ValueError("the attack loss does not depend on the input images")
    return grad


def fgsm_direction(model_fn: ModelFn, x, y, loss_fn: LossFn = sum_of_task_losses) -> tf.Tensor:
    """``sign(grad_x L)``: the FGSM direction, the same for every eps."""
    return tf.sign(loss_gradient(model_fn, x, y, loss_fn))


def fgsm(model_fn: ModelFn, x, y, eps, loss_fn: LossFn = sum_of_task_losses,
         clip_min: float = 0.0, clip_max: float = 1.0) -> tf.Tensor:
    """Fast gradient sign method (eq. 25): ``clip(x + eps * sign(grad_x L), 0, 1)``."""
    x = tf.convert_to_tensor(x)
    eps = _like(eps, x)
    return tf.clip_by_value(x + eps * fgsm_direction(model_fn, x, y, loss_fn), clip_min, clip_max)


def pgd(model_fn: ModelFn, x, y, eps, step_size, steps: int, random_start: bool = True,
        loss_fn: LossFn = sum_of_task_losses, clip_min: float = 0.0, clip_max: float = 1.0,
        seed: Optional[int] = None) -> tf.Tensor:
    """Projected gradient descent on the L-inf ball (Madry et al.)::

        x_0     = clip(x + U(-eps, eps), 0, 1)     (x if not random_start)
        x_{t+1} = clip(clip(x_t + step_size * sign(grad L(x_t)), x - eps, x + eps), 0, 1)

    ``steps`` gradient steps; ``eps`` and ``step_size`` may be tensors.
    """
    x = tf.convert_to_tensor(x)
    eps = _like(eps, x)
    step_size = _like(step_size, x)
    lower = tf.maximum(x - eps, clip_min)
    upper = tf.minimum(x + eps, clip_max)
    x_adv = x
    if random_start:
        x_adv = x + tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed) * eps
        x_adv = tf.clip_by_value(x_adv, lower, upper)
    for _ in tf.range(int(steps)):
        x_adv = x_adv + step_size * fgsm_direction(model_fn, x_adv, y, loss_fn)
        x_adv = tf.clip_by_value(x_adv, lower, upper)   # the projection: eps ball and [0, 1]
    return x_adv


def compile_attack(attack: str, model_fn: ModelFn, loss_fn: LossFn = sum_of_task_losses,
                   steps: int = 10, step_size: Optional[float] = None,
                   random_start: bool = True, seed: Optional[int] = None):
    """A traced ``(x, y, eps) -> x_adv``; ``eps`` is a tensor, so a sweep over eps traces once.

    For ``pgd`` a ``step_size`` of ``None`` means ``2.5 * eps / steps`` (Madry et al.).
    """
    if attack == "fgsm":
        return tf.function(lambda x, y, eps: fgsm(model_fn, x, y, eps, loss_fn), reduce_retracing=True)
    if attack == "pgd":
        if int(steps) < 1:
            raise ValueError(f"PGD needs steps >= 1, got {steps}")
        steps = int(steps)

        def run(x, y, eps):
            size = 2.5 * eps / steps if step_size is None else step_size
            return pgd(model_fn, x, y, eps, size, steps, random_start, loss_fn, seed=seed)
        return tf.function(run, reduce_retracing=True)
    raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
