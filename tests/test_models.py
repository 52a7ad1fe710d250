"""Models and layers: architecture tables, the MTVIB loss, saving."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from tf_mtvib.datasets.spec import SPECS, DatasetSpec, Task
from tf_mtvib.layers import (FixedWeighting, GaussianLatent, UncertaintyWeighting, all_sublayers,
                             gaussian_kl_closed_form, posterior_sampling)
from tf_mtvib.models import MODEL_NAMES, build_model, flatten_size, kl_per_example


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def bn(c):
    return 4 * c  # gamma, beta (trainable), moving mean, moving variance


def bn_trainable(c):
    return 2 * c


def trunk_params(k, c_in):
    return conv(k, c_in, 64) + bn(64) + conv(k, 64, 64) + bn(64)


def fc_bn(n_in, n_out):
    """FC + BN + ReLU, every hidden fully connected layer of Tables I/II."""
    return dense(n_in, n_out) + bn(n_out)


def table_counts(k, c_in, flat, classes, latent_head="paper", K=256):
    """Parameter counts from the paper's Tables I/II, written out by hand."""
    trunk = trunk_params(k, c_in)
    det_head = lambda c: fc_bn(384, 192) + dense(192, c)
    vib_dec = lambda c: fc_bn(K, 384) + fc_bn(384, 192) + dense(192, c)
    latent = {"paper": 2 * fc_bn(1024, K),          # FC 1024 x 256 + BN + ReLU for mu, another for sigma
              "linear": dense(1024, 2 * K)}[latent_head]   # Alemi et al.: one FC to (mu, raw sigma)
    vib_enc = fc_bn(flat, 1024) + 2 * fc_bn(1024, 1024) + latent
    T = len(classes)
    return {
        "stl": sum(trunk + fc_bn(flat, 384) + det_head(c) for c in classes),
        "gs": trunk + fc_bn(flat, 384) + sum(det_head(c) for c in classes),
        "uwl": trunk + fc_bn(flat, 384) + sum(det_head(c) for c in classes) + T,
        "stvib": sum(trunk + vib_enc + vib_dec(c) for c in classes),
        "mtvib": trunk + vib_enc + sum(vib_dec(c) for c in classes) + T,
    }


def non_trainable(k, c_in, flat, classes, latent_head="paper", K=256):
    """The BN moving statistics (2 per channel/unit) of each model, by hand."""
    stat = lambda c: bn(c) - bn_trainable(c)
    trunk = 2 * stat(64)
    latent = 2 * stat(K) if latent_head == "paper" else 0
    vib_tower = trunk + 3 * stat(1024) + latent
    T = len(classes)
    return {
        "stl": T * (trunk + stat(384) + stat(192)),
        "gs": trunk + stat(384) + T * stat(192),
        "uwl": trunk + stat(384) + T * stat(192),
        "stvib": T * (vib_tower + stat(384) + stat(192)),
        "mtvib": vib_tower + T * (stat(384) + stat(192)),
    }


def test_flatten_sizes_follow_from_the_layers():
    assert flatten_size(SPECS["multimnist"]) == 3136
    assert flatten_size(SPECS["multifashion"]) == 3136
    assert flatten_size(SPECS["mtfl"]) == 4096


TABLES = [  # data set, conv kernel, input channels, flatten, classes per task (Tables I and II)
    ("multimnist", 3, 1, 3136, [10, 10]),
    ("multifashion", 3, 1, 3136, [10, 10]),
    ("mtfl", 5, 3, 4096, [2, 2, 2, 5]),
]


@pytest.mark.parametrize("dataset,k,c_in,flat,classes", TABLES)
def test_parameter_counts_match_the_tables(dataset, k, c_in, flat, classes):
    expected = table_counts(k, c_in, flat, classes)
    frozen = non_trainable(k, c_in, flat, classes)
    for name, count in expected.items():
        model = build_model(name, SPECS[dataset])
        assert model.count_params() == count, name
        n_frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert n_frozen == frozen[name], name


@pytest.mark.parametrize("dataset,k,c_in,flat,classes", TABLES[::2])
@pytest.mark.parametrize("name", ["mtvib", "stvib"])
def test_parameter_counts_of_both_latent_heads(dataset, k, c_in, flat, classes, name):
    for head in ("paper", "linear"):
        model = build_model(name, SPECS[dataset], latent_head=head, latent_dim=32)
        assert model.hparams["latent_head"] == head
        assert model.count_params() == table_counts(k, c_in, flat, classes, head, K=32)[name], head
        n_frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert n_frozen == non_trainable(k, c_in, flat, classes, head, K=32)[name], head
    # the paper head differs from the linear one by the two BNs only
    paper, linear = (table_counts(k, c_in, flat, classes, h)[name] for h in ("paper", "linear"))
    towers = len(classes) if name == "stvib" else 1
    assert paper - linear == towers * 2 * bn(256)


def test_vib_mlp_parameter_count():
    # Alemi et al.: 784 -> 1024 -> 1024 -> (mu, sigma) of K=256 -> 10
    expected = dense(784, 1024) + dense(1024, 1024) + dense(1024, 512) + dense(256, 10)
    assert build_model("vib_mlp", SPECS["mnist"]).count_params() == expected
    assert build_model("mlp", SPECS["mnist"]).count_params() == expected - dense(1024, 256)
    assert build_model("vib_mlp", SPECS["mnist"]).hparams["latent_head"] == "linear"   # Alemi et al.'s head
    paper = build_model("vib_mlp", SPECS["mnist"], latent_head="paper").count_params()
    assert paper == expected - dense(1024, 512) + 2 * fc_bn(1024, 256)


def _consumers(layer):
    return [node.operation for node in layer._outbound_nodes]


@pytest.mark.parametrize("name", ["stl", "gs", "uwl", "stvib", "mtvib"])
def test_every_hidden_fc_is_followed_by_batchnorm_and_relu(name):
    """Tables I/II: FC + BN + ReLU everywhere but the classifier; sync_batchnorm reaches every BN."""
    from tf_mtvib.layers import DenseBNReLU

    spec = SPECS["multimnist"]
    network = build_model(name, spec, latent_dim=8, sync_batchnorm=True).network
    dense = [l for l in network.layers if isinstance(l, keras.layers.Dense)]
    hidden = [l for l in dense if not l.name.endswith("_logits")]
    assert len(dense) - len(hidden) == len(spec.tasks)
    for layer in hidden:
        (bn,) = _consumers(layer)
        assert isinstance(bn, keras.layers.BatchNormalization), layer.name
        (relu,) = _consumers(bn)
        assert isinstance(relu, keras.layers.ReLU), layer.name
    bns = [l for l in all_sublayers(network) if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.synchronized and l.momentum == 0.9 for l in bns)
    for latent in (l for l in network.layers if isinstance(l, GaussianLatent)):
        assert latent.head == "paper"
        assert isinstance(latent.loc_head, DenseBNReLU) and isinstance(latent.scale_head, DenseBNReLU)


def test_paper_latent_head_uses_batchnorm_and_gives_a_nonnegative_mean():
    layer = GaussianLatent(6, head="paper")
    feats = tf.random.normal([32, 10], seed=3) * 3.0 + 1.0
    loc_train, scale_train = layer.loc_and_scale(feats, training=True)
    loc_inf, scale_inf = layer.loc_and_scale(feats, training=False)
    # BN: batch statistics in training, the (barely moved) moving averages otherwise
    assert not np.allclose(loc_train.numpy(), loc_inf.numpy())
    assert np.all(loc_train.numpy() >= 0) and np.all(loc_inf.numpy() >= 0)   # ReLU on the mean head, as drawn
    # sigma = softplus(h - 5) + 1e-5 with h = ReLU(BN(W x + b)) >= 0
    h = layer.scale_head(feats, training=False).numpy().astype(np.float64)
    np.testing.assert_allclose(scale_inf.numpy(), np.log1p(np.exp(h - 5.0)) + 1e-5, rtol=1e-5)
    assert scale_inf.numpy().min() >= np.log1p(np.exp(-5.0)) + 1e-5 - 1e-7
    # in training the BN in the call makes the batch mean of each BN output 0 before the ReLU
    pre = layer.loc_head.batchnorm(layer.loc_head.dense(feats), training=True).numpy()
    np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-4)
    assert len(layer.trainable_weights) == 2 * 4 and len(layer.non_trainable_weights) == 2 * 2


def test_unknown_model_and_hparam_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", SPECS["multimnist"])
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        build_model("mtvib", SPECS["multimnist"], latent_size=3)
    with pytest.raises(ValueError, match="trunk"):
        build_model("gs", DatasetSpec("odd", (20, 20, 1), (Task("a", ("x", "y")),)))
    with pytest.raises(ValueError, match="latent_head"):
        build_model("mtvib", SPECS["multimnist"], latent_head="conv")
    with pytest.raises(ValueError, match="latent head"):
        GaussianLatent(4, head="conv")


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
    loc, scale = (v.numpy().astype(np.float64) for v in latent.loc_and_scale(feats, training=True))
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


@pytest.mark.parametrize("head,learning_rate,ratio", [
    ("linear", 1e-3, 0.5),
    # the paper head's BN normalises W x + b: only BN's gamma and beta (about
    # one learning rate per Adam step) move the level of mu and of the scale
    ("paper", 1e-2, 0.95),
])
def test_large_beta_shrinks_the_kl(head, learning_rate, ratio):
    keras.utils.set_random_seed(0)
    spec = SPECS["multimnist"]
    model = build_model("mtvib", spec, beta=10.0, latent_dim=8, latent_head=head)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    x, y = _batch(spec, 16)
    latent = model.network.get_layer("latent")
    features = keras.Model(model.network.input, latent.input)
    # the KL that the loss sees: BatchNorm in training mode
    kl = lambda: float(tf.reduce_mean(latent.kl_divergence(features(x, training=True), training=True)))
    kl0 = kl()
    for _ in range(10):
        model.train_on_batch(x, y)
    assert kl() < ratio * kl0


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


def test_sampling_is_chosen_by_the_call_or_a_scope_never_by_layer_state():
    from tf_mtvib.layers import latent_layers

    layer = GaussianLatent(4, head="linear")
    feats = tf.random.normal([3, 5], seed=2)
    state = dict(vars(layer))
    loc = layer(feats, training=False)
    np.testing.assert_array_equal(layer(feats, training=False, sample=False), loc)
    assert not np.allclose(layer(feats, training=False, sample=True), loc)   # explicit argument
    np.testing.assert_array_equal(layer(feats, training=True, sample=False), loc)   # the linear head has no BN
    with posterior_sampling():                                                 # every latent
        assert not np.allclose(layer(feats, training=False), loc)
        with posterior_sampling(enabled=False):
            np.testing.assert_array_equal(layer(feats, training=False), loc)
        np.testing.assert_array_equal(layer(feats, training=False, sample=False), loc)   # the argument wins
    other = build_model("mtvib", SPECS["multimnist"], latent_dim=4)
    with posterior_sampling(other):                                            # another model's latents only
        np.testing.assert_array_equal(layer(feats, training=False), loc)
        assert latent_layers(other) == [other.network.get_layer("latent")]
    np.testing.assert_array_equal(layer(feats, training=False), loc)           # scope left: mean again
    assert vars(layer).keys() == state.keys() and not hasattr(layer, "sample_in_inference")


def test_a_latent_nested_in_a_sub_model_is_found():
    from tf_mtvib.layers import latent_layers
    from tf_mtvib.models import MultiTaskModel
    from tf_mtvib.weightings import FixedWeighting

    spec = SPECS["mnist"]
    feats = keras.Input((8,))
    inner = keras.Model(feats, GaussianLatent(4, head="linear", name="inner_latent")(feats), name="encoder_head")
    image = keras.Input(spec.input_shape)
    z = inner(keras.layers.Dense(8)(keras.layers.Flatten()(image)))
    network = keras.Model(image, {"digit": keras.layers.Dense(10, name="digit_logits")(z)})
    model = MultiTaskModel(network, FixedWeighting(spec.task_names), spec)
    assert [l.name for l in model.latent_layers] == ["inner_latent"] == [l.name for l in latent_layers(network)]
    assert model.is_stochastic
    x, y = _batch(spec, 6)
    mean = model.probabilities(x)["digit"].numpy()
    np.testing.assert_array_equal(model.probabilities(x)["digit"].numpy(), mean)
    assert not np.allclose(model.probabilities(x, samples=3)["digit"].numpy(), mean)   # the nested latent samples
    model.compile(optimizer="adam")
    assert "kl" in model.train_on_batch(x, y, return_dict=True)


def test_kl_log_is_the_mean_kl_of_the_batch_from_the_layers_loss():
    spec = SPECS["multimnist"]
    model = build_model("stvib", spec, latent_dim=8, beta=1e-9)   # a tiny beta: the KL is read back exactly
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _batch(spec, 8)

    def kl_by_hand(training):
        total = 0.0
        for t in spec.task_names:
            latent = model.network.get_layer(f"{t}_latent")
            feats = keras.Model(model.network.input, latent.input)(x, training=training)
            total += float(tf.reduce_mean(latent.kl_divergence(feats, training=training)))
        return total

    expected_train = kl_by_hand(True)
    assert model.train_on_batch(x, y, return_dict=True)["kl"] == pytest.approx(expected_train, rel=1e-4)
    assert model.evaluate(x, y, return_dict=True, verbose=0)["kl"] == pytest.approx(kl_by_hand(False), rel=1e-4)
    no_rate = build_model("stvib", spec, latent_dim=8, beta=0.0)   # no KL in the loss: none in the logs
    no_rate.compile(optimizer="sgd")
    assert "kl" not in no_rate.train_on_batch(x, y, return_dict=True)


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
    assert [l.head for l in loaded.latent_layers] == [l.head for l in model.latent_layers]
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


@pytest.mark.parametrize("name", [m for m in MODEL_NAMES if m not in ("bmtl", "vbmtl", "vmtl", "domain_mtvib")])
def test_all_models_train_one_step(name):
    """Every model (the paper's five, vib_mlp and mlp, MMoE and MT-CRL) takes a finite step that moves every
    trainable variable. (VMTL's families, on real multi-input batches: tests/test_variational.py.)"""
    lenet = ("lenet_stl", "lenet_mtl", "mmoe", "mtcrl", "lenet_mtvib")
    spec = SPECS["mnist" if name in ("vib_mlp", "mlp") else "pairmnist" if name in lenet else "multimnist"]
    model = build_model(name, spec, latent_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = _batch(spec, 8)
    if model.extras:                              # MT-CRL: the train and valid environments
        x = {"image": x, "environment": np.array([0, 1] * 4)}
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and "joint_accuracy" in logs
    assert ("kl" in logs) == model.is_stochastic == (name in ("stvib", "mtvib", "vib_mlp", "lenet_mtvib"))
    assert before, name
    for b, v in zip(before, model.trainable_variables):
        assert np.all(np.isfinite(v.numpy())), v.path
        assert not np.array_equal(b, v.numpy()), f"{name}: {v.path} did not move"


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


def test_all_sublayers_reaches_layers_held_as_attributes_and_in_sub_models():
    """The one adapter over Keras's private ``Layer._flatten_layers``: if a Keras release
    changes it, this fails instead of BatchNorm or precision switches silently missing layers."""
    spec = SPECS["multimnist"]
    network = build_model("mtvib", spec, latent_dim=4).network
    found = all_sublayers(network)
    (latent,) = [l for l in found if isinstance(l, GaussianLatent)]
    inside = all_sublayers(latent, include_self=False)
    # the paper head: two Dense + BatchNorm pairs held as attributes, not in network.layers
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in inside) == 2
    assert all(l in found for l in inside) and not set(map(id, inside)) & set(map(id, network.layers))
    assert found[0] is network and network not in all_sublayers(network, include_self=False)
    assert len({id(l) for l in found}) == len(found)
    outer = keras.Sequential([keras.Input((2,)), keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(1)])])
    assert sum(isinstance(l, keras.layers.Dense) for l in all_sublayers(outer)) == 2


def test_mean_mode_probabilities_are_the_mean_even_when_first_traced_inside_a_sampling_scope():
    """The graph cache of ``probabilities`` is keyed by the sample count; samples=0 must be the
    posterior mean whatever scope is active when it is first traced (design review, section 5)."""
    import numpy as np

    from tf_mtvib.layers import posterior_sampling
    from test_attacks import batch, tiny_model

    model = tiny_model(stochastic=True, scale_bias=1.0)
    x, _ = batch(16)
    with posterior_sampling(model.network):
        inside = model.probabilities(x, samples=0)["a"].numpy()
    outside = [model.probabilities(x, samples=0)["a"].numpy() for _ in range(2)]
    mean = tf.nn.softmax(model.network(tf.constant(x), training=False)["a"]).numpy()
    np.testing.assert_array_equal(outside[0], outside[1])
    np.testing.assert_allclose(inside, mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outside[0], mean, rtol=1e-6, atol=1e-7)
    # a sampled pass in the same scope does differ from the mean: the test can fail
    with posterior_sampling(model.network):
        sampled = tf.nn.softmax(model.network(tf.constant(x), training=False)["a"]).numpy()
    assert np.max(np.abs(sampled - mean)) > 1e-3
