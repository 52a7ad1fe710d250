"""The run configuration's training part as one typed dataclass: the one set of defaults.

``config.json`` keeps its ``"training"`` dict (old runs read unchanged); every
reader goes through :meth:`TrainingConfig.from_dict`, which fills a missing key
with the default declared here, refuses an unknown one, and checks the types.
``train.py`` builds the dict from :func:`TrainingConfig.defaults`, so the value
written and the value read when a key is absent are the same.

Imports neither TensorFlow nor Keras (``--help`` stays instant).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from .metrics import MC_SAMPLES
from .precision import DEFAULT_PRECISION

__all__ = ["TrainingConfig", "TRAINING_KEYS"]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How a run trains. ``epochs``, ``batch_size`` and ``learning_rate`` come from the preset."""

    epochs: int
    batch_size: int
    learning_rate: float
    lr_schedule: str = "constant"         # constant (a step decay when lr_decay != 1), cosine or warmup_cosine
    warmup_epochs: float = 0.0            # warmup_cosine: the linear warm-up's length
    adam_beta1: float = 0.9
    lr_decay: float = 1.0
    lr_decay_epochs: int = 1
    ema_momentum: Optional[float] = None
    seed: int = 0
    jit_compile: bool = False
    val_fraction: float = 0.0
    eval_samples: int = MC_SAMPLES        # the mc<N> test accuracy of stochastic models (0: none)
    strategy: str = "auto"
    cpu_replicas: int = 0
    loop: str = "fit"
    precision: str = DEFAULT_PRECISION
    measure_at: Tuple[int, ...] = ()      # epochs at which S_k and the FGSM sweeps are measured (along.json)
    test_at: Tuple[int, ...] = ()         # epochs at which the test accuracy is written (test_along.json)

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """Every field's default (the fields without one, from the preset, left out)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def from_dict(cls, training: Mapping[str, Any]) -> "TrainingConfig":
        """The typed config of a ``config.json`` ``"training"`` dict (missing keys: the defaults)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(training) - set(names))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(names)}")
        missing = [n for n, f in names.items() if f.default is dataclasses.MISSING and n not in training]
        if missing:
            raise ValueError(f"the training settings lack {missing}")
        values = dict(training)
        for key in _EPOCH_LISTS:
            if values.get(key) is not None:
                values[key] = tuple(int(e) for e in values[key])
        return cls(**{k: v for k, v in values.items() if v is not None or names[k].default is None})

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_samples < 0 or self.cpu_replicas < 0:
            raise ValueError("eval_samples and cpu_replicas must be >= 0")
        if not 0.0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (``measure_at`` and ``test_at`` lists, each left out when empty)."""
        out = dataclasses.asdict(self)
        for key in _EPOCH_LISTS:
            if out[key]:
                out[key] = list(out[key])
            else:
                del out[key]
        return out


#: The settings that are lists of epochs (written only when set; flags of their own)
_EPOCH_LISTS = ("measure_at", "test_at")
#: The training settings a preset, a data option, an --hparams file or a flag may set
TRAINING_KEYS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in _EPOCH_LISTS)
