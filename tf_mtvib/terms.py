"""The training loss as a sum of terms, and the penalties that see gradients.

A model's training loss (:meth:`tf_mtvib.models.MultiTaskModel.loss_parts`) is

    L = weighting({task: CE_k}) + sum(regularisers) + sum(penalties)

* the **weighting** combines the per-task cross-entropies
  (:mod:`tf_mtvib.weightings`). A weighting that works on gradients rather
  than losses (PCGrad, :class:`tf_mtvib.weightings.PCGrad`) sets
  ``uses_task_gradients``: the train step then takes each task's gradient,
  all-reduces it across replicas (so every replica holds the gradient of the
  *global* batch), and lets the weighting combine them
  (``combine_gradients``) before the optimizer;
* the **regularisers** are the layers' own losses: ``beta * KL`` of each
  Gaussian latent (MTVIB eq. 23, Alemi et al. eq. 7);
* the **penalties** are :class:`LossTerm` objects, attached to the model by its
  family (``FamilySpec.terms``) or by the caller (``build_model(..., terms=[...])``).
  A term is called inside the train step's ``tf.GradientTape`` with a
  :class:`Step`: the batch's inputs (the image and the extras the family
  declared, e.g. an environment id), the labels, the logits and the per-example
  cross-entropies. A term may open its own tape on anything it computes from
  these (:class:`IRMPenalty` differentiates the risk with respect to a dummy
  classifier scale), and the outer tape then differentiates through that
  gradient: second-order penalties need nothing more.

Under ``tf.distribute`` every part is a per-replica mean; the model divides
the total by the number of replicas, so the SUM all-reduce of the gradients
gives the gradient of the global-batch mean.

Terms are Keras-serialisable (registered, with ``get_config``), so a saved
model keeps its penalties.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

import keras
import tensorflow as tf

__all__ = ["Step", "LossTerm", "IRMPenalty", "per_example_task_losses"]

_PACKAGE = "tf_mtvib"


@dataclasses.dataclass(frozen=True)
class Step:
    """What a :class:`LossTerm` sees of one training (or validation) step.

    ``inputs``: ``{"image": images, <extra>: (B,) ...}`` (a dict even when the
    family declares no extras); ``labels``: ``{task: (B,)}`` (``-1`` where an
    example has no label for that task, in multi-input batches);
    ``logits``: ``{task: (B, classes)}``; ``per_example``: ``{task: (B,)}``
    cross-entropies (0 where unlabelled); ``task_losses``: ``{task: CE_k}``,
    the batch means the weighting combines; ``training``: True in the train step.
    """

    model: Any
    inputs: Mapping[str, tf.Tensor]
    labels: Mapping[str, tf.Tensor]
    logits: Mapping[str, tf.Tensor]
    per_example: Mapping[str, tf.Tensor]
    task_losses: Mapping[str, tf.Tensor]
    training: bool = True

    def activation(self, layer: str) -> tf.Tensor:
        """The output of the network's layer ``layer`` for this step's images: the forward pass's own
        tensor when the model kept it (a term lists the layers it reads in ``activations``; the model keeps
        them in training), else computed again with the same weights and mode
        (:meth:`tf_mtvib.models.MultiTaskModel.layer_output`)."""
        return self.model.layer_output(layer, self.inputs["image"], self.training)


def per_example_task_losses(labels, logits, task_names) -> Dict[str, tf.Tensor]:
    """Per-example sparse cross-entropy of each task (from logits), shape ``(B,)``."""
    return {t: keras.losses.sparse_categorical_crossentropy(labels[t], logits[t], from_logits=True)
            for t in task_names}


class LossTerm:
    """A penalty added to the training loss: ``weight * value(step)``.

    Subclasses implement :meth:`value` (a scalar, the per-replica batch value) and,
    for their own hyper-parameters, ``get_config``. ``name`` is what the training
    logs show (``<name>``: the unweighted value, averaged over the epoch).
    ``needs``: the batch extras it reads (checked against the family's);
    ``activations``: the network layers whose outputs it reads through
    :meth:`Step.activation` (kept from the training forward pass, not recomputed).
    """

    needs: tuple = ()
    activations: tuple = ()

    def __init__(self, weight: float = 1.0, name: Optional[str] = None):
        self.weight = float(weight)
        self.name = name or type(self).__name__.lower()

    def value(self, step: Step) -> tf.Tensor:
        raise NotImplementedError

    def check_data(self, split) -> None:
        """Raise ``ValueError`` when the training split (a :class:`tf_mtvib.datasets.Split`) cannot feed
        this term (e.g. an invariance penalty on data of one environment). Default: nothing to check."""

    def __call__(self, step: Step) -> tf.Tensor:
        """The unweighted value; the model multiplies by :attr:`weight`."""
        return tf.cast(self.value(step), tf.float32)

    def get_config(self) -> Dict[str, Any]:
        return {"weight": self.weight, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IRMPenalty(LossTerm):
    """IRMv1's gradient-norm penalty (Arjovsky et al. 2019, eq. IRMv1), per task and environment::

        P = sum_k sum_e ( d/dw R_k^e(w * logits_k) |_{w=1} )^2

    where ``R_k^e`` is task k's mean cross-entropy over the batch's examples of
    environment ``e`` (the extra ``env``, ints in ``[0, num_environments)``),
    and ``w`` a dummy scalar classifier scale. The inner gradient is taken with a
    nested ``tf.GradientTape``; the train step's tape differentiates through it
    (a second-order term). An environment absent from the batch adds 0.
    """

    needs = ("env",)

    def __init__(self, num_environments: int, weight: float = 1.0, env_key: str = "env",
                 name: Optional[str] = None):
        super().__init__(weight, name or "irm_penalty")
        if int(num_environments) < 1:
            raise ValueError(f"num_environments must be >= 1, got {num_environments}")
        self.num_environments = int(num_environments)
        self.env_key = env_key
        self.needs = (env_key,)

    def value(self, step: Step) -> tf.Tensor:
        env = tf.cast(tf.reshape(step.inputs[self.env_key], [-1]), tf.int32)
        e = self.num_environments
        counts = tf.math.unsorted_segment_sum(tf.ones_like(env, tf.float32), env, e)
        total = tf.constant(0.0)
        for t, logits in step.logits.items():
            labels = step.labels[t]
            labelled = tf.cast(tf.reshape(labels, [-1]) >= 0, tf.float32)
            n = tf.math.unsorted_segment_sum(labelled, env, e)
            scale = tf.ones([e])            # one dummy w per environment: dR^e/dw_e is the e-th entry
            with tf.GradientTape() as inner:
                inner.watch(scale)
                scaled = tf.cast(logits, tf.float32) * tf.expand_dims(tf.gather(scale, env), -1)
                ce = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), scaled, from_logits=True)
                risks = tf.math.unsorted_segment_sum(ce * labelled, env, e) / tf.maximum(n, 1.0)
                risk = tf.reduce_sum(risks)
            grad = inner.gradient(risk, scale)
            total = total + tf.reduce_sum(tf.where(counts > 0, tf.square(grad), 0.0))
        return total

    def get_config(self):
        return {**super().get_config(), "num_environments": self.num_environments, "env_key": self.env_key}
