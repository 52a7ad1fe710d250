"""Losses as terms (#41 item 2): PCGrad through the per-task-gradient hook, and a
second-order penalty (IRMv1) through nested tapes, on small networks."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib.datasets.spec import DatasetSpec, Task
from tf_mtvib.models import MultiTaskModel
from tf_mtvib.terms import IRMPenalty, LossTerm, Step
from tf_mtvib.weightings import FixedWeighting, PCGrad

ROOT = Path(__file__).resolve().parents[1]
SPEC = DatasetSpec("tiny", (4, 4, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1"))))


def tiny_network(seed=0):
    """image -> Flatten -> shared Dense 5 -> one Dense head per task (logits)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(SPEC.input_shape, name="image")
    h = keras.layers.Dense(5, activation="tanh", name="shared")(keras.layers.Flatten()(image))
    return keras.Model(image, {t.name: keras.layers.Dense(t.num_classes, name=f"head_{t.name}")(h)
                               for t in SPEC.tasks})


def batch(n=6, seed=1, env=None):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + SPEC.input_shape, dtype=np.float32)
    y = {"a": rng.integers(0, 3, n), "b": rng.integers(0, 2, n)}
    if env is not None:
        x = {"image": x, "env": np.asarray(env, np.int32)}
    return x, y


def flat(grads):
    return np.concatenate([np.reshape(g, -1) for g in grads])


def test_pcgrad_combination_matches_the_hand_computation_on_two_tasks():
    """Algorithm 1 of Yu et al. on hand-made gradients: shared variable projected, own variables untouched."""
    w = PCGrad(["a", "b"])
    g1 = [tf.constant([1.0, 0.0]), tf.constant([3.0]), None]
    g2 = [tf.constant([-1.0, 1.0]), None, tf.constant([5.0])]
    out = w.combine_gradients([g1, g2], tf.constant(0))
    # g1.g2 = -1 < 0: g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); sum = (0.5, 1.5)
    np.testing.assert_allclose(out[0].numpy(), [0.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), [3.0])
    np.testing.assert_allclose(out[2].numpy(), [5.0])
    assert float(w.conflicts.result()) == 1.0
    w.conflicts.reset_state()
    # no conflict: the plain sum
    out = w.combine_gradients([[tf.constant([1.0, 1.0]), None, None], [[tf.constant([2.0, 0.0])][0], None, None]],
                              tf.constant(3))
    np.testing.assert_allclose(out[0].numpy(), [3.0, 1.0])
    assert float(w.conflicts.result()) == 0.0


def test_pcgrad_train_step_applies_the_projected_sum_of_the_tasks_gradients():
    """One SGD step of a PCGrad model equals the hand computation from the per-task gradients."""
    net = tiny_network()
    model = MultiTaskModel(net, PCGrad(SPEC.task_names), SPEC, model_name="tiny")
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(lr))
    x, y = batch(seed=32)      # a batch on which the two tasks' gradients conflict (cosine -0.77)
    before = [v.numpy().copy() for v in model.trainable_weights]
    names = [v.path for v in model.trainable_weights]
    grads = {}
    for t in SPEC.task_names:
        with tf.GradientTape() as tape:
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y[t], net(x)[t], from_logits=True))
        grads[t] = [None if g is None else g.numpy() for g in tape.gradient(ce, model.trainable_weights)]
    shared = [i for i, n in enumerate(names) if "shared" in n]
    ga, gb = flat([grads["a"][i] for i in shared]), flat([grads["b"][i] for i in shared])
    dot = ga @ gb
    assert dot < 0, "the fixture must make the two tasks conflict, or nothing is projected"
    pa, pb = ga - dot / (gb @ gb) * gb, gb - dot / (ga @ ga) * ga
    expected_shared = pa + pb
    model.fit(x, y, batch_size=len(y["a"]), epochs=1, verbose=0, shuffle=False)
    after = [v.numpy() for v in model.trainable_weights]
    got_shared = flat([(before[i] - after[i]) / lr for i in shared])
    np.testing.assert_allclose(got_shared, expected_shared, rtol=1e-4, atol=1e-6)
    for i, n in enumerate(names):
        if i in shared:
            continue
        own = grads["a"][i] if grads["a"][i] is not None else grads["b"][i]
        np.testing.assert_allclose((before[i] - after[i]) / lr, own, rtol=1e-4, atol=1e-7)
    # the projection changed something: the plain sum is not what was applied
    assert np.max(np.abs(got_shared - (ga + gb))) > 1e-4


def test_irm_penalty_and_its_gradient_match_finite_differences():
    """IRMv1's penalty by nested tapes: its value matches (dR/dw)^2 by central differences in w,
    and the outer tape's gradient with respect to the weights matches central differences of the penalty."""
    net = tiny_network()
    model = MultiTaskModel(net, FixedWeighting(SPEC.task_names), SPEC, model_name="tiny",
                           terms=[IRMPenalty(num_environments=3)], extras=("env",))
    x, y = batch(8, env=[0, 0, 1, 1, 1, 0, 2, 2])
    term = model.terms[0]

    def penalty():
        logits = model(x, training=False)
        step = Step(model, x, y, logits, {}, {}, True)
        return term(step)

    # the value: sum over tasks and environments of (dR/dw)^2, by central differences in w
    logits = {t: v.numpy().astype(np.float64) for t, v in model(x, training=False).items()}
    env = x["env"]

    def risk(t, e, w):
        sel = env == e
        z = w * logits[t][sel]
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.mean(logp[np.arange(sel.sum()), y[t][sel]])

    eps = 1e-5
    expected = sum(((risk(t, e, 1 + eps) - risk(t, e, 1 - eps)) / (2 * eps)) ** 2
                   for t in SPEC.task_names for e in range(3))
    assert float(penalty()) == pytest.approx(expected, rel=1e-3)
    assert expected > 1e-4

    # its gradient with respect to the network's weights (second order), against central differences
    with tf.GradientTape() as tape:
        p = penalty()
    grads = tape.gradient(p, model.trainable_weights)
    rng = np.random.default_rng(0)
    for var, g in zip(model.trainable_weights, grads):
        assert g is not None, var.path
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in var.shape)
            orig = var.numpy()
            h = 1e-2
            plus, minus = orig.copy(), orig.copy()
            plus[idx] += h
            minus[idx] -= h
            var.assign(plus)
            fp = float(penalty())
            var.assign(minus)
            fm = float(penalty())
            var.assign(orig)
            fd = (fp - fm) / (2 * h)
            assert g.numpy()[idx] == pytest.approx(fd, rel=2e-2, abs=2e-4), (var.path, idx)


def test_a_term_enters_the_loss_and_the_logs_and_survives_keras_saving(tmp_path):
    net = tiny_network()
    model = MultiTaskModel(net, FixedWeighting(SPEC.task_names), SPEC, model_name="tiny",
                           terms=[IRMPenalty(num_environments=2, weight=10.0)], extras=("env",))
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    x, y = batch(8, env=[0, 1] * 4)
    logits = model(x, training=False)
    parts = model.loss_parts(x, y, logits, training=False)
    expected = float(parts["weighted"]) + float(parts["penalties"]["irm_penalty"])
    assert float(parts["total"]) == pytest.approx(expected, rel=1e-6)
    assert float(parts["penalties"]["irm_penalty"]) > 0
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["irm_penalty"][0] > 0
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.terms[0], IRMPenalty) and loaded.terms[0].weight == 10.0
    assert loaded.extras == ("env",)


def test_a_term_that_reads_an_undeclared_extra_is_refused():
    class Reads(LossTerm):
        needs = ("env",)

        def value(self, step):
            return tf.reduce_mean(tf.cast(step.inputs["env"], tf.float32))

    with pytest.raises(ValueError, match="env"):
        MultiTaskModel(tiny_network(), FixedWeighting(SPEC.task_names), SPEC, model_name="tiny", terms=[Reads()])


class _SharedEnergy(LossTerm):
    """A penalty on the shared layer's output, read through Step.activation."""

    activations = ("shared",)

    def value(self, step):
        return tf.reduce_mean(tf.square(step.activation("shared")))


def test_a_term_reads_the_forward_pass_own_activation_in_training():
    """In training the model keeps the layers its terms list (the very tensors of the forward pass: no
    second pass); for other images or outside training it computes them again; the loss and its gradient
    are the same both ways."""
    model = MultiTaskModel(tiny_network(), FixedWeighting(SPEC.task_names), SPEC, model_name="tiny",
                           terms=[_SharedEnergy(weight=3.0)])
    x, y = batch(8)
    images = tf.constant(x)
    shared = keras.Model(model.network.inputs, model.network.get_layer("shared").output)

    def loss(kept: bool):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            probe = images if kept else tf.identity(images)     # the same values, another tensor
            assert (model.layer_output("shared", probe, training=True) is model._kept[1]["shared"]) == kept
            parts = model.loss_parts(probe, y, logits, training=True)
        return parts, tape.gradient(parts["total"], model.trainable_weights)

    kept_parts, kept_grads = loss(True)
    fresh_parts, fresh_grads = loss(False)
    expected = 3.0 * float(tf.reduce_mean(tf.square(shared(images))))
    assert float(kept_parts["penalties"]["_sharedenergy"]) == pytest.approx(expected, rel=1e-6)
    assert float(fresh_parts["penalties"]["_sharedenergy"]) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(flat(kept_grads), flat(fresh_grads), rtol=1e-5, atol=1e-7)
    # outside training nothing is kept: the output is computed again
    assert model.layer_output("shared", images, training=False) is not model._kept[1]["shared"]
    # a term naming a layer the network lacks is refused when the model is built
    with pytest.raises(ValueError, match="nowhere"):
        class Reads(_SharedEnergy):
            activations = ("nowhere",)
        MultiTaskModel(tiny_network(), FixedWeighting(SPEC.task_names), SPEC, model_name="tiny", terms=[Reads()])
    # fit trains through the kept path: no second forward pass was built (validation computes it again)
    fresh = MultiTaskModel(tiny_network(), FixedWeighting(SPEC.task_names), SPEC, model_name="tiny",
                           terms=[_SharedEnergy(weight=3.0)])
    fresh.compile(optimizer=keras.optimizers.SGD(0.01))
    history = fresh.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert history.history["_sharedenergy"][0] > 0
    assert "_layer_fns" not in fresh.__dict__
    fresh.evaluate(x, y, batch_size=4, verbose=0)
    assert "shared" in fresh.__dict__["_layer_fns"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dense:pcgrad", "custom:dense:pcgrad", "gs:pcgrad@1*1"])
def test_pcgrad_under_mirrored_strategy_projects_the_global_gradients(variant):
    """fit and the custom loop under MirroredStrategy (2 logical CPUs) give the single-device
    weights: the per-task gradients are all-reduced before the projection. ``dense``: a network
    without BatchNorm, 3 epochs of 2 steps; ``gs``: the paper's network with synchronized BatchNorm, whose
    backward pass runs its own collectives between the per-task gradients, over one step, in which the two
    tasks' gradients conflict and are projected on both sides.

    ``gs`` runs one step because a later step tests the CPU, not the all-reduce: where a later step's
    task gradients are nearly orthogonal, the collectives' rounding decides the sign of their dot product,
    hence whether PCGrad projects. Measured with 2 steps of 4 images (the first projected, conflicts 1.0, the
    second not on the single device, conflicts 0.5 over the epoch): the two sides differ by 2.4e-5 of the
    update after the first step and by 3.7 % after the second on an AMD EPYC with AVX512_BF16 (the same on
    two runs), 5.6e-5 on an Intel Xeon with AMX; another AMD EPYC gave 9e-6 after the two steps and 6 %
    after four. One variant per process: TensorFlow pairs the collectives of a second MirroredStrategy in
    one process with the first's (a shape-mismatch abort), whatever the model."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mirrored_step.py"), variant],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])[variant]
    assert r["replicas"] == 2
    assert r["max_abs_update_trainable"] > 1e-4
    assert r["max_abs_diff_trainable"] < 1e-3 * r["max_abs_update_trainable"], r
    if not variant.startswith("custom"):
        assert r["logs_single"]["pcgrad_conflicts"] > 0     # something was projected
        assert r["logs_mirrored"]["pcgrad_conflicts"] > 0   # on both sides
