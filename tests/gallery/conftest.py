"""Gallery fixtures: every test runs on SQLite (in tmp_path) and, when
FACEGATE_TEST_POSTGRES_URL is set, on PostgreSQL in a schema of its own (the server
is shared, so each test creates a fresh schema and drops it afterwards)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.config import Settings
from service.gallery import EnrollFace, Gallery
from tests.databases import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, prefix="gt", sqlite_name="gallery.db") as url:
        yield url


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        kw: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": db_url,
            "index_use_gpu": False,
            "sqlite_busy_timeout_ms": 20_000,
            "sqlite_synchronous": "NORMAL",  # no power-loss tests: skip the fsync per commit
        }
        kw.update(overrides)
        return Settings(**kw)

    return make


@pytest.fixture
def open_gallery(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Gallery]]:
    """Factory: a started Gallery on the test database (closed at teardown)."""
    opened: list[Gallery] = []

    def open_(**overrides: Any) -> Gallery:
        g = Gallery(make_settings(**overrides)).start()
        opened.append(g)
        return g

    yield open_
    for g in opened:
        g.close()


@pytest.fixture
def gallery(open_gallery: Callable[..., Gallery]) -> Gallery:
    return open_gallery()


def crop_for(i: int) -> np.ndarray:
    """A distinct deterministic 112x112 BGR crop per face number (cheap to PNG-encode)."""
    img = np.full((112, 112, 3), (i * 37) % 256, dtype=np.uint8)
    img[:8, :8] = np.random.default_rng(10_000 + i).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img[8, 0, :] = np.frombuffer(int(i).to_bytes(3, "little"), np.uint8)
    return img


def faces_for(vectors: np.ndarray, model: str, start: int = 0) -> list[EnrollFace]:
    return [
        EnrollFace(
            crop=crop_for(start + k),
            embedding=v,
            model=model,
            bbox=[10.0, 20.0, 90.0, 100.0],
            landmarks=[[38.0, 51.0], [73.0, 51.0], [56.0, 71.0], [41.0, 92.0], [70.0, 92.0]],
            det_score=0.99,
            quality={"blur": 120.0},
            image_sha256=f"{start + k:064x}",
        )
        for k, v in enumerate(vectors)
    ]
