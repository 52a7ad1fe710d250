"""Shared test fixtures."""
import os
import pathlib

import pytest


@pytest.fixture
def data_dir() -> pathlib.Path:
    """The real data directory from TF_MTVIB_DATA_DIR; the test is skipped when unset."""
    value = os.environ.get("TF_MTVIB_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set TF_MTVIB_DATA_DIR")
    return pathlib.Path(value).resolve()
