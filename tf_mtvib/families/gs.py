"""GS: the shared network with fixed, grid-searched task weights (MTVIB paper, Tables I-II baseline).

Shared trunk + FC 384, then per task FC 192 + classifier. UWL (``uwl.py``) is
the same network with learned uncertainty weights.
"""
from . import FamilySpec

SPEC = FamilySpec(
    name="gs", description="shared network, fixed (grid-searched) task weights",
    default_weighting="fixed", weighting_defaults=f"{__name__}:equal_weights", search=("task_weights",),
    default_search="grid")


def equal_weights(dataset_spec):
    """GS's default task weights: 1/K each (they sum to 1, as the grid's points)."""
    return {"task_weights": {t: 1.0 / len(dataset_spec.tasks) for t in dataset_spec.task_names}}


def build(dataset_spec, hp):
    """Shared trunk + FC 384, per-task FC 192 + classifier (Tables I-II)."""
    from ..blocks import SHARED_FC, TASK_FC, classifier, conv_trunk, dense_stack, image_input

    image = image_input(dataset_spec)
    sync = hp["sync_batchnorm"]
    h = dense_stack(conv_trunk(image, dataset_spec, sync), [SHARED_FC], "shared_", sync=sync)
    outputs = {t: classifier(dense_stack(h, [TASK_FC], f"{t}_", sync=sync), dataset_spec, t)
               for t in dataset_spec.task_names}
    return image, outputs
