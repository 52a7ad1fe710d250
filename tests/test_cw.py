"""The Carlini-Wagner L2 attack (tf_mtvib.cw) on constructed models whose adversarials are known."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tf_mtvib import cw  # noqa: E402


def _linear(w, b):
    """A one-task linear model on 2 'pixels': logits = x W + b."""
    w, b = tf.constant(w, tf.float32), tf.constant(b, tf.float32)
    return lambda x: {"t": tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b}


def test_margin_loss_is_cw_f6():
    logits = tf.constant([[3.0, 1.0, 0.5], [0.0, 2.0, 1.0]])
    labels = tf.constant([0, 2], tf.int64)
    # untargeted: Z_y - max_{i != y} Z_i = 3 - 1 and 1 - 2, floored at -kappa = 0
    np.testing.assert_allclose(cw.margin_loss(logits, labels, targeted=False).numpy(), [2.0, 0.0])
    # targeted: max_{i != t} Z_i - Z_t = 1 - 3 and 2 - 1, floored at 0
    np.testing.assert_allclose(cw.margin_loss(logits, labels, targeted=True).numpy(), [0.0, 1.0])
    np.testing.assert_allclose(cw.margin_loss(logits, labels, targeted=False, kappa=0.5).numpy(), [2.0, -0.5])


def test_cw_finds_the_closest_adversarial_of_a_linear_model():
    """Two classes with logits x0 - x1 and x1 - x0: the decision boundary is x0 = x1, and the closest
    point of the other class to x = (0.7, 0.3) is (0.5, 0.5), at L2 distance 0.2 * sqrt(2) = 0.283."""
    model = _linear([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])
    x = np.array([[0.7, 0.3], [0.2, 0.6]], np.float32)
    labels = np.array([0, 1])
    out = cw.cw_l2(model, x, labels, "t", binary_steps=8, max_iterations=300, learning_rate=0.05, initial_const=1.0)
    assert out["success"].all()
    np.testing.assert_allclose(out["l2"], [0.2 * np.sqrt(2), 0.2 * np.sqrt(2)], rtol=0.05)
    pred = np.argmax(model(tf.constant(out["x_adv"]))["t"].numpy(), axis=1)
    assert (pred != labels).all()
    assert out["x_adv"].min() >= 0.0 and out["x_adv"].max() <= 1.0


def test_cw_targeted_reaches_the_target_and_fails_where_the_range_forbids_it():
    # logits x0, x1 and 2 (x0 + x1) - 2.5: class 2 wins on the diagonal above 0.833, reachable from
    # (0.7, 0.7) in [0, 1], not within [0, 0.5]
    model = _linear([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]], [0.0, 0.0, -2.5])
    x = np.array([[0.7, 0.7]], np.float32)
    out = cw.cw_l2(model, x, np.array([2]), "t", targeted=True, binary_steps=6, max_iterations=300,
                   learning_rate=0.05, initial_const=1.0)
    assert out["success"].all() and np.argmax(model(tf.constant(out["x_adv"]))["t"].numpy()) == 2
    blocked = cw.cw_l2(model, np.array([[0.1, 0.1]], np.float32), np.array([2]), "t", targeted=True,
                       binary_steps=3, max_iterations=100, learning_rate=0.05, clip_max=0.5)
    assert not blocked["success"].any() and blocked["l2"][0] == 0.0
    np.testing.assert_array_equal(blocked["x_adv"], np.array([[0.1, 0.1]], np.float32))   # no success: the image


def test_the_written_out_adam_step_is_keras_adam_and_is_traced_once():
    """The attack's Adam (state passed in and out) takes the steps of keras.optimizers.Adam on the same
    objective, and a second batch of the same shape reuses the traced step."""
    import keras

    model = _linear([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])
    x = tf.constant([[0.7, 0.3], [0.2, 0.6]], tf.float32)
    labels = tf.constant([0, 1], tf.int64)
    c = tf.constant([1.0, 1.0], tf.float32)
    w0 = tf.atanh(x * 2 - 1)
    step = cw.adam_step(model, "t", False, 0.0, 0.0, 1.0, 0.05)
    w, m, v = w0, tf.zeros_like(w0), tf.zeros_like(w0)
    ref = tf.Variable(w0)
    opt = keras.optimizers.Adam(0.05)
    for t in range(1, 6):
        w, m, v, *_ = step(w, m, v, tf.constant(float(t)), x, labels, c)
        with tf.GradientTape() as tape:
            x_adv = (tf.tanh(ref) + 1) / 2
            total = tf.reduce_sum(cw.cw_objective(x_adv, x, model(x_adv)["t"], labels, c, False)[0])
        opt.apply_gradients([(tape.gradient(total, ref), ref)])
    np.testing.assert_allclose(w.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(w.numpy(), w0.numpy())
    before = step.experimental_get_tracing_count()
    cw.cw_l2(model, x.numpy()[::-1].copy(), labels.numpy(), "t", binary_steps=2, max_iterations=5,
             learning_rate=0.05, initial_const=1.0, step=step)
    assert step.experimental_get_tracing_count() == before
    with pytest.raises(ValueError, match="another model_fn, task or settings"):
        cw.cw_l2(model, x.numpy(), labels.numpy(), "t", targeted=True, max_iterations=1, step=step)


def test_evaluate_cw_scores_every_task_of_a_multi_task_model(tmp_path):
    """The command's path on a tiny two-task network: every task attacked, accuracy falls, L2 recorded."""
    import keras

    from tf_mtvib import cw as C
    from tf_mtvib.datasets import Split, get_spec
    from tf_mtvib.models import build_model

    spec = get_spec("pairmnist")
    rng = np.random.default_rng(0)
    n = 12
    split = Split(rng.integers(0, 256, size=(n, *spec.input_shape), dtype=np.uint8),
                  {t: rng.integers(0, 10, n) for t in spec.task_names}, spec)
    model = build_model("lenet_mtl", spec)
    keras.utils.set_random_seed(0)
    for targeted in (False, True):
        r = C.evaluate_cw(model, split, targeted=targeted, binary_steps=2, max_iterations=60, learning_rate=0.05,
                          initial_const=10.0, batch_size=6)
        assert set(r["tasks"]) == {"left", "right"} and r["num_examples"] == n and r["targeted"] == targeted
        for v in r["tasks"].values():
            assert v["success_rate"] > 0.5 and v["accuracy"] <= v["clean"]
            assert v["median_l2"] is None or v["median_l2"] > 0
    assert "| lenet_mtl | left |" in C.markdown_table([r])


def test_evaluate_cw_scores_each_task_on_its_own_images_when_tasks_have_their_own():
    """Labels -1 mark the other tasks' examples (multi-input data): each task is attacked on its own only."""
    import keras

    from tf_mtvib import cw as C
    from tf_mtvib.datasets import Split, get_spec
    from tf_mtvib.models import build_model

    spec = get_spec("pairmnist")
    rng = np.random.default_rng(1)
    n = 12
    own = np.arange(n) % 2                    # even rows: the left task's, odd rows: the right task's
    labels = {t: np.where(own == k, rng.integers(0, 10, n), -1) for k, t in enumerate(spec.task_names)}
    split = Split(rng.integers(0, 256, size=(n, *spec.input_shape), dtype=np.uint8), labels, spec)
    keras.utils.set_random_seed(0)
    model = build_model("lenet_mtl", spec)
    r = C.evaluate_cw(model, split, binary_steps=1, max_iterations=20, learning_rate=0.05, initial_const=10.0)
    assert {t: v["num_examples"] for t, v in r["tasks"].items()} == {"left": 6, "right": 6}
    assert all(0.0 <= v["accuracy"] <= v["clean"] <= 1.0 for v in r["tasks"].values())
