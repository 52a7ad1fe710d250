"""MMoE (Ma et al. 2018) on the LeNet trunk: "MTL" of MT-CRL's Tables 2 and 6 (Hu et al. 2022).

K modules (experts) on MultiLeNet's convolutional features, combined per task by
softmax gates computed from the same features, ``sum_i g_t,i(x) Z_i``, then f_t.
With ``--weighting pcgrad`` it is Table 6's PCGrad column.
"""
from . import FamilySpec
from ._lenet import LENET_DATASETS, MODULAR_HPARAMS

SPEC = FamilySpec(name="mmoe", description="MMoE on a LeNet trunk (MT-CRL's MTL baseline)",
                  default_weighting="fixed", hparams=MODULAR_HPARAMS, datasets=LENET_DATASETS)


def build(dataset_spec, hp):
    from ..modular import SoftmaxGates
    from ._lenet import modular_network

    gates = SoftmaxGates(len(dataset_spec.tasks), hp["num_modules"], name="gates")
    return modular_network(dataset_spec, hp, lambda h, z: gates([h, z]))
