"""Deep VIB (Alemi et al. 2017): MLP 1024-1024, a K-dim Gaussian z, a logistic-regression decoder.

Its latent keeps Alemi et al.'s single linear head to mean and scale
(``latent_head="linear"``), not Tables I-II's FC + BN + ReLU heads.
"""
from . import FamilySpec

SPEC = FamilySpec(name="vib_mlp", description="Deep VIB MLP (Alemi et al. 2017)", default_weighting="fixed",
                  defaults={"latent_head": "linear"}, stochastic=True)


def mlp_trunk(dataset_spec):
    import keras

    from ..blocks import MLP_ENCODER_FC, dense_stack, image_input

    image = image_input(dataset_spec)
    return image, dense_stack(keras.layers.Flatten(name="flatten")(image), MLP_ENCODER_FC, "enc_", batchnorm=False)


def build(dataset_spec, hp):
    from ..blocks import classifier, latent

    image, h = mlp_trunk(dataset_spec)
    z = latent(hp, "latent")(h)
    return image, {t: classifier(z, dataset_spec, t) for t in dataset_spec.task_names}
