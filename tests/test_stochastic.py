"""Stochastic models by interface (#41 item 4): attacks, MC prediction and export ask the model
through one protocol (is_stochastic, mean_logits, sampled_logits, batch_statistics, float32_compute)."""
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib import attacks as A
from tf_mtvib.datasets.spec import DatasetSpec, Task
from tf_mtvib.models import MultiTaskModel
from tf_mtvib.weightings import FixedWeighting

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = DatasetSpec("tiny", (4, 4, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1"))))


class NoisyLogits(MultiTaskModel):
    """A stochastic model without a Gaussian latent: each draw adds N(0, 1) noise to the hidden layer
    (randomness the package's layers know nothing of)."""

    @property
    def is_stochastic(self):
        return True

    def sampled_logits(self, images, samples):
        hidden = self.network.get_layer("hidden")
        feats = keras.Model(self.network.input, hidden.output)(images, training=False)
        noisy = feats[None] + tf.random.normal(tf.concat([[samples], tf.shape(feats)], 0))
        flat = tf.reshape(noisy, [-1, feats.shape[-1]])
        return {t: tf.reshape(self.network.get_layer(f"head_{t}")(flat), [samples, -1, SPEC.task(t).num_classes])
                for t in self.task_names}


def noisy_model():
    keras.utils.set_random_seed(0)
    image = keras.Input(SPEC.input_shape)
    h = keras.layers.Dense(6, activation="tanh", name="hidden")(keras.layers.Flatten()(image))
    net = keras.Model(image, {t.name: keras.layers.Dense(t.num_classes, name=f"head_{t.name}")(h) for t in SPEC.tasks})
    return NoisyLogits(net, FixedWeighting(SPEC.task_names), SPEC, model_name="noisy")


def data(n=5):
    rng = np.random.default_rng(0)
    return (tf.constant(rng.random((n,) + SPEC.input_shape, dtype=np.float32)),
            {"a": tf.constant(rng.integers(0, 3, n)), "b": tf.constant(rng.integers(0, 2, n))})


def test_attacks_reach_a_non_latent_stochastic_model_through_the_protocol():
    model = noisy_model()
    x, y = data()
    out = A.model_fn_for(model, eot_samples=4)(x)
    assert out["a"].shape == (4, 5, 3)
    g_mean = A.loss_gradient(A.model_fn_for(model), x, y).numpy()
    g_eot = A.loss_gradient(A.model_fn_for(model, eot_samples=4), x, y).numpy()
    assert np.isfinite(g_eot).all() and not np.allclose(g_mean, g_eot)
    assert A.grad_mode_name(model, 4) == "eot4"
    x_adv = A.fgsm(A.model_fn_for(model, eot_samples=4), x, y, 0.1).numpy()
    assert np.abs(x_adv - x.numpy()).max() == pytest.approx(0.1, abs=1e-6)


def test_mc_prediction_and_export_use_the_protocol(tmp_path):
    from tf_mtvib import export as ex

    model = noisy_model()
    x, _ = data()
    mean = model.probabilities(x)
    mc = model.probabilities(x, samples=64)
    assert not np.allclose(mean["a"].numpy(), mc["a"].numpy())
    np.testing.assert_allclose(mc["a"].numpy().sum(-1), 1.0, rtol=1e-5)
    module, signatures = ex.build_serving_module(model, mc_samples=8)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=signatures)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = loaded.signatures[ex.SERVING_SIGNATURE](**{ex.INPUT_NAME: x})
    np.testing.assert_allclose(served["a_probs"].numpy(), mean["a"].numpy(), rtol=1e-5, atol=1e-6)
    draws = loaded.signatures[ex.MC_SIGNATURE](**{ex.INPUT_NAME: x})
    assert not np.allclose(draws["a_probs"].numpy(), mean["a"].numpy())
    assert (draws["a_entropy"].numpy() > 0).all()


def test_probabilities_in_mean_mode_ignore_an_enclosing_sampling_scope():
    """Review §5: the graph cache is keyed by the sample count; mean mode stays deterministic whether
    the first call was traced inside or outside a posterior_sampling scope."""
    from tf_mtvib.datasets.spec import get_spec
    from tf_mtvib.layers import posterior_sampling
    from tf_mtvib.models import build_model

    model = build_model("mtvib", get_spec("multimnist"), latent_dim=4)
    x = np.random.default_rng(0).random((3, 36, 36, 1), dtype=np.float32)
    with posterior_sampling():
        inside = model.probabilities(x)["top_left"].numpy()
    outside = [model.probabilities(x)["top_left"].numpy() for _ in range(2)]
    np.testing.assert_array_equal(inside, outside[0])
    np.testing.assert_array_equal(outside[0], outside[1])
    np.testing.assert_allclose(inside, tf.nn.softmax(model.mean_logits(x)["top_left"]).numpy(), rtol=1e-6)


def test_no_code_outside_the_model_reaches_into_its_layers():
    """Attacks, evaluation, export, saturation and the reproductions use the protocol only: no name
    of the latent machinery and no direct call of ``<model>.network(...)`` in their code (imports
    kept for re-export and docstrings aside)."""
    import ast

    banned = {"latent_layers", "GaussianLatent", "split_at_latents", "posterior_sampling", "sampled_logits"}
    files = [ROOT / "tf_mtvib" / f for f in ("attacks.py", "evaluate.py", "export.py", "export_lite.py",
                                             "saturation.py")]
    files += sorted((ROOT / "tf_mtvib" / "reproduce").glob("*.py"))
    offenders = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Name) and node.id in banned:
                offenders.append(f"{f.name}:{node.lineno} {node.id}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "network":
                offenders.append(f"{f.name}:{node.lineno} .network(...)")
    assert not offenders, offenders
