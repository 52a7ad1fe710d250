"""One training step of every package model on one fixed batch, for the old/new code comparison.

Usage: ``python tests/compat_step.py save|load DIR``. Runs with whichever
``tf_mtvib`` is first on PYTHONPATH (the code before the family refactor, or
today's). ``save``: builds each model, writes its initial weights to
``DIR/<name>.init.weights.h5``; ``load``: builds each model and loads those
weights. Then, either way: one SGD step on one fixed batch, the updated weights
to ``DIR/<name>.<mode>.after.npz``, and a JSON line ``{name: {"loss", "params"}}``.
"""
import json
import pathlib
import sys

import keras
import numpy as np

from tf_mtvib.datasets.spec import get_spec
from tf_mtvib.models import build_model

#: the models that existed before the refactor (families added since have no old code to compare with)
MODEL_NAMES = ("stl", "gs", "uwl", "stvib", "mtvib", "vib_mlp", "mlp")
mode, out = sys.argv[1], pathlib.Path(sys.argv[2])
spec = {n: get_spec("mnist" if n in ("vib_mlp", "mlp") else "multimnist") for n in MODEL_NAMES}
result = {}
for name in MODEL_NAMES:
    s = spec[name]
    rng = np.random.default_rng(0)
    x = rng.random((16,) + s.input_shape, dtype=np.float32)
    y = {t: rng.integers(0, s.task(t).num_classes, 16) for t in s.task_names}
    keras.utils.set_random_seed(0)
    model = build_model(name, s, latent_dim=8)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    init = out / f"{name}.init.weights.h5"
    if mode == "save":
        model.save_weights(init)
    else:
        model.load_weights(init)
    keras.utils.set_random_seed(1)     # the same posterior draws of z in both
    loss = model.train_on_batch(x, y, return_dict=True)["loss"]
    np.savez(out / f"{name}.{mode}.after.npz", *[w.numpy() for w in model.weights])
    result[name] = {"loss": float(loss), "params": int(model.count_params())}
print(json.dumps(result))
