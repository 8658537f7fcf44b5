"""The security properties SECURITY.md promises, each enforced here.

* keys: stored as hashes only, scoped, restricted to collections, revocable at once;
* every route of the OpenAPI document answers 401 without a key (bar the public ones);
* model names cannot escape the models directory;
* the body limit is enforced while the body streams in, before it is all read;
* stored crops are served only to keys with ``read`` on that collection; no response
  carries a stored embedding;
* deleting an identity erases its crops and embeddings from the database files (and
  the SQLite WAL) and from the index;
* logs never contain API keys or image bytes;
* CORS is off unless origins are configured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.api.conftest import ADMIN, ADMIN_KEY, make_settings, running
from tests.hardening.conftest import MAX_REQUEST, seed

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/info")}


@pytest.fixture(scope="module")
def app(tmp_path_factory, faces_dir):
    tmp = tmp_path_factory.mktemp("sec")
    with running(make_settings(tmp, max_request_bytes=MAX_REQUEST)) as client:
        iid, fid = seed(client, faces_dir, "sec-a")
        r = client.post("/v1/collections", json={"id": "sec-b"}, headers=ADMIN)
        assert r.status_code == 201
        client.data_dir = tmp  # type: ignore[attr-defined]
        client.ids = {"iid": iid, "fid": fid}  # type: ignore[attr-defined]
        yield client


def make_key(client, scopes, collections=None) -> tuple[str, str]:
    r = client.post("/v1/keys", json={"name": "t", "scopes": scopes, "collections": collections}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["secret"]


def db_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("facegate.db*") if p.is_file())


# --- keys ---------------------------------------------------------------------------------------------
def test_keys_are_stored_hashed_and_never_listed(app) -> None:
    kid, secret = make_key(app, ["verify"])
    g = app.app.state.gallery
    with g.engine.connect() as c:
        stored = c.execute(sa.text("SELECT key_hash, prefix FROM api_keys WHERE id = :i"), {"i": kid}).one()
    assert stored.key_hash == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    assert secret.split("_", 2)[2] not in stored.key_hash
    with g.engine.connect() as c:  # make sure the WAL is in the file we scan
        c.exec_driver_sql("PRAGMA wal_checkpoint(FULL)")
    for f in db_files(app.data_dir):
        assert secret.encode() not in f.read_bytes(), f
    listing = app.get("/v1/keys", headers=ADMIN)
    assert listing.status_code == 200 and secret not in listing.text and "key_hash" not in listing.text
    assert ADMIN_KEY not in listing.text


def test_scopes_collections_and_revocation(app, faces_dir) -> None:
    jpg = [("image", ("p.jpg", (faces_dir / "obama/2.jpg").read_bytes(), "image/jpeg"))]
    kid, verify_only = make_key(app, ["verify"])
    h = {"X-API-Key": verify_only}
    assert app.post("/v1/detect", files=jpg, headers=h).status_code == 200
    for method, path in (("POST", "/v1/collections/sec-a/identities"), ("GET", "/v1/collections"),
                         ("POST", "/v1/keys"), ("GET", "/metrics")):
        r = app.request(method, path, json={"external_id": "z", "name": "n", "scopes": ["admin"]}, headers=h)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path, r.text)
    r = app.post("/v1/identify", files=jpg, headers=h)
    assert r.status_code == 403

    _, only_b = make_key(app, ["identify", "read", "enroll"], collections=["sec-b"])
    hb = {"X-API-Key": only_b}
    r = app.post("/v1/identify", files=jpg, data={"collection_id": "sec-a"}, headers=hb)
    assert r.status_code == 403
    r = app.post("/v1/identify", files=jpg, headers=hb)  # no collection: only its own are searched
    assert r.status_code == 200 and [s["collection_id"] for s in r.json()["searched"]] == ["sec-b"]
    assert [c["id"] for c in app.get("/v1/collections", headers=hb).json()["collections"]] == ["sec-b"]
    assert app.delete(f"/v1/collections/sec-a/identities/{app.ids['iid']}", headers=hb).status_code == 403
    assert app.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=hb).status_code == 403

    # revocation takes effect on the next request
    assert app.delete(f"/v1/keys/{kid}", headers=ADMIN).status_code == 204
    r = app.post("/v1/detect", files=jpg, headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


# --- every route needs a key --------------------------------------------------------------------------
def _fill_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "face_id" in m.group(0) else "sec-a", path)


def test_every_openapi_route_needs_a_key(app) -> None:
    doc = app.get("/openapi.json").json()
    walked = 0
    for path, item in doc["paths"].items():
        for method in item:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            walked += 1
            url = _fill_path(path)
            if (method.upper(), path) in PUBLIC:
                assert app.request(method.upper(), url).status_code == 200, path
                continue
            for headers in ({}, {"X-API-Key": "fg_0123456789ab_" + "A" * 43}, {"X-API-Key": ""},
                            {"X-API-Key": ADMIN_KEY + "x"}, {"X-Api-Key-Bogus": ADMIN_KEY}):
                r = app.request(method.upper(), url, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
                assert r.json()["error"]["code"] == "unauthorized"
    assert walked >= 25
    # /metrics and the gallery are not public either (they are in the document, and walked above)
    assert "/metrics" in doc["paths"]


# --- model names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", "../sface-2021dec-int8bq", "a/../../etc", "/etc/passwd", "..\\x",
                                  "sface/../../x", "%2e%2e", "x" * 65, "", "A", "con\x00"])
def test_model_names_cannot_escape_the_models_dir(tmp_path, name) -> None:
    from service.cards import Registry
    from service.errors import InvalidRequest

    (tmp_path / "models").mkdir()
    outside = tmp_path / "evil"
    outside.mkdir()
    (outside / "model.json").write_text("{}")
    reg = Registry(tmp_path / "models")
    with pytest.raises(InvalidRequest):
        reg.get(name)


def test_model_names_over_http_are_refused(app) -> None:
    for name in ("../yunet-2023mar-int8bq", "..", "/etc/passwd"):
        r = app.post("/v1/collections", json={"id": "m1", "model": name}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text


# --- body limit before reading ------------------------------------------------------------------------
def _asgi_post(asgi_app, path: str, chunks: int, chunk_size: int, declared: int | None) -> tuple[int, int]:
    """POST ``chunks`` x ``chunk_size`` bytes straight into the ASGI app; returns (status, chunks read)."""
    read = 0
    status = {}

    async def receive():
        nonlocal read
        if read >= chunks:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": b"A" * chunk_size, "more_body": read < chunks}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]

    headers = [(b"content-type", b"application/json"), (b"x-api-key", ADMIN_KEY.encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    asyncio.run(asgi_app(scope, receive, send))
    return status.get("code", 0), read


def test_body_limit_is_enforced_before_the_body_is_read(app) -> None:
    mib = 1 << 20
    chunks = MAX_REQUEST // mib * 4  # a body of 4x the limit
    for path in ("/v1/detect", "/v1/collections"):
        # declared too large: refused without reading a byte
        status, read = _asgi_post(app.app, path, chunks, mib, declared=chunks * mib)
        assert (status, read) == (413, 0), path
        # chunked / undeclared: reading stops right after the limit is passed
        status, read = _asgi_post(app.app, path, chunks, mib, declared=None)
        assert status == 413 and read <= MAX_REQUEST // mib + 1, (path, status, read)


# --- stored crops and embeddings ----------------------------------------------------------------------
def test_stored_crops_only_with_read_on_that_collection(app, faces_dir) -> None:
    fid = app.ids["fid"]
    crop_url = f"/v1/collections/sec-a/faces/{fid}/crop"
    faces_url = f"/v1/collections/sec-a/identities/{app.ids['iid']}/faces"
    r = app.get(crop_url, headers=ADMIN)
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    for scopes, colls in ((["verify", "identify", "enroll"], None), (["read"], ["sec-b"])):
        _, k = make_key(app, scopes, colls)
        for url in (crop_url, faces_url):
            r = app.get(url, headers={"X-API-Key": k})
            assert r.status_code == 403, (scopes, colls, url, r.status_code)
    _, reader = make_key(app, ["read"], ["sec-a"])
    assert app.get(crop_url, headers={"X-API-Key": reader}).status_code == 200

    # no response carries a stored embedding: identify and verify-against-identity answer scores only
    _, ident = make_key(app, ["identify", "verify"], ["sec-a"])
    jpg = [("image", ("p.jpg", (faces_dir / "obama/2.jpg").read_bytes(), "image/jpeg"))]
    r1 = app.post("/v1/identify", files=jpg, data={"collection_id": "sec-a"}, headers={"X-API-Key": ident})
    r2 = app.post("/v1/verify", files=jpg, data={"collection_id": "sec-a", "identity_id": app.ids["iid"]},
                  headers={"X-API-Key": ident})
    r3 = app.get(faces_url, headers={"X-API-Key": reader})
    for r in (r1, r2, r3):
        assert r.status_code == 200, r.text
        assert "embedding" not in r.text and "crop" not in r.text and "vector" not in r.text


def test_deleting_an_identity_erases_crops_and_embeddings(app, faces_dir) -> None:
    g = app.app.state.gallery
    r = app.post("/v1/collections/sec-b/identities", json={"external_id": "to-erase"}, headers=ADMIN)
    iid = r.json()["id"]
    files = [("image", (f"{i}.jpg", (faces_dir / f"kit_harington/{i}.jpg").read_bytes(), "image/jpeg"))
             for i in (1, 2)]
    r = app.post(f"/v1/collections/sec-b/identities/{iid}/faces", files=files, headers=ADMIN)
    assert r.status_code == 201, r.text
    fids = [f["id"] for f in r.json()["faces"]]
    with g.engine.connect() as c:
        crops = [c.execute(sa.text("SELECT crop_png FROM faces WHERE id=:i"), {"i": f}).scalar() for f in fids]
        vecs = [c.execute(sa.text("SELECT vector FROM embeddings WHERE face_id=:i"), {"i": f}).scalar()
                for f in fids]
    assert set(fids) <= set(np.asarray(g.indexed_ids("sec-b")).tolist())

    assert app.delete(f"/v1/collections/sec-b/identities/{iid}", headers=ADMIN).status_code == 204
    for f in fids:
        assert app.get(f"/v1/collections/sec-b/faces/{f}/crop", headers=ADMIN).status_code == 404
    with g.engine.connect() as c:
        q = "SELECT COUNT(*) FROM {t} WHERE {col} IN (" + ",".join(map(str, fids)) + ")"
        assert c.execute(sa.text(q.format(t="faces", col="id"))).scalar() == 0
        assert c.execute(sa.text(q.format(t="embeddings", col="face_id"))).scalar() == 0
    assert not set(fids) & set(np.asarray(g.indexed_ids("sec-b")).tolist())
    # and not merely unlinked: no copy left in the database file or its WAL
    for f in db_files(app.data_dir):
        raw = f.read_bytes()
        for crop in crops:
            assert crop[64:192] not in raw, f"a deleted crop is still in {f.name}"
        for v in vecs:
            assert v[:64] not in raw, f"a deleted embedding is still in {f.name}"
    # identify cannot find the person any more
    r = app.post("/v1/identify", files=files[:1], data={"collection_id": "sec-b"}, headers=ADMIN)
    assert r.status_code == 200 and all(c["identity_id"] != iid for c in r.json()["results"][0]["candidates"])


# --- logs ---------------------------------------------------------------------------------------------
def test_logs_never_contain_keys_or_image_bytes(app, faces_dir, caplog) -> None:
    photo = (faces_dir / "biden/1.jpg").read_bytes()
    b64 = base64.b64encode(photo).decode()
    _, key = make_key(app, ["verify"])
    wrong = "fg_0123456789ab_" + "Z" * 43
    caplog.set_level(logging.DEBUG)
    for lg in ("facegate", "facegate.api", "facegate.auth", "facegate.gallery", "uvicorn", ""):
        logging.getLogger(lg).setLevel(logging.DEBUG)
    try:
        app.post("/v1/detect", json={"image": b64}, headers={"X-API-Key": key})
        app.post("/v1/verify", json={"image": b64, "image2": "data:image/jpeg;base64," + b64[:5000]},
                 headers={"X-API-Key": key})
        app.post("/v1/detect", json={"image": b64}, headers={"X-API-Key": wrong})
        app.post("/v1/detect", json={"image": b64}, headers={"X-API-Key": key + "x"})
        app.post("/v1/enroll-nothing", content=photo, headers={"X-API-Key": key, "Content-Type": "image/jpeg"})
        app.post("/v1/detect", content=photo, headers={"X-API-Key": key, "Content-Type": "image/jpeg"})
        app.post("/v1/detect", files=[("image", ("x.jpg", photo[: len(photo) // 2], "image/jpeg"))],
                 headers={"X-API-Key": key})
        app.post("/v1/keys", json={"name": "logged?", "scopes": ["read"]}, headers=ADMIN)
        app.post("/v1/verify", content='{"image": "' + b64 + '", "embedding": [NaN, 1]}',
                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    finally:
        logging.getLogger("").setLevel(logging.WARNING)
    text = caplog.text + "".join(json.dumps(getattr(r, "args", None), default=str) for r in caplog.records)
    assert caplog.records, "nothing was logged: the capture is not working"
    for secret in (key, key.split("_", 2)[2], wrong, ADMIN_KEY):
        assert secret not in text, "an API key was logged"
    for chunk in (b64[1000:1064], b64[-64:]):
        assert chunk not in text, "image bytes (base64) were logged"
    assert photo[2000:2032].decode("latin-1") not in text


# --- CORS -----------------------------------------------------------------------------------------------
def test_cors_is_off_by_default_and_exact_when_configured(app, tmp_path) -> None:
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "x-api-key"}
    r = app.options("/v1/verify", headers=pre)
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    r = app.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}

    with running(make_settings(tmp_path, cors_origins=["https://app.example"])) as c:
        ok = c.options("/v1/verify", headers={**pre, "Origin": "https://app.example"})
        assert ok.headers.get("access-control-allow-origin") == "https://app.example"
        bad = c.options("/v1/verify", headers=pre)
        assert bad.headers.get("access-control-allow-origin") is None
