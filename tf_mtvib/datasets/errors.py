"""The one exception type of the data layer."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(Exception):
    """A data file is missing, corrupt, truncated or not the expected one.

    The message always names the file (and the line, for annotation files).
    """
