"""MT-CRL's equations against NumPy on fixed tensors (Hu et al. 2022, eqs. 1-3 and 7-9)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tf_mtvib import mtcrl  # noqa: E402


def _z(b=12, k=3, m=2, seed=0):
    return np.random.default_rng(seed).normal(size=(b, k, m))


def test_pearson_correlation_is_numpys_corrcoef_block():
    z = _z()
    zi, zj = z[:, 0], z[:, 2]
    expected = np.corrcoef(np.concatenate([zi, zj], axis=1), rowvar=False)[:2, 2:]
    np.testing.assert_allclose(mtcrl.pearson_correlation(zi, zj).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_decorrelation_sums_squared_frobenius_norms_over_module_pairs():
    z = _z(k=4, m=3)
    expected = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            rho = np.corrcoef(np.concatenate([z[:, i], z[:, j]], axis=1), rowvar=False)[:3, 3:]
            expected += np.sum(rho ** 2)
    assert float(mtcrl.decorrelation(z)) == pytest.approx(expected, rel=1e-5)
    same = np.repeat(z[:, :1], 2, axis=1)            # two identical modules of 3 dimensions
    assert float(mtcrl.decorrelation(same)) == pytest.approx(np.sum(np.corrcoef(z[:, 0], rowvar=False) ** 2), rel=1e-5)


def test_graph_terms_are_l1_and_the_entropy_of_module_shares():
    a = np.array([[0.9, 0.1, 0.5], [0.2, 0.7, 0.3]])
    assert float(mtcrl.graph_sparsity(a)) == pytest.approx(a.sum(), rel=1e-6)
    p = a.sum(0) / a.sum()
    assert float(mtcrl.graph_balance(a)) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)
    assert float(mtcrl.graph_balance(np.ones((2, 4)))) == pytest.approx(np.log(4), rel=1e-5)   # used alike: log K
    assert float(mtcrl.graph_loss(a, 0.1, 0.5)) == pytest.approx(0.1 * a.sum() + 0.5 * (p * np.log(p)).sum(), rel=1e-5)


def test_aggregate_sum_and_weighted_concatenation():
    z = _z(b=5, k=3, m=2)
    a_t = np.array([0.2, 0.5, 1.0])
    np.testing.assert_allclose(mtcrl.aggregate(a_t, z, "sum").numpy(), np.einsum("k,bkm->bm", a_t, z), rtol=1e-6)
    np.testing.assert_allclose(mtcrl.aggregate(a_t, z, "concat").numpy(), (a_t[None, :, None] * z).reshape(5, 6),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="unknown aggregation"):
        mtcrl.aggregate(a_t, z, "max")


def test_g_irm_norm_and_var_from_gradients():
    g = np.random.default_rng(1).normal(size=(2, 3, 4))                 # (E, T, K)
    assert float(mtcrl.g_irm(g, "norm")) == pytest.approx(np.sum(g ** 2), rel=1e-5)
    var = np.sum((g - g.mean(0, keepdims=True)) ** 2) / 2
    assert float(mtcrl.g_irm(g, "var")) == pytest.approx(var, rel=1e-5)
    # an environment absent from the batch adds nothing: Var over one environment is 0
    assert float(mtcrl.g_irm(g, "var", present=[True, False])) == pytest.approx(0.0, abs=1e-7)
    assert float(mtcrl.g_irm(g, "norm", present=[True, False])) == pytest.approx(np.sum(g[0] ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="unknown G-IRM form"):
        mtcrl.g_irm(g, "mean")


# ------------------------------------------------------------------ the G-IRM term on a tiny network

class _Model:
    """What a loss term reads of a model: its network, its tasks and a layer's output (always computed
    again here: the kept forward-pass tensors are MultiTaskModel's, tested in test_terms.py)."""

    def __init__(self, network, tasks):
        self.network, self.task_names = network, tasks

    def layer_output(self, layer, images, training=False):
        from tf_mtvib.models import sub_network

        return sub_network(self.network, layer)(images, training=training)


def _tiny_network(aggregation, predictor, seed=0):
    import keras

    from tf_mtvib.modular import CausalGraph, Modules, TaskPredictors

    keras.utils.set_random_seed(seed)
    x = keras.Input((5,), name="image")
    z = Modules(3, 2, name="modules")(x)
    inputs = CausalGraph(2, 3, aggregation, name="graph")(z)
    logits = TaskPredictors([4, 3], predictor, hidden=6, name="predictors")(inputs)
    network = keras.Model(x, {"a": logits[0], "b": logits[1]})
    theta = network.get_layer("graph").theta
    theta.assign(np.random.default_rng(seed).normal(size=(2, 3)).astype(np.float32))   # A away from 0.5
    return network


def _numpy_risks(network, x, labels, env, environments, a):
    """R_t^e(A) in float64 NumPy, from the network's weights: the modules, then f_t on aggregate(A_t, Z)."""
    dense = network.get_layer("modules").dense
    w, b = (np.asarray(v, np.float64) for v in dense.weights)
    z = np.maximum(x @ w + b, 0).reshape(len(x), 3, 2)
    predictors = network.get_layer("predictors")
    graph = network.get_layer("graph")
    risks = np.zeros((len(environments), 2))
    for t, task in enumerate(("a", "b")):
        h = (a[t][None, :, None] * z)
        h = h.reshape(len(x), 6) if graph.aggregation == "concat" else h.sum(1)
        for i, (kernel, bias) in enumerate(predictors.params[t]):
            h = h @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
            if i < len(predictors.params[t]) - 1:
                h = np.maximum(h, 0)
        logp = h - np.log(np.exp(h - h.max(1, keepdims=True)).sum(1, keepdims=True)) - h.max(1, keepdims=True)
        ce = -logp[np.arange(len(x)), labels[task]]
        for e, env_id in enumerate(environments):
            risks[e, t] = ce[env == env_id].mean()
    return risks


@pytest.mark.parametrize("aggregation, predictor", [("concat", "linear"), ("sum", "mlp")])
@pytest.mark.parametrize("form", ["var", "norm"])
def test_g_irm_penalty_is_the_finite_difference_gradient_with_respect_to_a(aggregation, predictor, form):
    from tf_mtvib.modular import GraphIRMPenalty
    from tf_mtvib.terms import Step

    network = _tiny_network(aggregation, predictor)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    labels = {"a": rng.integers(0, 4, 16), "b": rng.integers(0, 3, 16)}
    env = np.array([0] * 10 + [1] * 6)
    term = GraphIRMPenalty(form)
    step = Step(_Model(network, ("a", "b")), {"image": tf.constant(x), "environment": tf.constant(env)},
                {k: tf.constant(v) for k, v in labels.items()}, {}, {}, {}, training=True)
    value = float(term(step))

    a = 1 / (1 + np.exp(-np.asarray(network.get_layer("graph").theta, np.float64)))
    grads = np.zeros((2, 2, 3))                     # (E, T, K): dR_t^e / dA_t by central differences in A
    h = 1e-5
    for t in range(2):
        for k in range(3):
            up, down = a.copy(), a.copy()
            up[t, k] += h
            down[t, k] -= h
            diff = (_numpy_risks(network, x.astype(np.float64), labels, env, (0, 1), up)
                    - _numpy_risks(network, x.astype(np.float64), labels, env, (0, 1), down)) / (2 * h)
            grads[:, t, k] = diff[:, t]
    expected = np.sum(grads ** 2) if form == "norm" else np.sum((grads - grads.mean(0)) ** 2) / 2
    assert value == pytest.approx(expected, rel=2e-3, abs=1e-7)


def test_irm_form_is_eq_6_the_gradient_norm_with_respect_to_a_and_the_predictors():
    """The IRM baseline (eq. 6): sum_t sum_e ||grad_{A_t, f_t} R_t^e||^2, by central differences in A and f."""
    from tf_mtvib.modular import GraphIRMPenalty
    from tf_mtvib.terms import Step

    network = _tiny_network("concat", "linear", seed=2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    labels = {"a": rng.integers(0, 4, 12), "b": rng.integers(0, 3, 12)}
    env = np.array([0] * 7 + [1] * 5)
    with tf.GradientTape() as tape:
        value = GraphIRMPenalty("irm")(Step(_Model(network, ("a", "b")), {"image": tf.constant(x),
                                                                          "environment": tf.constant(env)},
                                            {k: tf.constant(v) for k, v in labels.items()}, {}, {}, {}, training=True))
    predictors = network.get_layer("predictors")
    grads = tape.gradient(value, predictors.trainable_weights)
    assert all(g is not None for g in grads)                       # IRM updates f_t, unlike G-IRM
    a = 1 / (1 + np.exp(-np.asarray(network.get_layer("graph").theta, np.float64)))
    xd, h = x.astype(np.float64), 1e-5
    risks = lambda aa: _numpy_risks(network, xd, labels, env, (0, 1), aa)
    expected = 0.0
    for t in range(2):
        for k in range(3):
            up, down = a.copy(), a.copy()
            up[t, k] += h
            down[t, k] -= h
            expected += np.sum(((risks(up) - risks(down)) / (2 * h))[:, t] ** 2)
    for var in predictors.trainable_weights:                         # task t's kernel and bias: R_t^e only
        t = int(var.name.split("task")[1][0]) if "task" in var.name else int(var.path.split("task")[1][0])
        base = np.asarray(var).copy()
        for idx in np.ndindex(base.shape):
            diffs = []
            for sign in (1, -1):
                moved = base.copy()
                moved[idx] += sign * 1e-3
                var.assign(moved)
                diffs.append(risks(a)[:, t])
            var.assign(base)
            expected += np.sum(((diffs[0] - diffs[1]) / 2e-3) ** 2)
    assert float(value) == pytest.approx(expected, rel=2e-3)


def test_g_irm_gradient_reaches_theta_and_the_modules_but_not_the_predictors():
    from tf_mtvib.modular import GraphIRMPenalty
    from tf_mtvib.terms import Step

    network = _tiny_network("concat", "mlp")
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(16, 5)).astype(np.float32))
    labels = {"a": tf.constant(rng.integers(0, 4, 16)), "b": tf.constant(rng.integers(0, 3, 16))}
    env = tf.constant(np.array([0, 1] * 8))
    with tf.GradientTape() as tape:
        value = GraphIRMPenalty("var")(Step(_Model(network, ("a", "b")), {"image": x, "environment": env}, labels,
                                            {}, {}, {}, training=True))
    graph, modules, predictors = (network.get_layer(n) for n in ("graph", "modules", "predictors"))
    grads = tape.gradient(value, [graph.theta, *modules.trainable_weights, *predictors.trainable_weights])
    assert float(value) > 0
    assert np.abs(grads[0].numpy()).sum() > 0                            # theta, through A = sigmoid(theta)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads[1:1 + len(modules.trainable_weights)])
    assert all(g is None for g in grads[1 + len(modules.trainable_weights):])   # f_t held fixed


def test_g_irm_needs_two_environments_and_a_known_form():
    from tf_mtvib.modular import GraphIRMPenalty

    with pytest.raises(ValueError, match="at least two"):
        GraphIRMPenalty("var", environments=(0,))
    with pytest.raises(ValueError, match="unknown G-IRM form"):
        GraphIRMPenalty("mean")


def test_layers_add_their_regularisers_in_training_only():
    import keras

    from tf_mtvib.modular import CausalGraph, Modules

    modules = Modules(3, 2, lambda_decor=0.5)
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32))
    z = modules(x, training=True)
    assert len(modules.losses) == 1
    assert float(modules.losses[0]) == pytest.approx(0.5 * float(mtcrl.decorrelation(z)), rel=1e-6)
    graph = CausalGraph(2, 3, lambda_sps=0.1, lambda_bal=0.2, init_theta=1.0)
    graph(z, training=True)
    a = np.full((2, 3), 1 / (1 + np.exp(-1.0)))
    assert float(graph.losses[0]) == pytest.approx(0.1 * a.sum() - 0.2 * np.log(3), rel=1e-5)
    inference = Modules(3, 2, lambda_decor=0.5)
    inference(x, training=False)
    assert not inference.losses
    assert isinstance(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(graph)), CausalGraph)


def test_mtcrl_task_risk_reads_the_train_environment_in_training_only():
    import keras

    from tf_mtvib.datasets.spec import SPECS
    from tf_mtvib.models import build_model

    spec = SPECS["pairmnist"]
    model = build_model("mtcrl", spec, girm="none", lambda_decor=0.0, lambda_sps=0.0, lambda_bal=0.0)
    assert model.risk_environments == (0,) and not model.terms
    rng = np.random.default_rng(0)
    x = {"image": tf.constant(rng.random((6, *spec.input_shape), dtype=np.float32)),
         "environment": tf.constant([0, 0, 1, 1, 1, 0])}
    y = {t: tf.constant(rng.integers(0, 10, 6)) for t in spec.task_names}
    logits = model(x, training=False)
    parts = model.loss_parts(x, y, logits, training=True)
    evaluation = model.loss_parts(x, y, logits, training=False)
    for t in spec.task_names:
        ce = keras.losses.sparse_categorical_crossentropy(y[t], logits[t], from_logits=True).numpy()
        assert float(parts["task_losses"][t]) == pytest.approx(ce[[0, 1, 5]].mean(), rel=1e-5)
        assert float(evaluation["task_losses"][t]) == pytest.approx(ce.mean(), rel=1e-5)
    every = build_model("mtcrl", spec, girm="none", risk_on="all")
    assert every.risk_environments == ()
    loaded = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert loaded.risk_environments == (0,)


def test_mtcrl_refuses_a_training_split_of_one_environment(tmp_path, data_dir, tmp_cache, capsys):
    from tf_mtvib.train import main

    argv = ["--dataset", "pairmnist", "--model", "mtcrl", "--preset", "smoke", "--holdout", "valid",
            "--data-dir", str(data_dir), "--verbose", "0"]
    assert main([*argv, "--output-dir", str(tmp_path / "a")]) == 2
    assert "G-IRM needs a second environment" in capsys.readouterr().err
    assert main([*argv, "--girm", "none", "--output-dir", str(tmp_path / "b")]) == 0    # without G-IRM it trains
    assert main(["--dataset", "mnist", "--model", "mtcrl", "--output-dir", str(tmp_path / "c")]) == 2
    assert "does not take data set 'mnist'" in capsys.readouterr().err


@pytest.mark.slow
def test_mtcrl_and_mmoe_train_attack_and_export_through_the_commands(tmp_path, data_dir, tmp_cache):
    """MT-CRL reaches every command like the paper's models: train, FGSM (the training loss without its
    G-IRM term, and per task), a SavedModel and TFLite files checked by LiteRT's interpreter."""
    import json
    import subprocess
    import sys

    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_MTVIB_DATA_DIR": str(data_dir), "TF_MTVIB_CACHE_DIR": str(tmp_cache)}
    import os

    env = {**os.environ, **env}

    def run(*args):
        proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    for name in ("mtcrl", "mmoe"):
        r = tmp_path / name
        run("train.py", "--dataset", "pairmnist", "--model", name, "--preset", "smoke", "--output-dir", r,
            "--verbose", "0")
        history = json.loads((r / "history.json").read_text())
        assert len(history) == 2 and ("g_irm" in history[0]) == (name == "mtcrl")
        for loss in ("training", "per_task"):
            run("-m", "tf_mtvib.evaluate", "--run", r, "--attack", "fgsm", "--eps", "0,0.1", "--max-examples", 40,
                "--loss", loss, "--output", tmp_path / f"{name}-{loss}")
            text = (tmp_path / f"{name}-{loss}" / "robustness.json").read_text()
            assert '"num_examples": 40' in text
        out = run("-m", "tf_mtvib.export", "--run", r, "--output", tmp_path / f"{name}-export", "--tflite",
                  "--check-limit", 40)
        assert "TFLite float32" in out
        assert (tmp_path / f"{name}-export" / f"pairmnist_{name}.tflite").exists()


@pytest.mark.parametrize("family", ["mtcrl", "mmoe"])
def test_k_trunks_build_one_lenet_per_module_and_take_a_step(family):
    import keras

    from tf_mtvib.datasets.spec import SPECS
    from tf_mtvib.models import build_model

    spec = SPECS["pairmnist"]
    shared = build_model(family, spec, num_modules=4)
    separate = build_model(family, spec, num_modules=4, module_trunks="separate")
    convs = lambda m: sum(isinstance(l, keras.layers.Conv2D) for l in m.network.layers)
    assert convs(shared) == 2 and convs(separate) == 8
    separate.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = {"image": rng.random((8, *spec.input_shape), dtype=np.float32), "environment": np.array([0, 1] * 4)}
    logs = separate.train_on_batch(x if separate.extras else x["image"],
                                   {t: rng.integers(0, 10, 8) for t in spec.task_names}, return_dict=True)
    assert np.isfinite(logs["loss"])
    # G-IRM read the step's own modules output: no second forward pass was built
    assert separate.__dict__.get("_kept_layers") == (("modules",) if family == "mtcrl" else ())
    assert "_layer_fns" not in separate.__dict__
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(separate))
    assert restored.network.get_layer("modules").separate


def test_beta_vae_modules_add_the_reconstruction_and_the_latent_adds_the_kl():
    """Table 3's beta-VAE row: weight / pixels * (sum_pixels BCE + beta * KL), against NumPy."""
    import keras

    from tf_mtvib.layers import GaussianLatent
    from tf_mtvib.modular import VAEModules

    rng = np.random.default_rng(0)
    h = tf.constant(rng.normal(size=(8, 7)).astype(np.float32))
    image = tf.constant(rng.random((8, 4, 4, 1)).astype(np.float32))
    weight, beta, pixels = 0.5, 4.0, 16
    latent = GaussianLatent(6, beta=weight * beta / pixels, head="linear")
    vae = VAEModules(3, 2, weight=weight, hidden=5)
    z = latent(h, training=True, sample=False)               # the posterior mean: a deterministic check
    out = vae([z, image], training=True)
    assert tuple(out.shape) == (8, 3, 2)
    np.testing.assert_allclose(out.numpy().reshape(8, 6), z.numpy())
    w1, b1 = (np.asarray(v, np.float64) for v in vae.decoder_hidden.weights)
    w2, b2 = (np.asarray(v, np.float64) for v in vae.decoder_out.weights)
    logits = np.maximum(z.numpy() @ w1 + b1, 0) @ w2 + b2
    x = image.numpy().reshape(8, pixels)
    bce = np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))
    assert len(vae.losses) == 1
    assert float(vae.losses[0]) == pytest.approx(weight * bce.sum(1).mean() / pixels, rel=1e-5)
    loc, scale = (t.numpy().astype(np.float64) for t in latent.loc_and_scale(h))
    kl = 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * np.log(scale)).sum(1)
    assert float(latent.losses[0]) == pytest.approx(weight * beta / pixels * kl.mean(), rel=1e-5)
    inference = VAEModules(3, 2, weight=weight, hidden=5)
    inference([z, image], training=False)
    assert not inference.losses
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(restored, VAEModules) and restored.get_config()["weight"] == weight
    with pytest.raises(ValueError, match="K \\* m"):
        VAEModules(4, 2)([z, image])


def test_mtcrl_beta_vae_row_trains_with_g_irm_and_takes_one_trunk():
    import keras

    from tf_mtvib.datasets.spec import SPECS
    from tf_mtvib.hparams import InapplicableHParam
    from tf_mtvib.models import build_model
    from tf_mtvib.modular import VAEModules

    spec = SPECS["pairmnist"]
    model = build_model("mtcrl", spec, disentangle="beta_vae", num_modules=4)
    assert isinstance(model.network.get_layer("modules"), VAEModules)
    assert model.is_stochastic and model.network.get_layer("module_latent").beta > 0
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = {"image": rng.random((8, *spec.input_shape), dtype=np.float32), "environment": np.array([0, 1] * 4)}
    logs = model.train_on_batch(x, {t: rng.integers(0, 10, 8) for t in spec.task_names}, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["kl"] > 0 and np.isfinite(logs["g_irm"])
    with pytest.raises(InapplicableHParam, match="one trunk"):
        build_model("mtcrl", spec, disentangle="beta_vae", module_trunks="separate")
