"""Models and layers: architecture tables, the MTVIB loss, saving."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from tf_mtvib.datasets.spec import SPECS, DatasetSpec, Task
from tf_mtvib.layers import (FixedWeighting, GaussianLatent, UncertaintyWeighting,
                             gaussian_kl_closed_form, posterior_sampling)
from tf_mtvib.models import MODEL_NAMES, build_model, flatten_size, kl_per_example


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


BN = lambda c: 4 * c  # gamma, beta, moving mean, moving variance


def trunk_params(k, c_in):
    return conv(k, c_in, 64) + BN(64) + conv(k, 64, 64) + BN(64)


def table_counts(k, c_in, flat, classes):
    """Parameter counts from the paper's Tables I/II, written out by hand."""
    trunk = trunk_params(k, c_in)
    det_head = lambda c: dense(384, 192) + dense(192, c)
    vib_dec = lambda c: dense(256, 384) + BN(384) + dense(384, 192) + dense(192, c)
    vib_enc = dense(flat, 1024) + 2 * dense(1024, 1024) + dense(1024, 2 * 256)
    K = len(classes)
    return {
        "stl": sum(trunk + dense(flat, 384) + det_head(c) for c in classes),
        "gs": trunk + dense(flat, 384) + sum(det_head(c) for c in classes),
        "uwl": trunk + dense(flat, 384) + sum(det_head(c) for c in classes) + K,
        "stvib": sum(trunk + vib_enc + vib_dec(c) for c in classes),
        "mtvib": trunk + vib_enc + sum(vib_dec(c) for c in classes) + K,
    }


def test_flatten_sizes_follow_from_the_layers():
    assert flatten_size(SPECS["multimnist"]) == 3136
    assert flatten_size(SPECS["multifashion"]) == 3136
    assert flatten_size(SPECS["mtfl"]) == 4096


@pytest.mark.parametrize("dataset,k,c_in,flat,classes", [
    ("multimnist", 3, 1, 3136, [10, 10]),
    ("mtfl", 5, 3, 4096, [2, 2, 2, 5]),
])
def test_parameter_counts_match_the_tables(dataset, k, c_in, flat, classes):
    expected = table_counts(k, c_in, flat, classes)
    for name, count in expected.items():
        assert build_model(name, SPECS[dataset]).count_params() == count, name


def test_vib_mlp_parameter_count():
    # Alemi et al.: 784 -> 1024 -> 1024 -> (mu, sigma) of K=256 -> 10
    expected = dense(784, 1024) + dense(1024, 1024) + dense(1024, 512) + dense(256, 10)
    assert build_model("vib_mlp", SPECS["mnist"]).count_params() == expected
    assert build_model("mlp", SPECS["mnist"]).count_params() == expected - dense(1024, 256)


def test_unknown_model_and_hparam_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", SPECS["multimnist"])
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        build_model("mtvib", SPECS["multimnist"], latent_size=3)
    with pytest.raises(ValueError, match="trunk"):
        build_model("gs", DatasetSpec("odd", (20, 20, 1), (Task("a", ("x", "y")),)))


def _batch(spec, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + spec.input_shape, dtype=np.float32)
    y = {t.name: rng.integers(0, t.num_classes, n) for t in spec.tasks}
    return x, y


def test_kl_equals_closed_form():
    layer = GaussianLatent(4, beta=1.0)
    feats = tf.random.normal([5, 7], seed=1)
    layer(feats)
    loc, scale = layer.loc_and_scale(feats)
    loc, scale = loc.numpy().astype(np.float64), scale.numpy().astype(np.float64)
    by_hand = 0.5 * np.sum(loc ** 2 + scale ** 2 - 1.0 - np.log(scale ** 2), axis=-1)
    np.testing.assert_allclose(layer.kl_divergence(feats).numpy(), by_hand, rtol=1e-5)
    np.testing.assert_allclose(gaussian_kl_closed_form(loc, scale).numpy(), by_hand, rtol=1e-5)


def test_mtvib_loss_equals_hand_computation():
    spec = SPECS["multimnist"]
    model = build_model("mtvib", spec, beta=0.01, latent_dim=8)
    for i, t in enumerate(spec.task_names):
        model.weighting.log_sigma[t].assign(0.3 * (i + 1))
    x, y = _batch(spec)
    logits = model(x, training=True)
    loss = model.compute_loss(x, y, logits).numpy()
    expected = 0.0
    for t in spec.task_names:
        lg = logits[t].numpy().astype(np.float64)
        logp = lg - np.log(np.sum(np.exp(lg - lg.max(1, keepdims=True)), 1, keepdims=True)) - lg.max(1, keepdims=True)
        ce = -np.mean(logp[np.arange(len(x)), y[t]])
        s = float(model.weighting.log_sigma[t].numpy())
        expected += np.exp(-2 * s) * ce + s
    latent = model.network.get_layer("latent")
    feats = keras.Model(model.network.input, latent.input)(x, training=True)  # BN in batch mode, as in the loss
    loc, scale = (v.numpy().astype(np.float64) for v in latent.loc_and_scale(feats))
    kl = 0.5 * np.sum(loc ** 2 + scale ** 2 - 1.0 - np.log(scale ** 2), axis=-1)
    expected += 0.01 * kl.mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    feats_inf = keras.Model(model.network.input, latent.input)(x, training=False)
    np.testing.assert_allclose(kl_per_example(model, x).numpy(), latent.kl_divergence(feats_inf).numpy(), rtol=1e-6)


def test_fixed_weighting_and_uncertainty_weighting():
    ce = {"a": tf.constant(2.0), "b": tf.constant(3.0)}
    assert float(FixedWeighting(["a", "b"], {"a": 0.25, "b": 0.75})(ce)) == pytest.approx(0.5 + 2.25)
    assert float(FixedWeighting(["a", "b"], [1.0, 2.0])(ce)) == pytest.approx(8.0)
    uw = UncertaintyWeighting(["a", "b"], init_log_sigma=0.5)
    assert float(uw(ce)) == pytest.approx(np.exp(-1.0) * 5.0 + 1.0, rel=1e-6)
    with pytest.raises(ValueError):
        FixedWeighting(["a", "b"], {"a": 1.0})
    with pytest.raises(ValueError, match="no loss"):
        uw({"a": tf.constant(1.0)})
    gs = build_model("gs", SPECS["multimnist"], task_weights=[0.2, 0.8])
    assert gs.weighting.weights_by_task == {"top_left": 0.2, "bottom_right": 0.8}


def test_one_step_changes_every_log_sigma():
    spec = SPECS["mtfl"]
    small = DatasetSpec("tiny_mtfl", (36, 36, 3), spec.tasks)
    model = build_model("mtvib", small, latent_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = {t: float(v.numpy()) for t, v in model.weighting.log_sigma.items()}
    x, y = _batch(small, 4)
    model.train_on_batch(x, y)
    for t, v in model.weighting.log_sigma.items():
        assert float(v.numpy()) != before[t], t


def test_large_beta_shrinks_the_kl():
    spec = SPECS["multimnist"]
    model = build_model("mtvib", spec, beta=10.0, latent_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(spec, 16)
    latent = model.network.get_layer("latent")
    features = keras.Model(model.network.input, latent.input)
    # the KL that the loss sees: BatchNorm in training mode
    kl = lambda: float(tf.reduce_mean(latent.kl_divergence(features(x, training=True))))
    kl0 = kl()
    for _ in range(10):
        model.train_on_batch(x, y)
    assert kl() < 0.5 * kl0


def test_sampling_in_training_mean_in_inference():
    spec = SPECS["multimnist"]
    model = build_model("mtvib", spec, latent_dim=8)
    x, _ = _batch(spec, 4)
    a, b = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(a["top_left"], b["top_left"])
    c, d = model(x, training=True), model(x, training=True)
    assert not np.allclose(c["top_left"], d["top_left"])
    with posterior_sampling(model):
        e, f = model(x, training=False), model(x, training=False)
    assert not np.allclose(e["top_left"], f["top_left"])
    p = model.probabilities(x, samples=12)
    for t in spec.task_names:
        np.testing.assert_allclose(p[t].numpy().sum(-1), 1.0, rtol=1e-5)
    mean_logits = model(x, training=False)["top_left"]  # after the BN updates of training=True above
    np.testing.assert_allclose(model.probabilities(x)["top_left"], tf.nn.softmax(mean_logits), rtol=1e-5)


@pytest.mark.parametrize("name", ["mtvib", "uwl", "stvib"])
def test_keras_round_trip_restores_every_weight(name, tmp_path):
    spec = SPECS["multimnist"]
    model = build_model(name, spec, latent_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = _batch(spec, 8)
    model.train_on_batch(x, y)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.model_name == name
    assert loaded.dataset_spec == spec
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    if name != "stvib":
        for t in spec.task_names:
            assert float(loaded.weighting.log_sigma[t].numpy()) == float(model.weighting.log_sigma[t].numpy())
    pa, pb = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for t in spec.task_names:
        np.testing.assert_array_equal(pa[t], pb[t])


def test_all_models_train_one_step():
    spec = SPECS["multimnist"]
    x, y = _batch(spec, 4)
    for name in ("stl", "gs"):
        m = build_model(name, spec)
        m.compile(optimizer="adam")
        logs = m.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"]) and "joint_accuracy" in logs and "kl" not in logs


def test_batchnorm_statistics_settle_in_a_short_run():
    """After 60 steps the moving statistics must be close to the data's (mean-mode inference works)."""
    spec = SPECS["multimnist"]
    model = build_model("gs", spec)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(spec, 32)
    for _ in range(60):
        model.train_on_batch(x, y)
    bn = model.network.get_layer("conv1_bn")
    batch_var = tf.math.reduce_variance(model.network.get_layer("conv1")(x), axis=[0, 1, 2]).numpy()
    # Keras's default momentum 0.99 would leave 0.99**60 = 0.55 of the initial variance 1 here
    np.testing.assert_allclose(bn.moving_variance.numpy(), batch_var, rtol=0.2, atol=0.01)
