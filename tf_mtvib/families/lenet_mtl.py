"""Shared-bottom MTL on the LeNet trunk: MT-CRL's Table 1 "MTL" (Hu et al. 2022, §2).

One MultiLeNet (convolutions, FC 50 + ReLU) shared by the tasks, then each
task's predictor: the network in which Table 1 measures the spurious score.
"""
from . import FamilySpec
from ._lenet import LENET_DATASETS, LENET_DROPOUT, PREDICTOR, PREDICTOR_HIDDEN

SPEC = FamilySpec(name="lenet_mtl", description="shared-bottom LeNet (MT-CRL's Table 1 MTL)",
                  default_weighting="fixed", datasets=LENET_DATASETS,
                  hparams={"lenet_dropout": LENET_DROPOUT, "predictor": PREDICTOR, "predictor_hidden": PREDICTOR_HIDDEN})


def build(dataset_spec, hp):
    import keras

    from ..blocks import image_input
    from ..modular import PREDICTORS_LAYER, TaskPredictors, lenet_trunk
    from .lenet_stl import LENET_FC

    image = image_input(dataset_spec)
    h = keras.layers.Dense(LENET_FC, activation="relu", name="lenet_fc")(lenet_trunk(image, dropout=hp["lenet_dropout"]))
    logits = TaskPredictors([t.num_classes for t in dataset_spec.tasks], hp["predictor"], hp["predictor_hidden"],
                            name=PREDICTORS_LAYER)([h] * len(dataset_spec.tasks))
    return image, dict(zip(dataset_spec.task_names, logits))
