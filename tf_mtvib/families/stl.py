"""STL: one independent network per task (MTVIB paper, single-task baseline).

The towers share no weights and Adam's update is per parameter, so training
them in one model on the sum of the task losses is training each single-task
network on its own, in one pass over the data.
"""
from . import FamilySpec

SPEC = FamilySpec(name="stl", description="single-task networks, one per task", default_weighting="fixed")


def build(dataset_spec, hp):
    """One independent trunk + FC 384 + FC 192 + classifier per task."""
    from ..blocks import SHARED_FC, TASK_FC, classifier, conv_trunk, dense_stack, image_input

    image = image_input(dataset_spec)
    outputs = {}
    for t in dataset_spec.task_names:
        h = conv_trunk(image, dataset_spec, hp["sync_batchnorm"], prefix=f"{t}_")
        outputs[t] = classifier(dense_stack(h, [SHARED_FC, TASK_FC], f"{t}_", sync=hp["sync_batchnorm"]),
                                dataset_spec, t)
    return image, outputs
