"""Fixtures of the hardening suite: one seeded app (auth on, small body limits) and a
snapshot of everything the gallery holds, to prove bad input changed nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN, make_settings, running

#: Small limits so "oversized" cases stay cheap: 4 MiB per request, 3 MiB per image.
MAX_REQUEST = 4 * 1024 * 1024
MAX_IMAGE = 3 * 1024 * 1024
COLL = "hard"
ENROLLED_PHOTO = "obama/1.jpg"


@dataclass
class Seeded:
    client: TestClient
    cid: str
    iid: str  # identity "obama" with one enrolled face
    face_id: int
    data_dir: Path


def gallery_snapshot(client: TestClient) -> dict:
    """Row counts of every table, every face id, and every id in every FAISS index."""
    g = client.app.state.gallery
    out: dict = {}
    with g.engine.connect() as c:
        for t in ("collections", "identities", "faces", "embeddings", "api_keys", "jobs"):
            out[t] = c.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar()
        out["face_ids"] = sorted(r[0] for r in c.execute(sa.text("SELECT id FROM faces")))
        out["identities_rows"] = sorted(
            tuple(r) for r in c.execute(sa.text("SELECT id, collection_id, external_id, name FROM identities")))
        out["collection_rows"] = sorted(tuple(r) for r in c.execute(sa.text("SELECT id, name, model FROM collections")))
    out["indexed"] = {cid: sorted(np.asarray(g.indexed_ids(cid)).tolist())
                      for cid, *_ in out["collection_rows"]}
    return out


def seed(client: TestClient, faces_dir: Path, cid: str = COLL) -> tuple[str, int]:
    r = client.post("/v1/collections", json={"id": cid, "name": "hardening"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/collections/{cid}/identities", json={"external_id": "obama", "name": "Barack Obama"},
                    headers=ADMIN)
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    p = faces_dir / ENROLLED_PHOTO
    r = client.post(f"/v1/collections/{cid}/identities/{iid}/faces",
                    files=[("image", (p.name, p.read_bytes(), "image/jpeg"))], headers=ADMIN)
    assert r.status_code == 201, r.text
    return iid, r.json()["faces"][0]["id"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, faces_dir) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("hard")
    settings = make_settings(tmp, max_request_bytes=MAX_REQUEST, max_image_bytes=MAX_IMAGE)
    with running(settings) as client:
        iid, fid = seed(client, faces_dir)
        yield Seeded(client, COLL, iid, fid, tmp)
