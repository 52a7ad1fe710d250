"""Task weightings: how the tasks' cross-entropies become one training loss.

A weighting is a Keras layer mapping ``{task: CE_k}`` (the mean
cross-entropy of each task on the batch) to one scalar, and the family is
open, as in LibMTL: **a new weighting is one class plus one registry entry**
(the :func:`register_weighting` decorator). Everything else is read from the
class:

* its hyper-parameters, :attr:`TaskWeighting.HPARAMS` (name -> :class:`HParam`):
  :func:`tf_mtvib.models.build_model` accepts them as keyword arguments,
  ``train.py`` and ``tune`` generate a command-line flag for each
  (:func:`add_arguments`) and the run's config records them;
* what it logs, :meth:`TaskWeighting.logs` (added to the training logs,
  history.json and TensorBoard);
* per-epoch state, :meth:`TaskWeighting.end_epoch`, run at the end of every
  epoch by the callbacks of :meth:`TaskWeighting.callbacks`, which
  :meth:`tf_mtvib.models.MultiTaskModel.fit` installs (a custom training loop
  calls ``model.weighting.end_epoch()`` itself).

The weighting is chosen independently of the network:
``build_model("mtvib", spec, weighting="fixed")``, ``train.py --weighting fixed``;
each model of the paper keeps its own weighting by default (its recipe in
:mod:`tf_mtvib.models`).

Registered weightings (:data:`WEIGHTINGS`):

* ``fixed`` (:class:`FixedWeighting`): ``sum_k w_k CE_k`` with fixed weights
  (the grid-search baseline GS; STL/STVIB with weight 1 per task);
* ``uncertainty`` (:class:`UncertaintyWeighting`): learned homoscedastic
  uncertainty (Kendall, Gal and Cipolla 2018; MTVIB eq. 22-23);
* ``dwa`` (:class:`DynamicWeightAverage`): dynamic weight average (Liu, Johns
  and Davison 2019), per-epoch state.

The package's own weightings are declared (name, summary, hyper-parameters)
in :mod:`tf_mtvib.catalogue`, which the command lines read without importing
TensorFlow; their classes here take their ``HPARAMS`` from it. A user's
weighting declares its ``HPARAMS`` on the class, and :func:`register_weighting`
adds it to the catalogue (so registering it before a parser is built gives it
its flags).

Every class is registered for ``.keras`` saving under the ``tf_mtvib``
package, with the class names of the releases that defined the first two in
:mod:`tf_mtvib.layers`, so models saved then load unchanged.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Type

import keras
import tensorflow as tf

from .catalogue import (WEIGHTING_CATALOGUE, HParam, declare_weighting, owner_of, parse_task_weights,
                        weighting_hparams)
from .catalogue import add_weighting_arguments as add_arguments

__all__ = [
    "HParam", "TaskWeighting", "WEIGHTINGS", "register_weighting", "unregister_weighting", "get_weighting",
    "weighting_hparams", "owner_of", "FixedWeighting", "UncertaintyWeighting", "DynamicWeightAverage", "EndEpoch",
    "add_arguments", "parse_task_weights", "PCGrad",
]

_PACKAGE = "tf_mtvib"

#: name -> weighting class, in registration order.
WEIGHTINGS: Dict[str, Type["TaskWeighting"]] = {}


def register_weighting(name: str):
    """Class decorator: register a :class:`TaskWeighting` subclass as ``name``
    (for ``build_model(..., weighting=name)`` and ``--weighting name``) and for
    ``.keras`` saving.

    A class declared in :mod:`tf_mtvib.catalogue` (the package's own) takes its
    ``HPARAMS`` from there; any other is declared there from its own ``HPARAMS``
    and the first line of its docstring. Hyper-parameter names must be unique
    across weightings (they share the run config's ``hparams`` with the network's)."""
    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, TaskWeighting)):
            raise TypeError(f"{cls!r} is not a TaskWeighting subclass")
        if name in WEIGHTINGS and WEIGHTINGS[name] is not cls:
            raise ValueError(f"a weighting named {name!r} is registered already ({WEIGHTINGS[name].__name__})")
        declared = WEIGHTING_CATALOGUE.get(name)
        if declared is not None and "HPARAMS" not in vars(cls):
            cls.HPARAMS = declared.hparams
        else:
            summary = (cls.__doc__ or name).strip().splitlines()[0].rstrip(".")
            declare_weighting(name, summary, cls.HPARAMS)   # ValueError on a clash
        cls.registry_name = name
        WEIGHTINGS[name] = keras.saving.register_keras_serializable(package=_PACKAGE)(cls)
        return cls
    return decorate


def unregister_weighting(name: str) -> None:
    """Remove weighting ``name`` from the registry and the catalogue (e.g. a test's or
    a notebook's own weighting, before defining it again)."""
    WEIGHTINGS.pop(name, None)
    WEIGHTING_CATALOGUE.pop(name, None)


def get_weighting(name: str) -> Type["TaskWeighting"]:
    """The class registered as ``name`` (ValueError listing the choices otherwise)."""
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; choose one of: {', '.join(WEIGHTINGS)}") from None


class TaskWeighting(keras.layers.Layer):
    """Base of the loss weightings: maps ``{task: CE_k}`` to one scalar.

    Subclasses implement :meth:`call` and declare :attr:`HPARAMS`; by default
    each hyper-parameter is a constructor argument of the same name and an
    attribute of the instance (override :meth:`from_hparams` /
    :meth:`hparams` otherwise). ``call`` receives ``training`` (True in the
    training step, False for validation and attacks), so a weighting may
    update state from training batches only.
    """

    #: hyper-parameters of this weighting (name -> HParam)
    HPARAMS: ClassVar[Mapping[str, HParam]] = {}
    #: set by register_weighting
    registry_name: ClassVar[str] = ""
    #: True for a weighting of gradients (PCGrad): the train step hands :meth:`combine_gradients`
    #: each task's gradient, all-reduced over the replicas, instead of differentiating :meth:`call`
    uses_task_gradients: ClassVar[bool] = False

    def __init__(self, task_names: Sequence[str], **kwargs):
        # A weighting computes in float32 whatever the global dtype policy: under
        # mixed precision the task losses, log_sigma and the weighted sum stay float32.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not task_names:
            raise ValueError("a task weighting needs at least one task")
        self.task_names = tuple(task_names)

    @classmethod
    def from_hparams(cls, task_names: Sequence[str], name: Optional[str] = None, **hparams) -> "TaskWeighting":
        """The weighting for ``task_names`` with the given hyper-parameters (every key of HPARAMS)."""
        return cls(task_names, name=name, **hparams)

    def hparams(self) -> Dict[str, Any]:
        """The hyper-parameters of this instance (recorded in the model's and the run's config)."""
        return {k: getattr(self, k) for k in self.HPARAMS}

    def _check(self, task_losses: Mapping[str, tf.Tensor]):
        missing = set(self.task_names) - set(task_losses)
        if missing:
            raise ValueError(f"{self.name}: no loss for task(s) {sorted(missing)}")

    def _stack(self, task_losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The task losses as one float32 vector in task order."""
        self._check(task_losses)
        return tf.stack([tf.cast(task_losses[t], tf.float32) for t in self.task_names])

    def call(self, task_losses, training=None):
        raise NotImplementedError

    def logs(self) -> Dict[str, tf.Tensor]:
        """Values added to the training logs each step (e.g. ``<task>_sigma``); none by default."""
        return {}

    def combine_gradients(self, task_gradients: Sequence[Sequence[Optional[tf.Tensor]]],
                          step: tf.Tensor) -> List[Optional[tf.Tensor]]:
        """For ``uses_task_gradients`` weightings: one gradient per variable from the tasks'.

        ``task_gradients[k][v]``: the gradient of task k's mean cross-entropy over the
        *global* batch with respect to trainable variable v (None where task k does not
        reach v), identical on every replica; ``step``: the optimizer's iteration count.
        """
        raise NotImplementedError(f"{type(self).__name__} does not combine gradients")

    def end_epoch(self) -> None:
        """Called at the end of every training epoch; no-op unless the weighting keeps per-epoch state."""

    def callbacks(self) -> List[keras.callbacks.Callback]:
        """Callbacks :meth:`MultiTaskModel.fit` installs: :class:`EndEpoch` when
        the class overrides :meth:`end_epoch`."""
        return [EndEpoch(self)] if type(self).end_epoch is not TaskWeighting.end_epoch else []

    def get_config(self):
        config = super().get_config()
        config["task_names"] = list(self.task_names)
        return config


class EndEpoch(keras.callbacks.Callback):
    """Runs ``weighting.end_epoch()`` at the end of every training epoch.

    :meth:`MultiTaskModel.fit` puts it before the caller's callbacks, so a
    checkpoint written at the end of the epoch holds the updated state.
    """

    def __init__(self, weighting: TaskWeighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_end(self, epoch, logs=None):
        self.weighting.end_epoch()


# --------------------------------------------------------------------------
# The weightings
# --------------------------------------------------------------------------
@register_weighting("fixed")
class FixedWeighting(TaskWeighting):
    """Fixed task weights: ``sum_k w_k * CE_k`` (the grid-search baseline, GS).

    ``weights`` maps task names to w_k (or lists them in task order);
    ``None`` gives every task weight 1. Hyper-parameter ``task_weights``.
    """

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float] | Iterable[float] | None = None,
                 **kwargs):
        super().__init__(task_names, **kwargs)
        if weights is None:
            weights = {t: 1.0 for t in self.task_names}
        elif not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != len(self.task_names):
                raise ValueError(f"{len(weights)} task weights given for {len(self.task_names)} tasks "
                                 f"{list(self.task_names)}")
            weights = dict(zip(self.task_names, weights))
        unknown = set(weights) - set(self.task_names)
        if unknown or set(self.task_names) - set(weights):
            raise ValueError(f"task weights {dict(weights)} must name exactly the tasks {list(self.task_names)}")
        if any(float(w) < 0 for w in weights.values()):
            raise ValueError(f"task weights must be >= 0, got {dict(weights)}")
        self.weights_by_task = {t: float(weights[t]) for t in self.task_names}
        self.built = True

    @classmethod
    def from_hparams(cls, task_names, name=None, task_weights=None):
        return cls(task_names, task_weights, name=name)

    def hparams(self):
        return {"task_weights": dict(self.weights_by_task)}

    def call(self, task_losses, training=None):
        self._check(task_losses)
        return tf.add_n([self.weights_by_task[t] * task_losses[t] for t in self.task_names])

    def get_config(self):
        config = super().get_config()
        config["weights"] = dict(self.weights_by_task)
        return config


@register_weighting("uncertainty")
class UncertaintyWeighting(TaskWeighting):
    """Learned homoscedastic-uncertainty weighting (MTVIB eq. 22-23).

    ``sum_k exp(-2 log_sigma_k) * CE_k + log_sigma_k`` with one trainable
    scalar ``log_sigma_<task>`` per task (Kendall, Gal and Cipolla 2018).
    Logs ``<task>_sigma`` = exp(log_sigma_k).
    """

    def __init__(self, task_names: Sequence[str], init_log_sigma: float = 0.0, **kwargs):
        super().__init__(task_names, **kwargs)
        self.init_log_sigma = float(init_log_sigma)
        self.log_sigma = {
            t: self.add_weight(name=f"log_sigma_{t}", shape=(),
                               initializer=keras.initializers.Constant(self.init_log_sigma),
                               trainable=True)
            for t in self.task_names
        }
        self.built = True

    def call(self, task_losses, training=None):
        self._check(task_losses)
        terms = [tf.exp(-2.0 * self.log_sigma[t]) * task_losses[t] + self.log_sigma[t]
                 for t in self.task_names]
        return tf.add_n(terms)

    def sigmas(self) -> Dict[str, tf.Tensor]:
        """sigma_k = exp(log_sigma_k)."""
        return {t: tf.exp(tf.convert_to_tensor(self.log_sigma[t])) for t in self.task_names}

    def logs(self):
        return {f"{t}_sigma": s for t, s in self.sigmas().items()}

    def get_config(self):
        config = super().get_config()
        config["init_log_sigma"] = self.init_log_sigma
        return config


@register_weighting("dwa")
class DynamicWeightAverage(TaskWeighting):
    """Dynamic weight average (Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning with Attention").

    ``sum_k w_k(t) * CE_k`` with, in epoch ``t`` (counted from 1)::

        w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),   r_k(t-1) = L_k(t-1) / L_k(t-2)

    where ``L_k(t)`` is the mean training cross-entropy of task k over the
    steps of epoch t, ``K`` the number of tasks and ``T`` the temperature
    (``dwa_temperature``, 2 in the paper); ``w_k = 1`` in the first two
    epochs. The weights are constants of each step (no gradient flows into
    them). Logs ``<task>_weight``.

    The per-epoch state lives in non-trainable weights, so it is saved with
    the model (``.keras``, checkpoints) and restored on resume:
    ``epoch_loss_sum`` / ``epoch_steps`` accumulate the current epoch's
    losses (training steps only), ``previous_losses`` holds
    ``[L(t-1), L(t-2)]`` and ``epochs_done`` counts the finished epochs.
    :meth:`end_epoch` folds the accumulators into the history. Under
    ``tf.distribute`` the accumulators are mean-aggregated over the
    replicas, so ``L(t)`` is the mean over steps of the replicas' mean loss.
    """

    def __init__(self, task_names: Sequence[str], dwa_temperature: float = 2.0, **kwargs):
        super().__init__(task_names, **kwargs)
        if not dwa_temperature > 0:
            raise ValueError(f"dwa_temperature must be > 0, got {dwa_temperature}")
        self.dwa_temperature = float(dwa_temperature)
        k = len(self.task_names)
        state = lambda name, shape, init="zeros": self.add_weight(
            name=name, shape=shape, initializer=init, trainable=False, aggregation="mean", dtype="float32")
        self.epoch_loss_sum = state("epoch_loss_sum", (k,))
        self.epoch_steps = state("epoch_steps", ())
        self.previous_losses = state("previous_losses", (2, k), "ones")
        self.epochs_done = state("epochs_done", ())
        self.built = True

    def task_weights(self) -> tf.Tensor:
        """w(t) for the current epoch, a vector in task order."""
        prev = tf.convert_to_tensor(self.previous_losses)
        ratio = prev[0] / tf.maximum(prev[1], 1e-12)
        k = tf.cast(len(self.task_names), tf.float32)
        w = k * tf.nn.softmax(ratio / self.dwa_temperature)
        return tf.where(tf.convert_to_tensor(self.epochs_done) >= 2.0, w, tf.ones_like(w))

    def call(self, task_losses, training=None):
        losses = self._stack(task_losses)
        if training:
            self.epoch_loss_sum.assign_add(tf.stop_gradient(losses))
            self.epoch_steps.assign_add(tf.constant(1.0))
        w = tf.stop_gradient(self.task_weights())
        return tf.reduce_sum(w * losses)

    def end_epoch(self) -> None:
        """Fold the epoch's mean losses into ``previous_losses`` (nothing happens after an epoch without steps)."""
        steps = tf.convert_to_tensor(self.epoch_steps)
        ran = steps > 0.0
        mean = tf.convert_to_tensor(self.epoch_loss_sum) / tf.maximum(steps, 1.0)
        prev = tf.convert_to_tensor(self.previous_losses)
        self.previous_losses.assign(tf.where(ran, tf.stack([mean, prev[0]]), prev))
        self.epochs_done.assign_add(tf.cast(ran, tf.float32))
        self.epoch_loss_sum.assign(tf.zeros_like(mean))
        self.epoch_steps.assign(tf.zeros_like(steps))

    def logs(self):
        w = self.task_weights()
        return {f"{t}_weight": w[i] for i, t in enumerate(self.task_names)}

    def get_config(self):
        config = super().get_config()
        config["dwa_temperature"] = self.dwa_temperature
        return config


@register_weighting("pcgrad")
class PCGrad(TaskWeighting):
    """Projecting conflicting gradients (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1).

    On the shared parameters (the variables that two or more tasks reach), each
    task's gradient ``g_i`` is projected, in a random order of the other tasks
    ``j``, onto the normal plane of every ``g_j`` it conflicts with::

        if g_i^PC . g_j < 0:   g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2  g_j

    and the update is ``sum_i g_i^PC``. A variable that one task alone reaches
    (its decoder) gets that task's gradient unchanged. The ``g_j`` are the
    original gradients, and every ``g`` is the gradient of the *global* batch's
    mean loss: the train step all-reduces the per-task gradients before this
    runs, so the projection is the same on one device and on many. The order is
    drawn from the step number (the same on every replica).

    The loss it reports, and the one :meth:`call` returns, is ``sum_k CE_k``.
    Logs ``pcgrad_conflicts``: the share of ordered task pairs ``(i, j)`` whose
    original gradients conflict (``g_i . g_j < 0``), averaged over the epoch's steps.
    """

    uses_task_gradients = True

    def __init__(self, task_names: Sequence[str], **kwargs):
        super().__init__(task_names, **kwargs)
        # a metric (on-read variables, updated without a merge_call, see models._all_reduce_mean)
        self.conflicts = keras.metrics.Mean(name="pcgrad_conflicts")
        self.built = True

    def call(self, task_losses, training=None):
        return tf.reduce_sum(self._stack(task_losses))

    def logs(self):
        return {"pcgrad_conflicts": self.conflicts.result()}

    def combine_gradients(self, task_gradients, step):
        k = len(task_gradients)
        if k != len(self.task_names):
            raise ValueError(f"{len(task_gradients)} task gradients for {len(self.task_names)} tasks")
        n_vars = len(task_gradients[0])
        reach = [[task_gradients[i][v] is not None for i in range(k)] for v in range(n_vars)]
        shared = [v for v in range(n_vars) if sum(reach[v]) >= 2]
        out: List[Optional[tf.Tensor]] = []
        for v in range(n_vars):               # variables one task (or none) reaches: that task's gradient
            own = [task_gradients[i][v] for i in range(k) if reach[v][i]]
            out.append(own[0] if len(own) == 1 else None)
        if not shared:
            return out
        refs = {v: next(task_gradients[i][v] for i in range(k) if reach[v][i]) for v in shared}
        flat = tf.stack([tf.concat([tf.reshape(tf.cast(task_gradients[i][v], tf.float32) if reach[v][i]
                                               else tf.zeros_like(refs[v], tf.float32), [-1]) for v in shared], axis=0)
                         for i in range(k)])                                                 # (K, P)
        dots = tf.linalg.matmul(flat, flat, transpose_b=True)                                # (K, K)
        off_diagonal = 1.0 - tf.eye(k)
        if k > 1:
            self.conflicts.update_state(tf.reduce_sum(tf.cast(dots < 0.0, tf.float32) * off_diagonal) / (k * (k - 1)))
        squared = tf.maximum(tf.linalg.diag_part(dots), 1e-20)
        seed = tf.stack([tf.constant(0, tf.int64), tf.cast(step, tf.int64)])
        projected = []
        for i in range(k):
            g = flat[i]
            order = tf.random.experimental.stateless_shuffle(tf.range(k), seed=seed + tf.constant([i, 0], tf.int64))
            for p in range(k):
                j = order[p]
                gj = tf.gather(flat, j)
                dot = tf.reduce_sum(g * gj)
                coefficient = tf.where(tf.logical_and(tf.not_equal(j, i), dot < 0.0), dot / tf.gather(squared, j), 0.0)
                g = g - coefficient * gj
            projected.append(g)
        total = tf.add_n(projected)
        offset = 0
        for v in shared:
            size = refs[v].shape.num_elements()
            out[v] = tf.cast(tf.reshape(total[offset:offset + size], tf.shape(refs[v])), refs[v].dtype)
            offset += size
        return out
