"""Modular multi-task networks on a LeNet trunk: MMoE and MT-CRL (Hu et al., NeurIPS 2022, §3).

Both share one shape, and Tables 2 and 6 of MT-CRL compare on it ("MTL" there
is vanilla MMoE):

    image -> LeNet trunk -> K modules Z_i (:class:`Modules`)
          -> per task t, a combination of the modules -> predictor f_t -> logits

* MMoE (Ma et al. 2018): the combination is ``sum_i g_t,i(x) Z_i`` with
  input-dependent softmax gates ``g_t(x)`` (:class:`SoftmaxGates`);
* MT-CRL: the combination follows a learned, input-independent graph
  ``A = sigmoid(theta)`` (:class:`CausalGraph`, eq. 3's terms as its layer
  loss); the modules add eq. (2)'s decorrelation as theirs (or, in Table 3's
  beta-VAE row, are a beta-VAE's latent: :class:`VAEModules`); and
  :class:`GraphIRMPenalty` adds G-IRM (eqs. 7-9) in the training step.

The trunk (:func:`lenet_trunk`) is the MultiLeNet of Sener & Koltun's
MultiMNIST code, the CNN of "Yu et al. (2020)" that MT-CRL names:
Conv(10, 5x5), MaxPool 2, ReLU; Conv(20, 5x5), MaxPool 2, ReLU; flatten.
Its channel dropout is left out (``--lenet-dropout`` puts it back): without it
the training-mode forward pass is deterministic, so G-IRM's second pass over the
trunk sees exactly the modules the task loss saw.
"""
from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from .mtcrl import AGGREGATIONS, GIRM_FORMS, aggregate, decorrelation, g_irm, graph_balance, graph_sparsity
from .terms import LossTerm, Step

__all__ = ["PREDICTORS", "lenet_trunk", "Modules", "VAEModules", "SoftmaxGates", "CausalGraph", "TaskPredictors",
           "GraphIRMPenalty", "MODULES_LAYER", "GRAPH_LAYER", "PREDICTORS_LAYER"]

_PACKAGE = "tf_mtvib"
#: f_t: one linear layer, or the paper's "one-layer MLP" (a hidden ReLU layer, MultiLeNet's task head)
PREDICTORS = ("mlp", "linear")
#: The layer names the G-IRM penalty finds its parts by
MODULES_LAYER, GRAPH_LAYER, PREDICTORS_LAYER = "modules", "graph", "predictors"


def lenet_trunk(x, prefix: str = "", dropout: float = 0.0):
    """MultiLeNet's convolutional part (Sener & Koltun 2018), ending in Flatten: 28x56 -> 4x11x20 = 880."""
    x = keras.layers.Conv2D(10, 5, name=f"{prefix}lenet_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{prefix}lenet_pool1")(x)
    x = keras.layers.ReLU(name=f"{prefix}lenet_relu1")(x)
    x = keras.layers.Conv2D(20, 5, name=f"{prefix}lenet_conv2")(x)
    if dropout:
        x = keras.layers.SpatialDropout2D(dropout, name=f"{prefix}lenet_dropout")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{prefix}lenet_pool2")(x)
    x = keras.layers.ReLU(name=f"{prefix}lenet_relu2")(x)
    return keras.layers.Flatten(name=f"{prefix}lenet_flatten")(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Modules(keras.layers.Layer):
    """K modules ``Z_i = relu(h_i W_i + b_i)`` of ``module_dim`` units: output ``(B, K, module_dim)``.

    ``separate=False``: one trunk, K heads (``h_i = h`` for all i: called on one tensor, the heads are one
    Dense of K*module_dim units); ``separate=True``: K trunks, called on the list of their K features.
    In training it adds ``lambda_decor * decorrelation(Z)`` (eq. 2) to the layer's losses (nothing when
    ``lambda_decor`` is 0, as MMoE)."""

    def __init__(self, num_modules: int, module_dim: int, lambda_decor: float = 0.0, separate: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if num_modules < 1 or module_dim < 1:
            raise ValueError(f"num_modules and module_dim must be >= 1, got {num_modules}, {module_dim}")
        if lambda_decor < 0:
            raise ValueError(f"lambda_decor must be >= 0, got {lambda_decor}")
        self.num_modules, self.module_dim, self.lambda_decor = int(num_modules), int(module_dim), float(lambda_decor)
        self.separate = bool(separate)
        if self.separate:
            self.heads = [keras.layers.Dense(self.module_dim, activation="relu", name=f"head{i}",
                                             dtype=self.dtype_policy) for i in range(self.num_modules)]
        else:
            self.dense = keras.layers.Dense(self.num_modules * self.module_dim, activation="relu", name="dense",
                                            dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.separate:
            if len(input_shape) != self.num_modules:
                raise ValueError(f"separate modules take {self.num_modules} trunks' features, got {len(input_shape)}")
            for head, shape in zip(self.heads, input_shape):
                head.build(shape)
        else:
            self.dense.build(input_shape)

    def compute_output_shape(self, input_shape):
        return ((input_shape[0][0] if self.separate else input_shape[0]), self.num_modules, self.module_dim)

    def call(self, inputs, training=None):
        if self.separate:
            z = tf.stack([head(h) for head, h in zip(self.heads, inputs)], axis=1)
        else:
            z = tf.reshape(self.dense(inputs), [-1, self.num_modules, self.module_dim])
        if training and self.lambda_decor > 0 and self.num_modules > 1:
            self.add_loss(self.lambda_decor * decorrelation(z))
        return z

    def get_config(self):
        config = {**super().get_config(), "num_modules": self.num_modules, "module_dim": self.module_dim,
                  "lambda_decor": self.lambda_decor}
        if self.separate:
            config["separate"] = True
        return config


def pixel_count(image_shape) -> int:
    """The number of pixels (times channels) of one image of a batch shaped ``image_shape``: the
    normaliser of :class:`VAEModules`' reconstruction term, and so of the beta it pairs with."""
    count = 1
    for n in image_shape[1:]:
        count *= int(n)
    return count


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VAEModules(keras.layers.Layer):
    """The K modules as a beta-VAE's latent (MT-CRL's Table 3, "beta-VAE" in place of eq. 2's decorrelation;
    Higgins et al. 2017): called on ``[z, image]``, where ``z`` (B, K*m) is the sample (or, in inference, the
    mean) of a :class:`tf_mtvib.layers.GaussianLatent` on the trunk's features, which adds the beta-weighted
    KL. Returns ``z`` as ``(B, K, m)``; in training it adds ``weight * mean_batch sum_pixels BCE(x, x_hat) /
    pixels``, the reconstruction term, where ``x_hat = sigmoid(decoder(z))`` and the decoder is
    ``Dense(hidden, relu)`` then ``Dense(pixels)``. With the latent's beta set to ``weight * beta_vae /
    pixels`` the two terms are ``weight / pixels * (reconstruction + beta_vae * KL)``, beta-VAE's loss per
    pixel (:func:`tf_mtvib.families._lenet.modular_network` sets it so)."""

    def __init__(self, num_modules: int, module_dim: int, weight: float = 1.0, hidden: int = 256, **kwargs):
        super().__init__(**kwargs)
        if num_modules < 1 or module_dim < 1 or hidden < 1:
            raise ValueError(f"num_modules, module_dim and hidden must be >= 1, got {num_modules}, {module_dim}, "
                             f"{hidden}")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.num_modules, self.module_dim = int(num_modules), int(module_dim)
        self.weight, self.hidden = float(weight), int(hidden)
        self.decoder_hidden = keras.layers.Dense(self.hidden, activation="relu", name="decoder_hidden",
                                                 dtype=self.dtype_policy)

    def build(self, input_shape):
        z_shape, image_shape = input_shape
        if z_shape[-1] != self.num_modules * self.module_dim:
            raise ValueError(f"z has {z_shape[-1]} units, expected K * m = {self.num_modules * self.module_dim}")
        self.pixels = pixel_count(image_shape)
        self.decoder_hidden.build(z_shape)
        self.decoder_out = keras.layers.Dense(self.pixels, name="decoder_out", dtype=self.dtype_policy)
        self.decoder_out.build((z_shape[0], self.hidden))

    def reconstruction_logits(self, z):
        """The decoder's logits for the image's pixels, (B, pixels), float32."""
        return tf.cast(self.decoder_out(self.decoder_hidden(z)), tf.float32)

    def reconstruction_loss(self, z, image):
        """``mean_batch sum_pixels BCE(x, sigmoid(logits)) / pixels``: the mean per-pixel cross-entropy."""
        x = tf.reshape(tf.cast(image, tf.float32), [-1, self.pixels])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=self.reconstruction_logits(z))
        return tf.reduce_mean(tf.reduce_sum(bce, axis=-1)) / self.pixels

    def call(self, inputs, training=None):
        z, image = inputs
        if training and self.weight > 0:
            self.add_loss(self.weight * self.reconstruction_loss(z, image))
        return tf.reshape(z, [-1, self.num_modules, self.module_dim])

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_modules, self.module_dim)

    def get_config(self):
        return {**super().get_config(), "num_modules": self.num_modules, "module_dim": self.module_dim,
                "weight": self.weight, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftmaxGates(keras.layers.Layer):
    """MMoE's gates: per task, ``softmax(h V_t)`` over the K modules, then ``sum_i g_t,i Z_i``.
    Called on ``[h, z]``; returns the list of the tasks' ``(B, module_dim)`` inputs."""

    def __init__(self, num_tasks: int, num_modules: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_modules = int(num_tasks), int(num_modules)
        self.gates = [keras.layers.Dense(self.num_modules, name=f"gate{t}", dtype=self.dtype_policy)
                      for t in range(self.num_tasks)]

    def build(self, input_shape):
        for gate in self.gates:
            gate.build(input_shape[0])

    def call(self, inputs):
        h, z = inputs
        return [aggregate(tf.nn.softmax(gate(h), axis=-1), z, "sum") for gate in self.gates]

    def compute_output_shape(self, input_shape):
        b, _, m = input_shape[1]
        return [(b, m)] * self.num_tasks

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks, "num_modules": self.num_modules}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CausalGraph(keras.layers.Layer):
    """The task-to-module graph ``A = sigmoid(theta)``, (T, K) (§3.1), applied to the modules ``z``:
    returns the list of the tasks' predictor inputs (:func:`tf_mtvib.mtcrl.aggregate`). In training
    it adds eq. (3), ``lambda_sps ||A||_1 - lambda_bal Entropy(...)``, to the layer's losses.
    ``theta`` starts at ``init_theta`` (0: every edge at 0.5)."""

    def __init__(self, num_tasks: int, num_modules: int, aggregation: str = "concat", lambda_sps: float = 0.0,
                 lambda_bal: float = 0.0, init_theta: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose one of: {', '.join(AGGREGATIONS)}")
        self.num_tasks, self.num_modules, self.aggregation = int(num_tasks), int(num_modules), aggregation
        self.lambda_sps, self.lambda_bal, self.init_theta = float(lambda_sps), float(lambda_bal), float(init_theta)

    def build(self, input_shape):
        self.theta = self.add_weight(name="theta", shape=(self.num_tasks, self.num_modules),
                                     initializer=keras.initializers.Constant(self.init_theta), dtype="float32")

    def adjacency(self):
        """``A = sigmoid(theta)``, (T, K), float32."""
        return tf.sigmoid(tf.cast(self.theta, tf.float32))

    def combine(self, a, z) -> list:
        """The tasks' predictor inputs from the graph ``a`` (T, K) and the modules ``z`` (B, K, m)."""
        return [aggregate(a[t], z, self.aggregation) for t in range(self.num_tasks)]

    def call(self, z, training=None):
        a = self.adjacency()
        if training and (self.lambda_sps or self.lambda_bal):
            self.add_loss(self.lambda_sps * graph_sparsity(a) - self.lambda_bal * graph_balance(a))
        return self.combine(tf.cast(a, z.dtype), z)

    def compute_output_shape(self, input_shape):
        b, k, m = input_shape
        return [(b, k * m if self.aggregation == "concat" else m)] * self.num_tasks

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks, "num_modules": self.num_modules,
                "aggregation": self.aggregation, "lambda_sps": self.lambda_sps, "lambda_bal": self.lambda_bal,
                "init_theta": self.init_theta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TaskPredictors(keras.layers.Layer):
    """The predictors ``f_t``, one per task, each ``"linear"`` or ``"mlp"`` (Dense ``hidden`` + ReLU, then
    linear). Called on the list of the tasks' inputs; returns the list of their float32 logits.
    :meth:`frozen` applies them with their weights behind ``stop_gradient`` (G-IRM's ``f_t`` held fixed)."""

    def __init__(self, num_classes: Sequence[int], kind: str = "mlp", hidden: int = 50, **kwargs):
        super().__init__(**kwargs)
        if kind not in PREDICTORS:
            raise ValueError(f"unknown predictor {kind!r}; choose one of: {', '.join(PREDICTORS)}")
        self.num_classes, self.kind, self.hidden = [int(c) for c in num_classes], kind, int(hidden)

    def build(self, input_shape):
        self.params = []
        for t, (shape, classes) in enumerate(zip(input_shape, self.num_classes)):
            dims = [int(shape[-1])] + ([self.hidden] if self.kind == "mlp" else []) + [classes]
            layer = []
            for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
                layer.append((self.add_weight(name=f"task{t}_kernel{i}", shape=(fan_in, fan_out),
                                              initializer="glorot_uniform"),
                              self.add_weight(name=f"task{t}_bias{i}", shape=(fan_out,), initializer="zeros")))
            self.params.append(layer)

    def _apply(self, t, x, stop: bool):
        x = tf.cast(x, self.compute_dtype)
        for i, (kernel, bias) in enumerate(self.params[t]):
            kernel, bias = tf.cast(kernel, self.compute_dtype), tf.cast(bias, self.compute_dtype)
            if stop:
                kernel, bias = tf.stop_gradient(kernel), tf.stop_gradient(bias)
            x = tf.matmul(x, kernel) + bias
            if i < len(self.params[t]) - 1:
                x = tf.nn.relu(x)
        return tf.cast(x, tf.float32)

    def call(self, inputs):
        return [self._apply(t, x, stop=False) for t, x in enumerate(inputs)]

    def task(self, t: int, x):
        """Task ``t``'s logits from its input ``x``."""
        return self._apply(t, x, stop=False)

    def frozen(self, t: int, x):
        """Task ``t``'s logits with ``f_t``'s weights held fixed (no gradient reaches them)."""
        return self._apply(t, x, stop=True)

    def compute_output_shape(self, input_shape):
        return [(s[0], c) for s, c in zip(input_shape, self.num_classes)]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kind": self.kind, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GraphIRMPenalty(LossTerm):
    """G-IRM, eqs. (7)-(9): the gradients of each task's risk in each environment with respect to the
    graph ``A = sigmoid(theta)`` (not theta), with ``f_t`` held fixed, penalised by their variance across
    environments (``form="var"``, eq. 9) or their squared norm (``"norm"``, eq. 8).

    ``form="irm"`` is the paper's IRM baseline instead, eq. (6): the squared norm of the gradients with
    respect to ``A_t`` *and* ``f_t``, with ``f_t`` not held fixed (its gradient reaches the predictors).

    ``R_t^e`` is task t's mean cross-entropy over the batch's examples of environment ``e`` (the extra
    ``environment``, in ``environments``). The penalty's gradient reaches the modules (through ``Z``)
    and ``theta`` (through ``A``), never the predictors: they see ``stop_gradient`` weights. The modules
    are the training forward pass's own (:meth:`~tf_mtvib.terms.Step.activation`).
    """

    def __init__(self, form: str = "var", environments: Sequence[int] = (0, 1), weight: float = 1.0,
                 env_key: str = "environment", name: Optional[str] = None):
        super().__init__(weight, name or ("irm" if form == "irm" else "g_irm"))
        if form not in GIRM_FORMS + ("irm",):
            raise ValueError(f"unknown G-IRM form {form!r}; choose one of: {', '.join(GIRM_FORMS + ('irm',))}")
        if len(set(environments)) < 2:
            raise ValueError(f"G-IRM compares environments: it needs at least two, got {list(environments)}")
        self.form, self.environments, self.env_key = form, tuple(int(e) for e in environments), env_key
        self.needs = (env_key,)
        self.activations = (MODULES_LAYER,)

    def check_data(self, split) -> None:
        """The training split must hold examples of at least two of :attr:`environments`."""
        import numpy as np

        if self.env_key not in split.extras:
            raise ValueError(f"{self.name}: the training data has no {self.env_key!r} extra; G-IRM compares "
                             f"environments (data sets with them: pairmnist, pairmnist64)")
        held = sorted(set(np.unique(split.extras[self.env_key]).tolist()) & set(self.environments))
        if len(held) < 2:
            raise ValueError(f"{self.name}: the training data holds environment(s) {held} of {list(self.environments)}; "
                             f"G-IRM needs a second environment (use --girm none to train without it)")

    def value(self, step: Step) -> tf.Tensor:
        network = step.model.network
        graph, predictors = network.get_layer(GRAPH_LAYER), network.get_layer(PREDICTORS_LAYER)
        z = step.activation(MODULES_LAYER)
        env = tf.cast(tf.reshape(step.inputs[self.env_key], [-1]), tf.int32)
        a = graph.adjacency()
        tasks = step.model.task_names
        masks = [tf.cast(tf.equal(env, e), tf.float32) for e in self.environments]
        counts = tf.stack([tf.reduce_sum(m) for m in masks])
        a_env = tf.stack([a] * len(self.environments))              # one copy of A per environment
        irm = self.form == "irm"                                    # eq. (6): f_t is not held fixed
        with tf.GradientTape(persistent=irm) as inner:
            inner.watch(a_env)
            risks = []
            for e, mask in enumerate(masks):
                risk_e = tf.constant(0.0)
                for t, task in enumerate(tasks):
                    features = aggregate(a_env[e, t], z, graph.aggregation)
                    logits = predictors.task(t, features) if irm else predictors.frozen(t, features)
                    labels = step.labels[task]
                    labelled = mask * tf.cast(tf.reshape(labels, [-1]) >= 0, tf.float32)
                    ce = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), logits, from_logits=True)
                    risk_e = risk_e + tf.reduce_sum(ce * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)
                risks.append(risk_e)
            risk = tf.add_n(risks)
        grads = inner.gradient(risk, a_env)       # (E, T, K): row t of copy e is dR_t^e / dA_t
        if not irm:
            return g_irm(grads, self.form, present=counts > 0)
        # eq. (6): sum_t sum_e ||grad_{A_t, f_t} R_t^e||^2; f_t's parameters serve task t alone, so the
        # gradient of R^e = sum_t R_t^e with respect to them is task t's
        total = g_irm(grads, "norm", present=counts > 0)
        for e, risk_e in enumerate(risks):
            f_grads = inner.gradient(risk_e, predictors.trainable_weights)
            total = total + tf.where(counts[e] > 0, tf.add_n([tf.reduce_sum(tf.square(g)) for g in f_grads]), 0.0)
        del inner
        return total

    def get_config(self):
        return {**super().get_config(), "form": self.form, "environments": list(self.environments),
                "env_key": self.env_key}
