"""The deterministic twin of Deep VIB: z is the mean (a linear K-dim layer), no KL."""
from . import FamilySpec

SPEC = FamilySpec(name="mlp", description="deterministic twin of vib_mlp", default_weighting="fixed",
                  defaults={"latent_head": "linear"})


def build(dataset_spec, hp):
    import keras

    from ..blocks import classifier
    from .vib_mlp import mlp_trunk

    image, h = mlp_trunk(dataset_spec)
    z = keras.layers.Dense(hp["latent_dim"], name="latent_mean")(h)
    return image, {t: classifier(z, dataset_spec, t) for t in dataset_spec.task_names}
