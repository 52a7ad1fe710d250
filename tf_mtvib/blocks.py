"""The building blocks of the paper's networks (Tables I and II), shared by the model families.

Every hidden fully connected layer of Tables I-II is FC + BN + ReLU (only the
classifier, FC 192 x classes, has neither); BN momentum:
:data:`tf_mtvib.layers.BN_MOMENTUM`. A family (:mod:`tf_mtvib.families`)
composes these into a network ``image -> {task: logits}``; the layer names are
part of the saved weights' format, so a block keeps its names.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import keras

from .datasets.spec import DatasetSpec
from .families import IncompatibleDataset
from .layers import GaussianLatent, batch_normalization

__all__ = ["ConvTrunk", "CONV_TRUNKS", "SHARED_FC", "TASK_FC", "VIB_ENCODER_FC", "VIB_DECODER_FC", "MLP_ENCODER_FC",
           "conv_trunk", "flatten_size", "dense_stack", "classifier", "image_input", "vib_decoder", "latent"]


@dataclasses.dataclass(frozen=True)
class ConvTrunk:
    """Two blocks of Conv(filters, kernel, stride, 'valid') + BN + ReLU + MaxPool(2)."""

    kernel: int
    stride: int
    filters: int = 64
    blocks: int = 2
    pool: int = 2


#: input height/width -> trunk. 36x36 (MultiMNIST/MultiFashion, Table I):
#: 36 -> 34 -> 17 -> 15 -> 7, flatten 7*7*64 = 3136. 150x150 (MTFL, Table II):
#: 150 -> 73 -> 36 -> 16 -> 8, flatten 8*8*64 = 4096.
CONV_TRUNKS: Dict[int, ConvTrunk] = {36: ConvTrunk(kernel=3, stride=1), 150: ConvTrunk(kernel=5, stride=2)}

SHARED_FC = 384            # GS / UWL / STL: FC flatten x 384 + BN + ReLU after the trunk
TASK_FC = 192              # GS / UWL / STL: per-task FC 384 x 192 + BN + ReLU before the classifier
VIB_ENCODER_FC = (1024, 1024, 1024)   # MTVIB / STVIB: FC ... x 1024 + BN + ReLU, three times
VIB_DECODER_FC = (384, 192)           # MTVIB / STVIB decoders: FC 256x384 + BN + ReLU, FC 384x192 + BN + ReLU
# The latent's heads (FC 1024 x 256 + BN + ReLU for the mean and for the
# scale, latent_head="paper") are in GaussianLatent.
MLP_ENCODER_FC = (1024, 1024)         # Deep VIB (Alemi et al. 2017) on MNIST: FC + ReLU, no BN


def conv_trunk(x, spec: DatasetSpec, sync_batchnorm: bool = False, prefix: str = ""):
    """The shared convolutional trunk of Tables I/II, ending in Flatten."""
    size = spec.input_shape[0]
    if size not in CONV_TRUNKS:
        raise IncompatibleDataset(f"no convolutional trunk for {spec.input_shape[0]}x{spec.input_shape[1]} inputs "
                         f"(data set {spec.name!r}); the paper's tables define {sorted(CONV_TRUNKS)}")
    t = CONV_TRUNKS[size]
    for i in range(1, t.blocks + 1):
        x = keras.layers.Conv2D(t.filters, t.kernel, strides=t.stride, padding="valid", name=f"{prefix}conv{i}")(x)
        x = batch_normalization(sync_batchnorm, f"{prefix}conv{i}_bn")(x)
        x = keras.layers.ReLU(name=f"{prefix}conv{i}_relu")(x)
        x = keras.layers.MaxPooling2D(t.pool, name=f"{prefix}pool{i}")(x)
    return keras.layers.Flatten(name=f"{prefix}flatten")(x)


def flatten_size(spec: DatasetSpec) -> int:
    """Width of the trunk's flattened output, from the layers' own shape arithmetic."""
    x = keras.Input(spec.input_shape)
    return int(conv_trunk(x, spec).shape[-1])


def dense_stack(x, units: Sequence[int], prefix: str, batchnorm: bool = True, sync: bool = False,
                float32_first: int = 0):
    """``FC + BN + ReLU`` per entry of ``units`` (Tables I-II); ``FC + ReLU`` if not ``batchnorm``.
    ``float32_first``: the first that many compute in float32 under a mixed-precision policy."""
    for i, u in enumerate(units, start=1):
        dtype = {"dtype": "float32"} if i <= float32_first else {}
        x = keras.layers.Dense(u, name=f"{prefix}fc{i}", **dtype)(x)
        if batchnorm:
            x = batch_normalization(sync, f"{prefix}fc{i}_bn", **dtype)(x)
        x = keras.layers.ReLU(name=f"{prefix}fc{i}_relu", **dtype)(x)
    return x


def classifier(x, spec: DatasetSpec, task: str):
    """FC 192 x classes: the task's logits. float32 under a mixed-precision policy (the Keras
    guide's rule for the last layer), so that softmax and the cross-entropy are float32."""
    return keras.layers.Dense(spec.task(task).num_classes, name=f"{task}_logits", dtype="float32")(x)


def image_input(spec: DatasetSpec):
    return keras.Input(spec.input_shape, name="image")


def vib_decoder(z, spec: DatasetSpec, task: str, sync: bool, float32_heads: bool = False):
    """MTVIB decoder: FC latent x 384 + BN + ReLU, FC 384 x 192 + BN + ReLU, classifier.
    ``float32_heads``: its first FC (the one that reads z) computes in float32 under a mixed policy."""
    return classifier(dense_stack(z, VIB_DECODER_FC, f"{task}_dec_", sync=sync, float32_first=int(float32_heads)),
                      spec, task)


def latent(hp, name: str) -> GaussianLatent:
    """The Gaussian latent of the VIB models, with the head ``hp["latent_head"]``; with
    ``hp["float32_heads"]`` its heads (``loc`` and the scale) compute in float32 under a mixed policy."""
    dtype = {"dtype": "float32"} if hp.get("float32_heads") else {}
    return GaussianLatent(hp["latent_dim"], hp["beta"], head=hp["latent_head"], synchronized=hp["sync_batchnorm"],
                          name=name, **dtype)
