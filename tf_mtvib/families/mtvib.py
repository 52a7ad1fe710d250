"""MTVIB (Qian et al.): a shared encoder to a Gaussian latent z, one decoder per task.

Shared trunk + FC 1024 x3 + Gaussian latent (``beta * KL`` bounds I(Z;X),
eq. 10), decoders FC 384 + FC 192 + classifier reading a sample of z, task
losses weighted by learned uncertainty (eq. 22-23).
"""
from . import FamilySpec

SPEC = FamilySpec(name="mtvib", description="multi-task VIB with learned uncertainty weights",
                  default_weighting="uncertainty", stochastic=True,
                  search=("beta", "learning_rate", "latent_dim"))


def build(dataset_spec, hp):
    """Shared trunk + FC 1024 x3 + Gaussian latent, one decoder per task (Table I-II)."""
    from ..blocks import VIB_ENCODER_FC, conv_trunk, dense_stack, image_input, latent, vib_decoder

    image = image_input(dataset_spec)
    sync = hp["sync_batchnorm"]
    h = dense_stack(conv_trunk(image, dataset_spec, sync), VIB_ENCODER_FC, "enc_", sync=sync)
    z = latent(hp, "latent")(h)
    return image, {t: vib_decoder(z, dataset_spec, t, sync, hp["float32_heads"]) for t in dataset_spec.task_names}
