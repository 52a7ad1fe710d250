"""One training step on one device and under MirroredStrategy on two logical CPUs.

Run as a script (the logical devices must be configured before TensorFlow
starts): prints a JSON dict {model: {"replicas": n, "max_abs_diff": d,
"max_abs_update": u, ...}} comparing the weights after one step. An argument
``model:weighting`` trains that weighting for 3 epochs of 2 steps instead (``model:weighting@E``: E epochs) and
also reports the weighting's non-trainable state on each side (``@E*S``: E epochs of S steps, on the first
4 S examples). A prefix ``custom:``
(``custom:model:weighting``) trains with the project's custom loop
(``tf_mtvib.distributed.custom_fit``, the multi-worker path) instead of ``fit``.
"""
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_mtvib.datasets.spec import get_spec  # noqa: E402
from tf_mtvib.models import build_model, default_weighting  # noqa: E402

spec = get_spec("multimnist")
rng = np.random.default_rng(0)
x = rng.random((8,) + spec.input_shape, dtype=np.float32)
y = {t: rng.integers(0, 10, 8) for t in spec.task_names}


#: VIB models: Alemi et al.'s linear latent head with the posterior collapsed onto its mean
#: (sigma ~ 1e-5, see collapse_posterior), so that the replicas' own draws of z cannot make the
#: two runs differ, and beta = 1 so that the KL term (divided by the replicas like the
#: log_sigma terms) moves the weights visibly.
VIB_SETTINGS = {"latent_head": "linear", "beta": 1.0}


def collapse_posterior(model):
    """Scale half of each latent's projection: kernel 0, bias -40, so sigma = softplus(-45) + 1e-5."""
    for latent in model.latent_layers:
        k = latent.latent_dim
        kernel, bias = latent.projection.kernel, latent.projection.bias
        kernel.assign(np.concatenate([kernel.numpy()[:, :k], np.zeros_like(kernel.numpy()[:, k:])], axis=1))
        bias.assign(np.concatenate([bias.numpy()[:k], np.full(k, -40.0, np.float32)]))


def custom_steps(model, strategy, epochs, examples=8):
    """``epochs`` epochs of the custom loop over the first ``examples`` examples, global batch 4, in a temporary
    run directory."""
    import tempfile
    from pathlib import Path

    from tf_mtvib.datasets.split import Split
    from tf_mtvib.distributed import custom_fit

    split = Split((x[:examples] * 255).astype(np.uint8), {t: v[:examples].astype(np.int64) for t, v in y.items()}, spec)
    with tempfile.TemporaryDirectory() as tmp:
        custom_fit(model, strategy, split, batch_size=4, epochs=epochs, run_dir=Path(tmp), verbose=0)


def dense_model(weighting):
    """``dense``: image -> Flatten -> Dense 16 (tanh) -> a Dense head per task, no BatchNorm (whose
    per-replica statistics would make the sides differ without synchronisation)."""
    from tf_mtvib.models import MultiTaskModel, build_weighting

    image = keras.Input(spec.input_shape)
    h = keras.layers.Dense(16, activation="tanh")(keras.layers.Flatten()(image))
    network = keras.Model(image, {t: keras.layers.Dense(10, name=f"head_{t}")(h) for t in spec.task_names})
    return MultiTaskModel(network, build_weighting("gs", spec, weighting), spec, model_name="dense")


def one_step(name, strategy, init, weighting=None, epochs=1, loop="fit", examples=8):
    with strategy.scope():
        extra = {"init_log_sigma": 0.2} if (weighting or default_weighting(name)) == "uncertainty" else {}
        model = dense_model(weighting) if name == "dense" else build_model(
            name, spec, weighting=weighting, sync_batchnorm=True, latent_dim=8, **extra, **VIB_SETTINGS)
        if init is None:
            collapse_posterior(model)
        else:
            model.set_weights(init)
        model.compile(optimizer=keras.optimizers.SGD(1e-3 if weighting else 0.1))
    before = [w.copy() for w in model.get_weights()]
    if loop == "custom":
        custom_steps(model, strategy, epochs, examples)
        return before, model, strategy.num_replicas_in_sync
    ds = tf.data.Dataset.from_tensor_slices((x[:examples], {t: v[:examples] for t, v in y.items()}))
    ds = ds.batch(4 if weighting else 8)
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    return before, model, strategy.num_replicas_in_sync


def trainable_init(model, init):
    """The initial values of ``model``'s trainable weights, from ``init`` (``get_weights`` order)."""
    ids = {id(v): i for i, v in enumerate(model.weights)}
    return [init[ids[id(v)]] for v in model.trainable_weights]


out = {}
for arg in sys.argv[1:]:
    # "model" (one step) or "model:weighting" (3 epochs of 2 steps, for per-epoch state; "@E": E epochs,
    # "@E*S": E epochs of S steps of 4 examples)
    loop, _, rest = arg.partition(":") if arg.startswith("custom:") else ("fit", "", arg)
    rest, _, given = rest.partition("@")
    given, _, steps = given.partition("*")
    name, _, weighting = rest.partition(":")
    epochs = int(given) if given else 3 if weighting else 1
    examples = 4 * int(steps) if steps else 8
    keras.utils.set_random_seed(0)
    init, single_model, _ = one_step(name, tf.distribute.get_strategy(), None, weighting or None, epochs, loop,
                                     examples)
    _, mirrored_model, replicas = one_step(name, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), init,
                                           weighting or None, epochs, loop, examples)
    single, mirrored = single_model.get_weights(), mirrored_model.get_weights()
    out[arg] = {
        "replicas": replicas,
        "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)),
        "max_abs_update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, init)),
        "max_abs_diff_trainable": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                      for a, b in zip(single_model.trainable_weights, mirrored_model.trainable_weights)),
        "max_abs_update_trainable": max(float(np.max(np.abs(np.asarray(a) - b)))
                                        for a, b in zip(single_model.trainable_weights, trainable_init(single_model, init))),
        "log_sigma_update_single": [float(a - b) for a, b, w in zip(single, init, init) if np.ndim(a) == 0],
        "log_sigma_update_mirrored": [float(a - b) for a, b in zip(mirrored, init) if np.ndim(a) == 0],
        "weighting_state_single": {v.name: np.asarray(v).tolist() for v in single_model.weighting.non_trainable_weights},
        "logs_single": {k: float(v) for k, v in single_model.get_metrics_result().items()},
        "logs_mirrored": {k: float(v) for k, v in mirrored_model.get_metrics_result().items()},
        "weighting_state_mirrored": {v.name: np.asarray(v).tolist()
                                     for v in mirrored_model.weighting.non_trainable_weights},
    }
print(json.dumps(out))
