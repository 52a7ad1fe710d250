"""N training steps of the custom loop under one strategy; writes the weights to an .npz file.

    python tests/multiworker_steps.py OUT.npz MODE MODEL [STEPS]

MODE: ``multi-worker`` (MultiWorkerMirroredStrategy from TF_CONFIG; run it as
several processes), ``mirrored`` (MirroredStrategy over two logical CPUs in
this process), ``default`` (one device, whose BatchNorm sees the whole global
batch, as synchronised BatchNorm does across replicas), all three through the
custom loop, or ``fit`` (Keras fit on one device). Everything else is fixed so that the runs are
comparable: STEPS (default 8) global batches of 16 synthetic images of the
MultiMNIST shape (one epoch, shuffled with seed 0), SGD with learning rate 0.01, the
same seeded initial weights, synchronised BatchNorm. The .npz holds the
initial weights (``init_<i>``) and the trained ones (``w_<i>``) in
``model.get_weights()`` order; only the chief writes it.
"""
import pathlib
import sys
import tempfile

import tensorflow as tf

OUT, MODE, MODEL = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if MODE == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif MODE == "multi-worker":
    from tf_mtvib import distributed

    strategy = distributed.make_multi_worker_strategy()
else:
    strategy = tf.distribute.get_strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_mtvib import distributed  # noqa: E402
from tf_mtvib.datasets import Split, get_spec, to_dataset  # noqa: E402
from tf_mtvib.models import build_model  # noqa: E402

BATCH, SEED = 16, 0
N = BATCH * (int(sys.argv[4]) if len(sys.argv) > 4 else 8)
spec = get_spec("multimnist")
rng = np.random.default_rng(0)
split = Split(rng.integers(0, 256, (N,) + spec.input_shape, dtype=np.uint8),
              {t: rng.integers(0, spec.task(t).num_classes, N) for t in spec.task_names}, spec)

keras.utils.set_random_seed(SEED)
with strategy.scope():
    model = build_model(MODEL, spec, sync_batchnorm=True, latent_dim=8, init_log_sigma=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
init = [w.copy() for w in model.get_weights()]
if MODE == "fit":
    model.fit(to_dataset(split, BATCH, shuffle=True, seed=SEED), epochs=1, verbose=0, shuffle=False)
else:
    with tempfile.TemporaryDirectory() as run_dir:
        distributed.custom_fit(model, strategy, split, BATCH, 1, pathlib.Path(run_dir), seed=SEED, verbose=0)
assert int(model.optimizer.iterations.numpy()) == N // BATCH
if distributed.is_chief(strategy):
    np.savez(OUT, replicas=strategy.num_replicas_in_sync, **{f"init_{i}": w for i, w in enumerate(init)},
             **{f"w_{i}": w for i, w in enumerate(model.get_weights())})
