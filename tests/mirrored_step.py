"""One training step on one device and under MirroredStrategy on two logical CPUs.

Run as a script (the logical devices must be configured before TensorFlow
starts): prints a JSON dict {model: {"replicas": n, "max_abs_diff": d,
"max_abs_update": u}} comparing the weights after one step.
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


def one_step(name, strategy, init):
    with strategy.scope():
        extra = {"init_log_sigma": 0.2} if default_weighting(name) == "uncertainty" else {}
        model = build_model(name, spec, sync_batchnorm=True, latent_dim=8, **extra)
        if init is not None:
            model.set_weights(init)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in model.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    return before, model.get_weights(), strategy.num_replicas_in_sync


out = {}
for name in sys.argv[1:]:
    keras.utils.set_random_seed(0)
    init, single, _ = one_step(name, tf.distribute.get_strategy(), None)
    _, mirrored, replicas = one_step(name, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), init)
    out[name] = {
        "replicas": replicas,
        "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)),
        "max_abs_update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, init)),
        "log_sigma_update_single": [float(a - b) for a, b, w in zip(single, init, init) if np.ndim(a) == 0],
        "log_sigma_update_mirrored": [float(a - b) for a, b in zip(mirrored, init) if np.ndim(a) == 0],
    }
print(json.dumps(out))
