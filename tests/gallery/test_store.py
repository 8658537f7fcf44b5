"""CRUD, pagination, API keys, jobs bookkeeping and schema/migration checks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from service.auth.key_store import ApiKeyStore
from service.errors import (
    CollectionNotFound,
    Conflict,
    FaceNotFound,
    IdentityNotFound,
    InvalidRequest,
    NotFound,
)
from service.gallery import Gallery, decode_crop
from service.storage.schema import Base
from service.usecases.ranking import identify_embeddings
from tests.gallery.conftest import crop_for, faces_for


def test_migrations_create_exactly_the_orm_schema(gallery: Gallery) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with gallery.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
        assert ctx.get_current_revision() == "0003"


def test_sqlite_pragmas(gallery: Gallery) -> None:
    if gallery.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with gallery.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 20_000
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, as the test settings ask


def test_collections_crud(gallery: Gallery) -> None:
    c = gallery.create_collection("staff-1", "Staff", model="m1", metadata={"site": "Zürich"})
    assert (c.id, c.name, c.model, c.metadata, c.faces) == ("staff-1", "Staff", "m1", {"site": "Zürich"}, 0)
    gallery.create_collection("b_2", model="m1")
    with pytest.raises(Conflict):
        gallery.create_collection("staff-1", model="m1")
    for bad in ("Staff", "a b", "", "x" * 65, "é"):
        with pytest.raises(InvalidRequest):
            gallery.create_collection(bad, model="m1")
    assert [x.id for x in gallery.list_collections()] == ["b_2", "staff-1"]
    default = gallery.create_collection("dflt")
    assert default.model == gallery.settings.recognizer
    c2 = gallery.update_collection("staff-1", name="Staff 2", metadata={"a": [1, 2]})
    assert (c2.name, c2.metadata, c2.model) == ("Staff 2", {"a": [1, 2]}, "m1")

    who = gallery.create_identity("staff-1", "e1")
    gallery.enroll("staff-1", who.id, faces_for(np.eye(4, 8, dtype=np.float32), "m1"))
    assert gallery.get_collection("staff-1").faces == 4
    gallery.delete_collection("staff-1")
    with pytest.raises(CollectionNotFound):
        gallery.get_collection("staff-1")
    with pytest.raises(CollectionNotFound):
        gallery.delete_collection("staff-1")
    with pytest.raises(CollectionNotFound):
        gallery.create_identity("staff-1", "e1")
    assert gallery.gallery_size().faces == 0
    # a re-created collection starts empty (no stale index)
    gallery.create_collection("staff-1", model="m1")
    res = identify_embeddings(gallery, "staff-1", "m1", np.eye(1, 8, dtype=np.float32))
    assert res[0].matches == [] and res[0].unknown


def test_identities_crud(gallery: Gallery) -> None:
    gallery.create_collection("c", model="m1")
    gallery.create_collection("other", model="m1")
    ext = "Ünïcødé 人 " + "x" * 246
    assert len(ext) == 256
    a = gallery.create_identity("c", ext, "Ada", {"dept": 7})
    assert len(a.id) == 32 and a.external_id == ext and a.faces == 0
    assert gallery.get_identity("c", a.id) == a
    assert gallery.get_identity_by_external_id("c", ext).id == a.id
    with pytest.raises(Conflict):
        gallery.create_identity("c", ext)
    gallery.create_identity("other", ext)  # unique per collection only
    for bad in ("", "y" * 257):
        with pytest.raises(InvalidRequest):
            gallery.create_identity("c", bad)
    with pytest.raises(IdentityNotFound):
        gallery.get_identity("other", a.id)  # wrong collection
    with pytest.raises(IdentityNotFound):
        gallery.get_identity_by_external_id("c", "nobody")

    b = gallery.create_identity("c", "b")
    with pytest.raises(Conflict):
        gallery.update_identity("c", b.id, external_id=ext)
    time.sleep(0.002)
    a2 = gallery.update_identity("c", a.id, name="Ada L.", metadata={"dept": 8})
    assert (a2.name, a2.metadata, a2.external_id) == ("Ada L.", {"dept": 8}, ext)
    assert a2.updated_at > a.updated_at and a2.created_at == a.created_at

    faces = gallery.enroll("c", a.id, faces_for(np.eye(3, 16, dtype=np.float32), "m1"))
    listed = gallery.list_faces("c", a.id)
    assert [f.id for f in listed] == [f.id for f in faces]
    assert listed[0].models == ("m1",) and listed[0].bbox == [10.0, 20.0, 90.0, 100.0]
    assert listed[0].det_score == pytest.approx(0.99) and listed[0].quality == {"blur": 120.0}
    assert np.array_equal(decode_crop(gallery.get_face_crop("c", faces[0].id)), crop_for(0))
    emb = gallery.get_embeddings("c", a.id, "m1")
    assert emb.shape == (3, 16) and np.allclose(emb, np.eye(3, 16))
    with pytest.raises(FaceNotFound):
        gallery.get_face("other", faces[0].id)

    gallery.delete_face("c", faces[0].id)
    with pytest.raises(FaceNotFound):
        gallery.delete_face("c", faces[0].id)
    assert gallery.get_identity("c", a.id).faces == 2
    assert gallery.delete_identity("c", a.id) == 2
    with pytest.raises(IdentityNotFound):
        gallery.get_identity("c", a.id)
    with pytest.raises(IdentityNotFound):
        gallery.delete_identity("c", a.id)
    with pytest.raises(FaceNotFound):
        gallery.get_face("c", faces[1].id)
    # cascades: nothing of a is left
    with gallery.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM embeddings").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM faces").scalar() == 0


def test_pagination_is_stable_and_complete(gallery: Gallery) -> None:
    gallery.create_collection("c", model="m1")
    made = [gallery.create_identity("c", f"p{i:02d}").id for i in range(23)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = gallery.list_identities("c", limit=5, cursor=cursor)
        seen += [i.id for i in page.items]
        pages += 1
        if pages == 2:  # deletes and inserts during iteration neither skip nor repeat others
            gallery.delete_identity("c", made[15])
            made.remove(made[15])
            made.append(gallery.create_identity("c", "late").id)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == made and pages == 5
    assert gallery.list_identities("c", limit=1000).next_cursor is None
    with pytest.raises(InvalidRequest):
        gallery.list_identities("c", cursor="not-a-cursor")
    with pytest.raises(InvalidRequest):
        gallery.list_identities("c", limit=0)
    with pytest.raises(CollectionNotFound):
        gallery.list_identities("nope")


def test_api_keys(gallery: Gallery) -> None:
    keys = ApiKeyStore(gallery.db)  # keys share the gallery's database, not its code
    k1 = keys.create("ci", "fg_ab12", "sha256:" + "0" * 64, ["identify", "enroll"], ["c1"])
    k2 = keys.create("admin", "fg_ab12", "sha256:" + "1" * 64, ["admin"])
    keys.create("other", "fg_zz99", "h", [])
    found = keys.find_by_prefix("fg_ab12")
    assert {k.id for k in found} == {k1.id, k2.id}
    assert found[0].scopes == ["identify", "enroll"] and found[0].collections == ["c1"]
    assert k2.collections is None and not k2.revoked
    revoked = keys.revoke(k1.id)
    assert revoked.revoked and keys.revoke(k1.id).revoked_at == revoked.revoked_at
    assert [k.id for k in keys.find_by_prefix("fg_ab12")] == [k2.id]
    assert len(keys.find_by_prefix("fg_ab12", include_revoked=True)) == 2
    assert len(keys.list()) == 3 and len(keys.list(include_revoked=False)) == 2
    keys.touch(k2.id)
    first = keys.get(k2.id).last_used_at
    assert first is not None
    keys.touch(k2.id)  # within the interval: no write
    assert keys.get(k2.id).last_used_at == first
    time.sleep(0.01)
    keys.touch(k2.id, min_interval_s=0)
    assert keys.get(k2.id).last_used_at > first
    with pytest.raises(NotFound):
        keys.revoke("missing")


def test_gallery_size(gallery: Gallery) -> None:
    gallery.create_collection("a", model="m1")
    gallery.create_collection("b", model="m1")
    i = gallery.create_identity("a", "x")
    gallery.enroll("a", i.id, faces_for(np.eye(2, 8, dtype=np.float32), "m1"))
    identify_embeddings(gallery, "a", "m1", np.eye(1, 8, dtype=np.float32))
    size = gallery.gallery_size()
    assert (size.collections, size.identities, size.faces) == (2, 1, 2)
    assert size.per_collection == {"a": {"identities": 1, "faces": 2}, "b": {"identities": 0, "faces": 0}}
    assert size.indexed == {"a/m1": 2}


def test_no_create_all_in_production_paths() -> None:
    """Tables are created and evolved by the migrations only (never by create_all)."""
    service = Path(__file__).resolve().parents[2] / "service"
    offenders = [p.name for p in service.rglob("*.py") if "create_all(" in p.read_text()]
    assert not offenders
