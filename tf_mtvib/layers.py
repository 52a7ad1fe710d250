"""The Keras layers MTVIB is made of.

Equation numbers refer to Qian, Chen, Zhang, Wen and Gechter, "Multi-Task
Variational Information Bottleneck" (MTVIB); the Gaussian encoder follows
Alemi, Fischer, Dillon and Murphy, "Deep Variational Information Bottleneck"
(ICLR 2017).

* :class:`GaussianLatent`: the stochastic encoder head p(z|x) = N(mu(x),
  diag sigma(x)^2) with its KL to N(0, I) weighted by ``beta``.
* :class:`DenseBNReLU`: ``FC + BN + ReLU``, the hidden fully connected block
  of Tables I-II, as one layer (the Gaussian latent's two heads).

The task weightings (fixed, learned uncertainty, ...) are loss layers, not
part of the network: they live in :mod:`tf_mtvib.weightings`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import List, Optional

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from .catalogue import LATENT_HEADS

tfd = tfp.distributions

__all__ = [
    "batch_statistics",
    "FusedBatchNormalization",
    "fused_batchnorm",
    "BN_MOMENTUM",
    "LATENT_HEADS",
    "DenseBNReLU",
    "GaussianLatent",
    "gaussian_kl_closed_form",
    "latent_layers",
    "all_sublayers",
    "posterior_sampling",
]

_PACKAGE = "tf_mtvib"

#: BatchNormalization's moving-average momentum. Keras's default (0.99) needs
#: thousands of steps before the moving statistics forget their initial values
#: (variance 1 against about 0.002 after the first convolution): a run of a
#: few hundred steps then predicts at chance in inference. 0.9 (PyTorch's
#: momentum=0.1, which the MTL reference code uses) settles within ~50 steps.
BN_MOMENTUM = 0.9

#: Whether :func:`batch_normalization` builds :class:`FusedBatchNormalization` layers (see :func:`fused_batchnorm`).
_FUSED_BN: contextvars.ContextVar = contextvars.ContextVar("tf_mtvib_fused_batchnorm", default=False)


@contextlib.contextmanager
def fused_batchnorm(enabled: bool = True):
    """A scope in which :func:`batch_normalization` builds :class:`FusedBatchNormalization`
    (unsynchronised ones; a synchronized BatchNorm stays Keras's). The ``fused_batchnorm``
    hyper-parameter of :func:`tf_mtvib.models.build_model` opens it around the builder."""
    token = _FUSED_BN.set(bool(enabled))
    try:
        yield
    finally:
        _FUSED_BN.reset(token)


def batch_normalization(synchronized: bool = False, name=None, fused: Optional[bool] = None,
                        **kwargs) -> keras.layers.BatchNormalization:
    """The BatchNormalization of every ``BN`` in Tables I-II (momentum :data:`BN_MOMENTUM`).

    ``synchronized=True`` pools the batch statistics across the replicas of a
    ``tf.distribute`` strategy. Inside a :func:`fused_batchnorm` scope an
    unsynchronised one is a :class:`FusedBatchNormalization` (``fused``: say so explicitly instead).
    """
    fused = _FUSED_BN.get() if fused is None else fused
    cls = FusedBatchNormalization if fused and not synchronized else keras.layers.BatchNormalization
    return cls(momentum=BN_MOMENTUM, synchronized=synchronized, name=name, **kwargs)


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras's BatchNormalization computed by TensorFlow's fused kernel (``FusedBatchNormV3``,
    oneDNN on CPU): one op forward and one backward instead of Keras 3's separate reduction and
    element-wise ops, which take 38 % of an MTVIB step's op time in float32 and 52 % in
    bfloat16 (benchmarks/results/profile_step.json).

    The same weights (a checkpoint of either loads into the other), the same normalisation
    (biased batch variance, ``epsilon``) and the same moving-average rule as Keras's layer
    (the kernel's Bessel-corrected variance is scaled back by ``(n - 1) / n``). Inputs of rank
    2 (Dense) or 4 (NHWC convolutions) with the last axis normalised, gamma and beta present;
    anything else (a mask, renorm, synchronisation, another axis) takes Keras's path. The
    statistics are computed in float32 whatever the input dtype, as Keras does.
    """

    def _fusable(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (mask is None and not self.renorm and not self.synchronized and self.scale and self.center
                and rank in (2, 4) and self.axis in (-1, rank - 1) and inputs.shape[-1] is not None)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        channels = x.shape[-1]
        x4 = x if len(x.shape) == 4 else tf.reshape(x, [-1, 1, 1, channels])
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=self.epsilon,
                                                                 is_training=True)
            n = tf.cast(tf.reduce_prod(tf.shape(x4)[:-1]), tf.float32)
            variance = unbiased * tf.maximum(n - 1.0, 1.0) / tf.maximum(n, 1.0)   # the biased one Keras keeps
            self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * self.momentum
                                    + mean * (1.0 - self.momentum))
            self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * self.momentum
                                        + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                                                       variance=tf.cast(self.moving_variance, tf.float32),
                                                       epsilon=self.epsilon, is_training=False)
        if len(x.shape) != 4:
            y = tf.reshape(y, shape)
        return tf.cast(y, self.compute_dtype)


# Keras's weight files key each layer by its class name (snake case): under Keras's own name the
# fused layer's weights are stored where Keras's BatchNormalization's are, so a checkpoint of one
# loads into the other. Registered for ``.keras`` loading as ``tf_mtvib>BatchNormalization``.
FusedBatchNormalization.__name__ = FusedBatchNormalization.__qualname__ = "BatchNormalization"
FusedBatchNormalization = keras.saving.register_keras_serializable(package=_PACKAGE)(FusedBatchNormalization)


def gaussian_kl_closed_form(loc, scale):
    """KL(N(loc, diag scale^2) || N(0, I)) per example (MTVIB eq. 10).

    0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    loc = tf.convert_to_tensor(loc)
    scale = tf.convert_to_tensor(scale)
    return 0.5 * tf.reduce_sum(tf.square(loc) + tf.square(scale) - 1.0 - 2.0 * tf.math.log(scale), axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DenseBNReLU(keras.layers.Layer):
    """``FC + BN + ReLU`` (Tables I-II) as one layer: ``relu(BN(x W + b))``.

    The BatchNormalization uses batch statistics when called with
    ``training=True`` and its moving averages otherwise; ``synchronized``
    pools the statistics across replicas (see :func:`batch_normalization`).
    """

    def __init__(self, units: int, synchronized: bool = False, fused: Optional[bool] = None, **kwargs):
        super().__init__(**kwargs)
        if units <= 0:
            raise ValueError(f"units must be positive, got {units}")
        self.units = int(units)
        self.synchronized = bool(synchronized)
        self.fused = bool(_FUSED_BN.get() if fused is None else fused)   # recorded, so that loading keeps it
        self.dense = keras.layers.Dense(self.units, name="dense", dtype=self.dtype_policy)
        self.batchnorm = batch_normalization(self.synchronized, name="bn", fused=self.fused, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.batchnorm.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, inputs, training=None):
        return tf.nn.relu(self.batchnorm(self.dense(inputs), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, synchronized=self.synchronized)
        if self.fused:
            config["fused"] = True
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianLatent(keras.layers.Layer):
    """Stochastic encoder head: features -> z ~ N(mu, diag sigma^2) (eq. 8-10).

    Two heads map the features to ``loc`` (mu) and to a raw scale ``h``:

    * ``head="paper"`` (Tables I-II): two ``FC 1024 x K + BN + ReLU`` blocks
      (:class:`DenseBNReLU`), one for the mean and one for the scale, as the
      tables draw them. The mean head ends in a ReLU, so **mu is
      non-negative**: that is what the tables draw, and it is kept as drawn.
    * ``head="linear"`` (Alemi et al.'s Deep VIB): one Dense layer to ``2K``
      units, split into ``loc`` and ``h``; no BatchNorm, mu is unbounded.

    Both heads derive the scale with the same mapping,
    ``sigma = softplus(h - scale_shift) + min_scale``. For the paper head
    ``h >= 0`` (the ReLU), so sigma >= softplus(-5) + 1e-5 ~= 0.0067. This
    mapping was chosen because (1) it is the linear head's mapping, so the
    two heads differ only in the layers the tables draw, not in how a
    scale is read; (2) at initialisation ``h`` is a half-normal of about
    unit scale (BN + ReLU), which gives sigma ~ 0.007-0.05, a small initial
    noise as in Alemi et al., while the plain alternatives ``sigma = h``
    or ``softplus(h)`` would start at sigma ~ 0.8 or >= log 2 and the latter
    could never go below 0.69. The price is a floor: the paper head cannot
    give a scale below about 0.0067 (which also keeps ``log sigma`` in the
    KL bounded); ``scale_shift`` moves that floor. Because the BN
    normalises ``W x + b``, the level of mu and of sigma across a batch moves
    only through BN's gamma and beta, so the paper head's KL falls far more
    slowly per step than the linear head's (tests/test_models.py,
    ``test_large_beta_shrinks_the_kl``).

    The layer adds ``beta * mean_batch KL(p(z|x) || N(0, I))`` to the
    model's losses (the rate term of eq. 23).

    What it returns is chosen by its call arguments: ``call(features,
    training=None, sample=None)`` returns a reparameterised sample ``loc +
    scale * eps`` (``eps`` from ``tf.random.normal``, a random op TFLite
    converts) when ``sample`` is true and ``loc`` when it is false. When
    ``sample`` is None (a layer inside a functional network, which passes
    only ``training``) it samples in training, and in inference only within
    a :func:`posterior_sampling` scope, which Monte-Carlo evaluation and
    attacks with expectation over the posterior use. The paper head's
    BatchNorms follow ``training`` (batch statistics in training, moving
    averages otherwise).

    The layer keeps no state of its calls: the KL reaches the loss (and
    :class:`tf_mtvib.models.MultiTaskModel`'s ``kl`` log, as that loss /
    beta) only through ``add_loss``.

    Under a mixed-precision policy (``mixed_bfloat16``, ``mixed_float16``)
    the heads (projection or FC + BN + ReLU) compute in the policy's compute
    dtype, and everything after them (``loc``, the scale's softplus, the KL
    and the sample) in float32: the layer returns a float32 ``z``.

    Args:
        latent_dim: dimension K of z.
        beta: weight of the KL term.
        scale_shift: the 5 of softplus(h - 5).
        min_scale: floor added to the scale.
        head: ``"paper"`` or ``"linear"`` (above). The layer's default is
            ``"linear"``, the layer as it was before the paper head existed,
            so that models saved without this option load unchanged;
            :func:`tf_mtvib.models.build_model` picks ``"paper"`` for the
            models of Tables I-II.
        synchronized: synchronise the paper head's BatchNorm statistics
            across replicas.
    """

    def __init__(self, latent_dim: int, beta: float = 1e-3, scale_shift: float = 5.0,
                 min_scale: float = 1e-5, head: str = "linear", synchronized: bool = False,
                 fused_batchnorm: Optional[bool] = None, **kwargs):
        super().__init__(**kwargs)
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if head not in LATENT_HEADS:
            raise ValueError(f"unknown latent head {head!r}; choose one of: {', '.join(LATENT_HEADS)}")
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.scale_shift = float(scale_shift)
        self.min_scale = float(min_scale)
        self.head = head
        self.synchronized = bool(synchronized)
        # the paper head's BatchNorms: fused or Keras's (default: the fused_batchnorm scope at construction)
        self.fused_batchnorm = bool(_FUSED_BN.get() if fused_batchnorm is None else fused_batchnorm)
        if head == "linear":
            self.projection = keras.layers.Dense(2 * self.latent_dim, name="projection")
        else:
            self.loc_head = DenseBNReLU(self.latent_dim, self.synchronized, fused=self.fused_batchnorm,
                                        name="loc_head", dtype=self.dtype_policy)
            self.scale_head = DenseBNReLU(self.latent_dim, self.synchronized, fused=self.fused_batchnorm,
                                          name="scale_head", dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.head == "linear":
            self.projection.build(input_shape)
        else:
            self.loc_head.build(input_shape)
            self.scale_head.build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.latent_dim,)

    def loc_and_scale(self, features, training=None):
        """The posterior's parameters ``(loc, scale)`` for ``features``.

        ``training`` selects the paper head's BatchNorm mode (as in ``call``).
        """
        if self.head == "linear":
            loc, raw = tf.split(self.projection(features), 2, axis=-1)
        else:
            loc = self.loc_head(features, training=training)
            raw = self.scale_head(features, training=training)
        loc, raw = tf.cast(loc, tf.float32), tf.cast(raw, tf.float32)   # float32 from here on (mixed precision)
        scale = tf.nn.softplus(raw - self.scale_shift) + self.min_scale
        return loc, scale

    def distribution(self, features, training=None) -> tfd.MultivariateNormalDiag:
        """p(z|x) as a TFP ``MultivariateNormalDiag``."""
        loc, scale = self.loc_and_scale(features, training=training)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)

    def prior(self, dtype=tf.float32) -> tfd.MultivariateNormalDiag:
        """r(z) = N(0, I)."""
        return tfd.MultivariateNormalDiag(loc=tf.zeros([self.latent_dim], dtype),
                                          scale_diag=tf.ones([self.latent_dim], dtype))

    def kl_divergence(self, features, training=None):
        """KL(p(z|x) || N(0, I)) per example, in nats (eq. 10)."""
        return self.distribution(features, training=training).kl_divergence(self.prior(tf.float32))

    def call(self, inputs, training=None, sample=None):
        posterior = self.distribution(inputs, training=training)
        kl = posterior.kl_divergence(self.prior(tf.float32))
        self.add_loss(self.beta * tf.reduce_mean(kl))
        if sample is None:
            sample = bool(training) or _sampling_requested(self)
        if sample:
            loc, scale = posterior.loc, posterior.stddev()
            return loc + scale * tf.random.normal(tf.shape(loc), dtype=loc.dtype)
        return posterior.loc

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, beta=self.beta, scale_shift=self.scale_shift,
                      min_scale=self.min_scale, head=self.head, synchronized=self.synchronized)
        if self.fused_batchnorm:
            config["fused_batchnorm"] = True
        return config


def latent_layers(layer) -> List[GaussianLatent]:
    """The :class:`GaussianLatent` layers of ``layer`` (itself included), in
    call-graph order, found through every nested ``keras.Model`` (a latent
    inside a sub-model counts). The one definition of "a model's latent
    layers": a model is stochastic iff this list is not empty.
    """
    found: List[GaussianLatent] = []
    seen = set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, GaussianLatent):
            found.append(node)
        for sub in getattr(node, "layers", ()):   # keras.Model (functional, Sequential, subclassed)
            visit(sub)

    visit(layer)
    return found


def all_sublayers(layer, include_self: bool = True) -> List[keras.layers.Layer]:
    """Every layer inside ``layer``, at any depth (sub-models and the layers a layer
    holds as attributes, e.g. the Dense and BatchNormalization layers of
    :class:`GaussianLatent`'s paper head), each once.

    Keras 3 has no public recursive iterator (``Model.layers`` lists the direct
    children only), so this is the one place the package calls Keras's private
    ``Layer._flatten_layers``; ``tests/test_models.py`` fails loudly if a Keras
    release moves or changes it.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=True))


#: The active posterior_sampling scopes, innermost last: (ids of the latents covered or None for all, enabled).
_SAMPLING_SCOPES: contextvars.ContextVar = contextvars.ContextVar("tf_mtvib_posterior_sampling", default=())


def _sampling_requested(latent: GaussianLatent) -> bool:
    """Whether the innermost :func:`posterior_sampling` scope covering ``latent`` asks for samples."""
    for ids, enabled in reversed(_SAMPLING_SCOPES.get()):
        if ids is None or id(latent) in ids:
            return enabled
    return False


@contextlib.contextmanager
def posterior_sampling(model: Optional[keras.layers.Layer] = None, enabled: bool = True):
    """A scope in which :class:`GaussianLatent` layers called without an explicit
    ``sample`` argument sample z in inference too (instead of returning the mean).

    ``model``: only the latents of ``model`` (:func:`latent_layers`); None: every latent.
    ``enabled=False`` switches sampling off again inside an outer scope.

    The scope is read when a layer is *called*, i.e. when a ``tf.function``
    is traced: graphs traced inside it keep the sampling op, graphs traced
    outside keep the mean (trace one function per mode, as
    :meth:`tf_mtvib.models.MultiTaskModel.probabilities` does). It is a
    ``contextvars`` scope: it covers the thread (or asyncio task) that
    enters it; code that traces in other threads (the replica threads of
    ``MirroredStrategy.run``) passes ``sample=True`` to the layer instead.
    No layer is modified.
    """
    ids = None if model is None else frozenset(id(l) for l in latent_layers(model))
    token = _SAMPLING_SCOPES.set(_SAMPLING_SCOPES.get() + ((ids, bool(enabled)),))
    try:
        yield
    finally:
        _SAMPLING_SCOPES.reset(token)


def _batch_statistics_call(bn: keras.layers.BatchNormalization, inputs, training=None, mask=None):
    """``bn``'s normalisation with the moments of the batch it is given (its gamma,
    beta and epsilon), as Keras normalises in training, without updating the
    moving averages."""
    x = tf.cast(inputs, tf.float32) if inputs.dtype in (tf.float16, tf.bfloat16) else inputs
    rank = len(x.shape)
    channel = bn.axis % rank
    mean, variance = tf.nn.moments(x, axes=[i for i in range(rank) if i != channel], keepdims=True)
    shape = [1] * rank
    shape[channel] = -1
    beta = tf.reshape(tf.cast(bn.beta, x.dtype), shape) if bn.center else None
    gamma = tf.reshape(tf.cast(bn.gamma, x.dtype), shape) if bn.scale else None
    return tf.cast(tf.nn.batch_normalization(x, mean, variance, beta, gamma, bn.epsilon), inputs.dtype)


@contextlib.contextmanager
def batch_statistics(model: keras.layers.Layer, enabled: bool = True):
    """Within this context every BatchNormalization of ``model`` (nested ones
    included, e.g. the Gaussian latent's paper head) normalises by the
    statistics of the batch it sees, as in training, instead of its moving
    averages; the moving averages are never updated, and everything else
    (the Gaussian latent's mean or sampled mode) behaves as in inference.

    Like :func:`tf_mtvib.layers.posterior_sampling`, graphs traced inside the
    context keep the behaviour. Yields the BatchNormalization layers.
    """
    layers = [l for l in all_sublayers(model)
              if isinstance(l, keras.layers.BatchNormalization)] if enabled else []
    try:
        for l in layers:   # an instance attribute shadows the class's call; Layer.__call__ uses self.call
            object.__setattr__(l, "call", functools.partial(_batch_statistics_call, l))
        yield layers
    finally:
        for l in layers:
            if "call" in l.__dict__:
                object.__delattr__(l, "call")


# The loss weightings moved to tf_mtvib.weightings (one module for the family);
# these names stay importable from here.
from .weightings import FixedWeighting, UncertaintyWeighting  # noqa: E402
