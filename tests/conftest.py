"""Shared fixtures. Real assets come from $FACEGATE_TEST_DATA (CI: ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DATA = os.environ.get("FACEGATE_TEST_DATA")


def _data_dir() -> Path:
    if not _DATA:
        pytest.skip("FACEGATE_TEST_DATA is unset: real face images and reference models are not available")
    path = Path(_DATA)
    if not path.is_dir():
        pytest.fail(f"FACEGATE_TEST_DATA={_DATA} is not a directory")
    return path


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root of the shared assets (faces/, bad/, lfw112/, models/)."""
    return _data_dir()


@pytest.fixture(scope="session")
def faces_dir(test_data: Path) -> Path:
    return test_data / "faces"


@pytest.fixture(scope="session")
def bad_dir(test_data: Path) -> Path:
    return test_data / "bad"


@pytest.fixture(scope="session")
def shared_models(test_data: Path) -> Path:
    return test_data / "models"


@pytest.fixture(scope="session")
def lfw_dir(test_data: Path) -> Path:
    return test_data / "lfw112"
