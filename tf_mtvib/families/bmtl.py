"""BMTL (VMTL's supplement, Shen et al. 2021): the deterministic baseline.

A shared linear encoder on the frozen features and one linear classifier per task without bias: the
VMTL network with point estimates, trained on the tasks' cross-entropies alone.
"""
from . import FamilySpec
from ._vmtl import FEATURE_DROPOUT, PREPARE, VMTL_DATASETS

SPEC = FamilySpec(name="bmtl", description="BMTL: shared linear encoder, linear task classifiers (VMTL's baseline)",
                  default_weighting="fixed", datasets=VMTL_DATASETS, inputs="per_task", prepare=PREPARE,
                  hparams={"feature_dropout": FEATURE_DROPOUT}, defaults={"latent_dim": 256})


def build(dataset_spec, hp):
    from ._vmtl import network

    return network(dataset_spec, hp, variational=False)
