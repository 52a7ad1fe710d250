"""VMTL's equations (Shen, Zhen, Worring & Shao, NeurIPS 2021, "Variational Multi-Task Learning with
Gumbel-Softmax Priors"), as plain functions, each checked against NumPy in ``tests/test_vmtl.py``.

Every task t has its own data D_t; a shared encoder gives the variational posterior of the instance
representation, q_phi(z_{t,n} | x_{t,n}), and each task a posterior over its classifier, q_theta(w_t | D_t).
The supplement's ELBO (eq. 4) is, per task,

    sum_n { E_q_theta E_q_phi [log p(y_{t,n} | z_{t,n}, w_t)] - KL[q_phi(z_{t,n} | x_{t,n}) || p(z_{t,n} | x_{t,n}, D_{1:T\\t})] }
        - KL[q_theta(w_t | D_t) || p(w_t | D_{1:T\\t})]

averaged over the T tasks. The priors are learned mixtures of the *other* tasks' posteriors with
Gumbel-Softmax weights (the main paper's eq. for alpha; its text is not among the seeds, so the form
here is the official code's, ``autumn9999/VMTL``): alpha_t = softmax((log softmax(pi_t) + g) / tau),
g ~ Gumbel(0, 1), pi_t in R^{T-1}, one pi for z and another for w (Table C.15).

The prior comes in two forms (issue: "in both forms"):

* ``"mixture"``: the density sum_i alpha_i N(mu_i, sigma_i^2), the paper's words ("a mixture of the
  variational posteriors"); its KL from a Gaussian has no closed form and is estimated by Monte Carlo
  (:func:`kl_to_mixture`);
* ``"weighted_sum"``: N(sum_i alpha_i mu_i, sum_i alpha_i^2 sigma_i^2), what the official code builds: the
  distribution of the weighted *sum* of independent draws from the posteriors, a Gaussian, so the KL is
  closed form (:func:`kl_diag_gaussian`, :func:`weighted_sum_prior`).

Shapes: posteriors are diagonal Gaussians given as ``(mean, variance)``; the other tasks' parameters are
stacked on a leading axis of size T - 1, matching ``alpha``'s last axis.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import tensorflow as tf

__all__ = ["gumbel_softmax_weights", "weighted_sum_prior", "kl_diag_gaussian", "kl_to_mixture",
           "annealed_temperature", "code_kl_weights", "elbo_kl_weights", "kl_weights", "sampled_log_likelihood",
           "local_reparameterised_logits", "bayes_linear_moments", "predictive_entropy", "entropy_ratio",
           "VARIANCE_JITTER", "TEMPERATURE", "PRIOR_FORMS", "KL_WEIGHTINGS"]

#: The official code adds this to both variances inside its KL (``kl_criterion_softplus``)
VARIANCE_JITTER = 1e-6
#: The code's Gumbel-Softmax temperature schedule: start, floor, decay rate, and the interval (iterations)
#: at which it decays
TEMPERATURE = {"start": 1.0, "minimum": 0.5, "rate": 3e-5, "every": 1000}
#: The prior's two forms (module docstring)
PRIOR_FORMS = ("weighted_sum", "mixture")
#: The KL weights: the ELBO's own (eq. 4) or the official code's (:func:`code_kl_weights`)
KL_WEIGHTINGS = ("elbo", "code")


def gumbel_softmax_weights(pi, temperature, noise: Optional[tf.Tensor] = None, seed=None) -> tf.Tensor:
    """alpha = softmax((log softmax(pi) + g) / tau) over the last axis (the T - 1 other tasks).

    ``noise``: the Gumbel draws g (fixed in tests); default: ``-log(-log U)``, U ~ Uniform(0, 1).
    """
    pi = tf.convert_to_tensor(pi, tf.float32)
    if noise is None:
        u = tf.random.uniform(tf.shape(pi), minval=1e-20, maxval=1.0, seed=seed)
        noise = -tf.math.log(-tf.math.log(u))
    return tf.nn.softmax((tf.nn.log_softmax(pi, axis=-1) + noise) / temperature, axis=-1)


def weighted_sum_prior(alpha, means, variances) -> Tuple[tf.Tensor, tf.Tensor]:
    """N(sum_i alpha_i mu_i, sum_i alpha_i^2 sigma_i^2): the code's prior from the other tasks' posteriors.

    ``alpha``: ``(T-1,)``; ``means``/``variances``: ``(T-1, ...)``.
    """
    alpha = tf.convert_to_tensor(alpha, tf.float32)
    means, variances = tf.convert_to_tensor(means, tf.float32), tf.convert_to_tensor(variances, tf.float32)
    a = tf.reshape(alpha, [-1] + [1] * (means.shape.rank - 1))
    return tf.reduce_sum(a * means, axis=0), tf.reduce_sum(tf.square(a) * variances, axis=0)


def kl_diag_gaussian(mean_q, var_q, mean_p, var_p, jitter: float = VARIANCE_JITTER) -> tf.Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) of diagonal Gaussians, summed over the last axis:

        0.5 * sum( log var_p - log var_q - 1 + var_q / var_p + (mean_p - mean_q)^2 / var_p )

    with ``jitter`` added to both variances, as the official code does.
    """
    var_q = tf.convert_to_tensor(var_q, tf.float32) + jitter
    var_p = tf.convert_to_tensor(var_p, tf.float32) + jitter
    diff = tf.convert_to_tensor(mean_p, tf.float32) - tf.convert_to_tensor(mean_q, tf.float32)
    return 0.5 * tf.reduce_sum(tf.math.log(var_p) - tf.math.log(var_q) - 1.0 + var_q / var_p
                               + tf.square(diff) / var_p, axis=-1)


def _log_normal(x, mean, var):
    return -0.5 * (tf.math.log(2 * math.pi * var) + tf.square(x - mean) / var)


def kl_to_mixture(mean_q, var_q, alpha, means_p, vars_p, noise, jitter: float = VARIANCE_JITTER) -> tf.Tensor:
    """Monte Carlo KL(q || sum_i alpha_i p_i) for a diagonal Gaussian q and diagonal Gaussian components p_i:

        (1/S) sum_s [ log q(z_s) - log sum_i alpha_i p_i(z_s) ],   z_s = mean_q + sqrt(var_q) * noise_s

    ``mean_q``/``var_q``: ``(..., d)``; ``means_p``/``vars_p``: ``(C, ..., d)``; ``noise``: ``(S, ..., d)``
    standard normal draws (fixed in tests; the reparameterisation keeps the estimate differentiable).
    ``alpha``: ``(C,)``, one set of weights for every row, or ``(C, ...)``, weights per row (the z prior:
    each example's weights over the tasks). A component of weight exactly 0 drops out (log 0 = -inf).
    The densities are over the whole vector (summed over the last axis); the result has shape ``(...)``.
    """
    mean_q = tf.convert_to_tensor(mean_q, tf.float32)
    var_q = tf.convert_to_tensor(var_q, tf.float32) + jitter
    means_p = tf.convert_to_tensor(means_p, tf.float32)
    vars_p = tf.convert_to_tensor(vars_p, tf.float32) + jitter
    alpha = tf.convert_to_tensor(alpha, tf.float32)
    z = mean_q + tf.sqrt(var_q) * tf.convert_to_tensor(noise, tf.float32)            # (S, ..., d)
    log_q = tf.reduce_sum(_log_normal(z, mean_q, var_q), axis=-1)                    # (S, ...)
    log_p_i = tf.reduce_sum(_log_normal(z[:, None], means_p[None], vars_p[None]), axis=-1)   # (S, C, ...)
    log_alpha = tf.where(alpha > 0, tf.math.log(tf.maximum(alpha, 1e-30)), -math.inf)
    log_alpha = tf.reshape(log_alpha, tf.concat([[1], tf.shape(alpha), tf.ones([log_p_i.shape.rank - 1 - alpha.shape.rank], tf.int32)], 0))
    log_p = tf.reduce_logsumexp(log_alpha + log_p_i, axis=1)                         # (S, ...)
    return tf.reduce_mean(log_q - log_p, axis=0)


def annealed_temperature(iteration, num_tasks: int, start: float = TEMPERATURE["start"],
                         minimum: float = TEMPERATURE["minimum"], rate: float = TEMPERATURE["rate"],
                         every: int = TEMPERATURE["every"], per_task_step: bool = True) -> tf.Tensor:
    """The Gumbel-Softmax temperature after ``iteration`` iterations (an int or an integer tensor), by the
    official code's rule, as a float64 scalar tensor.

    At each multiple m of ``every`` the temperature becomes ``max(tau * exp(-rate * m), minimum)``. The code
    checks this once per *task step* and an iteration holds ``num_tasks`` of them, all while the iteration
    counter reads m, so it applies ``num_tasks`` times at each milestone (``per_task_step=True``, the code's
    effective schedule: 1 -> 0.887 -> 0.698 -> 0.5 at iterations 1,000 / 2,000 / 3,000 with 4 tasks);
    ``per_task_step=False`` applies it once per milestone. The decays up to milestone K multiply to
    ``exp(-rate * repeats * every * K (K + 1) / 2)``, and the floor, once reached, holds, so the closed form
    is exact. (The code's counters start at 1, so its decays land in the iteration before each milestone;
    between milestones the two agree exactly: ``tests/test_vmtl.py`` simulates the counters.)
    """
    repeats = num_tasks if per_task_step else 1
    k = tf.cast(tf.convert_to_tensor(iteration) // every, tf.float64)
    tau = start * tf.exp(-rate * repeats * every * k * (k + 1) / 2)
    return tf.maximum(tau, tf.constant(minimum, tf.float64))


def code_kl_weights(iteration, num_tasks: int) -> Tuple[float, tf.Tensor]:
    """The official code's KL weights at ``iteration`` (an int or an integer tensor): ``(eta, beta)`` for
    KL_z and KL_w, beta a float64 scalar tensor.

    eta = 1e-7, constant. beta starts at 0 and grows by 1e-6 at every task step taken while the iteration
    counter is a multiple of 10: ``num_tasks`` steps each time, so beta = 1e-6 * num_tasks * floor(iteration / 10)
    (6e-3 at 15,000 iterations with 4 tasks). The code then adds eta * mean_n KL_z + beta * KL_w to the batch's
    mean cross-entropy.
    """
    steps = tf.cast(tf.convert_to_tensor(iteration) // 10, tf.float64)
    return 1e-7, 1e-6 * num_tasks * steps


def elbo_kl_weights(num_train: int) -> Tuple[float, float]:
    """The ELBO's own weights (supplement eq. 4) for a loss written as the *per-example mean* over task t's
    N_t training examples: ``(1, 1 / N_t)``, i.e. each example's KL_z in full, and KL_w (one per task) spread
    over the task's N_t examples."""
    if num_train < 1:
        raise ValueError(f"the task needs at least one training example; got {num_train}")
    return 1.0, 1.0 / float(num_train)


def kl_weights(kind: str, iteration, num_tasks: int, task_examples: int) -> Tuple[float, tf.Tensor]:
    """``(eta, beta)``, the weights of mean_n KL_z and of KL_w at ``iteration`` by ``kind`` (one of
    :data:`KL_WEIGHTINGS`): the ELBO's (:func:`elbo_kl_weights`, constant) or the official code's
    (:func:`code_kl_weights`, beta ramped). beta is a float64 scalar tensor."""
    if kind == "elbo":
        eta, beta = elbo_kl_weights(task_examples)
        return eta, tf.constant(beta, tf.float64)
    if kind == "code":
        return code_kl_weights(iteration, num_tasks)
    raise ValueError(f"kl weights must be one of {KL_WEIGHTINGS}; got {kind!r}")


def bayes_linear_moments(x, weight_mean, weight_var, bias_mean, bias_var) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of ``x W + b`` for independent Gaussian weights (local reparameterisation;
    the official code's encoder): ``x mu_W + mu_b`` and ``x^2 sigma_W^2 + sigma_b^2``."""
    x = tf.convert_to_tensor(x, tf.float32)
    return (tf.matmul(x, weight_mean) + bias_mean, tf.matmul(tf.square(x), weight_var) + bias_var)


def local_reparameterised_logits(z, weight_mean, weight_var, noise) -> tf.Tensor:
    """Logits of a Bayesian linear classifier without bias, one weight draw per row of ``z``, sampled by
    the local reparameterisation trick: ``z mu_w^T + sqrt(z^2 sigma_w^2^T) * noise``.

    ``z``: ``(..., d)``; ``weight_mean``/``weight_var``: ``(classes, d)``; ``noise``: like the logits. A row's
    logits have exactly the distribution that drawing its own weight matrix (the official code) gives.
    """
    z = tf.convert_to_tensor(z, tf.float32)
    mean = tf.matmul(z, weight_mean, transpose_b=True)
    var = tf.matmul(tf.square(z), weight_var, transpose_b=True)
    return mean + tf.sqrt(var) * tf.convert_to_tensor(noise, tf.float32)


def sampled_log_likelihood(labels, z_mean, z_var, weight_mean, weight_var, z_noise, logit_noise) -> tf.Tensor:
    """E_q_theta E_q_phi [log p(y | z, w)] by Monte Carlo, per example ``(B,)``: L draws of
    z = z_mean + sqrt(z_var) * z_noise (``z_noise``: ``(L, B, d)``), each with its own classifier draw
    (``logit_noise``: ``(L, B, classes)``), and the mean over the L draws of log softmax(logits)_y.
    The official code's loss is minus the batch mean of this (its cross-entropy over the L x B rows).
    """
    z = tf.convert_to_tensor(z_mean, tf.float32) + tf.sqrt(tf.convert_to_tensor(z_var, tf.float32)) * z_noise
    logits = local_reparameterised_logits(z, weight_mean, weight_var, logit_noise)      # (L, B, classes)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    labels = tf.cast(labels, tf.int32)
    picked = tf.reduce_sum(log_p * tf.one_hot(labels, tf.shape(log_p)[-1])[None], axis=-1)    # (L, B)
    return tf.reduce_mean(picked, axis=0)


def predictive_entropy(probs) -> tf.Tensor:
    """H(p) = -sum_c p_c log p_c per row, in nats (0 log 0 = 0)."""
    p = tf.convert_to_tensor(probs, tf.float32)
    return -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0), axis=-1)


def entropy_ratio(probs, labels) -> float:
    """Table C.16's uncertainty measure: the mean predictive entropy of the misclassified examples over
    that of the correctly classified ones (higher: more uncertain where wrong). NaN when either set is empty."""
    p = tf.convert_to_tensor(probs, tf.float32)
    h = predictive_entropy(p).numpy()
    right = tf.argmax(p, axis=-1).numpy() == tf.cast(labels, tf.int64).numpy()
    if right.all() or not right.any():
        return float("nan")
    return float(h[~right].mean() / h[right].mean())
