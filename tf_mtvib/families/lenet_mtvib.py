"""MTVIB (Qian et al.) on the LeNet trunk: the side-by-side of compression and invariance (MT-CRL issue).

MultiLeNet's convolutions, then the Gaussian latent z of MTVIB (eq. 8-10, Alemi
et al.'s linear head to mean and scale; ``--latent-dim`` 128 by default, the width d
of MT-CRL's modules) with its ``beta * KL``, then each task's predictor f_t, weighted
by learned uncertainty (eq. 22-23). The same trunk and predictors as ``mmoe`` and
``mtcrl``, so that the three differ only in what sits between them.
"""
from . import FamilySpec
from ._lenet import LENET_DATASETS, LENET_DROPOUT, PREDICTOR, PREDICTOR_HIDDEN

SPEC = FamilySpec(name="lenet_mtvib", description="MTVIB on a LeNet trunk (beside MT-CRL and MMoE)",
                  default_weighting="uncertainty", stochastic=True, datasets=LENET_DATASETS,
                  defaults={"latent_dim": 128, "latent_head": "linear"},
                  hparams={"lenet_dropout": LENET_DROPOUT, "predictor": PREDICTOR, "predictor_hidden": PREDICTOR_HIDDEN})


def build(dataset_spec, hp):
    from ..blocks import image_input, latent
    from ..modular import PREDICTORS_LAYER, TaskPredictors, lenet_trunk

    image = image_input(dataset_spec)
    z = latent(hp, "latent")(lenet_trunk(image, dropout=hp["lenet_dropout"]))
    logits = TaskPredictors([t.num_classes for t in dataset_spec.tasks], hp["predictor"], hp["predictor_hidden"],
                            name=PREDICTORS_LAYER)([z] * len(dataset_spec.tasks))
    return image, dict(zip(dataset_spec.task_names, logits))
