"""VMTL's layers (Shen et al., NeurIPS 2021): a Bayesian linear encoder, Bayesian task classifiers with
Gumbel-Softmax priors from the other tasks' posteriors, and the z-prior's KL as a loss term.

The network of the three VMTL families (``bmtl``, ``vbmtl``, ``vmtl``) is

    pixels -> frozen extractor (tf_mtvib.extractor) -> features f -> dropout
           -> encoder q_phi(z | x) = N(mu_z, sigma_z^2)   (:class:`BayesianLinear`)
           -> per task t, classifier q_theta(w_t) = N(mu_w, sigma_w^2), no bias   (:class:`BayesianClassifiers`)

as the official code builds it (a Bayesian *linear* encoder, no hidden layers; sigma = softplus(rho),
means ~ N(0, 0.1), rho ~ -3 + N(0, 0.1)). In training both sample by the local reparameterisation trick
(one draw per example: Table C.14 finds 1 to 100 Monte Carlo samples within 0.3 points of each other);
in inference both use their means, as the code's test does.

The losses (supplement eq. 4; :mod:`tf_mtvib.vmtl` holds the equations):

* ``BayesianClassifiers`` adds ``weight_w * sum_t KL(q(w_t) || p(w_t))``, with p(w_t) N(0, I) (VBMTL)
  or the Gumbel-Softmax combination of the other tasks' posteriors (stop-gradient), in either form;
* the encoder adds ``weight_z * T * mean_n KL(q(z_n | x_n) || N(0, I))`` for VBMTL (the T tasks' per-task
  means, on class-balanced sub-batches of equal size);
* VMTL's z-prior needs each example's task and label, so it is a loss term, :class:`GumbelZPrior`: for an
  example of task t and class c, each other task i contributes the cross attention
  x~_i = softmax(f X_{i,c}^T / (max - min)) X_{i,c} over task i's same-class features, through the encoder
  (stop-gradient), mixed with z's own Gumbel weights. As in the official code, X_{i,c} is all of task i's
  *training* images of class c and the attention is computed once, before training, on the frozen features
  (:func:`class_attention`); each example carries its result as the batch extra ``attended``
  (:func:`tf_mtvib.families._vmtl.attended_extras`).

The KL weights follow ``kl_weights`` (:func:`tf_mtvib.vmtl.kl_weights`): ``"elbo"`` (KL_w x 1 / N_t and
KL_z x 1, the ELBO per example) or ``"code"`` (the official code's: beta ramping by 1e-6 * T every 10
iterations, eta = 1e-7). The classifiers layer applies beta to KL_w; the z prior's weight (``T * eta``, for
the mean over the batch) is the encoder's ``kl_weight`` (N(0, I) prior) or the :class:`GumbelZPrior` term's.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import keras
import tensorflow as tf

from . import vmtl
from .terms import LossTerm, Step

__all__ = ["BayesianLinear", "BayesianClassifiers", "GumbelZPrior", "PRIORS", "ENCODER_LAYER",
           "CLASSIFIERS_LAYER", "EXTRACTOR_LAYER", "ATTENDED", "class_attention"]

_PACKAGE = "tf_mtvib"
#: The priors: N(0, I) (VBMTL); the other tasks' posteriors mixed with Gumbel-Softmax weights (VMTL), with
#: uniform weights 1/(T-1) ("mean", Table C.10) or with learned weights without noise ("learnable")
PRIORS = ("normal", "gumbel", "mean", "learnable")
#: The layer names the z-prior term finds its parts by
ENCODER_LAYER, CLASSIFIERS_LAYER, EXTRACTOR_LAYER = "encoder", "classifiers", "extractor"
#: The batch extra of VMTL's z prior: per example, (T, d) the cross-attended training features of each task
ATTENDED = "attended"


def _rho_initializer(rho: float, std: float):
    def init(shape, dtype=None):
        return rho + keras.random.normal(shape, stddev=std, dtype=dtype)
    return init


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BayesianLinear(keras.layers.Layer):
    """q_phi(z | x) = N(x mu_W + mu_b, x^2 sigma_W^2 + sigma_b^2), sigma = softplus(rho): a linear layer with
    Gaussian weights, sampled by local reparameterisation in training, its mean in inference.

    ``kl_weight`` > 0 adds ``kl_weight * mean_n KL(q(z_n | x_n) || N(0, I))`` to the layer's
    losses in training (VBMTL's z-prior); 0 adds nothing (BMTL has no KL; VMTL's is :class:`GumbelZPrior`).
    """

    def __init__(self, units: int, kl_weight: float = 0.0, rho: float = -3.0, init_std: float = 0.1,
                 sample: bool = True, **kwargs):
        kl_weight = float(kl_weight) * int(kwargs.pop("num_tasks", 1))   # files saved before the weight held T
        super().__init__(**kwargs)
        self.units, self.kl_weight = int(units), kl_weight
        self.rho, self.init_std, self.sample = float(rho), float(init_std), bool(sample)

    def build(self, input_shape):
        d = int(input_shape[-1])
        normal = keras.initializers.RandomNormal(stddev=self.init_std)
        self.mean_kernel = self.add_weight(name="mean_kernel", shape=(d, self.units), initializer=normal)
        self.rho_kernel = self.add_weight(name="rho_kernel", shape=(d, self.units),
                                          initializer=_rho_initializer(self.rho, self.init_std))
        self.mean_bias = self.add_weight(name="mean_bias", shape=(self.units,), initializer=normal)
        self.rho_bias = self.add_weight(name="rho_bias", shape=(self.units,),
                                        initializer=_rho_initializer(self.rho, self.init_std))

    def moments(self, x):
        """``(mu_z, sigma_z^2)`` of ``x`` (B, d) -> (B, units) each."""
        x = tf.cast(x, tf.float32)
        return vmtl.bayes_linear_moments(x, self.mean_kernel, tf.square(tf.nn.softplus(self.rho_kernel)),
                                         self.mean_bias, tf.square(tf.nn.softplus(self.rho_bias)))

    def call(self, x, training=None):
        mean, var = self.moments(x)
        if training and self.kl_weight > 0:
            kl = vmtl.kl_diag_gaussian(mean, var, tf.zeros_like(mean), tf.ones_like(var))
            self.add_loss(self.kl_weight * tf.reduce_mean(kl))
        if training and self.sample:
            return mean + tf.sqrt(var) * tf.random.normal(tf.shape(mean))
        return mean

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "kl_weight": self.kl_weight, "rho": self.rho, "init_std": self.init_std, "sample": self.sample}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BayesianClassifiers(keras.layers.Layer):
    """T task classifiers q_theta(w_t) = N(mu_t, sigma_t^2) of shape (classes, d), no bias (the code's
    VMTL): ``z`` (B, d) -> ``[logits (B, classes) per task]``, every task's head on every example.

    Training: one classifier draw per example and head, by local reparameterisation
    (:func:`tf_mtvib.vmtl.local_reparameterised_logits`), and the KL of each task's classifier to its prior
    (``prior``, ``prior_form``) added to the layer's losses with the weight of ``kl_weights``. It also holds
    the mixing logits of both priors (``pi_w``, ``pi_z``: (T, T-1), zeros at the start; for the Gumbel and
    learnable priors only) and the iteration
    counter the temperature and the code's KL ramp read (incremented at each training call).
    Returns the tasks' logits as a list, in ``task_names`` order.
    """

    def __init__(self, task_names: Sequence[str], num_classes: int, prior: str = "gumbel",
                 prior_form: str = "weighted_sum", kl_weights: str = "elbo", task_examples: int = 50,
                 prior_samples: int = 10, rho: float = -3.0, init_std: float = 0.1, sample: bool = True,
                 anneal_per_task_step: bool = True, **kwargs):
        super().__init__(**kwargs)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}; got {prior!r}")
        if prior_form not in vmtl.PRIOR_FORMS:
            raise ValueError(f"prior_form must be one of {vmtl.PRIOR_FORMS}; got {prior_form!r}")
        if kl_weights not in vmtl.KL_WEIGHTINGS:
            raise ValueError(f"kl_weights must be one of {vmtl.KL_WEIGHTINGS}; got {kl_weights!r}")
        self.task_names = tuple(task_names)
        if prior != "normal" and len(self.task_names) < 2:
            raise ValueError(f"a prior from the other tasks' posteriors ({prior!r}) needs at least 2 tasks")
        self.num_classes, self.prior, self.prior_form, self.kl_weights = int(num_classes), prior, prior_form, kl_weights
        self.task_examples, self.prior_samples = int(task_examples), int(prior_samples)
        self.rho, self.init_std, self.sample = float(rho), float(init_std), bool(sample)
        self.anneal_per_task_step = bool(anneal_per_task_step)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def build(self, input_shape):
        d, t = int(input_shape[-1]), self.num_tasks
        normal = keras.initializers.RandomNormal(stddev=self.init_std)
        self.mean = self.add_weight(name="mean", shape=(t, self.num_classes, d), initializer=normal)
        self.rho_w = self.add_weight(name="rho", shape=(t, self.num_classes, d),
                                     initializer=_rho_initializer(self.rho, self.init_std))
        if self.prior in ("gumbel", "learnable"):      # the learned mixing logits (none for N(0, I) or uniform)
            self.pi_w = self.add_weight(name="pi_w", shape=(t, t - 1), initializer="zeros")
            self.pi_z = self.add_weight(name="pi_z", shape=(t, t - 1), initializer="zeros")
        self.iterations = self.add_weight(name="iterations", shape=(), initializer="zeros", trainable=False,
                                          dtype="int64")

    def variance(self):
        return tf.square(tf.nn.softplus(self.rho_w))

    # -- the schedule --------------------------------------------------------------------------------
    def temperature(self):
        """tau at the current iteration (:func:`tf_mtvib.vmtl.annealed_temperature`)."""
        return tf.cast(vmtl.annealed_temperature(self.iterations, self.num_tasks,
                                                 per_task_step=self.anneal_per_task_step), tf.float32)

    def kl_weight_w(self):
        """beta, the weight of the summed KL_w at the current iteration (:func:`tf_mtvib.vmtl.kl_weights`)."""
        beta = vmtl.kl_weights(self.kl_weights, self.iterations, self.num_tasks, self.task_examples)[1]
        return tf.cast(beta, tf.float32)

    def mixing_weights(self, which: str, training: bool = True):
        """``(T, T-1)``: each task's weights over the other tasks (rows in task order; columns the other
        tasks in order), for ``which`` = ``"w"`` or ``"z"``."""
        if self.prior == "mean":
            return tf.fill([self.num_tasks, self.num_tasks - 1], 1.0 / (self.num_tasks - 1))
        pi = self.pi_w if which == "w" else self.pi_z
        if self.prior == "learnable" or not training:
            return tf.nn.softmax(pi, axis=-1)
        return vmtl.gumbel_softmax_weights(pi, self.temperature())

    def others(self, t: int):
        return [i for i in range(self.num_tasks) if i != t]

    # -- forward -------------------------------------------------------------------------------------
    def call(self, z, training=None):
        z = tf.cast(z, tf.float32)
        var = self.variance()
        out = []
        for k in range(self.num_tasks):
            if training and self.sample:
                noise = tf.random.normal(tf.concat([tf.shape(z)[:-1], [self.num_classes]], 0))
                out.append(vmtl.local_reparameterised_logits(z, self.mean[k], var[k], noise))
            else:
                out.append(tf.matmul(z, self.mean[k], transpose_b=True))
        if training:
            self.add_loss(self.kl_weight_w() * tf.add_n([self.kl_w(k) for k in range(self.num_tasks)]))
            self.iterations.assign_add(1)
        return out

    def kl_w(self, t: int, alpha=None, noise=None):
        """KL(q(w_t) || p(w_t)), summed over the classifier's rows (the code's ``torch.sum``)."""
        var = self.variance()
        if self.prior == "normal":
            return tf.reduce_sum(vmtl.kl_diag_gaussian(self.mean[t], var[t], tf.zeros_like(var[t]), tf.ones_like(var[t])))
        others = self.others(t)
        alpha = self.mixing_weights("w")[t] if alpha is None else alpha
        means = tf.stop_gradient(tf.gather(self.mean, others))
        variances = tf.stop_gradient(tf.gather(var, others))
        if self.prior_form == "weighted_sum":
            pm, pv = vmtl.weighted_sum_prior(alpha, means, variances)
            return tf.reduce_sum(vmtl.kl_diag_gaussian(self.mean[t], var[t], pm, pv))
        if noise is None:
            noise = tf.random.normal((self.prior_samples,) + tuple(self.mean.shape[1:]))
        return tf.reduce_sum(vmtl.kl_to_mixture(self.mean[t], var[t], alpha, means, variances, noise))

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (self.num_classes,) for _ in self.task_names]

    def get_config(self):
        return {**super().get_config(), "task_names": list(self.task_names), "num_classes": self.num_classes,
                "prior": self.prior, "prior_form": self.prior_form, "kl_weights": self.kl_weights,
                "task_examples": self.task_examples, "prior_samples": self.prior_samples, "rho": self.rho,
                "init_std": self.init_std, "sample": self.sample, "anneal_per_task_step": self.anneal_per_task_step}


def class_attention(query, query_labels, pool, pool_tasks, pool_labels, num_tasks: int):
    """``(T, B, d)``: for each task i and query example n, the cross attention of f_n over the pool's examples
    of task i with n's class (Table B.3's "cross attention", as the official code's loader computes it):
    ``softmax_m(f_n . f_m / (max_m - min_m))``-weighted sum of those f_m. Where the pool holds no such
    example the example's own feature stands in.

    ``query``: (B, d) features; ``query_labels``: (B,) each query's label in its own task; ``pool``: (N, d)
    features; ``pool_tasks``: (N,) task index; ``pool_labels``: (N,) the pool example's label in its task.
    """
    q = tf.cast(query, tf.float32)
    p = tf.cast(pool, tf.float32)
    scores = tf.matmul(q, p, transpose_b=True)                                     # (B, N)
    same_class = tf.equal(tf.cast(query_labels, tf.int64)[:, None], tf.cast(pool_labels, tf.int64)[None, :])
    out = []
    for i in range(num_tasks):
        mask = tf.logical_and(same_class, tf.equal(tf.cast(pool_tasks, tf.int64), i)[None, :])   # (B, N)
        big = tf.where(mask, scores, -math.inf)
        small = tf.where(mask, scores, math.inf)
        spread = tf.reduce_max(big, axis=1, keepdims=True) - tf.reduce_min(small, axis=1, keepdims=True)
        count = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1, keepdims=True)
        usable = tf.logical_and(count > 0, tf.math.is_finite(spread))
        normalised = tf.where(mask, scores / (tf.where(usable, spread, 1.0) + 1e-9), -1e30)
        weights = tf.where(mask, tf.nn.softmax(normalised, axis=1), 0.0)
        attended = tf.matmul(weights, p)
        out.append(tf.where(usable, attended, q))
    return tf.stack(out)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GumbelZPrior(LossTerm):
    """VMTL's z-prior KL, ``mean_n KL(q(z_n | x_n) || p(z_n | x_n, D_{1:T\\t}))`` (its ``weight``: T times the
    eta of :func:`tf_mtvib.vmtl.kl_weights`, set by the family), with p the Gumbel-Softmax (or uniform, or learned) combination, by the
    z mixing weights of the example's task, of the encoder's posteriors at the cross-attended features of
    the other tasks (:func:`class_attention` over their training images; stop-gradient, as the code's
    ``.detach()``).

    It reads the batch's task ids (the extra ``task``), each example's cross-attended features (the extra
    :data:`ATTENDED`, ``(B, T, d)``, computed before training by the family), and the frozen features of the
    step's forward pass (:meth:`~tf_mtvib.terms.Step.activation`).
    """

    needs = ("task", ATTENDED)
    activations = (EXTRACTOR_LAYER,)

    def __init__(self, weight: float = 1.0, name: Optional[str] = None):
        super().__init__(weight, name or "kl_z")

    def value(self, step: Step) -> tf.Tensor:
        network = step.model.network
        encoder = network.get_layer(ENCODER_LAYER)
        classifiers = network.get_layer(CLASSIFIERS_LAYER)
        tasks = tf.cast(tf.reshape(step.inputs["task"], [-1]), tf.int32)
        names = classifiers.task_names
        features = tf.stop_gradient(step.activation(EXTRACTOR_LAYER))
        q_mean, q_var = encoder.moments(features)
        attended = tf.transpose(tf.cast(step.inputs[ATTENDED], tf.float32), [1, 0, 2])     # (T, B, d)
        flat = tf.reshape(attended, [-1, tf.shape(features)[-1]])
        p_mean, p_var = encoder.moments(flat)
        shape = tf.concat([[len(names)], tf.shape(q_mean)], 0)
        p_mean, p_var = tf.stop_gradient(tf.reshape(p_mean, shape)), tf.stop_gradient(tf.reshape(p_var, shape))
        alpha = classifiers.mixing_weights("z", training=step.training)               # (T, T-1)
        # each example's weights over the *other* tasks, spread to all T (0 at its own task)
        full = tf.stack([tf.concat([alpha[t, :t], [0.0], alpha[t, t:]], 0) for t in range(len(names))])  # (T, T)
        a = tf.gather(full, tasks)                                                     # (B, T)
        if classifiers.prior_form == "weighted_sum":
            mean = tf.einsum("bt,tbd->bd", a, p_mean)
            var = tf.einsum("bt,tbd->bd", tf.square(a), p_var)
            kl = vmtl.kl_diag_gaussian(q_mean, q_var, mean, var)
        else:
            noise = tf.random.normal(tf.concat([[classifiers.prior_samples], tf.shape(q_mean)], 0))
            # components with weight 0 (the example's own task) drop out of the mixture: log 0 = -inf
            kl = vmtl.kl_to_mixture(q_mean, q_var, tf.transpose(a), p_mean, p_var, noise)
        return tf.reduce_mean(kl)

