"""MTVIB and the paper's baselines as Keras 3 models (Tables I and II).

The architecture (convolutional trunk, fully connected layers, Gaussian
latent, task decoders) is built as one functional network mapping an image in
[0, 1] to ``{task: logits}``. The task weighting (:mod:`tf_mtvib.weightings`:
fixed weights, learned uncertainty, ...) is a separate loss layer.
:class:`MultiTaskModel` joins the two and owns the training loss. A baseline
is therefore a choice of network shape and weighting, never a copy of the
model. Each model's catalogue entry (:mod:`tf_mtvib.catalogue`) names its default weighting; any registered
weighting can replace it (``build_model(name, spec, weighting="uncertainty")``):

========  ==========================================  ======================
model     network                                     weighting
========  ==========================================  ======================
stl       one independent trunk+FC tower per task     fixed, 1 per task
gs        shared trunk + FC 384, per-task FC 192      fixed (grid-searched)
uwl       as gs                                       learned uncertainty
stvib     one independent VIB tower per task          fixed, 1 per task
mtvib     shared trunk + FC 1024x3 + latent, decoders learned uncertainty
vib_mlp   Alemi et al.'s MLP 1024-1024 + latent 256   fixed (single task)
mlp       vib_mlp's deterministic twin (z = mean)     fixed (single task)
========  ==========================================  ======================

STL and STVIB hold one tower per task in one model, trained on the sum of the
task losses: the towers share no weights and Adam's update is per parameter,
so this is the same as training each single-task model on its own, in one
pass over the data.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence

import keras
import tensorflow as tf

from .datasets.spec import DatasetSpec, spec_from_config, spec_to_config
from .catalogue import (DEFAULT_HPARAMS, LATENT_HEADS, MODEL_NAMES, check_weighting,
                        default_weighting, hparam_defaults, model_entry)
from .layers import BN_MOMENTUM, GaussianLatent, batch_normalization, latent_layers, posterior_sampling
from . import modular  # noqa: E402,F401  (MMoE / MT-CRL layers and G-IRM: registered for .keras loading)
from . import variational  # noqa: E402,F401  (VMTL layers and its z-prior term: registered for .keras loading)
from .weightings import get_weighting

__all__ = [
    "BN_MOMENTUM", "ConvTrunk", "CONV_TRUNKS", "MODEL_NAMES", "DEFAULT_HPARAMS", "LATENT_HEADS",
    "hparam_defaults", "default_weighting", "check_weighting", "build_weighting", "MultiTaskModel",
    "build_model", "build_network", "conv_trunk", "flatten_size", "kl_per_example", "probabilities_of",
    "sampled_logits", "split_at_latents", "network_logits", "posterior_logits", "sub_network",
]

_PACKAGE = "tf_mtvib"
#: The batch extra that names an example's environment (tf_mtvib.datasets.pairs: 0 train, 1 valid, 2 test)
ENVIRONMENT = "environment"


# The architecture tables (Tables I and II) and the blocks built from them are in
# tf_mtvib.blocks; each model's network is its family's builder (tf_mtvib.families).
from .blocks import (CONV_TRUNKS, MLP_ENCODER_FC, SHARED_FC, TASK_FC, VIB_DECODER_FC,  # noqa: E402,F401
                     VIB_ENCODER_FC, ConvTrunk, conv_trunk, flatten_size)
from .families import (builder_of, check_dataset, get_family, prepare_family, risk_environments_of, terms_of,  # noqa: E402
                       weighting_overrides)


def _resolve_hparams(name: str, hparams: Mapping) -> dict:
    """The network's hyper-parameters of model ``name`` (unknown keys are a TypeError)."""
    known = hparam_defaults()
    unknown = set(hparams) - set(known)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)} for model {name!r}; "
                        f"known: {sorted(known)}")
    family = get_family(name)
    hp = dict(DEFAULT_HPARAMS)
    hp.update({k: h.default for k, h in family.hparams.items()})
    hp.update(family.defaults)
    hp.update({k: v for k, v in hparams.items() if v is not None and (k in DEFAULT_HPARAMS or k in family.hparams)})
    if hp["latent_head"] not in LATENT_HEADS:
        raise ValueError(f"unknown latent_head {hp['latent_head']!r}; choose one of: {', '.join(LATENT_HEADS)}")
    return hp


def build_weighting(name: str, spec: DatasetSpec, weighting: Optional[str] = None, **hparams):
    """The task weighting of model ``name`` for ``spec``: ``weighting`` (default
    the model's own) with its hyper-parameters from ``hparams``, else the model's
    defaults for its own weighting, else the class's (:attr:`TaskWeighting.HPARAMS`).

    A hyper-parameter of another weighting than the chosen one is a ValueError.
    """
    wname = check_weighting(name, weighting, hparams)
    cls = get_weighting(wname)
    given = {k: v for k, v in hparams.items() if v is not None and k in cls.HPARAMS}
    whp = {k: h.default for k, h in cls.HPARAMS.items()}
    if wname == default_weighting(name):
        whp.update(weighting_overrides(get_family(name), spec))
    whp.update(given)
    return cls.from_hparams(spec.task_names, name=f"{wname}_weighting", **whp)


def build_network(name: str, spec: DatasetSpec, **hparams) -> keras.Model:
    """The functional network of model ``name`` (its family's builder): image -> {task: logits}."""
    family = get_family(name)                   # ValueError for an unknown name
    check_dataset(family, spec.name)            # IncompatibleDataset
    hp = _resolve_hparams(name, hparams)
    from .layers import fused_batchnorm

    with fused_batchnorm(bool(hp.get("fused_batchnorm"))):
        inputs, outputs = builder_of(family)(spec, hp)
    network = keras.Model(inputs, outputs, name=f"{name}_{spec.name}")
    if hp.get("float32_heads"):
        from .hparams import InapplicableHParam
        from .layers import latent_layers

        if not latent_layers(network):
            raise InapplicableHParam(f"float32_heads applies to the models with a Gaussian latent (its heads); {name} has none")
    return network


def build_model(name: str, dataset_spec: DatasetSpec, weighting: Optional[str] = None, terms: Sequence = (),
                data_dir=None, **hparams) -> "MultiTaskModel":
    """Build model ``name`` (one of :data:`MODEL_NAMES`) for ``dataset_spec``.

    ``weighting``: a key of :data:`tf_mtvib.weightings.WEIGHTINGS`; default
    the model's own (uncertainty for uwl and mtvib, fixed for the others).

    Network hyper-parameters (defaults in :data:`DEFAULT_HPARAMS`):
    ``latent_dim``, ``beta``, ``latent_head`` (``"paper"``: the Gaussian
    latent's heads as in Tables I-II; ``"linear"``: Alemi et al.'s, the
    default of ``vib_mlp``), ``sync_batchnorm``; and the chosen weighting's
    (its class's ``HPARAMS``, e.g. ``task_weights`` of ``fixed``: a
    ``{task: w}`` dict or a list in task order; ``init_log_sigma`` of
    ``uncertainty``). The model records the resolved values in ``hparams``.

    ``terms``: :class:`tf_mtvib.terms.LossTerm` penalties added to the family's own
    (``FamilySpec.terms``); the batch extras they read must be among the family's ``needs``.
    ``data_dir``: for a family that prepares from data first (``FamilySpec.prepare``: VMTL's extractor).
    """
    model_entry(name)                           # ValueError for an unknown name
    prepare_family(get_family(name), data_dir)
    hp = _resolve_hparams(name, hparams)
    loss_weighting = build_weighting(name, dataset_spec, weighting, **hparams)
    network = build_network(name, dataset_spec, **hp)
    record = {**hp, "weighting": loss_weighting.registry_name, **loss_weighting.hparams()}
    family = get_family(name)
    all_terms = [*terms_of(family, dataset_spec, hp), *terms]
    return MultiTaskModel(network, loss_weighting, dataset_spec, model_name=name, hparams=record, terms=all_terms,
                          extras=family.needs, partial_labels=family.inputs == "per_task",
                          risk_environments=risk_environments_of(family, hp))


def layer_tensor(network: keras.Model, layer: str):
    """The symbolic output of ``network``'s layer ``layer`` *in the network's own graph* (for a nested
    model, such as a frozen extractor, ``layer.output`` is its inner graph's instead). The layer must be
    called once in the network."""
    op = network.get_layer(layer)
    nodes = [node for depth in network._nodes_by_depth.values() for node in depth if node.operation is op]
    if len(nodes) != 1:
        raise ValueError(f"layer {layer!r} is called {len(nodes)} times in the network; a loss term can read "
                         f"the output of a layer called once")
    outputs = nodes[0].outputs
    return outputs[0] if len(outputs) == 1 else outputs


def sub_network(network: keras.Model, layer: str) -> keras.Model:
    """``network``'s inputs -> the output of its layer ``layer`` (:func:`layer_tensor`; the same layers
    and weights)."""
    return keras.Model(network.inputs, layer_tensor(network, layer))


# --------------------------------------------------------------------------
# The trainable model: network + weighting + the MTVIB loss
# --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiTaskModel(keras.Model):
    """A network ``image -> {task: logits}`` trained with a task weighting.

    Loss (MTVIB eq. 23 for ``mtvib``): ``weighting({task: CE_task}) +
    sum(layer losses)``, where the layer losses are the ``beta * KL`` terms
    of the :class:`GaussianLatent` layers. Under ``tf.distribute`` the total
    is divided by the number of replicas, so that the SUM all-reduce of the
    gradients gives the gradient of the global-batch mean (KL and
    ``log_sigma`` terms included).

    Logs: ``loss``, ``<task>_loss`` (cross-entropy), ``<task>_accuracy``,
    ``joint_accuracy`` (every task right), ``kl`` (nats, summed over latent
    layers; each one's ``beta * KL`` loss divided by its beta > 0) and what the weighting logs (its ``logs()``, e.g.
    ``<task>_sigma`` for the uncertainty weighting).

    :meth:`fit` adds the weighting's callbacks (per-epoch state, see
    :meth:`tf_mtvib.weightings.TaskWeighting.callbacks`) in front of the caller's;
    a custom loop calls ``model.weighting.end_epoch()`` after each epoch.

    ``model(x)`` returns logits; :meth:`probabilities` returns softmax
    probabilities, in mean mode (``samples=0``: z = posterior mean) or
    averaged over ``samples`` posterior draws.
    """

    def __init__(self, network: keras.Model, weighting: keras.layers.Layer, dataset_spec: DatasetSpec,
                 model_name: str = "custom", hparams: Optional[dict] = None, terms: Sequence = (),
                 extras: Sequence[str] = (), partial_labels: bool = False, risk_environments: Sequence[int] = (),
                 **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.weighting = weighting
        self.terms = [keras.saving.deserialize_keras_object(t) if isinstance(t, dict) else t for t in terms]
        self.extras = tuple(extras)
        self.partial_labels = bool(partial_labels)
        self.risk_environments = tuple(int(e) for e in risk_environments)
        if self.risk_environments and ENVIRONMENT not in self.extras:
            raise ValueError(f"risk_environments {list(self.risk_environments)} need the batch extra "
                             f"{ENVIRONMENT!r}, which model {model_name!r} does not declare")
        for term in self.terms:
            missing = [k for k in getattr(term, "needs", ()) if k not in self.extras]
            if missing:
                raise ValueError(f"loss term {term.name!r} reads batch extra(s) {missing}, which model "
                                 f"{model_name!r} does not declare (its extras: {list(self.extras)})")
        self.dataset_spec = dataset_spec
        self.model_name = model_name
        self.hparams = dict(hparams or {})
        self.task_names = tuple(dataset_spec.task_names)
        missing = set(self.task_names) - set(network.output.keys() if isinstance(network.output, dict) else ())
        if missing:
            raise ValueError(f"network outputs must be a dict with every task; missing {sorted(missing)}")
        self._task_loss = [keras.metrics.Mean(name=f"{t}_loss") for t in self.task_names]
        self._task_acc = [keras.metrics.SparseCategoricalAccuracy(name=f"{t}_accuracy") for t in self.task_names]
        self._joint_acc = keras.metrics.Mean(name="joint_accuracy")
        self._kl = keras.metrics.Mean(name="kl")
        self._term_trackers = [keras.metrics.Mean(name=term.name) for term in self.terms]
        self._proba_fns = {}
        # the layers whose outputs the terms read (Step.activation): the training forward pass keeps them
        kept = sorted({name for term in self.terms for name in getattr(term, "activations", ())})
        for name in kept:
            layer_tensor(network, name)      # a clear error now for a layer the network lacks
        self.__dict__["_kept_layers"] = tuple(kept)
        self.__dict__["_kept"] = None
        self.built = True  # the network and the weighting are built already

    # -- structure ---------------------------------------------------------
    @property
    def latent_layers(self):
        """The network's :class:`GaussianLatent` layers (:func:`tf_mtvib.layers.latent_layers`)."""
        return latent_layers(self.network)

    # -- the stochastic-model protocol --------------------------------------
    # Attacks (mean / sampled / EOT, BatchNorm statistics), Monte-Carlo prediction and
    # export's predict_mc ask a model through these members only; none of them reaches
    # into its layers. A family whose randomness lives elsewhere than in GaussianLatent
    # layers (Bayesian weights, say) overrides them.
    @property
    def is_stochastic(self) -> bool:
        """Whether predictions sample (a posterior over z): then :meth:`sampled_logits` draws."""
        return bool(self.latent_layers)

    def mean_logits(self, images) -> Dict[str, tf.Tensor]:
        """``{task: (B, classes)}``: one deterministic pass (z = posterior mean; BatchNorm in inference)."""
        with posterior_sampling(self.network, enabled=False):
            return self.network(images, training=False)

    def sampled_logits(self, images, samples: int) -> Dict[str, tf.Tensor]:
        """``{task: (samples, B, classes)}``: ``samples`` posterior draws per image (BatchNorm in
        inference; :func:`sampled_logits`, the deterministic encoder run once)."""
        parts = self.__dict__.get("_latent_parts")
        if parts is None:      # built once, kept out of Keras's tracking (it is not part of the model)
            parts = split_at_latents(self.network) or False
            object.__setattr__(self, "_latent_parts", parts)
        return sampled_logits(self.network, images, samples, parts)

    @contextlib.contextmanager
    def batch_statistics(self):
        """A scope in which BatchNorm normalises by the statistics of the batch it sees (as in
        training) without updating its moving averages; everything else behaves as in inference."""
        from .layers import batch_statistics

        with batch_statistics(self.network):
            yield

    def float32_compute(self):
        """A scope in which the network computes in float32 whatever its training precision."""
        from .precision import float32_compute

        return float32_compute(self.network)

    def call(self, inputs, training=None):
        """Logits ``{task: (B, classes)}`` of the images: ``inputs`` is the image batch, or a
        batch dict ``{"image": images, <extra>: ...}`` (:func:`tf_mtvib.datasets.to_dataset` with extras)."""
        if isinstance(inputs, Mapping):
            inputs = inputs["image"]
        if training and self._kept_layers:
            out = self._keeping_network()(inputs, training=training)
            self.__dict__["_kept"] = (inputs, out["kept"])
            return out["logits"]
        return self.network(inputs, training=training)

    def _keeping_network(self):
        """The network with the outputs of :attr:`_kept_layers` as well (the same layers; built once, kept
        out of Keras's tracking)."""
        fn = self.__dict__.get("_keeping_fn")
        if fn is None:
            kept = {name: layer_tensor(self.network, name) for name in self._kept_layers}
            fn = keras.Model(self.network.inputs, {"logits": self.network.output, "kept": kept})
            self.__dict__["_keeping_fn"] = fn
        return fn

    def layer_output(self, layer: str, images, training=False):
        """The output of the network's layer ``layer`` for ``images``: the tensor the last training call
        kept when it ran on these very images (the loss terms' :attr:`~tf_mtvib.terms.LossTerm.activations`;
        no second forward pass, and its gradient flows through the step's own graph), else a forward pass
        of the sub-network up to that layer."""
        kept = self.__dict__.get("_kept")
        if training and kept is not None and kept[0] is images and layer in kept[1]:
            return kept[1][layer]
        fns = self.__dict__.setdefault("_layer_fns", {})
        if layer not in fns:
            fns[layer] = sub_network(self.network, layer)
        return fns[layer](images, training=training)

    # -- loss --------------------------------------------------------------
    def task_losses(self, y, y_pred, sample_weight=None) -> Dict[str, tf.Tensor]:
        """Cross-entropy per task over the batch, ``{task: CE_k}``.

        Without ``sample_weight`` the batch mean. ``sample_weight``, one weight
        per example (shape ``(B,)``) or ``{task: (B,)}`` for every task, gives
        ``sum_i w_ik CE_ik / B``: Keras's reduction of a weighted loss
        ("sum_over_batch_size"), so weights of 1 give the plain mean and a
        batch split across replicas adds up to the same global loss.
        """
        return {t: tf.reduce_mean(ce) if n is None else tf.reduce_sum(ce) / n
                for t, (ce, n) in self._per_example(y, y_pred, sample_weight).items()}

    def _per_example(self, y, y_pred, sample_weight=None, select=None):
        """``{task: (per-example CE (B,), counted examples or None)}``. With ``partial_labels`` (multi-input
        batches) a label of -1 means "not this task's example": its CE is 0 and the task's mean runs
        over its labelled examples only. ``select`` (B,) bools does the same for the examples it leaves out
        (the environments outside ``risk_environments``)."""
        weights = self._task_sample_weights(sample_weight)
        out = {}
        for t in self.task_names:
            if self.partial_labels or select is not None:
                labelled = tf.reshape(y[t], [-1]) >= 0 if self.partial_labels else tf.ones_like(select)
                if select is not None:
                    labelled = tf.logical_and(labelled, select)
                ce = keras.losses.sparse_categorical_crossentropy(tf.maximum(y[t], 0), y_pred[t], from_logits=True)
                ce = tf.where(labelled, ce, tf.zeros_like(ce))
                n = tf.maximum(tf.reduce_sum(tf.cast(labelled, ce.dtype)), 1.0)
            else:
                ce, n = keras.losses.sparse_categorical_crossentropy(y[t], y_pred[t], from_logits=True), None
            if weights[t] is not None:
                ce = ce * tf.reshape(tf.cast(weights[t], ce.dtype), [-1])
            out[t] = (ce, n)
        return out

    def _task_sample_weights(self, sample_weight) -> Dict[str, Optional[tf.Tensor]]:
        if sample_weight is None or not isinstance(sample_weight, Mapping):
            return {t: sample_weight for t in self.task_names}
        if set(sample_weight) != set(self.task_names):
            raise ValueError(f"sample_weight as a dict must name exactly the tasks {list(self.task_names)}; "
                             f"got {sorted(sample_weight)}")
        return dict(sample_weight)

    def loss_parts(self, x=None, y=None, y_pred=None, sample_weight=None, training=True) -> Dict[str, object]:
        """The parts of the training loss (:mod:`tf_mtvib.terms`), per replica, and the logs' trackers updated:

        ``task_losses`` ``{task: CE_k}``; ``weighted`` the weighting's combination of them;
        ``regularisers`` the layers' losses (``beta * KL`` of each latent); ``penalties``
        ``{name: weight * value}`` of the model's :class:`~tf_mtvib.terms.LossTerm` s (none when ``x`` is
        None: a term reads the batch's inputs and extras); ``total`` their sum.
        """
        select = None
        if training and self.risk_environments:     # the task risks read these environments only (MT-CRL eq. 4)
            env = tf.reshape(tf.cast(x[ENVIRONMENT], tf.int32), [-1])
            select = tf.reduce_any(tf.equal(env[:, None], tf.constant(self.risk_environments)[None, :]), axis=1)
        per_example = self._per_example(y, y_pred, sample_weight, select)
        ce = {t: tf.reduce_mean(v) if n is None else tf.reduce_sum(v) / n for t, (v, n) in per_example.items()}
        weighted = self.weighting(ce, training=training)
        total = weighted
        regularisers = [tf.cast(extra, total.dtype) for extra in self.losses]   # beta * KL of each GaussianLatent
        for extra in regularisers:
            total = total + extra
        for tracker, t in zip(self._task_loss, self.task_names):
            tracker.update_state(ce[t])
        # the KL for the logs, from what each latent added to the loss: beta * mean KL (eq. 23's rate term)
        kls = [tf.add_n(latent.losses) / latent.beta for latent in self.latent_layers if latent.beta > 0]
        if kls:
            self._kl.update_state(tf.add_n(kls))
        penalties = {}
        if self.terms and x is not None:     # without the batch (x None: e.g. an attack's loss) no penalty
            from .terms import Step

            inputs = x if isinstance(x, Mapping) else {"image": x}
            step = Step(self, inputs, y, y_pred, {t: v for t, (v, _) in per_example.items()}, ce, bool(training))
            for term, tracker in zip(self.terms, self._term_trackers):
                value = term(step)
                tracker.update_state(value)
                penalties[term.name] = tf.cast(term.weight * value, total.dtype)
                total = total + penalties[term.name]
        return {"task_losses": ce, "weighted": weighted, "regularisers": regularisers, "penalties": penalties,
                "total": total}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training loss (MTVIB eq. 23 for ``mtvib``): the weighting of the per-task cross-entropies plus
        ``beta * KL`` of each latent plus the loss terms' penalties (:meth:`loss_parts`), divided by the
        number of replicas. ``sample_weight`` weights each example's cross-entropy (:meth:`task_losses`);
        the KL term and the accuracies are unweighted."""
        total = self.loss_parts(x, y, y_pred, sample_weight, training)["total"]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            total = total / tf.cast(replicas, total.dtype)
        return total

    def train_step(self, data):
        """Keras's step; for a weighting of gradients (``uses_task_gradients``, e.g. PCGrad) instead:

        1. each task's gradient of its per-replica mean CE, all-reduced (SUM) and divided by the
           replicas: the gradient of the global batch's mean, the same on every replica;
        2. the weighting combines them (``combine_gradients``);
        3. the gradient of the rest of the loss (regularisers, penalties; per replica, divided by the
           replicas) is added to the combination divided by the replicas, so that the optimizer's SUM
           all-reduce gives ``combined + mean(rest)``.

        Under a loss-scale optimizer every differentiated loss is scaled and the optimizer unscales.
        """
        if not getattr(self.weighting, "uses_task_gradients", False):
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            parts = self.loss_parts(x, y, y_pred, sample_weight, training=True)
            rest = tf.add_n([tf.zeros([])] + parts["regularisers"] + list(parts["penalties"].values()))
            scaled_tasks = [self.optimizer.scale_loss(parts["task_losses"][t]) for t in self.task_names]
            scaled_rest = self.optimizer.scale_loss(rest / replicas)
        images = x["image"] if isinstance(x, Mapping) else x
        self._loss_tracker.update_state(parts["total"], sample_weight=tf.shape(images)[0])
        task_grads = [tape.gradient(loss, variables) for loss in scaled_tasks]
        if replicas > 1:
            task_grads = _all_reduce_mean(task_grads, replicas)
        combined = self.weighting.combine_gradients(task_grads, self.optimizer.iterations)
        rest_grads = tape.gradient(scaled_rest, variables)
        del tape
        grads = []
        for var, c, r in zip(variables, combined, rest_grads):
            c = None if c is None else (c / replicas if replicas > 1 else c)
            g = c if r is None else (r if c is None else c + r)
            grads.append(tf.zeros_like(var) if g is None else g)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Per-task accuracy and the joint accuracy (every task right). With ``partial_labels`` (each task
        its own examples) each task's accuracy counts its labelled examples only, and there is no joint
        accuracy."""
        correct = []
        for acc, t in zip(self._task_acc, self.task_names):
            labels = y[t]
            mask = None
            if self.partial_labels:
                mask = tf.reshape(labels, [-1]) >= 0
                labels = tf.maximum(labels, 0)
            acc.update_state(labels, y_pred[t], sample_weight=None if mask is None else tf.cast(mask, tf.float32))
            correct.append(tf.equal(tf.argmax(y_pred[t], axis=-1, output_type=tf.int64), tf.cast(labels, tf.int64)))
        if not self.partial_labels:      # multi-input batches label no example for every task: no joint accuracy
            self._joint_acc.update_state(tf.cast(tf.reduce_all(tf.stack(correct, axis=0), axis=0), tf.float32))
        return self.get_metrics_result()

    def get_metrics_result(self):
        """The logs: every metric's result (``kl`` for models with a latent of
        ``beta > 0``) and what the weighting logs (its ``logs()``, e.g. each
        ``<task>_sigma``). In a cross-replica context (a custom loop, the end of
        a ``fit`` epoch) the metrics are all-reduced."""
        with_kl = any(latent.beta > 0 for latent in self.latent_layers)
        skip = {"kl"} if not with_kl else set()
        if self.partial_labels:
            skip.add("joint_accuracy")
        logs = {m.name: m.result() for m in self.metrics if m.name not in skip}
        logs.update(self.weighting.logs())
        return logs

    def fit(self, *args, **kwargs):
        """``keras.Model.fit`` with the weighting's callbacks first (pass ``callbacks`` by keyword)."""
        extra = self.weighting.callbacks()
        if extra:
            if len(args) > 5:
                raise TypeError("MultiTaskModel.fit: pass callbacks (and what follows) by keyword")
            given = kwargs.get("callbacks")
            if isinstance(given, keras.callbacks.CallbackList):
                given.callbacks[:0] = extra
                for c in extra:
                    c.set_model(self)
            else:
                kwargs["callbacks"] = [*extra, *(given or [])]
        return super().fit(*args, **kwargs)

    # -- inference ---------------------------------------------------------
    def probabilities(self, images, samples: int = 0) -> Dict[str, tf.Tensor]:
        """Softmax probabilities per task.

        ``samples=0``: mean mode (z = posterior mean, one deterministic pass).
        ``samples=N``: average of the decoders' probabilities over N posterior
        samples of z (Alemi et al.'s 12-sample evaluation).
        """
        samples = int(samples)
        if samples < 0:
            raise ValueError("samples must be >= 0")
        if not self.is_stochastic:
            samples = 0
        fn = self._proba_fns.get(samples)
        if fn is None:
            fn = tf.function(lambda x: self._probabilities(x, samples), reduce_retracing=True)
            self._proba_fns[samples] = fn
        return fn(tf.convert_to_tensor(images, tf.float32))

    def _probabilities(self, images, samples: int) -> Dict[str, tf.Tensor]:
        """Softmax of :meth:`mean_logits` (``samples == 0``), or the mean over ``samples`` draws
        of the softmax of :meth:`sampled_logits` (through the protocol, for export too)."""
        if samples == 0:
            return {t: tf.nn.softmax(l) for t, l in self.mean_logits(images).items()}
        return {t: tf.reduce_mean(tf.nn.softmax(l), axis=0) for t, l in self.sampled_logits(images, samples).items()}

    # -- serialisation -----------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "weighting": keras.saving.serialize_keras_object(self.weighting),
            "dataset_spec": spec_to_config(self.dataset_spec),
            "model_name": self.model_name,
            "hparams": self.hparams,
            **({"terms": [keras.saving.serialize_keras_object(t) for t in self.terms]} if self.terms else {}),
            **({"extras": list(self.extras)} if self.extras else {}),
            **({"partial_labels": True} if self.partial_labels else {}),
            **({"risk_environments": list(self.risk_environments)} if self.risk_environments else {}),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects=custom_objects)
        spec = spec_from_config(config.pop("dataset_spec"))
        return cls(network, weighting, spec, **config)


def _all_reduce_mean(task_grads, replicas: int):
    """Each task's gradients summed over the replicas and divided by their number (None stays None).

    One all-reduce (in replica context, as the optimizer's and synchronized BatchNorm's) of every
    gradient flattened into one vector. Nothing in the step may ``merge_call`` between these
    collectives (e.g. assigning a mean-aggregated variable): the replicas' collectives would then
    be keyed in a thread-dependent order and pair up wrongly."""
    flat = [g for grads in task_grads for g in grads if g is not None]
    if not flat:
        return task_grads
    vector = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in flat], axis=0)
    vector = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, vector) / replicas
    sizes = [g.shape.num_elements() for g in flat]
    pieces = iter(tf.cast(tf.reshape(p, tf.shape(g)), g.dtype)
                  for p, g in zip(tf.split(vector, sizes), flat))
    return [[None if g is None else next(pieces) for g in grads] for grads in task_grads]


def split_at_latents(network: keras.Model):
    """``(encoder, head)``: ``network`` cut at the inputs of its Gaussian latent layers.

    ``encoder`` maps images to the features the latents read (deterministic),
    ``head`` maps those features through the latents to ``{task: logits}``.
    ``None`` if the network has no latent or its outputs also depend on
    something other than the latents (then the whole network is sampled).
    """
    latents = latent_layers(network)
    if not latents:
        return None
    try:
        features = [l.input for l in latents]
        encoder = keras.Model(network.input, features if len(features) > 1 else features[0])
        head = keras.Model(features if len(features) > 1 else features[0], network.output)
    except Exception:   # not a functional network, or the outputs bypass the latents
        return None
    return encoder, head


def probabilities_of(network: keras.Model, images, samples: int = 0) -> Dict[str, tf.Tensor]:
    """Softmax probabilities of ``network`` (mean mode if ``samples == 0``,
    else averaged over ``samples`` posterior draws, drawn in one batched pass)."""
    if samples == 0:   # the mean, whatever posterior_sampling scope is active while this is traced
        with posterior_sampling(network, enabled=False):
            logits = network(images, training=False)
        return {t: tf.nn.softmax(l) for t, l in logits.items()}
    return {t: tf.reduce_mean(tf.nn.softmax(l), axis=0) for t, l in sampled_logits(network, images, samples).items()}


def sampled_logits(network: keras.Model, images, samples: int, parts=None) -> Dict[str, tf.Tensor]:
    """Logits for ``samples`` posterior draws of z per image, shape ``(samples, B, classes)``.

    BatchNorm is in inference mode. The deterministic encoder (everything
    before the latents, :func:`split_at_latents`; pass ``parts`` to reuse a
    split) runs once per image; only its features are tiled ``samples`` times
    through the latents and decoders.
    """
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    parts = split_at_latents(network) if parts is None else parts
    batch = tf.shape(images)[0]
    if not parts:
        sampled, inputs = network, _tile(images, samples)
    else:
        encoder, sampled = parts
        features = encoder(images, training=False)
        inputs = [_tile(f, samples) for f in features] if isinstance(features, (list, tuple)) else _tile(features, samples)
    with posterior_sampling(sampled):   # active while this call is traced
        logits = sampled(inputs, training=False)
    return {t: tf.reshape(l, tf.concat([[samples, batch], tf.shape(l)[1:]], axis=0)) for t, l in logits.items()}


def network_logits(network: keras.Model) -> Callable:
    """Logits of ``network`` in inference (BatchNorm statistics fixed; z = posterior mean), in float32."""
    def model_fn(x):
        with _float32_compute(network):
            return network(x, training=False)
    return model_fn


def posterior_logits(network: keras.Model, samples: int) -> Callable:
    """Logits of ``network`` for ``samples`` posterior draws of z per image, shape
    ``(samples, B, classes)`` (:func:`tf_mtvib.models.sampled_logits`: the
    deterministic encoder runs once, so EOT costs little more than one pass)."""
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    parts = split_at_latents(network) or False

    def model_fn(x):
        with _float32_compute(network):
            return sampled_logits(network, x, samples, parts)
    return model_fn


def _float32_compute(network):
    from .precision import float32_compute

    return float32_compute(network)


def _tile(t, samples: int):
    """``samples`` copies of the batch ``t`` stacked along the batch axis (sample-major)."""
    return tf.tile(t, tf.concat([[samples], tf.ones([tf.rank(t) - 1], tf.int32)], axis=0))


def kl_per_example(model: MultiTaskModel, images) -> tf.Tensor:
    """KL(p(z|x) || N(0, I)) per example in nats, summed over the model's latent layers.

    For a deterministic model this is zero.
    """
    latents = model.latent_layers
    if not latents:
        return tf.zeros([tf.shape(images)[0]])
    features = keras.Model(model.network.input, [l.input for l in latents])(images, training=False)
    if len(latents) == 1:
        features = [features]
    return tf.add_n([l.kl_divergence(f) for l, f in zip(latents, features)])


def summary_table(specs: Sequence[DatasetSpec], names: Sequence[str] = MODEL_NAMES) -> str:
    """Parameter counts per model and data set, and the trunks' flatten sizes."""
    lines = ["| data set | input | flatten | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for spec in specs:
        conv = spec.input_shape[0] in CONV_TRUNKS
        cells = []
        for n in names:
            if n in ("vib_mlp", "mlp") and len(spec.tasks) > 1:
                cells.append("-")
            elif n not in ("vib_mlp", "mlp") and not conv:
                cells.append("-")
            else:
                cells.append(f"{build_model(n, spec).count_params():,}")
        flat = flatten_size(spec) if conv else "-"
        lines.append(f"| {spec.name} | {'x'.join(map(str, spec.input_shape))} | {flat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tf_mtvib.models
    from .datasets.spec import SPECS

    print(summary_table(list(SPECS.values())))
