"""STL on the LeNet trunk: one MultiLeNet + f_t per task (MT-CRL's Tables 1 and 6, Hu et al. 2022).

The towers share no weights, so training them in one model on the sum of the
task losses is training each single-task network on its own (as ``stl.py``).
Each tower is MultiLeNet's convolutional part, FC 50 + ReLU (Sener & Koltun's
shared representation), then the task's predictor.
"""
from . import FamilySpec
from ._lenet import LENET_DATASETS, LENET_DROPOUT, PREDICTOR, PREDICTOR_HIDDEN

#: MultiLeNet's representation after the convolutions: FC 50 + ReLU
LENET_FC = 50

SPEC = FamilySpec(name="lenet_stl", description="single-task LeNets, one per task (MT-CRL's STL)",
                  default_weighting="fixed", datasets=LENET_DATASETS,
                  hparams={"lenet_dropout": LENET_DROPOUT, "predictor": PREDICTOR, "predictor_hidden": PREDICTOR_HIDDEN})


def build(dataset_spec, hp):
    import keras

    from ..blocks import image_input
    from ..modular import PREDICTORS_LAYER, TaskPredictors, lenet_trunk

    image = image_input(dataset_spec)
    towers = [keras.layers.Dense(LENET_FC, activation="relu", name=f"{t}_lenet_fc")(
                  lenet_trunk(image, prefix=f"{t}_", dropout=hp["lenet_dropout"]))
              for t in dataset_spec.task_names]
    logits = TaskPredictors([t.num_classes for t in dataset_spec.tasks], hp["predictor"], hp["predictor_hidden"],
                            name=PREDICTORS_LAYER)(towers)
    return image, dict(zip(dataset_spec.task_names, logits))
