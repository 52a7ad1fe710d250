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

Attack protocols
----------------
The paper states neither the pixel range, the normalisation, the clipping nor
the loss of its FGSM (see docs/robustness.md). The pieces here express the
candidates, each a small function composed with the others:

* input space (:class:`InputSpace`, :func:`input_space`, :func:`in_space`):
  the attack and ``eps`` act on ``unit`` pixels in [0, 1] (the model's own
  input), on ``pixel255`` values in [0, 255], or on ``standardized`` inputs
  ``(x - mean) / std`` with per-channel training-split statistics;
* clipping: ``clip_min``/``clip_max`` of ``None`` leave the result unclipped;
* loss: :func:`sum_of_task_losses`, :func:`training_loss`,
  :func:`clipped_probability_ce` (cross-entropy of softmax probabilities
  clipped to ``[epsilon, 1 - epsilon]`` as Keras does, whose gradient is
  exactly 0 on saturated examples) or one task's (:func:`task_loss`,
  :func:`clipped_task_loss`); ``per_task`` attacks every task with its own
  loss and scores it alone (:func:`own_task_losses`), as a single-task
  network is attacked;
* gradient mode: mean (z = posterior mean), sampled (one draw of z,
  ``posterior_logits(network, 1)``) or EOT (``M`` draws);
* BatchNorm: inference statistics (:func:`network_logits`) or the attacked
  batch's own statistics (:func:`batch_statistics`).

:func:`random_sign` is the gradient-free control of the same L-inf size.

Every gradient is taken in float32 (or float64) on the input: logits of a
reduced-precision network are cast to float32 before the loss, and the model
functions here (:func:`network_logits`, :func:`posterior_logits`) run a
mixed-precision network in float32 (:func:`tf_mtvib.precision.float32_compute`;
its weights are float32 already), so the whole backward pass is float32 (a
float16 one underflows without loss scaling, a bfloat16 one flips some signs).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from .models import network_logits, posterior_logits, split_at_latents  # noqa: F401 (re-exported)
from .layers import batch_statistics  # noqa: F401 (re-exported; the model's own scope is model.batch_statistics)
from .precision import float32_compute

__all__ = [
    "ATTACKS", "LOSSES", "SPACES", "BATCHNORM", "fgsm", "fgsm_direction", "pgd", "random_sign", "loss_gradient",
    "sum_of_task_losses", "task_loss", "training_loss", "clipped_probability_ce", "clipped_task_loss", "make_loss",
    "PER_TASK", "is_clipped", "is_per_task", "own_task_losses", "check_loss_name", "zero_gradient",
    "InputSpace", "input_space", "in_space", "clip",
    "network_logits", "posterior_logits", "batch_statistics", "split_at_latents", "model_fn_for",
    "grad_mode_name", "compile_attack",
]

ATTACKS = ("fgsm", "pgd", "random_sign")
#: loss names understood by :func:`make_loss` (besides a task name)
LOSSES = ("sum", "training", "clipped_prob_ce")
#: input spaces understood by :func:`input_space`
SPACES = ("unit", "standardized", "pixel255")
#: BatchNorm statistics at attack time: the moving averages, or the attacked batch's own
BATCHNORM = ("inference", "batch")

ModelFn = Callable[[tf.Tensor], Dict[str, tf.Tensor]]
LossFn = Callable[[Mapping[str, tf.Tensor], Mapping[str, tf.Tensor]], tf.Tensor]


# --------------------------------------------------------------------------
# Losses: (y, logits) -> scalar. Logits are (B, C) or (M, B, C) for M samples.
# --------------------------------------------------------------------------
def _per_example_ce(labels, logits) -> tf.Tensor:
    """Cross-entropy per example, shape ``logits.shape[:-1]`` (labels broadcast over samples)."""
    logits = _at_least_float32(logits)
    labels = tf.cast(labels, tf.int32)
    labels = tf.broadcast_to(labels, tf.shape(logits)[:-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _at_least_float32(t: tf.Tensor) -> tf.Tensor:
    """``t`` in float32 if it is float16 / bfloat16 (mixed precision); float32/64 unchanged."""
    return tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t


def _sum_over_batch_mean_over_samples(per_example: tf.Tensor) -> tf.Tensor:
    """Sum over the batch (last) axis, mean over any leading sample axes."""
    total = tf.reduce_sum(per_example)
    batch = tf.shape(per_example)[-1]
    count = tf.cast(tf.size(per_example) // batch, total.dtype)
    return total / count


def sum_of_task_losses(y: Mapping[str, tf.Tensor], logits: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """``sum_k CE_k``: the unweighted sum of every task's cross-entropy (the default)."""
    return tf.add_n([_sum_over_batch_mean_over_samples(_per_example_ce(y[t], logits[t])) for t in logits])


def _one_task(task: str, per_example, name: str) -> LossFn:
    """The loss of task ``task`` alone, from a per-example loss ``(labels, logits) -> (..., B)``."""
    def loss(y, logits):
        if task not in logits:
            raise ValueError(f"no task {task!r}; tasks: {', '.join(logits)}")
        return _sum_over_batch_mean_over_samples(per_example(y[task], logits[task]))
    loss.__name__ = f"{name}_{task}"
    return loss


def task_loss(task: str) -> LossFn:
    """The cross-entropy of one task only."""
    return _one_task(task, _per_example_ce, "task_loss")


def training_loss(model) -> LossFn:
    """The model's own training loss, :meth:`MultiTaskModel.compute_loss` (task
    weighting + ``beta * KL``), times the batch size (a sum over examples). Its loss
    terms (penalties over environments, e.g. MT-CRL's G-IRM) are left out: they read
    the training batch's extras, which a test image does not have.

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


def _clipped_ce(labels, logits) -> tf.Tensor:
    """``-log clip(softmax(logits), epsilon, 1 - epsilon)_y`` per example (Keras's
    ``from_logits=False`` formula, written out), shape ``logits.shape[:-1]``."""
    epsilon = keras.config.epsilon()
    probs = tf.clip_by_value(tf.nn.softmax(_at_least_float32(logits)), epsilon, 1.0 - epsilon)
    labels = tf.broadcast_to(tf.cast(labels, tf.int32), tf.shape(probs)[:-1])
    return -tf.math.log(tf.gather(probs, labels, axis=-1, batch_dims=len(probs.shape) - 1))


def clipped_probability_ce(y: Mapping[str, tf.Tensor], logits: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """``sum_k CE_k`` computed from clipped probabilities, as Keras computes a
    cross-entropy from probabilities (``from_logits=False``)::

        p = clip(softmax(logits), epsilon, 1 - epsilon);   CE = -log p_y

    with ``epsilon = keras.config.epsilon()`` (1e-7). Where the true class's
    probability is above ``1 - epsilon`` in float32 (a saturated, confidently
    right example; :mod:`tf_mtvib.saturation`) the clip cuts the gradient: it
    is exactly 0, and FGSM leaves the image where it is. ``tf.clip_by_value``
    passes the gradient at equality, so ``p_y == 1 - epsilon`` still moves.

    The clip is written out rather than left to
    ``keras.ops.sparse_categorical_crossentropy``: inside a traced function
    Keras's TensorFlow backend recognises a ``Softmax`` op and silently
    switches to the logits (no clip), so the same call would behave
    differently eagerly and in a ``tf.function``.
    """
    return tf.add_n([_sum_over_batch_mean_over_samples(_clipped_ce(y[t], logits[t])) for t in logits])


def clipped_task_loss(task: str) -> LossFn:
    """The clipped-probability cross-entropy of one task only (``clipped_prob_ce:TASK``):
    the gradient of task ``task`` alone is exactly 0 on its saturated images."""
    return _one_task(task, _clipped_ce, "clipped_task_loss")


#: the per-task attack: each task attacked by its own loss and scored on that task alone
PER_TASK = "per_task"
CLIPPED = "clipped_prob_ce"


def is_clipped(name: str) -> bool:
    """Whether the loss ``name`` is a clipped-probability cross-entropy (a gradient-masking one)."""
    return name == CLIPPED or name.startswith(CLIPPED + ":")


def is_per_task(name: str) -> bool:
    """``per_task`` or ``clipped_prob_ce:per_task``: one attack per task, with that task's own loss."""
    return name in (PER_TASK, f"{CLIPPED}:{PER_TASK}")


def own_task_losses(name: str, tasks: Sequence[str]) -> Dict[str, LossFn]:
    """``{task: that task's own loss}`` of the kind of the loss ``name``: the
    clipped-probability cross-entropy for a clipped loss, the logits
    cross-entropy otherwise (``sum``, ``training``, ``per_task``, a task name)."""
    make = clipped_task_loss if is_clipped(name) else task_loss
    return {t: make(t) for t in tasks}


def check_loss_name(name: str, tasks: Sequence[str]) -> str:
    """``name`` if :func:`make_loss` (or the per-task attack) understands it, else a ValueError."""
    if name in LOSSES or is_per_task(name) or name in tasks:
        return name
    if name.startswith(CLIPPED + ":") and name.split(":", 1)[1] in tasks:
        return name
    raise ValueError(f"unknown attack loss {name!r}; choose {', '.join(LOSSES)}, {PER_TASK}, "
                     f"{CLIPPED}:{PER_TASK}, a task ({', '.join(tasks)}) or {CLIPPED}:TASK")


def make_loss(name: str, model) -> LossFn:
    """``"sum"`` (default), ``"training"``, ``"clipped_prob_ce"``, a task name of
    ``model`` or ``"clipped_prob_ce:TASK"``. (The per-task attacks, ``per_task``
    and ``clipped_prob_ce:per_task``, take :func:`own_task_losses` instead.)"""
    check_loss_name(name, model.task_names)
    if is_per_task(name):
        raise ValueError(f"{name!r} is one attack per task: take own_task_losses({name!r}, tasks)")
    if name == "sum":
        return sum_of_task_losses
    if name == "training":
        return training_loss(model)
    if name == CLIPPED:
        return clipped_probability_ce
    if name.startswith(CLIPPED + ":"):
        return clipped_task_loss(name.split(":", 1)[1])
    return task_loss(name)


def zero_gradient(model_fn: ModelFn, x, y, loss_fn: LossFn) -> tf.Tensor:
    """Per image, whether ``grad_x L`` is exactly 0 in every pixel (FGSM's
    ``sign`` then leaves it unmoved at every eps): a bool ``(B,)``.

    The loss is a sum over examples and, with BatchNorm in inference mode,
    each image's gradient is that of its own term.
    """
    grad = loss_gradient(model_fn, x, y, loss_fn)
    return tf.reduce_all(tf.equal(tf.reshape(grad, [tf.shape(grad)[0], -1]), 0.0), axis=1)


# --------------------------------------------------------------------------
# Model functions: images -> {task: logits}
# --------------------------------------------------------------------------
def model_fn_for(model, eot_samples: int = 0, batchnorm: str = "inference") -> ModelFn:
    """Mean-mode logits (``eot_samples=0``, or a deterministic model) or the
    logits of ``eot_samples`` posterior draws (``1``: the sampled mode, one
    draw per gradient; more: EOT). ``batchnorm="batch"`` normalises with the
    attacked batch's statistics.

    ``model`` is asked only through the stochastic-model protocol of
    :class:`tf_mtvib.models.MultiTaskModel` (``is_stochastic``, ``mean_logits``,
    ``sampled_logits``, ``batch_statistics``, ``float32_compute``): a family
    whose randomness is not a Gaussian latent is attacked the same way."""
    if batchnorm not in BATCHNORM:
        raise ValueError(f"unknown batchnorm {batchnorm!r}; choose one of: {', '.join(BATCHNORM)}")
    samples = int(eot_samples) if eot_samples and model.is_stochastic else 0
    if samples < 0:
        raise ValueError(f"eot_samples must be >= 0, got {eot_samples}")

    def model_fn(x):
        with model.float32_compute(), (model.batch_statistics() if batchnorm == "batch" else contextlib.nullcontext()):
            return model.sampled_logits(x, samples) if samples else model.mean_logits(x)
    return model_fn


def grad_mode_name(model, eot_samples: int = 0) -> str:
    """``"mean"`` or ``"eot<M>"``: how the attack gradient of ``model`` is taken
    (``eot1`` is the sampled mode: the gradient through one draw of z)."""
    return f"eot{int(eot_samples)}" if eot_samples and model.is_stochastic else "mean"


# --------------------------------------------------------------------------
# Input spaces: where the attack and eps act
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InputSpace:
    """An affine view of the model's [0, 1] input: ``x_space = (x_unit - shift) / scale``.

    ``shift`` and ``scale`` are per channel (or scalars). The valid range of
    a space is the image of [0, 1]: ``[(0 - shift) / scale, (1 - shift) / scale]``.
    """

    name: str
    shift: Tuple[float, ...] = (0.0,)
    scale: Tuple[float, ...] = (1.0,)

    def _constants(self, x):
        return _like(np.asarray(self.shift, np.float64), x), _like(np.asarray(self.scale, np.float64), x)

    def from_unit(self, x):
        """[0, 1] pixels -> this space (the identity for ``unit``)."""
        if self.name == "unit":
            return x
        shift, scale = self._constants(x)
        return (x - shift) / scale

    def to_unit(self, x):
        """This space -> [0, 1] pixels, the model's input (the identity for ``unit``)."""
        if self.name == "unit":
            return x
        shift, scale = self._constants(x)
        return x * scale + shift

    def bounds(self):
        """``(low, high)``: the valid range, per channel, as numpy arrays."""
        shift, scale = np.asarray(self.shift, np.float64), np.asarray(self.scale, np.float64)
        return (0.0 - shift) / scale, (1.0 - shift) / scale

    def describe(self) -> dict:
        return {"name": self.name, "shift": list(self.shift), "scale": list(self.scale)}


def input_space(name: str = "unit", stats: Optional[Mapping[str, Sequence[float]]] = None) -> InputSpace:
    """The input space ``name`` (one of :data:`SPACES`).

    ``standardized`` needs ``stats = {"mean": [...], "std": [...]}``, per
    channel, in [0, 1] units (e.g. :func:`tf_mtvib.evaluate.input_statistics`).
    """
    if name == "unit":
        return InputSpace("unit")
    if name == "pixel255":
        return InputSpace("pixel255", (0.0,), (1.0 / 255.0,))
    if name == "standardized":
        if not stats or "mean" not in stats or "std" not in stats:
            raise ValueError("the standardized input space needs per-channel statistics {'mean': [...], 'std': [...]}")
        mean = tuple(float(m) for m in np.ravel(stats["mean"]))
        std = tuple(float(s) for s in np.ravel(stats["std"]))
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"bad input statistics: mean {mean}, std {std} (one positive std per channel)")
        return InputSpace("standardized", mean, std)
    raise ValueError(f"unknown input space {name!r}; choose one of: {', '.join(SPACES)}")


def in_space(model_fn: ModelFn, space: InputSpace) -> ModelFn:
    """``model_fn`` taking inputs in ``space``: ``x -> model_fn(space.to_unit(x))``.

    The gradient of a loss of this function is the gradient in ``space``
    (for ``standardized`` it is ``std`` times the [0, 1] gradient, the same sign).
    """
    if space.name == "unit":
        return model_fn

    def fn(x):
        return model_fn(space.to_unit(x))
    return fn


def clip(x, clip_min, clip_max):
    """``clip(x, clip_min, clip_max)`` per element (bounds broadcast, e.g. per channel);
    ``None`` for both leaves ``x`` unclipped."""
    if clip_min is None and clip_max is None:
        return x
    low = -np.inf if clip_min is None else clip_min
    high = np.inf if clip_max is None else clip_max
    return tf.clip_by_value(x, _like(low, x), _like(high, x))


# --------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------
def _like(value, x: tf.Tensor) -> tf.Tensor:
    """``value`` in the dtype of ``x`` (a Python float is converted directly, not via float32)."""
    if tf.is_tensor(value):
        return tf.cast(value, x.dtype)
    if isinstance(value, np.ndarray):
        value = value.astype(x.dtype.as_numpy_dtype)
    return tf.convert_to_tensor(value, x.dtype)


def loss_gradient(model_fn: ModelFn, x, y, loss_fn: LossFn = sum_of_task_losses) -> tf.Tensor:
    """``grad_x L(model_fn(x), y)`` by :class:`tf.GradientTape`, taken on a float32
    (or float64) ``x`` whatever the network's compute dtype."""
    x = _at_least_float32(tf.convert_to_tensor(x))
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
         clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0) -> tf.Tensor:
    """Fast gradient sign method (eq. 25): ``clip(x + eps * sign(grad_x L), clip_min, clip_max)``.

    ``clip_min = clip_max = None``: no clipping (the adversarial input may leave the valid range).
    """
    x = tf.convert_to_tensor(x)
    eps = _like(eps, x)
    return clip(x + eps * fgsm_direction(model_fn, x, y, loss_fn), clip_min, clip_max)


def pgd(model_fn: ModelFn, x, y, eps, step_size, steps: int, random_start: bool = True,
        loss_fn: LossFn = sum_of_task_losses, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0,
        seed: Optional[int] = None) -> tf.Tensor:
    """Projected gradient descent on the L-inf ball (Madry et al.)::

        x_0     = clip(x + U(-eps, eps), 0, 1)     (x if not random_start)
        x_{t+1} = clip(clip(x_t + step_size * sign(grad L(x_t)), x - eps, x + eps), 0, 1)

    ``steps`` gradient steps; ``eps`` and ``step_size`` may be tensors. With
    ``clip_min = clip_max = None`` only the projection onto the eps ball remains.
    """
    x = tf.convert_to_tensor(x)
    eps = _like(eps, x)
    step_size = _like(step_size, x)
    lower, upper = x - eps, x + eps
    if clip_min is not None:
        lower = tf.maximum(lower, _like(clip_min, x))
    if clip_max is not None:
        upper = tf.minimum(upper, _like(clip_max, x))
    x_adv = x
    if random_start:
        x_adv = x + tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed) * eps
        x_adv = tf.clip_by_value(x_adv, lower, upper)
    for _ in tf.range(int(steps)):
        x_adv = x_adv + step_size * fgsm_direction(model_fn, x_adv, y, loss_fn)
        x_adv = tf.clip_by_value(x_adv, lower, upper)   # the projection: eps ball and the valid range
    return x_adv


def random_sign(x, eps, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0,
                seed: Optional[int] = None) -> tf.Tensor:
    """The gradient-free control: ``clip(x + eps * s, clip_min, clip_max)`` with
    ``s`` uniformly random in ``{-1, +1}`` per pixel.

    Before clipping every pixel moves by exactly ``eps``: the same L-inf size
    as FGSM, in a direction that knows nothing of the model. If this lowers
    accuracy more than FGSM, the gradient is misleading (gradient masking).
    """
    x = tf.convert_to_tensor(x)
    eps = _like(eps, x)
    signs = tf.where(tf.random.uniform(tf.shape(x), seed=seed) < 0.5, -tf.ones_like(x), tf.ones_like(x))
    return clip(x + eps * signs, clip_min, clip_max)


def compile_attack(attack: str, model_fn: ModelFn, loss_fn: LossFn = sum_of_task_losses,
                   steps: int = 10, step_size: Optional[float] = None,
                   random_start: bool = True, seed: Optional[int] = None,
                   clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0):
    """A traced ``(x, y, eps) -> x_adv``; ``eps`` is a tensor, so a sweep over eps traces once.

    For ``pgd`` a ``step_size`` of ``None`` means ``2.5 * eps / steps`` (Madry et al.).
    ``random_sign`` ignores ``model_fn`` and ``y``.
    """
    if attack == "fgsm":
        return tf.function(lambda x, y, eps: fgsm(model_fn, x, y, eps, loss_fn, clip_min, clip_max),
                           reduce_retracing=True)
    if attack == "random_sign":
        return tf.function(lambda x, y, eps: random_sign(x, eps, clip_min, clip_max, seed), reduce_retracing=True)
    if attack == "pgd":
        if int(steps) < 1:
            raise ValueError(f"PGD needs steps >= 1, got {steps}")
        steps = int(steps)

        def run(x, y, eps):
            size = 2.5 * eps / steps if step_size is None else step_size
            return pgd(model_fn, x, y, eps, size, steps, random_start, loss_fn, clip_min, clip_max, seed=seed)
        return tf.function(run, reduce_retracing=True)
    raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
