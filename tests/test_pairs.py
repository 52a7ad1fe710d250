"""The pair-split Multi-MNIST of MT-CRL (Hu et al. 2022, App. C): tf_mtvib/datasets/pairs.py."""
import numpy as np
import pytest

from tf_mtvib.datasets import get_spec, load
from tf_mtvib.datasets.pairs import ENVIRONMENTS, PAIR_COUNTS, make_pairs, pair_split


def _pool(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)   # no zero pixel: placement is visible
    return images, labels


def test_pair_split_is_3_1_1_disjoint_covers_all_100_and_depends_on_the_seed():
    parts = pair_split(0)
    assert {k: len(v) for k, v in parts.items()} == PAIR_COUNTS == {"train": 60, "valid": 20, "test": 20}
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    assert all(np.array_equal(parts[k], pair_split(0)[k]) for k in parts)     # deterministic
    assert not np.array_equal(parts["test"], pair_split(1)["test"])          # another shuffle


def test_concat_layout_puts_the_left_digit_left_and_the_right_digit_right():
    images, labels = _pool()
    out, arrays = make_pairs(images, labels, np.array([37, 0, 99]), 4, seed=5)
    assert out.shape == (12, 28, 56, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(arrays["pair"], np.repeat([37, 0, 99], 4))
    np.testing.assert_array_equal(arrays["left"], arrays["pair"] // 10)
    np.testing.assert_array_equal(arrays["right"], arrays["pair"] % 10)
    np.testing.assert_array_equal(labels[arrays["index_left"]], arrays["left"])
    np.testing.assert_array_equal(labels[arrays["index_right"]], arrays["right"])
    for k in range(12):
        np.testing.assert_array_equal(out[k, :, :28, 0], images[arrays["index_left"][k]])
        np.testing.assert_array_equal(out[k, :, 28:, 0], images[arrays["index_right"][k]])


def test_canvas64_layout_keeps_each_digit_inside_its_half_at_sun_offsets():
    images, labels = _pool()
    out, arrays = make_pairs(images, labels, np.array([12, 55]), 30, seed=3, layout="canvas64")
    assert out.shape == (60, 64, 64, 1)
    for k in range(60):
        for side, x0 in (("left", 0), ("right", 32)):
            ys, xs = np.nonzero(out[k, :, x0:x0 + 32, 0])
            top, left = ys.min(), xs.min() + x0
            assert 0 <= top < 36 and x0 <= left < x0 + 4               # row in [0, 36), column in [0, 4) of the half
            np.testing.assert_array_equal(out[k, top:top + 28, left:left + 28, 0], images[arrays[f"index_{side}"][k]])
    with pytest.raises(ValueError, match="unknown layout"):
        make_pairs(images, labels, np.array([1]), 1, seed=0, layout="diagonal")


def test_make_pairs_needs_every_class_in_the_pool():
    images, labels = _pool()
    with pytest.raises(ValueError, match="lacks a class"):
        make_pairs(images[labels != 3], labels[labels != 3], np.array([12]), 2, seed=0)


@pytest.mark.parametrize("pool", ["pooled", "disjoint"])
def test_real_pairmnist_splits_hold_disjoint_label_pairs_with_environments(data_dir, tmp_cache, pool):
    spec = get_spec("pairmnist")
    train = load("pairmnist", "train", data_dir, per_pair=3, seed=2, pool=pool)
    test = load("pairmnist", "test", data_dir, per_pair=3, seed=2, pool=pool)
    assert train.images.shape == (240, *spec.input_shape) and test.images.shape == (60, *spec.input_shape)
    env = train.extras["environment"]
    assert np.bincount(env).tolist() == [180, 60] and set(test.extras["environment"]) == {ENVIRONMENTS["test"]}
    parts = pair_split(2)
    assert set(train.extras["pair"][env == 0]) == set(parts["train"].tolist())
    assert set(train.extras["pair"][env == 1]) == set(parts["valid"].tolist())
    assert set(test.extras["pair"]) == set(parts["test"].tolist())
    assert not set(train.extras["pair"]) & set(test.extras["pair"])    # no label pair crosses splits
    np.testing.assert_array_equal(train.labels["left"] * 10 + train.labels["right"], train.extras["pair"])
    again = load("pairmnist", "train", data_dir, per_pair=3, seed=2, pool=pool)          # from the cache
    np.testing.assert_array_equal(again.images, train.images)
    other = load("pairmnist", "train", data_dir, per_pair=3, seed=3, pool=pool)
    assert set(other.extras["pair"]) != set(train.extras["pair"])


def test_real_pairmnist_disjoint_pool_draws_test_digits_from_mnist_test(data_dir, tmp_cache):
    from tf_mtvib.datasets import mnist

    test = load("pairmnist", "test", data_dir, per_pair=2, seed=0, pool="disjoint")
    images, _ = mnist.load_source("mnist", "test", data_dir, 10)
    k = 7
    np.testing.assert_array_equal(test.images[k, :, :28], images[test.extras["index_left"][k]])


@pytest.mark.parametrize("options, error", [({"pool": "mixed"}, ValueError), ({"per_pair": 0}, ValueError),
                                            ({"num_train": 5}, TypeError)])
def test_pairmnist_rejects_bad_options(tmp_path, options, error):
    with pytest.raises(error):
        load("pairmnist", "train", tmp_path, **options)


def test_a_model_without_a_trunk_for_pairmnist_is_refused_with_exit_2(tmp_path, data_dir, tmp_cache, capsys):
    from tf_mtvib.train import main

    assert main(["--dataset", "pairmnist", "--model", "gs", "--preset", "smoke", "--output-dir", str(tmp_path / "r"),
                 "--data-dir", str(data_dir), "--verbose", "0"]) == 2
    assert "no convolutional trunk for 28x56 inputs" in capsys.readouterr().err


def test_real_pairmnist_valid_holdout_trains_on_train_pairs_and_tests_on_valid_pairs(data_dir, tmp_cache):
    train = load("pairmnist", "train", data_dir, per_pair=2, seed=1, holdout="valid")
    test = load("pairmnist", "test", data_dir, per_pair=2, seed=1, holdout="valid")
    parts = pair_split(1)
    assert set(train.extras["environment"]) == {0} and set(train.extras["pair"]) == set(parts["train"].tolist())
    assert set(test.extras["environment"]) == {1} and set(test.extras["pair"]) == set(parts["valid"].tolist())
    with pytest.raises(ValueError, match="holdout"):
        load("pairmnist", "train", data_dir, holdout="both")
