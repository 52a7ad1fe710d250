"""MT-CRL's regularisers and its invariance penalty (Hu et al., NeurIPS 2022, §3), as plain functions.

Notation of the paper: K modules ``Z_i = Phi_i(X)`` of ``m`` dimensions each,
stacked here as ``z`` of shape ``(B, K, m)``; the task-to-module graph
``A = sigmoid(theta)`` of shape ``(T, K)``; per-task predictors ``f_t``.

* :func:`pearson_correlation`, eq. (1): the in-batch Pearson correlation
  between every dimension of ``Z_i`` and every dimension of ``Z_j``;
* :func:`decorrelation`, eq. (2) without ``lambda_decor``:
  ``sum_{i<j} ||rho(Z_i, Z_j)||_F^2``;
* :func:`graph_sparsity` and :func:`graph_balance`, eq. (3)'s two terms:
  ``||A||_1`` and ``Entropy(sum_t A_t,* / sum_{t,i} A_t,i)``
  (``L_graph = lambda_sps * sparsity - lambda_bal * balance``);
* :func:`aggregate`: ``f_t``'s input from ``A_t`` and ``z``; §3.1 writes
  ``sum_i A_t,i Phi_i(X)`` (``"sum"``, m-dimensional); ``"concat"``, the
  weighted concatenation ``[A_t,1 Z_1, ..., A_t,K Z_K]`` (K*m-dimensional), is
  the reading that Table 11's K = 128 (m = 1) needs, and the default here;
* :func:`g_irm`, eqs. (8) and (9): from the gradients ``dR_t^e / dA_t`` of
  each task's risk in each environment, ``Norm = sum_t sum_e ||g_te||^2`` or
  ``Var = sum_t sum_e (1/|E|) ||g_te - mean_e g_te||^2``.

The layers that use them are in :mod:`tf_mtvib.modular`; the training-step
term that takes the gradients is :class:`tf_mtvib.modular.GraphIRMPenalty`.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["AGGREGATIONS", "GIRM_FORMS", "pearson_correlation", "decorrelation", "graph_sparsity", "graph_balance",
           "graph_loss", "aggregate", "g_irm"]

#: How a task's predictor input is made from the graph and the modules
AGGREGATIONS = ("concat", "sum")
#: G-IRM's two forms: eq. (9) (the paper's main one) and eq. (8)
GIRM_FORMS = ("var", "norm")
_EPS = 1e-8


def _standardise(z):
    """Centre each column of ``z`` (B, n) over the batch and scale it to unit norm (eq. 1's denominators)."""
    z = tf.cast(z, tf.float32)
    zc = z - tf.reduce_mean(z, axis=0, keepdims=True)
    return zc * tf.math.rsqrt(tf.reduce_sum(tf.square(zc), axis=0, keepdims=True) + _EPS)


def pearson_correlation(zi, zj):
    """Eq. (1): ``rho(Z_i, Z_j)``, shape ``(d_i, d_j)``, for ``zi`` (B, d_i) and ``zj`` (B, d_j).

    ``Cov(Z_i, Z_j) = [Z_i - mean]^T [Z_j - mean]`` divided by the square roots of the
    variances (a constant column has correlation 0: a small epsilon keeps it finite)."""
    return tf.matmul(_standardise(zi), _standardise(zj), transpose_a=True)


def decorrelation(z):
    """Eq. (2) without ``lambda_decor``: ``sum_{i<j} ||rho(Z_i, Z_j)||_F^2`` for ``z`` (B, K, m).

    Computed from the correlation matrix of all K*m dimensions at once: its
    squared Frobenius norm, less the K diagonal blocks, halved."""
    z = tf.cast(z, tf.float32)
    k, m = z.shape[1], z.shape[2]
    zn = _standardise(tf.reshape(z, [-1, k * m]))
    corr = tf.matmul(zn, zn, transpose_a=True)                       # (K*m, K*m)
    blocks = tf.reshape(corr, [k, m, k, m])
    within = tf.reduce_sum(tf.square(tf.linalg.diag_part(tf.transpose(blocks, [1, 3, 0, 2]))))
    return 0.5 * (tf.reduce_sum(tf.square(corr)) - within)


def graph_sparsity(a):
    """Eq. (3), first term without ``lambda_sps``: ``||A||_1``."""
    return tf.reduce_sum(tf.abs(tf.cast(a, tf.float32)))


def graph_balance(a):
    """Eq. (3), second term without ``lambda_bal``: the entropy of each module's share of the graph's
    total weight, ``p_i = sum_t A_t,i / sum_{t,i} A_t,i`` (maximal, log K, when the modules are used alike)."""
    a = tf.cast(a, tf.float32)
    p = tf.reduce_sum(a, axis=0) / (tf.reduce_sum(a) + _EPS)
    return -tf.reduce_sum(p * tf.math.log(p + _EPS))


def graph_loss(a, lambda_sps: float, lambda_bal: float):
    """Eq. (3): ``lambda_sps * ||A||_1 - lambda_bal * Entropy(...)``."""
    return lambda_sps * graph_sparsity(a) - lambda_bal * graph_balance(a)


def aggregate(a_t, z, mode: str = "concat"):
    """A task's predictor input from its graph row ``a_t`` (K,) (or one row per example, (B, K))
    and the modules ``z`` (B, K, m): ``"sum"`` ``sum_i a_t,i Z_i`` (B, m) as §3.1 writes it, or
    ``"concat"`` ``[a_t,1 Z_1, ..., a_t,K Z_K]`` (B, K*m)."""
    z = tf.convert_to_tensor(z)
    a_t = tf.cast(a_t, z.dtype)
    weights = a_t[None, :, None] if a_t.shape.rank == 1 else a_t[:, :, None]
    weighted = weights * z
    if mode == "sum":
        return tf.reduce_sum(weighted, axis=1)
    if mode == "concat":
        return tf.reshape(weighted, [-1, z.shape[1] * z.shape[2]])
    raise ValueError(f"unknown aggregation {mode!r}; choose one of: {', '.join(AGGREGATIONS)}")


def g_irm(grads, form: str = "var", present=None):
    """Eqs. (8)-(9) from ``grads`` (E, T, K), ``grads[e, t] = dR_t^e / dA_t``.

    ``present`` (E,) bools: the environments the batch holds (default: all); an
    absent one adds nothing, and Var's mean and ``1/|E|`` run over the present ones.
    """
    grads = tf.cast(grads, tf.float32)
    e = tf.shape(grads)[0]
    w = tf.ones([e]) if present is None else tf.cast(present, tf.float32)
    sq = tf.reduce_sum(tf.square(grads), axis=-1)                   # (E, T): ||g_te||^2
    if form == "norm":
        return tf.reduce_sum(w[:, None] * sq)
    if form == "var":
        n = tf.maximum(tf.reduce_sum(w), 1.0)
        mean = tf.reduce_sum(w[:, None, None] * grads, axis=0) / n   # (T, K): Avg_e
        dev = tf.reduce_sum(tf.square(grads - mean[None]), axis=-1)  # (E, T)
        return tf.reduce_sum(w[:, None] * dev) / n
    raise ValueError(f"unknown G-IRM form {form!r}; choose one of: {', '.join(GIRM_FORMS)}")
