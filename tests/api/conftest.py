"""API test fixtures: the real app (real models, real database) on the shared photos.

One app per module where possible (start-up loads the models and migrates the database,
about a second), and helpers to post images as multipart or base64 JSON. The gallery
suites run on SQLite and, when FACEGATE_TEST_POSTGRES_URL is set, again on PostgreSQL in
a fresh schema (the same scheme as tests/gallery).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from tests.cards import DEFAULT_FAR_KEY, default_card_threshold
from tests.databases import fresh_database

ADMIN_KEY = "test-bootstrap-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}

#: Identities with several photos: the first ones are enrolled, the last is held out.
ENROLLED = ["alex_lacamoire", "biden", "deepface_p10", "deepface_p11", "deepface_p12", "deepface_p13",
            "kit_harington", "obama", "rose_leslie"]
#: People with a single photo, never enrolled: identify must answer unknown.
STRANGERS = ["kate_siegel", "lin_manuel_miranda", "paul_rudd", "shea_whigham"]


def card_threshold(recognizer: str = "sface-2021dec-int8bq") -> tuple[float, str]:
    """What the API must answer when the request brings no threshold: the card file's value at
    the default FAR, read from the file (not through the service's own threshold choice)."""
    return default_card_threshold(recognizer), f"card FAR {DEFAULT_FAR_KEY}"


def photos(faces_dir: Path, who: str) -> list[Path]:
    return sorted(p for p in (faces_dir / who).iterdir() if p.suffix in (".jpg", ".png"))


def b64(path: Path, data_url: bool = False) -> str:
    s = base64.b64encode(path.read_bytes()).decode()
    return f"data:image/jpeg;base64,{s}" if data_url else s


def files(**paths: Path | list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart parts: files(image=p) or files(image=[p1, p2], image2=p3)."""
    out = []
    for field, ps in paths.items():
        for p in ps if isinstance(ps, list) else [ps]:
            ctype = "image/png" if p.suffix == ".png" else "image/jpeg"
            out.append((field, (p.name, p.read_bytes(), ctype)))
    return out


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    kw: dict[str, Any] = dict(  # noqa: C408 - keyword style mirrors Settings(...)
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_admin_key=ADMIN_KEY,
        index_use_gpu=False,
        rate_limit_per_minute=0,
        auth_failures_per_minute=0,  # tests send many keyless requests; the limit has its own test
        sqlite_busy_timeout_ms=20_000,
    )
    kw.update(overrides)
    return Settings(**kw)


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan (models loaded, database migrated) for the block."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    err = body["error"]
    assert err["code"] == code, body
    assert err["status"] == status
    assert err["request_id"] and r.headers.get("x-request-id") == err["request_id"]
    assert isinstance(err["message"], str) and err["message"]
    return err


def database(kind: str, tmp: Path):
    """A fresh database URL: SQLite in ``tmp``, or a fresh PostgreSQL schema."""
    return fresh_database(kind, tmp, prefix="api")


@pytest.fixture(scope="module")
def app_client(tmp_path_factory, test_data) -> Iterator[TestClient]:
    """A module-wide app on SQLite with auth on (bootstrap admin key), no rate limit."""
    tmp = tmp_path_factory.mktemp("api")
    with running(make_settings(tmp)) as client:
        yield client
