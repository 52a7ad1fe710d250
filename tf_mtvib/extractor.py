"""A frozen feature extractor for the digit domains (VMTL's stand-in for VGG16 on ImageNet).

VMTL (Shen et al. 2021, supplement B) works on fixed 4,096-d VGG16 fc7 features of an ImageNet-trained
network: features learned on another data set, then frozen. Here a small CNN is trained on Fashion-MNIST's
*train* split (never on the digits the tasks hold) and frozen; its penultimate layer gives the features:

    conv 3x3 32 - ReLU - max-pool 2 - conv 3x3 64 - ReLU - max-pool 2 - flatten - FC ``feature_dim`` - ReLU

It is cached on disk (``cache_dir()``), keyed by its settings and Fashion-MNIST's digest, with a JSON
beside it holding its Fashion-MNIST test accuracy. The VMTL families put it, frozen, in front of their
network, so that a model (and its export) takes pixels and an attack acts in pixel space.
"""
from __future__ import annotations

import json
import pathlib
from typing import Optional

__all__ = ["FEATURE_DIM", "EPOCHS", "build_extractor", "ensure_fashion_extractor", "fashion_extractor"]

#: The features' width (VGG16 fc7: 4,096; a 28x28 grey image needs far fewer)
FEATURE_DIM = 256
#: Pretraining epochs on Fashion-MNIST train (Adam 1e-3, batch 128)
EPOCHS = 2
_VERSION = 1


def build_extractor(feature_dim: int = FEATURE_DIM, name: str = "extractor"):
    """The extractor's network, ``(28, 28, 1)`` in [0, 1] -> ``(feature_dim,)`` (untrained)."""
    import keras

    image = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv1")(image)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(64, 3, activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    features = keras.layers.Dense(feature_dim, activation="relu", name="features")(h)
    return keras.Model(image, features, name=name)


def _settings(feature_dim: int, epochs: int, seed: int, limit: Optional[int]) -> dict:
    from .datasets.mnist import source_digest

    return {"feature_dim": int(feature_dim), "epochs": int(epochs), "seed": int(seed),
            "limit": None if limit is None else int(limit), "source": source_digest("fashion-mnist", "train"),
            "version": _VERSION}


def _paths(settings: dict):
    from .datasets.cache import entry_path

    path = entry_path("extractor", settings, ".weights.h5")
    return path, pathlib.Path(str(path).replace(".weights.h5", ".json"))


def ensure_fashion_extractor(data_dir=None, *, feature_dim: int = FEATURE_DIM, epochs: int = EPOCHS, seed: int = 0,
                             limit: Optional[int] = None, verbose: int = 0) -> pathlib.Path:
    """The cached weights of the extractor pretrained on Fashion-MNIST train (in ``data_dir``): nothing to do
    when they are cached; otherwise trained (about a minute on 2 cores) and cached. ``limit``: train on the
    first ``limit`` images only (tests). Returns the weights' path."""
    import keras
    import numpy as np

    from .datasets import cache_dir, resolve_data_dir
    from .datasets.mnist import load_source

    settings = _settings(feature_dim, epochs, seed, limit)
    path, info_path = _paths(settings)
    if path.is_file() and info_path.is_file():
        return path
    data_dir = resolve_data_dir(data_dir)
    x, y = load_source("fashion-mnist", "train", data_dir, 10)
    xt, yt = load_source("fashion-mnist", "test", data_dir, 10)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    keras.utils.set_random_seed(seed)
    extractor = build_extractor(feature_dim)
    head = keras.layers.Dense(10, name="fashion_head")
    classifier = keras.Sequential([extractor, head])
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    classifier.fit(x.astype(np.float32) / 255.0, y, batch_size=128, epochs=epochs, verbose=verbose)
    _, accuracy = classifier.evaluate(xt.astype(np.float32) / 255.0, yt, batch_size=1000, verbose=0)
    info = {**settings, "fashion_test_accuracy": float(accuracy), "train_images": int(len(x))}
    cache_dir().mkdir(parents=True, exist_ok=True)
    extractor.save_weights(path)
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def fashion_extractor(data_dir=None, *, feature_dim: int = FEATURE_DIM, epochs: int = EPOCHS, seed: int = 0,
                      limit: Optional[int] = None, verbose: int = 0):
    """The extractor pretrained on Fashion-MNIST train, frozen (``trainable = False``), its weights from
    :func:`ensure_fashion_extractor` (cached, or trained first). Its ``extractor_info`` attribute holds the
    settings and the Fashion-MNIST test accuracy."""
    path = ensure_fashion_extractor(data_dir, feature_dim=feature_dim, epochs=epochs, seed=seed, limit=limit,
                                    verbose=verbose)
    _, info_path = _paths(_settings(feature_dim, epochs, seed, limit))
    extractor = build_extractor(feature_dim)
    extractor.load_weights(path)
    extractor.trainable = False
    extractor.extractor_info = json.loads(info_path.read_text())
    return extractor
