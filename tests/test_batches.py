"""Batches carry extras (#41 item 3): an environment id (MT-CRL) and multi-input batches (VMTL)
flow through the pipeline and ``train_step``; families that declare nothing get plain batches."""
import collections
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib.datasets import DataError, Split, to_dataset, to_multi_input_dataset
from tf_mtvib.datasets.spec import DatasetSpec, Task
from tf_mtvib.models import MultiTaskModel
from tf_mtvib.terms import IRMPenalty
from tf_mtvib.weightings import FixedWeighting

SPEC = DatasetSpec("tiny", (4, 4, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1"))))


def tiny_split(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8),
                 {"a": rng.integers(0, 3, n), "b": rng.integers(0, 2, n)}, SPEC,
                 extras={"env": np.arange(n) % 3, "landmarks": rng.random((n, 10), dtype=np.float32)})


def tiny_model(spec=SPEC, terms=(), extras=(), partial_labels=False):
    keras.utils.set_random_seed(0)
    image = keras.Input(spec.input_shape)
    h = keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(image))
    network = keras.Model(image, {t.name: keras.layers.Dense(t.num_classes)(h) for t in spec.tasks})
    return MultiTaskModel(network, FixedWeighting(spec.task_names), spec, model_name="tiny", terms=terms,
                          extras=extras, partial_labels=partial_labels)


def test_plain_batches_are_unchanged_without_extras():
    x, y = next(iter(to_dataset(tiny_split(), 8)))
    assert isinstance(x, tf.Tensor) and x.shape == (8, 4, 4, 1) and x.dtype == tf.float32
    assert set(y) == {"a", "b"}


def test_batches_with_an_environment_id_reach_the_train_step():
    split = tiny_split()
    ds = to_dataset(split, 8, extras=("env",))
    x, y = next(iter(ds))
    assert set(x) == {"image", "env"} and x["image"].dtype == tf.float32
    np.testing.assert_array_equal(x["env"].numpy(), split.extras["env"][:8])
    np.testing.assert_allclose(x["image"].numpy(), split.images[:8] / 255.0, rtol=1e-6)
    model = tiny_model(terms=[IRMPenalty(num_environments=3, weight=5.0)], extras=("env",))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(ds, epochs=2, verbose=0)
    assert all(v > 0 for v in history.history["irm_penalty"])
    # the same batches through the custom (multi-worker) loop, on one device
    from tf_mtvib.distributed import custom_fit

    model2 = tiny_model(terms=[IRMPenalty(num_environments=3)], extras=("env",))
    model2.compile(optimizer=keras.optimizers.SGD(0.1))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = custom_fit(model2, tf.distribute.get_strategy(), split, 8, 1, pathlib.Path(tmp), verbose=0,
                         extras=("env",))
    assert out["epochs_run"] == 1 and float(model2.get_metrics_result()["irm_penalty"]) > 0


def test_a_missing_extra_is_a_clear_data_error():
    with pytest.raises(DataError, match="collection"):
        to_dataset(tiny_split(), 8, extras=("collection",))


@pytest.fixture(scope="module")
def digits_and_fashion(data_dir):
    """Two tasks with their own images, as in VMTL: MNIST digits and Fashion-MNIST items (600 each)."""
    from tf_mtvib.datasets.mnist import load_source

    spec = DatasetSpec("digits_fashion", (28, 28, 1),
                       (Task("digit", tuple("0123456789")), Task("item", tuple("0123456789"))))
    splits = {}
    for task, source in (("digit", "mnist"), ("item", "fashion-mnist")):
        images, labels = load_source(source, "train", data_dir, 10)
        rows = np.random.default_rng(0).choice(len(labels), 600, replace=False)
        one = DatasetSpec(source, (28, 28, 1), (Task(task, tuple("0123456789")),))
        splits[task] = Split(images[rows].reshape(-1, 28, 28, 1), {task: labels[rows].astype(np.int64)}, one)
    return spec, splits


def test_multi_input_batches_are_class_balanced_per_task_with_task_ids(digits_and_fashion):
    spec, splits = digits_and_fashion
    ds = to_multi_input_dataset(splits, per_task_batch=20, seed=0, task_names=spec.task_names)
    for x, y in ds.take(3):
        assert x["image"].shape == (40, 28, 28, 1)
        np.testing.assert_array_equal(x["task"].numpy(), [0] * 20 + [1] * 20)
        digit, item = y["digit"].numpy(), y["item"].numpy()
        assert (digit[20:] == -1).all() and (item[:20] == -1).all()
        assert collections.Counter(digit[:20]) == {c: 2 for c in range(10)}     # exactly balanced
        assert collections.Counter(item[20:]) == {c: 2 for c in range(10)}
    # each half holds its own task's images: the first 20 are MNIST digits, the last 20 Fashion-MNIST items
    digit_images = {bytes(im) for im in splits["digit"].images}
    x, _ = next(iter(ds))
    halves = (np.round(x["image"].numpy() * 255).astype(np.uint8))
    assert all(bytes(im) in digit_images for im in halves[:20])
    assert not any(bytes(im) in digit_images for im in halves[20:])


def test_multi_input_batches_train_and_each_task_is_scored_on_its_own_examples(digits_and_fashion):
    spec, splits = digits_and_fashion
    ds = to_multi_input_dataset(splits, per_task_batch=20, seed=0, task_names=spec.task_names)
    model = tiny_model(spec, partial_labels=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = next(iter(ds))
    logits = model(x, training=False)
    parts = model.loss_parts(x, y, logits, training=False)
    for k, t in enumerate(spec.task_names):          # the mean CE over the task's own 20 examples only
        own = slice(20 * k, 20 * (k + 1))
        expected = keras.losses.sparse_categorical_crossentropy(y[t][own], logits[t][own], from_logits=True)
        assert float(parts["task_losses"][t]) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-5)
    history = model.fit(ds, epochs=3, steps_per_epoch=15, verbose=0)
    assert history.history["digit_loss"][-1] < history.history["digit_loss"][0]
    assert history.history["item_loss"][-1] < history.history["item_loss"][0]
    # the accuracies count each task's own examples (not the other half's -1 labels)
    model.reset_metrics()
    model.compute_metrics(x, y, model(x, training=False))
    for t, k in (("digit", 0), ("item", 1)):
        own = slice(20 * k, 20 * (k + 1))
        pred = np.argmax(model(x, training=False)[t].numpy()[own], axis=-1)
        assert float(model.get_metrics_result()[f"{t}_accuracy"]) == pytest.approx(np.mean(pred == y[t].numpy()[own]))


def test_multi_input_batches_carry_each_examples_extras_with_its_image(digits_and_fashion):
    """An extra (here each image's own pixel sum and its row, (N, 2)) rides with its image through the
    class-balanced shuffling; a split without the extra is refused."""
    import dataclasses

    spec, splits = digits_and_fashion
    tagged = {t: dataclasses.replace(s, extras={"tag": np.stack([s.images.reshape(len(s), -1).sum(1).astype(np.float32),
                                                                np.arange(len(s), dtype=np.float32)], 1)})
              for t, s in splits.items()}
    ds = to_multi_input_dataset(tagged, per_task_batch=20, seed=0, task_names=spec.task_names, extras=["tag"])
    for x, _ in ds.take(2):
        assert x["tag"].shape == (40, 2) and set(x) == {"image", "task", "tag"}
        sums = np.round(x["image"].numpy() * 255).reshape(40, -1).sum(1)
        np.testing.assert_allclose(x["tag"].numpy()[:, 0], sums, rtol=1e-6)
        for k, t in enumerate(spec.task_names):
            rows = x["tag"].numpy()[20 * k:20 * (k + 1), 1].astype(int)
            np.testing.assert_array_equal(np.round(x["image"].numpy()[20 * k:20 * (k + 1)] * 255).astype(np.uint8),
                                          splits[t].images[rows])
    with pytest.raises(DataError, match="tag"):
        to_multi_input_dataset(splits, 20, task_names=spec.task_names, extras=["tag"])


def test_multi_input_splits_must_agree_and_carry_their_task(digits_and_fashion):
    _, splits = digits_and_fashion
    with pytest.raises(ValueError, match="name exactly"):
        to_multi_input_dataset(splits, 10, task_names=["digit"])
    with pytest.raises(DataError, match="no labels"):
        to_multi_input_dataset({"digit": splits["item"], "item": splits["item"]}, 10)
