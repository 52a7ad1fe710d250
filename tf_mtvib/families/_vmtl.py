"""What the VMTL families share (Shen et al. 2021): hyper-parameters and the network builder.

Not a family itself (not in :data:`tf_mtvib.families.PACKAGE_FAMILIES`). ``bmtl``, ``vbmtl`` and
``vmtl`` are the supplement's BMTL (deterministic), VBMTL (variational z and w, N(0, I) priors) and VMTL
(Gumbel-Softmax priors from the other tasks' posteriors); :mod:`tf_mtvib.variational` holds the layers.
"""
from ..hparams import HParam
from ._lenet import _choice

#: The data sets with tasks of their own images that the VMTL families take (tf_mtvib.datasets.domains)
VMTL_DATASETS = ("digitdomains",)

FEATURE_DROPOUT = HParam(0.7, "dropout on the frozen features before the encoder (the official code: 0.7)")
KL_WEIGHTS = HParam("code", "the KL weights: 'code' (the official code: KL_z x 1e-7, KL_w x a ramp of 1e-6 x T "
                            "every 10 iterations; the default, chosen on the development seed: docs/vmtl.md) or 'elbo' "
                            "(supplement eq. 4 per example: KL_z x 1, KL_w x 1/N_t)",
                    _choice("elbo", "code"), "KIND")
TASK_EXAMPLES = HParam(50, "N_t, the training images per task, for the ELBO's KL_w weight 1/N_t "
                           "(digitdomains' default: a twentieth of 1,000 = 50)", int, "N")

VARIATIONAL_HPARAMS = {"feature_dropout": FEATURE_DROPOUT, "kl_weights": KL_WEIGHTS, "task_examples": TASK_EXAMPLES}


#: The VMTL families' ``prepare`` hook
PREPARE = f"{__name__}:prepare"


def prepare(data_dir=None) -> None:
    """Train the frozen extractor on Fashion-MNIST in ``data_dir`` and cache it unless it is cached, so that
    the builder (which takes no data directory) finds it; nothing is built when it is cached."""
    from ..extractor import ensure_fashion_extractor

    ensure_fashion_extractor(data_dir)


#: The VMTL family's ``extras`` hook
ATTENDED_EXTRAS = f"{__name__}:attended_extras"


def _features(images, batch: int = 500):
    """The frozen extractor's features (float32) of uint8 images, scaled as the training batches are."""
    import numpy as np

    from ..extractor import fashion_extractor

    extractor = fashion_extractor()
    return np.concatenate([np.asarray(extractor(images[i:i + batch].astype(np.float32) / 255.0, training=False),
                                      np.float32) for i in range(0, len(images), batch)])


def _own_labels(split):
    """``(tasks, labels)``: each example's task index and its label in that task."""
    import numpy as np

    tasks = np.asarray(split.extras["task"], np.int64)
    own = np.stack([np.asarray(split.labels[t], np.int64) for t in split.spec.task_names], axis=1)
    return tasks, own[np.arange(len(tasks)), tasks]


def attended_extras(splits, pool):
    """``[{"attended": (N, T, d) float32}]``, one per split of ``splits``: for each image and each task i, the
    cross attention of its frozen features over task i's images of its class in ``pool`` (the training
    split), as the official code's loader precomputes for VMTL's z prior (Table B.3;
    :func:`tf_mtvib.variational.class_attention`). The extractor is frozen, so computing this once before
    training gives what every step would; the pool's features are computed once for all the splits."""
    import numpy as np

    from ..variational import ATTENDED, class_attention

    pool_tasks, pool_labels = _own_labels(pool)
    f_pool = _features(pool.images)
    out = []
    for split in splits:
        tasks, labels = _own_labels(split)
        f = f_pool if split is pool else _features(split.images)
        attended = class_attention(f, labels, f_pool, pool_tasks, pool_labels, len(split.spec.task_names))
        out.append({ATTENDED: np.transpose(np.asarray(attended, np.float32), (1, 0, 2))})
    return out


def frozen_features(dataset_spec, hp):
    """``(image input, features)``: pixels -> the frozen extractor -> dropout; and the tasks' one class count."""
    import keras

    from ..blocks import image_input
    from ..extractor import fashion_extractor
    from ..variational import EXTRACTOR_LAYER

    classes = {t.num_classes for t in dataset_spec.tasks}
    if len(classes) != 1:
        raise ValueError(f"the VMTL families need tasks that share one label set; {dataset_spec.name}'s tasks have "
                         f"{sorted(classes)} classes")
    image = image_input(dataset_spec)
    extractor = fashion_extractor()
    extractor.name = EXTRACTOR_LAYER
    f = extractor(image, training=False)
    return image, keras.layers.Dropout(hp["feature_dropout"], name="feature_dropout")(f), classes.pop()


def z_kl_weight(hp, num_tasks: int) -> float:
    """The weight of mean_n KL_z: T * eta (:func:`tf_mtvib.vmtl.kl_weights`; eta is constant)."""
    from ..vmtl import kl_weights

    return num_tasks * kl_weights(hp["kl_weights"], 0, num_tasks, hp["task_examples"])[0]


def linear_heads(z, names, num_classes):
    """One linear classifier per task without bias, as the code's VMTL classifiers (their means)."""
    import keras

    return [keras.layers.Dense(num_classes, use_bias=False, name=f"{t}_classifier")(z) for t in names]


def network(dataset_spec, hp, variational: bool, prior: str = "normal", prior_form: str = "weighted_sum",
            prior_samples: int = 10):
    """pixels -> frozen extractor -> dropout -> encoder (linear; Bayesian when ``variational``) ->
    one linear classifier per task without bias (Bayesian when ``variational``)."""
    import keras

    from ..variational import CLASSIFIERS_LAYER, ENCODER_LAYER, BayesianClassifiers, BayesianLinear

    image, f, num_classes = frozen_features(dataset_spec, hp)
    names = dataset_spec.task_names
    if not variational:
        z = keras.layers.Dense(hp["latent_dim"], name=ENCODER_LAYER)(f)
        return image, dict(zip(names, linear_heads(z, names, num_classes)))
    z_weight = z_kl_weight(hp, len(names)) if prior == "normal" else 0.0   # VMTL's is the GumbelZPrior term
    z = BayesianLinear(hp["latent_dim"], kl_weight=z_weight, name=ENCODER_LAYER)(f)
    logits = BayesianClassifiers(names, num_classes, prior=prior, prior_form=prior_form, kl_weights=hp["kl_weights"],
                                 task_examples=hp["task_examples"], prior_samples=prior_samples,
                                 name=CLASSIFIERS_LAYER)(z)
    return image, dict(zip(names, logits))
