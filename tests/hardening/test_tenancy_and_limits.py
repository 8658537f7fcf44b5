"""Regression tests for the defects a hostile client found: stored values that broke later
reads, keys that were wider than asked, cross-tenant views, error echoes and leaks, files
readable by other users, and the small gaps (overflowing embeddings, unthrottled key
guessing, probeable job ids, missing browser headers). Each failed before its fix."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat

import numpy as np
import pytest
import sqlalchemy as sa

from tests.api.conftest import ADMIN, assert_error, files, make_settings, running

DEEP = 300


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.fixture(scope="module")
def client(tmp_path_factory, test_data):
    tmp = tmp_path_factory.mktemp("limits")
    with running(make_settings(tmp)) as c:
        c.test_photo = test_data / "faces" / "obama" / "1.jpg"
        c.test_b64 = base64.b64encode(c.test_photo.read_bytes()).decode()
        for cid in ("tenant-a", "tenant-b"):
            assert c.post("/v1/collections", json={"id": cid}, headers=ADMIN).status_code == 201
        yield c


def key(client, scopes, collections=None) -> dict:
    r = client.post("/v1/keys", json={"name": "k", "scopes": scopes, "collections": collections}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["secret"]}


def count(client, table: str) -> int:
    with client.app.state.gallery.engine.connect() as c:
        return c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()


def test_deep_or_huge_metadata_and_names_are_refused_and_nothing_is_stored(client):
    before = count(client, "identities"), count(client, "collections")
    url = "/v1/collections/tenant-a/identities"
    for body in ({"external_id": "deep", "metadata": nested(DEEP)},
                 {"external_id": "big", "metadata": {"blob": "x" * 40_000}},
                 {"external_id": "long-name", "name": "n" * 1_000_000},
                 {"external_id": "x" * 257}):
        err = assert_error(client.post(url, json=body, headers=ADMIN), 422, "invalid_request")
        assert len(json.dumps(err)) < 4_000  # the refusal does not echo the value back
    assert_error(client.post("/v1/collections", json={"id": "deep", "metadata": nested(DEEP)}, headers=ADMIN),
                 422, "invalid_request")
    assert_error(client.patch("/v1/collections/tenant-a", json={"metadata": nested(DEEP)}, headers=ADMIN),
                 422, "invalid_request")
    assert (count(client, "identities"), count(client, "collections")) == before
    # the limit itself: 8 levels are fine
    assert client.post(url, json={"external_id": "ok", "metadata": nested(7)}, headers=ADMIN).status_code == 201


def test_a_poisoned_row_stored_before_the_limits_cannot_break_listings(client):
    """Rows written by an older version (no limits) are read back defused, for every key."""
    ident = client.post("/v1/collections/tenant-b/identities", json={"external_id": "legacy"}, headers=ADMIN).json()
    with client.app.state.gallery.engine.begin() as c:
        c.execute(sa.text("UPDATE identities SET metadata = :m WHERE id = :i"),
                  {"m": json.dumps(nested(DEEP)), "i": ident["id"]})
        c.execute(sa.text("UPDATE collections SET metadata = :m WHERE id = 'tenant-b'"), {"m": json.dumps(nested(DEEP))})
    r = client.get("/v1/collections/tenant-b/identities", headers=ADMIN)
    assert r.status_code == 200, r.text[:300]
    [row] = [i for i in r.json()["identities"] if i["id"] == ident["id"]]
    assert "_unreadable" in row["metadata"]
    assert client.get("/v1/collections", headers=ADMIN).status_code == 200
    assert client.get("/v1/collections", headers=key(client, ["read"], ["tenant-a"])).status_code == 200


def test_an_empty_collection_list_never_makes_an_unrestricted_key(client):
    before = count(client, "api_keys")
    assert_error(client.post("/v1/keys", json={"name": "k", "scopes": ["read"], "collections": []}, headers=ADMIN),
                 422, "invalid_request")
    assert count(client, "api_keys") == before
    from service.errors import InvalidRequest

    with pytest.raises(InvalidRequest):  # the same rule for the CLI and every other caller
        client.app.state.keys.create("k", ["read"], [])


def test_metrics_need_an_admin_of_every_collection(client):
    assert_error(client.get("/metrics", headers=key(client, ["admin"], ["tenant-a"])), 403, "forbidden")
    r = client.get("/metrics", headers=ADMIN)
    assert r.status_code == 200 and "facegate_gallery_faces" in r.text


def test_job_ids_cannot_be_probed_across_tenants(client):
    job_id = client.app.state.gallery.start_reembed_job("tenant-b", "other-model").id
    other = key(client, ["read"], ["tenant-a"])
    missing = assert_error(client.get("/v1/jobs/" + "0" * 32, headers=other), 404, "job_not_found")
    found = assert_error(client.get(f"/v1/jobs/{job_id}", headers=other), 404, "job_not_found")
    assert missing["message"] == found["message"]  # indistinguishable from a job that does not exist
    assert client.get(f"/v1/jobs/{job_id}", headers=ADMIN).status_code == 200


def test_errors_echo_a_short_prefix_and_no_server_path(client):
    restricted = key(client, ["read", "identify"], ["tenant-a"])
    r = client.get("/v1/collections/" + "c" * 60_000, headers=restricted)
    assert r.status_code in (403, 404) and len(r.content) < 4_000, (r.status_code, len(r.content))
    r = client.post("/v1/identify", json={"image": client.test_b64, "collection_id": "c" * 5_000_000},
                    headers=restricted)
    assert r.status_code in (403, 422) and len(r.content) < 4_000, (r.status_code, len(r.content))
    err = assert_error(client.post("/v1/embed", files=files(image=client.test_photo), data={"model": "nope"},
                                   headers=ADMIN), 404, "model_not_found")
    assert "/" not in err["message"], err  # no models path
    from service.api.error_handlers import clean

    assert clean("cannot read <PIL.TiffImagePlugin.X object at 0x7f3a2b1c> /srv/data/x.tif") == \
        "cannot read <object> <path>"


def test_credentials_in_a_query_string_are_redacted_from_the_access_log(caplog):
    from service.api.middleware import redact_access_log

    redact_access_log()
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1", "GET",
                    "/v1/collections?api_key=fg_0123456789ab_SECRETSECRETSECRETSECRET&x=1", "1.1", 401)
    assert "SECRET" not in caplog.text and "api_key=***" in caplog.text and "x=1" in caplog.text


def test_an_embedding_whose_norm_overflows_is_refused(client):
    emb = [3e38] * 128  # every value is a finite float32; the norm is not
    assert np.isfinite(np.float32(3e38)) and not np.isfinite(np.linalg.norm(np.asarray(emb, np.float32)))
    assert_error(client.post("/v1/verify", json={"image": client.test_b64, "embedding": emb}, headers=ADMIN),
                 422, "invalid_request")


def test_key_guessing_from_one_address_is_throttled(tmp_path, test_data):
    with running(make_settings(tmp_path, auth_failures_per_minute=5)) as c:
        codes = [c.get("/v1/collections", headers={"X-API-Key": f"fg_0123456789ab_{'A' * 40}{i:03d}"}).status_code
                 for i in range(8)]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        # even the right key waits: the address is throttled before any lookup
        assert_error(c.get("/v1/collections", headers=ADMIN), 429, "rate_limited")


def test_browser_headers_and_docs_without_outside_assets(client):
    ui = client.get("/ui/")
    csp = ui.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert ui.headers["x-content-type-options"] == "nosniff"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    js = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000  # served from the installed package


def test_the_biometric_store_is_private_to_the_service(tmp_path, test_data):
    data = tmp_path / "data"
    with running(make_settings(data)) as c:
        assert c.post("/v1/collections", json={"id": "p"}, headers=ADMIN).status_code == 201
        files_ = [data / "facegate.db", data / "facegate.db-wal", data / "facegate.db-shm"]
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files_ if p.exists()}
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert "facegate.db" in modes and "facegate.db-wal" in modes
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_one_small_image_cannot_buy_a_hundred_embeddings(client):
    """A photo tiling one face 10 x 10 yields at most FACEGATE_MAX_FACES (20) faces, the largest."""
    import cv2

    face = cv2.resize(cv2.imread(str(client.test_photo)), (160, 160))
    tiled = np.tile(face, (10, 10, 1))
    _, jpg = cv2.imencode(".jpg", tiled, [cv2.IMWRITE_JPEG_QUALITY, 80])
    r = client.post("/v1/embed", files=[("image", ("tiled.jpg", jpg.tobytes(), "image/jpeg"))], headers=ADMIN)
    assert r.status_code == 200, r.text[:300]
    assert 1 <= len(r.json()["faces"]) <= 20
    found = client.post("/v1/detect", files=[("image", ("tiled.jpg", jpg.tobytes(), "image/jpeg"))], headers=ADMIN)
    assert len(found.json()["faces"]) <= 20
