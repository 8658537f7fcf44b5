"""Concurrency, crash consistency, several processes on one database, storage failures."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import sqlalchemy as sa

from devkit.face_shaped import gallery as synth_gallery
from service.auth.key_store import ApiKeyStore
from service.errors import StorageUnavailable
from service.gallery import Gallery
from service.usecases.ranking import identify_embeddings
from tests.databases import with_pg_options
from tests.gallery.conftest import faces_for

DIM = 64


def db_face_ids(g: Gallery, cid: str) -> np.ndarray:
    with g.engine.connect() as c:
        rows = c.execute(sa.text("SELECT id FROM faces WHERE collection_id = :c ORDER BY id"), {"c": cid})
        return np.array([r[0] for r in rows], np.int64)


def test_concurrent_enrolls_lose_nothing(gallery: Gallery, open_gallery: Callable[..., Gallery]) -> None:
    gallery.create_collection("c", model="m1")
    _, owners, vecs = synth_gallery(240, DIM, faces_per_identity=2, seed=4)
    identify_embeddings(gallery, "c", "m1", vecs[:1])  # build the (empty) index first: updates must land in it
    other = open_gallery()  # a second "process" on the same database
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(g: Gallery, worker: int) -> None:
        try:
            for i in range(worker, 120, 4):
                who = g.create_identity("c", f"w{i}")
                rows = np.where(owners == i)[0]
                g.enroll("c", who.id, faces_for(vecs[rows], "m1", start=int(rows[0])))
        except BaseException as e:  # noqa: BLE001 - pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                identify_embeddings(gallery, "c", "m1", vecs[:4], top_k=3)
        except BaseException as e:  # noqa: BLE001 - pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(gallery if w < 3 else other, w)) for w in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(30)
    assert not errors, errors
    ids = db_face_ids(gallery, "c")
    assert len(ids) == 240
    # the index equals the DB, in both processes (one wrote a quarter of the rows)
    assert np.array_equal(gallery.indexed_ids("c"), ids)
    assert np.array_equal(other.indexed_ids("c"), ids)
    # every face finds itself
    res = identify_embeddings(gallery, "c", "m1", vecs, top_k=1)
    assert sum(r.matches[0].score > 0.999 for r in res) == 240


def test_enroll_from_another_process_is_seen(gallery: Gallery, open_gallery: Callable[..., Gallery]) -> None:
    gallery.create_collection("c", model="m1")
    v = synth_gallery(10, DIM, faces_per_identity=1)[2]
    a = gallery.create_identity("c", "a")
    gallery.enroll("c", a.id, faces_for(v[:1], "m1"))
    assert identify_embeddings(gallery, "c", "m1", v[1:2], top_k=1)[0].matches[0].identity_id == a.id
    other = open_gallery()
    b = other.create_identity("c", "b")
    other.enroll("c", b.id, faces_for(v[1:2], "m1"))
    assert identify_embeddings(gallery, "c", "m1", v[1:2], top_k=1)[0].matches[0].identity_id == b.id
    other.delete_identity("c", a.id)
    assert [m.identity_id for m in identify_embeddings(gallery, "c", "m1", v[:1], top_k=5)[0].matches] == [b.id]
    assert np.array_equal(gallery.indexed_ids("c"), db_face_ids(gallery, "c"))


def test_crash_between_commit_and_index_update(
    gallery: Gallery, open_gallery: Callable[..., Gallery], monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery.create_collection("c", model="m1")
    v = synth_gallery(6, DIM, faces_per_identity=1)[2]
    a = gallery.create_identity("c", "a")
    gallery.enroll("c", a.id, faces_for(v[:2], "m1"))
    identify_embeddings(gallery, "c", "m1", v[:1])  # index built

    # The process "dies" after the commit, before touching the index.
    with monkeypatch.context() as m:
        m.setattr(Gallery, "_follow", lambda self, change: None)
        b = gallery.create_identity("c", "b")
        [fb] = gallery.enroll("c", b.id, faces_for(v[2:3], "m1"))
        gallery.delete_face("c", gallery.list_faces("c", a.id)[0].id)
    # after a restart the committed rows are in the index and the deleted one is gone
    fresh = open_gallery()
    assert np.array_equal(fresh.indexed_ids("c"), db_face_ids(fresh, "c"))
    assert identify_embeddings(fresh, "c", "m1", v[2:3], top_k=1)[0].matches[0].face_id == fb.id
    # ... and even the surviving process notices (its index revision is behind the DB's)
    assert np.array_equal(gallery.indexed_ids("c"), db_face_ids(gallery, "c"))

    # An index entry without a row (e.g. added by a transaction that then rolled back):
    # never returned, and gone after a restart.
    ghost = 10**9
    gallery.indexes.get("c", "m1").add(np.array([ghost]), v[3:4])  # type: ignore[union-attr]
    assert all(m.face_id != ghost for m in identify_embeddings(gallery, "c", "m1", v[3:4], top_k=5)[0].matches)
    again = open_gallery()
    assert ghost not in set(again.indexed_ids("c").tolist())


def test_readonly_storage_is_unavailable_and_changes_nothing(
    gallery: Gallery, open_gallery: Callable[..., Gallery], db_url: str, tmp_path
) -> None:
    gallery.create_collection("c", model="m1")
    v = synth_gallery(4, DIM, faces_per_identity=1)[2]
    a = gallery.create_identity("c", "a")
    gallery.enroll("c", a.id, faces_for(v[:1], "m1"))
    before = db_face_ids(gallery, "c")

    if db_url.startswith("sqlite"):
        ro_url = f"sqlite:///file:{tmp_path / 'gallery.db'}?mode=ro&uri=true"
    else:
        ro_url = with_pg_options(db_url, "-cdefault_transaction_read_only=on")
    ro = open_gallery(database_url=ro_url)
    assert identify_embeddings(ro, "c", "m1", v[:1], top_k=1)[0].matches[0].identity_id == a.id  # reads still work
    for op in (
        lambda: ro.enroll("c", a.id, faces_for(v[1:2], "m1")),
        lambda: ro.create_identity("c", "b"),
        lambda: ro.delete_identity("c", a.id),
        lambda: ro.create_collection("d", model="m1"),
        lambda: ApiKeyStore(ro.db).create("k", "p", "h", []),
    ):
        with pytest.raises(StorageUnavailable) as err:
            op()
        assert err.value.status == 503
    assert np.array_equal(db_face_ids(gallery, "c"), before)
    assert [c.id for c in gallery.list_collections()] == ["c"]
    assert gallery.get_identity("c", a.id).faces == 1
    assert np.array_equal(ro.indexed_ids("c"), before)


def test_disk_full_rolls_back_whole_enroll(gallery: Gallery, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("disk-full is simulated with SQLite's max_page_count")
    gallery.create_collection("c", model="m1")
    a = gallery.create_identity("c", "a")
    v = synth_gallery(40, DIM, faces_per_identity=1)[2]
    gallery.enroll("c", a.id, faces_for(v[:1], "m1"))
    identify_embeddings(gallery, "c", "m1", v[:1])
    from sqlalchemy import event

    @event.listens_for(gallery.engine, "begin")
    def _full(conn) -> None:  # cap the file at its current size: the next page fails
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count={pages}")

    faces = faces_for(v, "m1")
    for f in faces:  # incompressible crops: the 40 faces need many new pages
        f.crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    with pytest.raises(StorageUnavailable):
        gallery.enroll("c", a.id, faces)
    event.remove(gallery.engine, "begin", _full)
    with gallery.engine.begin() as c:
        c.exec_driver_sql("PRAGMA max_page_count=1073741823")
    assert gallery.get_identity("c", a.id).faces == 1
    assert len(gallery.indexed_ids("c")) == 1


def test_unreachable_database_is_storage_unavailable(tmp_path) -> None:
    from service.config import Settings

    for url in (
        "postgresql+psycopg://postgres@127.0.0.1:1/postgres?connect_timeout=2",  # connection refused
        "sqlite:////proc/facegate-cannot-exist/gallery.db",  # directory cannot be created
    ):
        g = Gallery(Settings(data_dir=tmp_path, database_url=url, index_use_gpu=False))
        with pytest.raises(StorageUnavailable):
            g.start()
