"""One hyper-parameter of a weighting or a model family: default, help and parser (no TensorFlow)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

__all__ = ["HParam"]


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyper-parameter of a weighting.

    ``default`` is used when neither the caller nor the model's recipe sets
    it; ``parse`` turns a command-line string into the value (it may raise
    ``argparse.ArgumentTypeError`` or ``ValueError``); ``help`` is the flag's help.
    """

    default: Any
    help: str
    parse: Callable[[str], Any] = float
    metavar: Optional[str] = None
