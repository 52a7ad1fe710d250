"""Mixed precision: the ``--precision`` of ``train.py`` and ``tune``.

``float32``         everything in float32 (the default).
``mixed_bfloat16``  Keras's ``mixed_bfloat16`` policy: variables in float32,
                    convolutions and dense layers compute in bfloat16 (CPUs
                    with AVX512_BF16 / AMX, TPUs, recent GPUs).
``mixed_float16``   Keras's ``mixed_float16`` policy with dynamic loss scaling
                    (:class:`keras.optimizers.LossScaleOptimizer`), the usual
                    choice on NVIDIA GPUs.

Under the mixed policies these stay float32 (see :mod:`tf_mtvib.layers` and
:mod:`tf_mtvib.models`): the classifiers' logits and so the per-task
cross-entropies, the task weighting (``log_sigma`` and the weighted sum of
MTVIB eq. 23), the Gaussian latent's ``loc``, scale and KL (eq. 10) and
its sample. A dtype policy is fixed when a layer is built and saved in its
config, so a model loaded from ``model.keras`` computes as it was trained,
whatever the global policy of the loading process. Attack gradients and
exported artifacts are computed in float32 (:func:`float32_compute`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "check_precision", "policy_scope", "wrap_optimizer",
           "model_precision", "float32_compute", "EmulatedPrecisionWarning", "emulation_warning", "NATIVE_ISA"]

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEFAULT_PRECISION = "float32"


#: The CPU flags (Linux ``/proc/cpuinfo`` names) with which a precision's arithmetic runs natively on
#: the CPU; without any of them oneDNN emulates it, more slowly than float32.
NATIVE_ISA = {"mixed_bfloat16": ("avx512_bf16", "amx_bf16"), "mixed_float16": ("avx512_fp16", "amx_fp16")}


class EmulatedPrecisionWarning(UserWarning):
    """The chosen precision has no native support on this CPU: training will be slower than in float32."""


def emulation_warning(name: str, isa=None, gpus: int = 0) -> "str | None":
    """The warning text for ``name`` on a CPU whose flags are ``isa`` (default: this machine's,
    :func:`tf_mtvib.runtime.machine`), or None where it runs natively (or on a GPU)."""
    if name not in NATIVE_ISA or gpus:
        return None
    if isa is None:
        from .runtime import machine

        isa = machine()["isa"]
    if any(flag in isa for flag in NATIVE_ISA[name]):
        return None
    return (f"--precision {name}: this CPU has none of {', '.join(NATIVE_ISA[name])}, so oneDNN emulates "
            f"{name.split('_')[1]} arithmetic, more slowly than float32; use --precision float32 here")


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}")
    return name


@contextlib.contextmanager
def policy_scope(name: str) -> Iterator[None]:
    """Within this context Keras's global dtype policy is ``name``; the previous one is restored after.

    Build models inside it: layers take the policy when they are created.
    """
    import keras

    check_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def wrap_optimizer(optimizer, precision: str):
    """``optimizer`` wrapped in a dynamic :class:`keras.optimizers.LossScaleOptimizer`
    for ``mixed_float16`` (float16 gradients underflow without it); unchanged otherwise.

    Keras's training step multiplies the loss returned by the model's
    ``compute_loss`` by the current scale (``optimizer.scale_loss``) and the
    wrapper divides the gradients by it, skipping the update (and halving the
    scale) when a gradient is not finite.
    """
    import keras

    if check_precision(precision) == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def model_precision(model) -> str:
    """The precision ``model`` (a Keras model or layer) was built with, from its layers' dtype policies:
    the policy of its first layer that computes in another dtype than float32, else ``float32``."""
    from .layers import all_sublayers

    for layer in all_sublayers(model):
        name = getattr(layer.dtype_policy, "name", "float32")
        if name in PRECISIONS and name != "float32":
            return name
    return "float32"


@contextlib.contextmanager
def float32_compute(model) -> Iterator[None]:
    """Within this context every layer of ``model`` computes in float32 (its weights are
    float32 already under the mixed policies); the layers' own policies are restored after.

    Graphs traced inside the context keep float32 arithmetic (as with
    :func:`tf_mtvib.layers.posterior_sampling`, trace inside it). The
    attacks take their input gradients this way (a float16 backward pass
    without loss scaling underflows), and the exporter traces its serving
    functions this way: a SavedModel and TFLite files whose inputs, outputs
    and arithmetic are float32, which every TFLite runtime executes.
    """
    from .layers import all_sublayers

    layers = [l for l in all_sublayers(model) if l.dtype_policy.name != "float32"]
    previous = [l.dtype_policy for l in layers]
    try:
        for l in layers:
            l.dtype_policy = "float32"
        yield
    finally:
        for l, p in zip(layers, previous):
            l.dtype_policy = p
