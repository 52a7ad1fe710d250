"""VBMTL (VMTL's supplement, Shen et al. 2021): variational z and w with N(0, I) priors.

The VMTL network (a Bayesian linear encoder, Bayesian linear task classifiers) whose priors are the
standard normal instead of the other tasks' posteriors.
"""
from . import FamilySpec
from ._vmtl import PREPARE, VARIATIONAL_HPARAMS, VMTL_DATASETS

SPEC = FamilySpec(name="vbmtl", description="VBMTL: variational z and w with N(0, I) priors (VMTL's baseline)",
                  default_weighting="fixed", datasets=VMTL_DATASETS, inputs="per_task", prepare=PREPARE,
                  hparams=VARIATIONAL_HPARAMS, defaults={"latent_dim": 256})


def build(dataset_spec, hp):
    from ._vmtl import network

    return network(dataset_spec, hp, variational=True, prior="normal")
