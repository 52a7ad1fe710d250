"""MTVIB (Qian et al.) on the frozen features of the digit domains: VMTL's MTVIB baseline (Shen et al. 2021,
Table C.13, "Qian et al. [38]").

The BMTL network with its linear encoder replaced by MTVIB's Gaussian latent (Alemi et al.'s linear head to
mean and scale, ``beta * KL``, eq. 8-10), the tasks weighted by learned uncertainty (eq. 22-23): the same
extractor, dropout and linear task classifiers as ``bmtl``, ``vbmtl`` and ``vmtl``.
"""
from . import FamilySpec
from ._vmtl import FEATURE_DROPOUT, PREPARE, VMTL_DATASETS

SPEC = FamilySpec(name="domain_mtvib", description="MTVIB on the digit domains' frozen features (VMTL's baseline)",
                  default_weighting="uncertainty", stochastic=True, datasets=VMTL_DATASETS, inputs="per_task", prepare=PREPARE,
                  hparams={"feature_dropout": FEATURE_DROPOUT}, defaults={"latent_dim": 256, "latent_head": "linear"})


def build(dataset_spec, hp):
    from ..blocks import latent
    from ._vmtl import frozen_features, linear_heads

    image, f, num_classes = frozen_features(dataset_spec, hp)
    z = latent(hp, "latent")(f)
    return image, dict(zip(dataset_spec.task_names, linear_heads(z, dataset_spec.task_names, num_classes)))
