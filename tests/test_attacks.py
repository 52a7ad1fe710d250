"""FGSM / PGD / EOT (tf_mtvib.attacks) on tiny models: small, fast, and sharp."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from tf_mtvib import attacks as A
from tf_mtvib.datasets.spec import DatasetSpec, Task
from tf_mtvib.datasets.split import Split
from tf_mtvib.evaluate import evaluate_robustness
from tf_mtvib.layers import FixedWeighting, GaussianLatent, all_sublayers, latent_layers
from tf_mtvib.models import MultiTaskModel

SPEC = DatasetSpec("tiny", (4, 4, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1", "2"))))


def tiny_network(stochastic=False, dtype="float32", hidden=8, seed=0, spec=SPEC, scale_bias=None):
    """Flatten -> Dense(tanh) [-> GaussianLatent] -> one Dense head per task: smooth, every pixel matters."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(spec.input_shape, dtype=dtype, name="image")
    h = keras.layers.Flatten(dtype=dtype)(image)
    h = keras.layers.Dense(hidden, activation="tanh", dtype=dtype, name="hidden")(h)
    if stochastic:
        latent = GaussianLatent(4, beta=1e-3, name="latent", dtype=dtype)
        h = latent(h)
        if scale_bias is not None:  # widen the posterior so that samples differ visibly
            bias = latent.projection.bias
            bias.assign(np.concatenate([np.zeros(4), np.full(4, scale_bias)]).astype(bias.dtype))
    outputs = {t: keras.layers.Dense(spec.task(t).num_classes, dtype=dtype, name=t)(h) for t in spec.task_names}
    return keras.Model(image, outputs)


def tiny_model(stochastic=False, weights=None, **kw):
    net = tiny_network(stochastic, **kw)
    spec = kw.get("spec", SPEC)
    return MultiTaskModel(net, FixedWeighting(spec.task_names, weights), spec, model_name="tiny")


def batch(n=3, seed=1, dtype=np.float32, spec=SPEC):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + spec.input_shape)
    # pixels at and near the bounds, so that clipping is exercised
    x.reshape(n, -1)[:, :4] = [0.0, 0.01, 0.99, 1.0]
    y = {t.name: rng.integers(0, t.num_classes, n) for t in spec.tasks}
    return x.astype(dtype), y


def per_batch_loss(net, x, y):
    return float(A.sum_of_task_losses(y, net(tf.constant(x), training=False)))


def test_fgsm_moves_every_pixel_by_eps_or_to_a_bound_along_the_gradient():
    net = tiny_network(dtype="float64")
    x, y = batch(dtype=np.float64)
    eps = 0.05
    x_adv = A.fgsm(A.network_logits(net), x, y, eps).numpy()
    delta = x_adv - x
    assert np.all((x_adv >= 0) & (x_adv <= 1))
    at_eps = np.isclose(np.abs(delta), eps, rtol=0, atol=1e-12)
    clipped = (x_adv == 0) | (x_adv == 1)
    assert np.all(at_eps | clipped)
    assert at_eps.mean() > 0.7                      # most pixels move the full eps
    # the direction: sign of a central finite difference of the loss, pixel by pixel
    h = 1e-5
    fd = np.zeros_like(x)
    flat, fd_flat = x.reshape(-1), fd.reshape(-1)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        fd_flat[i] = (per_batch_loss(net, up.reshape(x.shape), y) - per_batch_loss(net, down.reshape(x.shape), y)) / (2 * h)
    moved = delta != 0
    assert np.all(np.sign(delta[moved]) == np.sign(fd[moved]))
    # pixels that did not move sat on the bound the gradient pushes towards
    assert np.all((x[~moved] == 0) & (fd[~moved] < 0) | (x[~moved] == 1) & (fd[~moved] > 0))
    assert per_batch_loss(net, x_adv, y) > per_batch_loss(net, x, y)


def test_fgsm_eps_zero_is_the_identity_and_loss_grows_with_eps():
    net = tiny_network()
    x, y = batch(8)
    fn = A.network_logits(net)
    np.testing.assert_array_equal(A.fgsm(fn, x, y, 0.0).numpy(), x)
    losses = [per_batch_loss(net, A.fgsm(fn, x, y, e).numpy(), y) for e in (0.0, 0.02, 0.05)]
    assert losses[0] < losses[1] < losses[2]


def test_fgsm_runs_under_tf_function_with_eps_as_a_tensor():
    net = tiny_network()
    x, y = batch(5)
    run = A.compile_attack("fgsm", A.network_logits(net))
    for e in (0.1, 0.2):
        np.testing.assert_allclose(run(tf.constant(x), y, tf.constant(e)).numpy(),
                                   A.fgsm(A.network_logits(net), x, y, e).numpy(), atol=1e-6)
    assert run.experimental_get_tracing_count() == 1


def test_pgd_stays_in_the_eps_ball_and_image_range_and_beats_its_start():
    net = tiny_network(hidden=16)
    x, y = batch(16)
    fn = A.network_logits(net)
    eps = 0.1
    x_adv = A.pgd(fn, x, y, eps, step_size=0.025, steps=10, random_start=True, seed=3).numpy()
    assert np.max(np.abs(x_adv - x)) <= eps + 1e-6
    assert np.all((x_adv >= 0) & (x_adv <= 1))
    # one step from the clean image, no random start, step = eps: exactly FGSM
    np.testing.assert_allclose(A.pgd(fn, x, y, eps, eps, 1, random_start=False).numpy(),
                               A.fgsm(fn, x, y, eps).numpy(), atol=1e-6)
    assert per_batch_loss(net, x_adv, y) >= per_batch_loss(net, A.fgsm(fn, x, y, eps).numpy(), y) - 1e-4
    traced = A.compile_attack("pgd", fn, steps=5)
    out = traced(tf.constant(x), y, tf.constant(eps)).numpy()
    assert np.max(np.abs(out - x)) <= eps + 1e-6


def test_task_and_training_losses():
    model = tiny_model(weights={"a": 2.0, "b": 0.0})
    x, y = batch(6)
    fn = A.network_logits(model.network)
    logits = fn(tf.constant(x))
    a_only = A.task_loss("a")(y, logits)
    # deterministic, no KL: the training loss times the batch is 2 * CE_a summed over the batch
    np.testing.assert_allclose(A.make_loss("training", model)(y, logits).numpy(), 2.0 * a_only.numpy(), rtol=1e-5)
    np.testing.assert_allclose((A.task_loss("a")(y, logits) + A.task_loss("b")(y, logits)).numpy(),
                               A.sum_of_task_losses(y, logits).numpy(), rtol=1e-6)
    # the attack on task a ignores head b entirely
    grad_a = A.loss_gradient(fn, x, y, A.task_loss("a")).numpy()
    grad_train = A.loss_gradient(fn, x, y, A.make_loss("training", model)).numpy()
    np.testing.assert_allclose(grad_train, 2.0 * grad_a, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="unknown attack loss"):
        A.make_loss("c", model)


def test_training_loss_of_a_vib_includes_the_kl_and_works_with_eot():
    model = tiny_model(stochastic=True, scale_bias=5.0)
    x, y = batch(4)
    fn = A.network_logits(model.network)
    loss = A.make_loss("training", model)
    g_train = A.loss_gradient(fn, x, y, loss).numpy()
    g_ce = A.loss_gradient(fn, x, y, A.sum_of_task_losses).numpy()
    assert not np.allclose(g_train, g_ce)        # beta * KL depends on x
    traced = A.compile_attack("fgsm", A.posterior_logits(model.network, 3), loss)
    out = traced(tf.constant(x), y, tf.constant(0.1)).numpy()
    assert np.all(np.isclose(np.abs(out - x), 0.1, atol=1e-6) | (out == 0) | (out == 1))


def test_eot_gradient_has_lower_variance_than_one_sample():
    model = tiny_model(stochastic=True, scale_bias=5.0)   # posterior scale ~0.7
    x, y = batch(4)

    def grads(samples, repeats=24):
        fn = A.posterior_logits(model.network, samples)
        g = tf.function(lambda x: A.loss_gradient(fn, x, y))
        return np.stack([g(tf.constant(x)).numpy() for _ in range(repeats)])

    one, eot = grads(1), grads(16)
    var_one, var_eot = one.var(axis=0).mean(), eot.var(axis=0).mean()
    assert var_one > 0
    assert var_eot < var_one / 4          # ~1/16 for independent samples
    # mean mode is deterministic, and EOT averages towards a different, sample-free direction
    mean_fn = A.network_logits(model.network)
    g1, g2 = (A.loss_gradient(mean_fn, x, y).numpy() for _ in range(2))
    np.testing.assert_array_equal(g1, g2)
    assert A.grad_mode_name(model, 16) == "eot16" and A.grad_mode_name(model, 0) == "mean"
    assert A.grad_mode_name(tiny_model(), 16) == "mean"     # no posterior: EOT is meaningless


def test_posterior_logits_shape_and_sampling():
    model = tiny_model(stochastic=True, scale_bias=5.0)
    x, _ = batch(3)
    out = A.posterior_logits(model.network, 5)(tf.constant(x))
    assert out["a"].shape == (5, 3, 3)
    assert not np.allclose(out["a"][0], out["a"][1])
    # the sampling switch is scoped: afterwards inference is back in mean mode
    m1, m2 = model.network(x, training=False), model.network(x, training=False)
    np.testing.assert_array_equal(m1["a"], m2["a"])
    with pytest.raises(ValueError):
        A.posterior_logits(model.network, 0)


def test_eot_encodes_once_and_samples_only_the_latent_onwards():
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import build_model

    for name in ("mtvib", "stvib"):          # one latent; one latent per task tower
        net = build_model(name, get_spec("multimnist"), latent_dim=4, latent_head="linear").network
        encoder, head = A.split_at_latents(net)
        assert not latent_layers(encoder)
        latents = latent_layers(net)
        assert len(latents) == (1 if name == "mtvib" else 2)
        for l in latents:                    # collapse the posterior onto its mean
            l.projection.bias.assign(np.r_[np.zeros(4), np.full(4, -40.0)].astype("float32"))
        x = np.random.default_rng(0).random((2, 36, 36, 1), dtype=np.float32)
        out = A.posterior_logits(net, 3)(tf.constant(x))
        mean = net(x, training=False)
        for t in mean:
            assert out[t].shape == (3, 2, 10)
            np.testing.assert_allclose(out[t].numpy(), np.broadcast_to(mean[t].numpy(), (3, 2, 10)), atol=1e-3)
    assert A.split_at_latents(tiny_network()) is None


def test_eot_falls_back_to_tiling_the_images_when_outputs_bypass_the_latent():
    image = keras.Input(SPEC.input_shape)
    flat = keras.layers.Flatten()(image)
    z = GaussianLatent(4, name="latent")(keras.layers.Dense(8, activation="tanh")(flat))
    both = keras.layers.Concatenate()([z, flat])       # a skip connection around the latent's encoder
    net = keras.Model(image, {t: keras.layers.Dense(3, name=t)(both) for t in SPEC.task_names})
    assert A.split_at_latents(net) is None
    x, y = batch(2)
    out = A.posterior_logits(net, 4)(tf.constant(x))
    assert out["a"].shape == (4, 2, 3)
    assert np.isfinite(A.loss_gradient(A.posterior_logits(net, 4), x, y).numpy()).all()


# --------------------------------------------------------------------------
# A trained model: PGD lowers accuracy at least as much as FGSM
# --------------------------------------------------------------------------
SYN = DatasetSpec("syn", (6, 6, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1"))))


def synthetic_split(n, seed):
    """Labels from a fixed random two-layer teacher of the image: learnable, not trivial."""
    teacher = np.random.default_rng(123)
    w1 = teacher.normal(size=(36, 16))
    heads = {"a": teacher.normal(size=(16, 3)), "b": teacher.normal(size=(16, 2))}
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)
    h = np.tanh((images.reshape(n, -1) / 255.0 - 0.5) @ w1)
    labels = {t: np.argmax(h @ w, axis=1).astype(np.int64) for t, w in heads.items()}
    return Split(images, labels, SYN)


def small_net(spec, conv=False, seed=0):
    """[Conv 16 + pool, Conv 32 + pool,] Dense 128 (ReLU), one head per task."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(spec.input_shape)
    h = image
    if conv:
        for filters in (16, 32):
            h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(filters, 3, activation="relu")(h))
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    h = h if conv else keras.layers.Dense(128, activation="relu")(h)
    outputs = {t: keras.layers.Dense(spec.task(t).num_classes, name=t)(h) for t in spec.task_names}
    return MultiTaskModel(keras.Model(image, outputs), FixedWeighting(spec.task_names), spec, model_name="small")


def fit(model, split, epochs, lr):
    model.compile(optimizer=keras.optimizers.Adam(lr))
    model.fit(split.images.astype(np.float32) / 255.0, split.labels, batch_size=100, epochs=epochs, verbose=0)
    return model


def mean_task(result, i):
    return np.mean([result["accuracy"][t][i] for t in result["tasks"]])


def test_pgd_lowers_accuracy_at_least_as_much_as_fgsm_synthetic():
    model = fit(small_net(SYN, seed=4), synthetic_split(3000, 0), epochs=15, lr=3e-3)
    test = synthetic_split(300, 1)
    eps = [0.0, 0.05, 0.1]
    fgsm = evaluate_robustness(model, test, "fgsm", eps, verbose=0)
    pgd = evaluate_robustness(model, test, "pgd", eps, steps=10, verbose=0)
    assert fgsm["accuracy"]["joint"][0] > 0.6                  # it learned something
    assert fgsm["clean"] == pgd["clean"] and fgsm["accuracy"]["joint"][0] == pgd["accuracy"]["joint"][0]
    for i in (1, 2):
        # the sum-of-losses attack may trade one task for another, so compare what it maximises
        assert mean_task(pgd, i) <= mean_task(fgsm, i)
        assert pgd["accuracy"]["joint"][i] <= fgsm["accuracy"]["joint"][i]
    assert mean_task(pgd, 2) < mean_task(fgsm, 2) < mean_task(fgsm, 1) < mean_task(fgsm, 0)


def test_pgd_lowers_accuracy_at_least_as_much_as_fgsm_multimnist(data_dir):
    from tf_mtvib.datasets import get_spec, load

    options = dict(num_train=3000, num_test=300)
    train = load("multimnist", "train", data_dir, **options)
    test = load("multimnist", "test", data_dir, **options)
    model = fit(small_net(get_spec("multimnist"), conv=True), train, epochs=4, lr=2e-3)
    eps = [0.0, 0.05, 0.1]
    fgsm = evaluate_robustness(model, test, "fgsm", eps, verbose=0)
    pgd = evaluate_robustness(model, test, "pgd", eps, steps=10, verbose=0)
    assert fgsm["accuracy"]["joint"][0] > 0.2
    for key in list(fgsm["tasks"]) + ["joint"]:
        f, p = fgsm["accuracy"][key], pgd["accuracy"][key]
        assert f[0] == p[0] and all(pi <= fi for pi, fi in zip(p[1:], f[1:])), (key, f, p)
    assert mean_task(pgd, 2) < mean_task(fgsm, 2) - 0.03       # iterating finds clearly more


# --------------------------------------------------------------------------
# Attack-protocol options (#16): each changes the attack the way its name says
# --------------------------------------------------------------------------
STATS = {"mean": [0.3], "std": [0.25]}


def test_standardized_space_with_eta_scaled_by_std_equals_unit_space():
    net = tiny_network(dtype="float64")
    x, y = batch(6, dtype=np.float64)
    fn = A.network_logits(net)
    eps = 0.1
    expected = A.fgsm(fn, x, y, eps).numpy()
    for space, scale in ((A.input_space("standardized", STATS), 0.25), (A.input_space("pixel255"), 1 / 255)):
        low, high = space.bounds()
        x_s = space.from_unit(tf.constant(x))
        adv = A.fgsm(A.in_space(fn, space), x_s, y, eps / scale, clip_min=low, clip_max=high)
        np.testing.assert_allclose(space.to_unit(adv).numpy(), expected, rtol=0, atol=1e-12)
        # the same eta in another space is another perturbation
        same_eta = space.to_unit(A.fgsm(A.in_space(fn, space), x_s, y, eps, clip_min=low, clip_max=high)).numpy()
        assert np.max(np.abs(same_eta - x)) == pytest.approx(eps * scale)
    np.testing.assert_allclose(A.input_space("standardized", STATS).bounds()[0], [-1.2])
    with pytest.raises(ValueError, match="statistics"):
        A.input_space("standardized")
    with pytest.raises(ValueError, match="unknown input space"):
        A.input_space("pixel")


def test_without_clipping_fgsm_leaves_the_unit_range_by_exactly_eps():
    net = tiny_network(dtype="float64")
    x, y = batch(4, dtype=np.float64)
    fn = A.network_logits(net)
    eps = 0.2
    free = A.fgsm(fn, x, y, eps, clip_min=None, clip_max=None).numpy()
    clipped = A.fgsm(fn, x, y, eps).numpy()
    assert free.min() < 0 or free.max() > 1
    np.testing.assert_allclose(np.abs(free - x), eps, atol=1e-12)     # every pixel moved by eps (no zero gradient)
    np.testing.assert_array_equal(np.clip(free, 0, 1), clipped)
    # PGD without clipping keeps only the eps ball
    out = A.pgd(fn, x, y, eps, 0.05, 5, clip_min=None, clip_max=None, seed=1).numpy()
    assert np.max(np.abs(out - x)) <= eps + 1e-12 and (out.min() < 0 or out.max() > 1)


def _saturating_model():
    """logits = c * sum(x) * [1, -1, 0] for both tasks: a bright image is saturated on class 0."""
    image = keras.Input(SPEC.input_shape, name="image")
    flat = keras.layers.Flatten()(image)
    heads = {}
    for t in SPEC.task_names:
        layer = keras.layers.Dense(3, name=t)
        heads[t] = layer(flat)
        layer.set_weights([np.tile(np.array([[2.0, -2.0, 0.0]], np.float32), (16, 1)), np.zeros(3, np.float32)])
    return MultiTaskModel(keras.Model(image, heads), FixedWeighting(SPEC.task_names), SPEC, model_name="sat")


def test_clipped_probability_ce_has_zero_gradient_on_a_saturated_example_and_sum_ce_does_not():
    model = _saturating_model()
    x = np.stack([np.full(SPEC.input_shape, 0.8), np.full(SPEC.input_shape, 0.05)]).astype(np.float32)
    y = {t: np.zeros(2, np.int64) for t in SPEC.task_names}   # margin 25.6 (saturated) and 1.6
    fn = A.network_logits(model.network)
    g_clip = A.loss_gradient(fn, x, y, A.make_loss("clipped_prob_ce", model)).numpy()
    g_sum = A.loss_gradient(fn, x, y, A.make_loss("sum", model)).numpy()
    assert np.all(g_clip[0] == 0) and np.all(g_clip[1] != 0)
    assert np.all(g_sum[0] != 0) and np.all(g_sum[1] != 0)
    # away from saturation the two losses agree
    np.testing.assert_allclose(g_clip[1], g_sum[1], rtol=1e-4)
    # the value is Keras's own cross-entropy from probabilities (evaluated eagerly, where Keras clips)
    logits = fn(tf.constant(x))
    keras_value = sum(float(tf.reduce_sum(keras.ops.sparse_categorical_crossentropy(
        y[t], tf.nn.softmax(logits[t]), from_logits=False))) for t in SPEC.task_names)
    assert float(A.clipped_probability_ce(y, logits)) == pytest.approx(keras_value, rel=1e-6)
    # the sweep counts the saturated image, and FGSM leaves it where it is
    split = Split(np.round(x * 255).astype(np.uint8), y, SPEC)
    r_clip = evaluate_robustness(model, split, "fgsm", [0, 0.1], loss="clipped_prob_ce", verbose=0)
    r_sum = evaluate_robustness(model, split, "fgsm", [0, 0.1], verbose=0)
    assert r_clip["zero_gradient"] == 0.5 and r_sum["zero_gradient"] == 0.0
    assert r_clip["loss"] == "clipped_prob_ce"


def _bn_network(seed=0):
    keras.utils.set_random_seed(seed)
    image = keras.Input(SPEC.input_shape, name="image")
    h = keras.layers.Dense(8, name="fc")(keras.layers.Flatten()(image))
    bn = keras.layers.BatchNormalization(name="bn")
    h = keras.layers.ReLU()(bn(h))
    net = keras.Model(image, {t: keras.layers.Dense(3, name=t)(h) for t in SPEC.task_names})
    bn.moving_mean.assign(np.full(8, 0.7, np.float32))       # moving statistics unlike any one batch's
    bn.moving_variance.assign(np.full(8, 3.0, np.float32))
    return net, bn


def test_batch_statistics_batchnorm_differs_from_inference_and_equals_training_mode():
    net, bn = _bn_network()
    model = MultiTaskModel(net, FixedWeighting(SPEC.task_names), SPEC, model_name="bn")
    x, y = batch(8)
    inference = A.model_fn_for(model)(tf.constant(x))
    batch_stats = A.model_fn_for(model, batchnorm="batch")(tf.constant(x))
    assert not np.allclose(inference["a"], batch_stats["a"], atol=1e-3)
    moving = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])     # the attack does not touch them
    training = net(x, training=True)                                     # Keras's own training mode (updates them)
    np.testing.assert_allclose(batch_stats["a"], training["a"], rtol=1e-5, atol=1e-6)
    g_inf = A.loss_gradient(A.model_fn_for(model), x, y).numpy()
    g_bat = A.loss_gradient(A.model_fn_for(model, batchnorm="batch"), x, y).numpy()
    assert not np.allclose(g_inf, g_bat)
    with pytest.raises(ValueError, match="batchnorm"):
        A.model_fn_for(model, batchnorm="train")


def test_batch_statistics_reach_nested_batchnorm_and_are_scoped():
    from tf_mtvib.layers import DenseBNReLU

    keras.utils.set_random_seed(0)
    image = keras.Input(SPEC.input_shape, name="image")
    block = DenseBNReLU(8, name="block")               # a BatchNormalization inside a layer
    h = block(keras.layers.Flatten()(image))
    net = keras.Model(image, {t: keras.layers.Dense(3, name=t)(h) for t in SPEC.task_names})
    block.batchnorm.moving_variance.assign(np.full(8, 5.0, np.float32))
    x, _ = batch(6)
    inference = net(x, training=False)["a"].numpy()
    with A.batch_statistics(net) as layers:
        assert layers == [block.batchnorm]
        inside = net(x, training=False)["a"].numpy()
    np.testing.assert_array_equal(net(x, training=False)["a"].numpy(), inference)   # scoped
    np.testing.assert_allclose(inside, net(x, training=True)["a"].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(inside, inference, atol=1e-3)
    # a real MTVIB: every BatchNorm, the latent's paper-head ones included
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import build_model

    mtvib = build_model("mtvib", get_spec("multimnist"), latent_dim=4)
    all_bn = [l for l in all_sublayers(mtvib.network) if isinstance(l, keras.layers.BatchNormalization)]
    with A.batch_statistics(mtvib.network) as layers:
        assert len(layers) == len(all_bn) and any(l.name == "bn" for l in layers)   # loc_head / scale_head BN
        assert all("call" in l.__dict__ for l in all_bn)
    assert not any("call" in l.__dict__ for l in all_bn)


def test_training_loss_is_the_weighted_ce_plus_beta_kl_summed_over_the_batch():
    model = tiny_model(stochastic=True, weights={"a": 0.25, "b": 2.0}, scale_bias=5.0)
    x, y = batch(5)
    fn = A.network_logits(model.network)
    logits = fn(tf.constant(x))
    value = float(A.make_loss("training", model)(y, logits))
    from tf_mtvib.models import kl_per_example
    ce = {t: A.task_loss(t)(y, logits).numpy() for t in SPEC.task_names}
    kl = kl_per_example(model, x).numpy().sum()
    assert value == pytest.approx(0.25 * ce["a"] + 2.0 * ce["b"] + 1e-3 * kl, rel=1e-5)
    assert 1e-3 * kl > 1e-4 * value                                       # the KL term is really there


def test_random_sign_moves_every_pixel_by_exactly_eps():
    x, _ = batch(5, dtype=np.float64)
    eps = 0.15
    free = A.random_sign(x, eps, clip_min=None, clip_max=None, seed=3).numpy()
    np.testing.assert_allclose(np.abs(free - x), eps, rtol=0, atol=1e-15)
    assert np.max(np.abs(free - x)) == pytest.approx(eps, abs=1e-15)
    assert 0.3 < np.mean(free > x) < 0.7                                 # both signs, about equally
    clipped = A.random_sign(x, eps).numpy()
    assert clipped.min() >= 0 and clipped.max() <= 1 and np.max(np.abs(clipped - x)) <= eps + 1e-15
    run = A.compile_attack("random_sign", None)
    a, b = (run(tf.constant(x), None, tf.constant(eps, tf.float64)).numpy() for _ in range(2))
    assert not np.array_equal(a, b)                                      # a fresh draw per call
