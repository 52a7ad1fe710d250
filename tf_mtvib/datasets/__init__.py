"""The data layer: MultiMNIST, MultiFashion, MTFL, MNIST, the pair-split Multi-MNIST of MT-CRL and the
digit domains of VMTL.

``load(name, split)`` returns a ``Split`` (uint8 images, 0-based int64 labels
keyed by task name); ``to_dataset`` turns it into a ``tf.data`` pipeline.
Files are identified by content and looked for in the data directory
(``--data-dir`` / ``$TF_MTVIB_DATA_DIR``); derived arrays are cached in
``cache_dir()``. Every data problem raises ``DataError``.
"""
from .composites import make_composites
from .domains import per_task_splits, read_office_home
from .errors import DataError
from .loading import OPTIONS, load
from .paths import cache_dir, resolve_data_dir
from .pipeline import evaluation_batches, to_dataset, to_multi_input_dataset
from .spec import SPECS, DatasetSpec, Task, dataset_names, get_spec
from .split import DEFAULT_SUBSET_SEED, SUBSET_RULE, Split, stratified_indices, train_val_split

__all__ = [
    "get_spec", "DatasetSpec", "Task", "SPECS", "dataset_names",
    "resolve_data_dir", "cache_dir", "Split", "load", "OPTIONS", "train_val_split",
    "to_dataset", "to_multi_input_dataset", "evaluation_batches", "DataError", "make_composites", "stratified_indices", "SUBSET_RULE", "DEFAULT_SUBSET_SEED",
    "per_task_splits", "read_office_home",
]
