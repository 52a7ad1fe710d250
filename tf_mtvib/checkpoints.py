"""The resume checkpoint of a run, ``<run>/backup/``: one format for both training loops.

``fit`` and the custom (multi-worker) loop write the same thing: a TensorFlow
object-based checkpoint (:class:`tf.train.Checkpoint`) of the model (its
weights and its weighting's state, e.g. DWA's loss history), its optimizer
and the number of epochs done, kept by :class:`tf.train.CheckpointManager` as
``ckpt-<epochs done>.{index,data-*}`` with the ``checkpoint`` state file
beside them. The manager writes the new files first, then replaces the state
file, then removes the older checkpoint, so a kill at any moment leaves one
readable checkpoint. Either loop resumes the other's run.

Runs that ``fit`` wrote before this format (``epoch-N.weights.h5`` pointed at
by ``training_metadata.json``) still resume: :meth:`ResumeCheckpoint.restore`
reads them, and the next save replaces them with the format above.

Importing this module does not import TensorFlow (:func:`epochs_done` reads
the state file as text, for ``reproduce --dry-run``).
"""
from __future__ import annotations

import json
import pathlib
import re
from typing import Optional

#: The state file :class:`tf.train.CheckpointManager` keeps beside the checkpoints.
STATE_FILE = "checkpoint"
#: The checkpoints' prefix: ``ckpt-<epochs done>``.
PREFIX = "ckpt"
#: The ``fit`` loop's former format: this file names the epochs done, the weights are in ``epoch-N.weights.h5``.
LEGACY_METADATA = "training_metadata.json"

_LATEST = re.compile(r'^model_checkpoint_path:\s*"(?P<path>[^"]*)"\s*$', re.MULTILINE)
_NUMBER = re.compile(rf"{PREFIX}-(\d+)$")

__all__ = ["STATE_FILE", "PREFIX", "LEGACY_METADATA", "ResumeCheckpoint", "epochs_done", "legacy_weights"]


def legacy_weights(directory: pathlib.Path, epochs: int) -> pathlib.Path:
    """The weight file of the former ``fit`` format for ``epochs`` epochs done."""
    return pathlib.Path(directory) / f"epoch-{epochs}.weights.h5"


def epochs_done(directory) -> int:
    """The epochs the checkpoint in ``directory`` holds (0: there is none), without TensorFlow.

    Raises ``ValueError`` (or ``OSError``) when a record exists but cannot be read.
    """
    directory = pathlib.Path(directory)
    state = directory / STATE_FILE
    if state.exists():
        match = _LATEST.search(state.read_text())
        if match is None:
            raise ValueError(f"{state} names no checkpoint")
        number = _NUMBER.search(pathlib.PurePath(match["path"]).name)
        if number is None:
            raise ValueError(f"{state} names {match['path']!r}, not a {PREFIX}-<epochs> checkpoint")
        return int(number.group(1))
    legacy = directory / LEGACY_METADATA
    if legacy.exists():
        return int(json.loads(legacy.read_text())["epoch"])
    return 0


class ResumeCheckpoint:
    """The model, its optimizer and the epochs done, saved after each epoch into ``directory``.

    Construct it in the scope the model was built in (a distribution
    strategy's): the epoch counter is a variable of that scope.
    """

    def __init__(self, model, directory):
        import tensorflow as tf

        self.directory = pathlib.Path(directory)
        self.model = model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)   # so that its state is saved and restored too
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self._managers = {}

    def latest(self) -> Optional[str]:
        """The path prefix of the newest checkpoint in this format, or None."""
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(self.directory)) if self.directory.is_dir() else None

    def restore(self) -> int:
        """Load the newest checkpoint into the model; returns the epochs done (0: nothing to resume)."""
        latest = self.latest()
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            return int(self.epoch.numpy())
        legacy = (self.directory / LEGACY_METADATA)
        if legacy.exists():
            epochs = epochs_done(self.directory)
            self.model.load_weights(legacy_weights(self.directory, epochs))
            self.epoch.assign(epochs)
            return epochs
        return 0

    def save(self, epochs: int, directory: Optional[pathlib.Path] = None) -> str:
        """Save the state after ``epochs`` epochs as ``ckpt-<epochs>``, keeping only that one.

        ``directory``: where to write, if not :attr:`directory` (a worker other than
        the chief writes into a temporary directory, :func:`tf_mtvib.distributed.write_dir`).
        Files of the former format in the directory are removed once the new one is written.
        """
        import tensorflow as tf

        directory = pathlib.Path(directory or self.directory)
        key = str(directory)
        if key not in self._managers:
            self._managers[key] = tf.train.CheckpointManager(self.checkpoint, key, max_to_keep=1,
                                                             checkpoint_name=PREFIX)
        self.epoch.assign(epochs)
        path = self._managers[key].save(checkpoint_number=epochs)
        for old in [directory / LEGACY_METADATA, *directory.glob("epoch-*.weights.h5")]:
            old.unlink(missing_ok=True)
        return path
