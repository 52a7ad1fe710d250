"""The spurious score (MT-CRL Table 1's rho_spur) against NumPy on a linear model."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")


class _Linear:
    """A MultiTaskModel's protocol over linear logits ``x W_t``: the input gradient of logit y is W_t[:, y]."""

    task_names = ("left", "right")

    def __init__(self, weights):
        import tensorflow as tf

        self.w = {t: tf.constant(w) for t, w in weights.items()}

    def mean_logits(self, images):
        import tensorflow as tf

        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        return {t: tf.matmul(flat, w) for t, w in self.w.items()}


def _split(n=20, seed=0):
    from tf_mtvib.datasets import Split, get_spec

    spec = get_spec("pairmnist")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *spec.input_shape), dtype=np.uint8)
    return Split(images, {t: rng.integers(0, 10, n) for t in spec.task_names}, spec)


def test_spurious_score_is_the_saliency_share_off_the_causal_half():
    from tf_mtvib.spurious import causal_masks, spurious_score

    split = _split()
    rng = np.random.default_rng(1)
    pixels = 28 * 56
    w = {t: rng.normal(size=(pixels, 10)).astype(np.float32) for t in ("left", "right")}
    masks = causal_masks(split.spec)
    only_left = w["left"] * masks["left"].reshape(-1, 1)          # reads its own half only
    rho = spurious_score(_Linear({"left": only_left, "right": w["right"]}), split, batch_size=7)
    assert rho["left"] == pytest.approx(0.0, abs=1e-7)
    # by hand: sum over the examples of |W[:, y_n]| off the right task's half, over all of it
    sal = np.abs(w["right"][:, split.labels["right"]]).sum(axis=1)
    expected = sal[~masks["right"].reshape(-1)].sum() / sal.sum()
    assert rho["right"] == pytest.approx(expected, rel=1e-5)
    assert 0.3 < rho["right"] < 0.7                                # a task reading both halves alike: ~0.5


def test_causal_masks_split_the_canvas_in_halves_and_need_a_pair_data_set():
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.spurious import causal_masks

    m = causal_masks(get_spec("pairmnist64"))
    assert m["left"][:, :32].all() and not m["left"][:, 32:].any() and (m["right"] == ~m["left"]).all()
    with pytest.raises(ValueError, match="defines no causal pixels"):
        causal_masks(get_spec("multimnist"))
