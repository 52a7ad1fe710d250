"""Training steps under mixed_float16 with loss scaling, on one device and under
MirroredStrategy on two logical CPUs (the devices must be configured before
TensorFlow starts, hence a script).

Usage: ``python tests/mixed_precision_step.py MODEL [PRECISION]``. Builds
``MODEL`` (latent_dim 8) with SGD wrapped as ``train.py`` wraps its Adam
for PRECISION (default mixed_float16: in a ``LossScaleOptimizer``; SGD so
that the updates are the gradients, which the strategies must agree on), runs
``fit`` steps on the same batch from the same initial weights with each
strategy until the first update is applied (the first steps overflow float16
at the initial loss scale and are skipped) and prints a JSON dict: the
optimizer's class, the steps taken, the loss scale and the number of applied
updates after them, the logged losses, and the largest
difference of a trainable weight between the two strategies next to the
largest update of one.
"""
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_mtvib.datasets.spec import get_spec  # noqa: E402
from tf_mtvib.models import build_model  # noqa: E402
from tf_mtvib.precision import policy_scope, wrap_optimizer  # noqa: E402

name = sys.argv[1]
precision = sys.argv[2] if len(sys.argv) > 2 else "mixed_float16"
spec = get_spec("multimnist")
rng = np.random.default_rng(0)
x = rng.random((8,) + spec.input_shape, dtype=np.float32)
y = {t: rng.integers(0, 10, 8) for t in spec.task_names}


MAX_STEPS = 8   # from a loss scale of 2**15, the first steps overflow float16 and are skipped


def steps(strategy, init):
    with strategy.scope(), policy_scope(precision):
        model = build_model(name, spec, sync_batchnorm=True, latent_dim=8)
        if init is not None:
            model.set_weights(init)
        model.compile(optimizer=wrap_optimizer(keras.optimizers.SGD(0.1), precision))
    before = model.get_weights(), [w.numpy().copy() for w in model.trainable_weights]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    opt = model.optimizer
    inner = getattr(opt, "inner_optimizer", opt)
    history, taken = {"loss": []}, 0
    while taken < MAX_STEPS and int(inner.iterations.numpy()) == 0:   # up to the first applied update
        history["loss"] += model.fit(ds, epochs=1, verbose=0, shuffle=False).history["loss"]
        taken += 1
    return before, model, {
        "steps": taken,
        "optimizer": type(opt).__name__,
        "loss_scale": float(opt.dynamic_scale.numpy()) if hasattr(opt, "dynamic_scale") else None,
        "applied_updates": int(inner.iterations.numpy()),
        "loss": [float(v) for v in history["loss"]],
        "replicas": strategy.num_replicas_in_sync,
        "compute_dtype": model.network.get_layer("conv1").compute_dtype,
    }


keras.utils.set_random_seed(0)
(init, init_trainable), single, out_single = steps(tf.distribute.get_strategy(), None)
_, mirrored, out_mirrored = steps(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), init)
w_single, w_mirrored = ([w.numpy() for w in m.trainable_weights] for m in (single, mirrored))
print(json.dumps({
    "single": out_single, "mirrored": out_mirrored,
    "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w_single, w_mirrored)),
    "max_abs_update": max(float(np.max(np.abs(a - b))) for a, b in zip(w_single, init_trainable)),
}))
