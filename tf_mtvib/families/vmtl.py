"""VMTL (Shen, Zhen, Worring & Shao, NeurIPS 2021): Gumbel-Softmax priors from the other tasks' posteriors.

The network of :mod:`tf_mtvib.variational`; the classifiers' prior p(w_t) and the representation's prior
p(z | x) are combinations of the other tasks' variational posteriors with Gumbel-Softmax weights (one set
for w, another for z, Table C.15), the temperature annealed from 1 to 0.5 as the official code does.
The prior's form: ``weighted_sum`` (the default: the official code's N(sum a mu, sum a^2 sigma^2), whose KL
is exact, so the loss carries no Monte Carlo noise beyond the likelihood's) or ``mixture`` (the paper's
words; its KL by Monte Carlo). Table C.10 finds the prior's form worth at most about a point.
"""
from ..hparams import HParam
from . import FamilySpec
from ._lenet import _choice
from ._vmtl import ATTENDED_EXTRAS, PREPARE, VARIATIONAL_HPARAMS, VMTL_DATASETS

SPEC = FamilySpec(
    name="vmtl", description="VMTL: variational z and w, Gumbel-Softmax priors from the other tasks (Shen et al. 2021)",
    default_weighting="fixed", datasets=VMTL_DATASETS, inputs="per_task", prepare=PREPARE,
    needs=("task", "attended"), derive_extras=ATTENDED_EXTRAS, terms=f"{__name__}:terms",
    defaults={"latent_dim": 256},
    hparams={**VARIATIONAL_HPARAMS,
             "vmtl_prior": HParam("gumbel", "the priors' mixing weights: 'gumbel' (Gumbel-Softmax, the paper), 'mean' "
                                            "(1/(T-1)) or 'learnable' (softmax, no noise) (Table C.10)",
                                  _choice("gumbel", "mean", "learnable"), "KIND"),
             "prior_form": HParam("weighted_sum", "'weighted_sum' (N(sum a mu, sum a^2 sigma^2), the official code; KL "
                                                  "in closed form) or 'mixture' (the density; KL by Monte Carlo)",
                                  _choice("weighted_sum", "mixture"), "FORM"),
             "prior_samples": HParam(10, "Monte Carlo samples of the mixture prior's KL", int, "S")})


def build(dataset_spec, hp):
    from ._vmtl import network

    return network(dataset_spec, hp, variational=True, prior=hp["vmtl_prior"], prior_form=hp["prior_form"],
                   prior_samples=hp["prior_samples"])


def terms(dataset_spec, hp):
    """The z-prior's KL, weighted by T * eta (:func:`tf_mtvib.families._vmtl.z_kl_weight`)."""
    from ..variational import GumbelZPrior
    from ._vmtl import z_kl_weight

    return [GumbelZPrior(weight=z_kl_weight(hp, len(dataset_spec.task_names)))]
