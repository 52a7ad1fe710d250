"""VMTL's layers and z-prior term (tf_mtvib.variational) against NumPy, and the three families' networks."""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from tf_mtvib import variational as V  # noqa: E402
from tf_mtvib import vmtl  # noqa: E402

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def vmtl_cache(tmp_path_factory):
    """One derived-data cache for the module: the frozen extractor (trained on Fashion-MNIST on first use,
    about half a minute) is trained once, not per test."""
    import os

    path, old = tmp_path_factory.mktemp("vmtl-cache"), os.environ.get("TF_MTVIB_CACHE_DIR")
    os.environ["TF_MTVIB_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TF_MTVIB_CACHE_DIR", None)
    else:
        os.environ["TF_MTVIB_CACHE_DIR"] = old


def _softplus(x):
    return np.log1p(np.exp(x))


def test_bayesian_linear_moments_sampling_and_vbmtl_kl():
    layer = V.BayesianLinear(3, kl_weight=2.0)
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    layer.build((None, 4))
    w_mu, w_rho, b_mu, b_rho = (v.numpy() for v in (layer.mean_kernel, layer.rho_kernel, layer.mean_bias, layer.rho_bias))
    # the code's initialisation: means ~ N(0, 0.1), rho ~ -3 + N(0, 0.1)
    assert abs(w_rho.mean() + 3) < 0.2 and w_mu.std() < 0.3
    mean, var = (t.numpy() for t in layer.moments(x))
    np.testing.assert_allclose(mean, x @ w_mu + b_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, (x ** 2) @ _softplus(w_rho) ** 2 + _softplus(b_rho) ** 2, rtol=1e-5)
    np.testing.assert_allclose(layer(x, training=False).numpy(), mean, rtol=1e-6)    # inference: the mean
    assert not layer.losses
    draws = np.stack([layer(x, training=True).numpy() for _ in range(400)])
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * np.sqrt(var.max() / 400))
    kl = 0.5 * np.sum(-np.log(var + 1e-6) - 1 + (var + 1e-6) / (1 + 1e-6) + mean ** 2 / (1 + 1e-6) + np.log(1 + 1e-6), -1)
    np.testing.assert_allclose(float(layer.losses[-1]), 2.0 * kl.mean(), rtol=1e-4)
    # a file saved when the weight and the task count were separate loads with their product
    old = V.BayesianLinear.from_config({**layer.get_config(), "kl_weight": 0.5, "num_tasks": 4})
    assert old.kl_weight == 2.0 and "num_tasks" not in old.get_config()


def _classifiers(prior="gumbel", form="weighted_sum", weights="elbo", tasks=("a", "b", "c")):
    layer = V.BayesianClassifiers(tasks, 4, prior=prior, prior_form=form, kl_weights=weights, task_examples=20)
    layer.build((None, 6))
    return layer


def test_classifier_kl_to_the_other_tasks_posteriors_against_numpy():
    layer = _classifiers()
    mu, var = layer.mean.numpy(), _softplus(layer.rho_w.numpy()) ** 2
    alpha = np.array([0.3, 0.7], np.float32)
    for t in range(3):
        others = [i for i in range(3) if i != t]
        pm = np.einsum("i,icd->cd", alpha, mu[others])
        pv = np.einsum("i,icd->cd", alpha ** 2, var[others])
        expected = 0.5 * np.sum(np.log((pv + 1e-6) / (var[t] + 1e-6)) - 1 + (var[t] + 1e-6) / (pv + 1e-6)
                                + (pm - mu[t]) ** 2 / (pv + 1e-6))
        np.testing.assert_allclose(float(layer.kl_w(t, alpha=alpha)), expected, rtol=1e-4)
    # the prior is a stop-gradient: the KL's gradient reaches task t's posterior only
    with tf.GradientTape() as tape:
        kl = layer.kl_w(0, alpha=alpha)
    g_mean = tape.gradient(kl, layer.mean).numpy()
    assert np.abs(g_mean[0]).sum() > 0 and np.abs(g_mean[1:]).sum() == 0
    # the mixture form with fixed noise is the Monte Carlo KL of tf_mtvib.vmtl
    mixture = _classifiers(form="mixture")
    mixture.mean.assign(layer.mean)
    mixture.rho_w.assign(layer.rho_w)
    noise = RNG.normal(size=(5, 4, 6)).astype(np.float32)
    expected = float(tf.reduce_sum(vmtl.kl_to_mixture(mu[0], var[0], alpha, mu[[1, 2]], var[[1, 2]], noise)))
    np.testing.assert_allclose(float(mixture.kl_w(0, alpha=alpha, noise=noise)), expected, rtol=1e-5)
    # VBMTL: N(0, I)
    normal = _classifiers(prior="normal")
    m0, v0 = normal.mean.numpy()[1], _softplus(normal.rho_w.numpy()[1]) ** 2
    expected = 0.5 * np.sum(np.log(1 + 1e-6) - np.log(v0 + 1e-6) - 1 + (v0 + 1e-6) / (1 + 1e-6) + m0 ** 2 / (1 + 1e-6))
    np.testing.assert_allclose(float(normal.kl_w(1)), expected, rtol=1e-4)


def test_classifier_schedule_weights_and_training_loss():
    layer = _classifiers(weights="code")
    z = RNG.normal(size=(8, 6)).astype(np.float32)
    assert float(layer.temperature()) == 1.0 and float(layer.kl_weight_w()) == 0.0
    layer.iterations.assign(2000)
    assert float(layer.temperature()) == pytest.approx(float(vmtl.annealed_temperature(2000, 3)), rel=1e-6)
    assert float(layer.kl_weight_w()) == pytest.approx(float(vmtl.code_kl_weights(2000, 3)[1]))
    layer.iterations.assign(15000)
    assert float(layer.temperature()) == pytest.approx(float(vmtl.annealed_temperature(15000, 3))) == 0.5
    assert float(_classifiers().kl_weight_w()) == pytest.approx(1 / 20)
    # inference: the means, deterministic; training: sampled logits around them, the KL loss, the counter
    out = layer(z, training=False)
    np.testing.assert_allclose(out[1].numpy(), z @ layer.mean.numpy()[1].T, rtol=1e-5, atol=1e-6)
    before = int(layer.iterations.numpy())
    layer(z, training=True)
    assert int(layer.iterations.numpy()) == before + 1 and len(layer.losses) == 1
    weights = layer.mixing_weights("w")
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-5)
    assert _classifiers(prior="mean").mixing_weights("z").numpy() == pytest.approx(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="at least 2 tasks"):
        V.BayesianClassifiers(("a",), 4, prior="gumbel")


def _attention_numpy(q, q_labels, pool, pool_tasks, pool_labels, i, n):
    """Table B.3's cross attention of query n over task i's same-class pool rows, as the official loader."""
    rows = np.flatnonzero((pool_tasks == i) & (pool_labels == q_labels[n]))
    if len(rows) == 0:
        return q[n]                                  # no same-class example of task i: the example's own feature
    s = q[n] @ pool[rows].T
    a = s / (s.max() - s.min() + 1e-9)
    w = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    return w @ pool[rows]


def test_class_attention_against_numpy():
    pool = RNG.normal(size=(12, 3)).astype(np.float32)
    pool_tasks = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2, 0, 2], np.int32)
    pool_labels = np.array([1, 2, 1, 1, 2, 1, 2, 1, 1, 2, 2, 2], np.int32)
    q = RNG.normal(size=(5, 3)).astype(np.float32)
    q_labels = np.array([1, 2, 2, 1, 3], np.int32)            # class 3: in no task of the pool
    got = V.class_attention(q, q_labels, pool, pool_tasks, pool_labels, 3).numpy()
    assert got.shape == (3, 5, 3)
    for i in range(3):
        for n in range(5):
            np.testing.assert_allclose(got[i, n], _attention_numpy(q, q_labels, pool, pool_tasks, pool_labels, i, n),
                                       rtol=1e-4, atol=1e-5, err_msg=f"task {i}, example {n}")
    # the pool decides: the same queries against a pool of other rows attend to other features
    other = V.class_attention(q, q_labels, pool[::-1].copy(), pool_tasks, pool_labels, 3).numpy()
    assert not np.allclose(other, got)


def test_attended_extras_attend_over_the_training_pool(data_dir, vmtl_cache, monkeypatch):
    """VMTL's extra: each image's cross attention over each task's same-class *training* images, as the
    official loader precomputes it (not over the batch): checked against NumPy on the frozen features. The
    pool's features are extracted once for all the splits derived together."""
    from tf_mtvib.datasets import load
    from tf_mtvib.extractor import FEATURE_DIM, fashion_extractor
    from tf_mtvib.families import _vmtl, get_family, with_derived_extras

    train = load("digitdomains", "train", data_dir, per_domain=200, fraction=0.2)
    test = load("digitdomains", "test", data_dir, per_domain=200, fraction=0.2)
    test = test.subset(np.arange(0, len(test), 61))
    family = get_family("vmtl")
    assert "attended" in family.needs
    extracted = []
    features = _vmtl._features
    monkeypatch.setattr(_vmtl, "_features", lambda images: extracted.append(len(images)) or features(images))
    got_train, got_test = (s.extras["attended"] for s in with_derived_extras(family, [train, test], train))
    assert extracted == [len(train), len(test)]                   # the pool (= train) once, then the test images
    assert got_train.shape == (len(train), 4, FEATURE_DIM) and got_train.dtype == np.float32
    extractor = fashion_extractor()
    f_pool = extractor(train.images.astype(np.float32) / 255.0, training=False).numpy()
    f_test = extractor(test.images.astype(np.float32) / 255.0, training=False).numpy()

    def own(split):
        tasks = np.asarray(split.extras["task"])
        return tasks, np.stack([split.labels[t] for t in split.spec.task_names], 1)[np.arange(len(tasks)), tasks]

    pool_tasks, pool_labels = own(train)
    for split, f, got in ((train, f_pool, got_train), (test, f_test, got_test)):
        _, labels = own(split)
        for n in range(0, len(split), max(1, len(split) // 7)):
            for i in range(4):
                np.testing.assert_allclose(got[n, i], _attention_numpy(f, labels, f_pool, pool_tasks, pool_labels, i, n),
                                           rtol=1e-3, atol=1e-4, err_msg=f"example {n}, task {i}")
    assert with_derived_extras(get_family("bmtl"), [train], train)[0] is train     # no hook: the split itself


def test_gumbel_z_prior_term_against_numpy(data_dir, vmtl_cache):
    """The term's KL on a small batch, recomputed by hand from the layers' weights."""
    from tf_mtvib.datasets import Split, get_spec
    from tf_mtvib.models import build_model
    from tf_mtvib.terms import Step

    spec = get_spec("digitdomains")
    model = build_model("vmtl", spec, latent_dim=5, vmtl_prior="mean", kl_weights="elbo")
    tasks = np.repeat(np.arange(4), 4).astype(np.int64)
    digit = np.tile([3, 3, 7, 7], 4).astype(np.int64)
    images = RNG.integers(0, 256, size=(16, 28, 28, 1)).astype(np.float32) / 255.0
    labels = {t: np.where(tasks == k, digit, -1) for k, t in enumerate(spec.task_names)}
    attended = RNG.normal(size=(16, 4, 256)).astype(np.float32)     # the extra: (B, T, d), d = the features'
    inputs = {"image": tf.constant(images), "task": tf.constant(tasks), "attended": tf.constant(attended)}
    term = model.terms[0]
    value = float(term(Step(model, inputs, {k: tf.constant(v) for k, v in labels.items()}, {}, {}, {}, training=True)))
    net = model.network
    f = net.get_layer("extractor")(images, training=False).numpy()
    assert f.shape[-1] == attended.shape[-1]
    enc = net.get_layer("encoder")
    q_mean, q_var = (t.numpy() for t in enc.moments(f))
    p = [tuple(t.numpy() for t in enc.moments(attended[:, i])) for i in range(4)]
    kls = []
    for n in range(16):
        others = [i for i in range(4) if i != tasks[n]]
        pm = sum(p[i][0][n] for i in others) / 3
        pv = sum(p[i][1][n] for i in others) / 9
        kls.append(0.5 * np.sum(np.log((pv + 1e-6) / (q_var[n] + 1e-6)) - 1 + (q_var[n] + 1e-6) / (pv + 1e-6)
                                + (pm - q_mean[n]) ** 2 / (pv + 1e-6)))
    assert value == pytest.approx(np.mean(kls), rel=1e-3)
    assert term.weight == 4 * 1.0                       # T * eta, the ELBO's eta = 1
    code = build_model("vmtl", spec, latent_dim=5, kl_weights="code")
    assert code.terms[0].weight == pytest.approx(4 * 1e-7)


@pytest.mark.parametrize("name", ["bmtl", "vbmtl", "vmtl", "domain_mtvib"])
def test_vmtl_families_train_on_multi_input_batches(name, data_dir, vmtl_cache):
    from tf_mtvib.datasets import load, per_task_splits, to_multi_input_dataset
    from tf_mtvib.families import get_family, with_derived_extras
    from tf_mtvib.models import build_model

    family = get_family(name)
    train = load("digitdomains", "train", data_dir, per_domain=200, fraction=0.2)
    train, = with_derived_extras(family, [train], train)
    keras.utils.set_random_seed(0)
    # the ELBO's KL weights: the code's start KL_w at 0, so the classifiers' prior weights would not move yet
    model = build_model(name, train.spec, latent_dim=16, **({"kl_weights": "elbo"} if name in ("vbmtl", "vmtl") else {}))
    assert model.partial_labels and model.network.get_layer("extractor").trainable is False
    frozen = [w.numpy().copy() for w in model.network.get_layer("extractor").weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    ds = to_multi_input_dataset(per_task_splits(train), per_task_batch=10, seed=0, task_names=train.spec.task_names,
                                extras=[e for e in family.needs if e != "task"])
    before = [v.numpy().copy() for v in model.trainable_variables]
    x, y = next(iter(ds))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and "joint_accuracy" not in logs and "original_accuracy" in logs
    moved = {v.path: not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)}
    assert all(moved.values()), moved          # VMTL's pi_w and pi_z too, through the KLs
    assert any("pi_z" in path for path in moved) == (name == "vmtl")
    history = model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    for before, after in zip(frozen, model.network.get_layer("extractor").weights):
        np.testing.assert_array_equal(before, after.numpy())          # the extractor stays frozen
    x = train.images[:6].astype(np.float32) / 255.0
    a, b = model.mean_logits(x), model.mean_logits(x)
    for t in train.spec.task_names:
        np.testing.assert_array_equal(a[t].numpy(), b[t].numpy())    # inference uses the means
    if name in ("vbmtl", "vmtl"):
        assert any("classifiers" in w.path for w in model.trainable_weights)
    assert model.is_stochastic == (name == "domain_mtvib")


def test_vmtl_families_refuse_other_data_sets():
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.families import IncompatibleDataset
    from tf_mtvib.models import build_model

    with pytest.raises(IncompatibleDataset, match="does not take data set 'multimnist'"):
        build_model("vmtl", get_spec("multimnist"))


@pytest.mark.parametrize("name", ["vmtl", "domain_mtvib"])
def test_the_extractor_is_prepared_from_the_data_directory_the_command_names(name, tmp_path, monkeypatch):
    """build_model(..., data_dir=) (what train.py --data-dir passes) is where the extractor's Fashion-MNIST
    is looked for when it is not cached, not $TF_MTVIB_DATA_DIR's default (no network here: refused)."""
    from tf_mtvib.datasets import DataError, fetch, get_spec
    from tf_mtvib.models import build_model

    def offline(name, origin, target):
        raise OSError("offline")

    monkeypatch.setattr(fetch, "_get_file", offline)
    monkeypatch.delenv("TF_MTVIB_DATA_DIR", raising=False)
    monkeypatch.setenv("TF_MTVIB_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match=str(tmp_path / "named-data")):
        build_model(name, get_spec("digitdomains"), data_dir=tmp_path / "named-data")


def test_per_task_fgsm_attacks_each_task_on_its_own_images(data_dir, vmtl_cache):
    """Fig. C.2's protocol: each task attacked by its own loss on its own images; clean accuracy as evaluated."""
    from tf_mtvib.datasets import load, per_task_splits, to_dataset, to_multi_input_dataset
    from tf_mtvib.evaluate import evaluate_robustness, evaluate_robustness_by_task
    from tf_mtvib.metrics import evaluate_accuracy
    from tf_mtvib.models import build_model

    train = load("digitdomains", "train", data_dir, per_domain=200, fraction=0.2)
    test = load("digitdomains", "test", data_dir, per_domain=200, fraction=0.2).sample(200, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model("bmtl", train.spec, latent_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(to_multi_input_dataset(per_task_splits(train), 20, seed=0, task_names=train.spec.task_names),
              epochs=1, steps_per_epoch=30, verbose=0)
    r = evaluate_robustness_by_task(model, test, "fgsm", [0.0, 0.1], verbose=0)
    sizes = {t: len(s) for t, s in per_task_splits(test).items()}
    assert r["num_examples_per_task"] == sizes and r["num_examples"] == len(test)
    clean = evaluate_accuracy(model, to_dataset(test, 64))
    for t in train.spec.task_names:
        assert r["accuracy"][t][0] == pytest.approx(clean[t]) and r["accuracy"][t][1] <= r["accuracy"][t][0]
        assert 0.0 <= r["masking"]["zero_gradient"][t] <= 1.0
    assert r["accuracy"]["average"][0] == pytest.approx(np.mean([clean[t] for t in train.spec.task_names]))
    with pytest.raises(ValueError, match="its own loss"):
        evaluate_robustness_by_task(model, test, loss="sum")
    with pytest.raises(ValueError, match="have their own examples"):
        evaluate_robustness(model, test, eps_list=[0.0, 0.1], loss="per_task", verbose=0)


@pytest.mark.slow
def test_vmtl_train_and_export_take_pixels_and_a_task_index(tmp_path, data_dir, vmtl_cache):
    """train.py trains a VMTL family on digitdomains (with a validation carve, whose cross attention is over
    the training images); the export's predict_task signature (SavedModel and
    TFLite, run by LiteRT) takes pixels and a task index per image and returns that task's probabilities,
    class and predictive entropy, the same as the task's head of serving_default."""
    import json

    from tf_mtvib import export, train
    from tf_mtvib.datasets import load
    from tf_mtvib.export_lite import LiteModel

    run = tmp_path / "run"
    assert train.main(["--dataset", "digitdomains", "--model", "vmtl", "--preset", "smoke", "--output-dir", str(run),
                       "--data-dir", str(data_dir), "--val-fraction", "0.2"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]["mean"]) == {"original", "rotated", "negative", "textured", "average"}
    out = tmp_path / "export"
    assert export.main(["--run", str(run), "--output", str(out), "--tflite", "--data-dir", str(data_dir)]) == 0
    test = load("digitdomains", "test", data_dir, per_domain=200, fraction=0.2)
    x = test.images[:50].astype(np.float32) / 255.0
    task = np.asarray(test.extras["task"][:50], np.int32)
    loaded = tf.saved_model.load(str(out / "digitdomains_vmtl" / "1"))
    heads = {k: v.numpy() for k, v in loaded.signatures["serving_default"](image=tf.constant(x)).items()}
    got = {k: v.numpy() for k, v in loaded.signatures["predict_task"](image=tf.constant(x), task=tf.constant(task)).items()}
    names = test.spec.task_names
    expected = np.stack([heads[f"{t}_probs"] for t in names], axis=1)[np.arange(50), task]
    np.testing.assert_allclose(got["probs"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["entropy"], -np.sum(expected * np.log(np.maximum(expected, 1e-30)), -1), rtol=1e-4)
    np.testing.assert_array_equal(got["class"], expected.argmax(-1))
    lite = LiteModel(out / "digitdomains_vmtl.tflite").predict_task(x, task)
    np.testing.assert_allclose(lite["probs"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="predict_task"):
        LiteModel(out / "digitdomains_vmtl.tflite")(x)
