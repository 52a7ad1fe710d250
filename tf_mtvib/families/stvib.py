"""STVIB: one independent VIB tower per task (MTVIB paper, single-task VIB baseline)."""
from . import FamilySpec

SPEC = FamilySpec(name="stvib", description="single-task VIB networks, one per task", default_weighting="fixed",
                  stochastic=True)


def build(dataset_spec, hp):
    """One VIB tower (trunk, FC 1024 x3, latent, decoder) per task."""
    from ..blocks import VIB_ENCODER_FC, conv_trunk, dense_stack, image_input, latent, vib_decoder

    image = image_input(dataset_spec)
    sync = hp["sync_batchnorm"]
    outputs = {}
    for t in dataset_spec.task_names:
        h = dense_stack(conv_trunk(image, dataset_spec, sync, prefix=f"{t}_"), VIB_ENCODER_FC, f"{t}_enc_", sync=sync)
        z = latent(hp, f"{t}_latent")(h)
        outputs[t] = vib_decoder(z, dataset_spec, t, sync, hp["float32_heads"])
    return image, outputs
