"""Shared test fixtures."""
import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The real data directory from TF_MTVIB_DATA_DIR; the test is skipped when unset
    (session-scoped, so module-scoped fixtures can use it)."""
    value = os.environ.get("TF_MTVIB_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set TF_MTVIB_DATA_DIR")
    return pathlib.Path(value).resolve()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty derived-data cache directory (TF_MTVIB_CACHE_DIR) for this test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TF_MTVIB_CACHE_DIR", str(path))
    return path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: end-to-end runs (multi-worker kill and resume, reproduce, benchmark scripts, "
                   "old/new code comparison); the fast tier is `-m 'not slow'`")
