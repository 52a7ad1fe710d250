"""FusedBatchNormalization (issue "Speed"): Keras's BatchNormalization through TF's fused kernel,
with the same weights, outputs, gradients and moving statistics."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib.layers import BN_MOMENTUM, FusedBatchNormalization, fused_batchnorm


def pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    plain = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)
    fused = FusedBatchNormalization(momentum=BN_MOMENTUM)
    plain.build(shape)
    fused.build(shape)
    for layer in (plain, fused):     # the same non-trivial weights in both
        layer.set_weights([rng.normal(1, 0.2, shape[-1]).astype(np.float32) for _ in range(1)]
                          + [rng.normal(0, 0.2, shape[-1]).astype(np.float32)]
                          + [rng.normal(0, 0.5, shape[-1]).astype(np.float32)]
                          + [rng.uniform(0.5, 2, shape[-1]).astype(np.float32)])
        rng = np.random.default_rng(seed)
    x = tf.constant(np.random.default_rng(seed + 1).normal(2.0, 3.0, shape).astype(np.float32))
    return plain, fused, x


@pytest.mark.parametrize("shape", [(16, 6, 6, 5), (32, 7)])
def test_training_outputs_gradients_and_moving_statistics_equal_keras(shape):
    plain, fused, x = pair(shape)
    results = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y * tf.reshape(tf.linspace(0.5, 1.5, tf.size(y)), tf.shape(y)))
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in layer.non_trainable_weights]))
    (y0, g0, s0), (y1, g1, s1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    for a, b in zip(s1, s0):                  # moving mean and the (biased) moving variance
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(s0[1], np.ones_like(s0[1]))   # the statistics did move


def test_inference_uses_the_moving_statistics_like_keras():
    plain, fused, x = pair((8, 4, 4, 3))
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32():
    plain, fused, x = pair((16, 5, 5, 4))
    fused_bf16 = FusedBatchNormalization(momentum=BN_MOMENTUM, dtype="mixed_bfloat16")
    fused_bf16.build(x.shape)
    fused_bf16.set_weights(plain.get_weights())
    y = fused_bf16(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), plain(x, training=True).numpy(), atol=0.05, rtol=0.02)


def test_build_model_with_fused_batchnorm_has_the_same_weights_and_loads_either_way(tmp_path):
    from tf_mtvib.datasets.spec import get_spec
    from tf_mtvib.models import build_model

    spec = get_spec("multimnist")
    keras.utils.set_random_seed(0)
    plain = build_model("mtvib", spec, latent_dim=8)
    fused = build_model("mtvib", spec, latent_dim=8, fused_batchnorm=True)
    kinds = lambda m: [isinstance(l, FusedBatchNormalization) for l in m.network._flatten_layers()
                       if isinstance(l, keras.layers.BatchNormalization)]
    assert all(kinds(fused)) and not any(kinds(plain))
    assert [w.shape for w in plain.weights] == [w.shape for w in fused.weights]
    plain.save_weights(tmp_path / "w.weights.h5")
    fused.load_weights(tmp_path / "w.weights.h5")
    x = np.random.default_rng(0).random((4, 36, 36, 1), dtype=np.float32)
    for t in spec.task_names:
        np.testing.assert_allclose(fused.mean_logits(x)[t].numpy(), plain.mean_logits(x)[t].numpy(), rtol=1e-4, atol=1e-4)
    fused.save(tmp_path / "f.keras")
    again = keras.models.load_model(tmp_path / "f.keras")
    assert all(kinds(again))
    with fused_batchnorm():             # a synchronized BatchNorm stays Keras's
        from tf_mtvib.layers import batch_normalization

        assert type(batch_normalization(synchronized=True)) is keras.layers.BatchNormalization
        assert type(batch_normalization()) is FusedBatchNormalization
