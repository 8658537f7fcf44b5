"""API keys: 401/403 for missing, wrong, revoked, under-scoped and other-collection keys;
hashed storage; rate limits; public routes; the CLI; auth switched off explicitly."""

from __future__ import annotations

import hashlib
import logging

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.api.conftest import ADMIN, assert_error, files, make_settings, running


def new_key(client, scopes, collections=None, name="k") -> dict:
    r = client.post("/v1/keys", json={"name": name, "scopes": scopes, "collections": collections}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


def h(key: dict | str) -> dict:
    return {"X-API-Key": key["secret"] if isinstance(key, dict) else key}


@pytest.fixture(scope="module")
def colls(app_client):
    for cid in ("tenant-a", "tenant-b"):
        assert app_client.post("/v1/collections", json={"id": cid}, headers=ADMIN).status_code == 201
    return "tenant-a", "tenant-b"


def test_missing_and_wrong_keys_are_401(app_client, faces_dir):
    img = files(image=faces_dir / "obama/1.jpg")
    assert_error(app_client.post("/v1/detect", files=img), 401, "unauthorized")
    assert_error(app_client.get("/v1/collections"), 401, "unauthorized")
    assert_error(app_client.post("/v1/detect", files=img, headers=h("not-a-key")), 401, "unauthorized")
    forged = "fg_0123456789ab_" + "A" * 43
    assert_error(app_client.post("/v1/detect", files=img, headers=h(forged)), 401, "unauthorized")
    real = new_key(app_client, ["verify"])
    tampered = real["secret"][:-1] + ("A" if real["secret"][-1] != "A" else "B")
    assert_error(app_client.post("/v1/detect", files=img, headers=h(tampered)), 401, "unauthorized")
    assert app_client.post("/v1/detect", files=img, headers=h(real)).status_code == 200


def test_authentication_comes_before_the_body_is_read(app_client):
    """A malformed or schema-violating body without a valid key is 401, never a 422 that
    would tell an anonymous client what the route expects."""
    bad_json = {"Content-Type": "application/json"}
    for method, url, body in [("POST", "/v1/collections", b"{"), ("POST", "/v1/collections", b'{"id": 5}'),
                              ("POST", "/v1/keys", b"[]"), ("PATCH", "/v1/collections/x/identities/y", b"{"),
                              ("POST", "/v1/identify", b"{"), ("POST", "/v1/collections/x/model", b"null")]:
        for headers in (bad_json, {**bad_json, "X-API-Key": "fg_0123456789ab_" + "A" * 43}):
            assert_error(app_client.request(method, url, content=body, headers=headers), 401, "unauthorized")
    # with a valid key the same body is the typed 422
    assert_error(app_client.post("/v1/collections", content=b"{", headers={**bad_json, **ADMIN}),
                 422, "invalid_request")


def test_every_protected_route_authenticates_first(app_client):
    """Routes that need a key must use the route class that authenticates before parsing."""
    from fastapi.routing import APIRoute

    from service.api.security import AuthenticatedRoute

    def walk(routes):  # FastAPI wraps included routers; their own routes are what serve requests
        for r in routes:
            yield from walk(r.original_router.routes) if hasattr(r, "original_router") else [r]

    public = {"/healthz", "/readyz", "/v1/info", "/metrics", "/", "/docs", "/docs/oauth2-redirect", "/redoc"}
    routes = [r for r in walk(app_client.app.routes) if isinstance(r, APIRoute) and r.path not in public]
    assert routes and all(isinstance(r, AuthenticatedRoute) for r in routes), \
        [r.path for r in routes if not isinstance(r, AuthenticatedRoute)]


def test_revoked_key_is_401(app_client):
    k = new_key(app_client, ["read"])
    assert app_client.get("/v1/collections", headers=h(k)).status_code == 200
    assert app_client.delete(f"/v1/keys/{k['id']}", headers=ADMIN).status_code == 204
    assert_error(app_client.get("/v1/collections", headers=h(k)), 401, "unauthorized")
    listed = {x["id"]: x for x in app_client.get("/v1/keys", headers=ADMIN).json()}
    assert listed[k["id"]]["revoked_at"] is not None and "secret" not in listed[k["id"]]


def test_key_without_scope_is_403(app_client, faces_dir, colls):
    reader = new_key(app_client, ["read"])
    err = assert_error(app_client.post("/v1/verify", headers=h(reader),
                                       files=files(image=faces_dir / "obama/1.jpg", image2=faces_dir / "obama/2.jpg")),
                       403, "forbidden")
    assert err["details"]["required_scope"] == "verify"
    assert_error(app_client.post("/v1/collections", json={"id": "x"}, headers=h(reader)), 403, "forbidden")
    assert_error(app_client.post(f"/v1/collections/{colls[0]}/identities", json={"external_id": "e"},
                                 headers=h(reader)), 403, "forbidden")
    assert_error(app_client.get("/metrics", headers=h(reader)), 403, "forbidden")
    assert_error(app_client.get("/v1/keys", headers=h(reader)), 403, "forbidden")
    verifier = new_key(app_client, ["verify"])
    assert_error(app_client.post("/v1/identify", files=files(image=faces_dir / "obama/1.jpg"), headers=h(verifier)),
                 403, "forbidden")


def test_key_of_another_collection_is_403(app_client, faces_dir, colls):
    a, b = colls
    k = new_key(app_client, ["read", "enroll", "identify"], collections=[a])
    assert app_client.get(f"/v1/collections/{a}", headers=h(k)).status_code == 200
    assert_error(app_client.get(f"/v1/collections/{b}", headers=h(k)), 403, "forbidden")
    assert_error(app_client.post(f"/v1/collections/{b}/identities", json={"external_id": "e"}, headers=h(k)),
                 403, "forbidden")
    assert_error(app_client.post("/v1/identify", files=files(image=faces_dir / "obama/1.jpg"),
                                 data={"collection_id": b}, headers=h(k)), 403, "forbidden")
    listed = [c["id"] for c in app_client.get("/v1/collections", headers=h(k)).json()["collections"]]
    assert listed == [a]
    # without a filter, identify searches only the key's own collections
    r = app_client.post("/v1/identify", files=files(image=faces_dir / "obama/1.jpg"), headers=h(k))
    assert r.status_code == 200 and [s["collection_id"] for s in r.json()["searched"]] == [a]
    # a collection-restricted admin cannot mint keys
    ra = new_key(app_client, ["admin"], collections=[a])
    assert_error(app_client.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=h(ra)), 403,
                 "forbidden")
    assert_error(app_client.delete(f"/v1/collections/{b}", headers=h(ra)), 403, "forbidden")


def test_keys_are_stored_hashed_never_in_clear(app_client):
    k = new_key(app_client, ["read"], name="hash-check")
    secret = k["secret"]
    assert secret.startswith("fg_") and len(secret) > 40
    gallery = app_client.app.state.gallery
    with gallery.engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM api_keys WHERE id = :i"), {"i": k["id"]}).mappings().all()
    [row] = rows
    assert all(secret not in str(v) for v in row.values())
    assert row["key_hash"] == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    db_file = app_client.app.state.settings.data_dir / "facegate.db"
    for f in db_file.parent.glob("facegate.db*"):  # database and WAL
        assert secret.encode() not in f.read_bytes()


def test_public_routes_and_admin_metrics(app_client, faces_dir):
    for path in ("/healthz", "/readyz", "/v1/info", "/ui/", "/openapi.json", "/docs"):
        r = app_client.get(path)
        assert r.status_code == 200, (path, r.text[:200])
    assert app_client.get("/").status_code == 200  # redirect to /ui/ followed
    assert app_client.get("/v1/info").json()["auth_enabled"] is True
    ready = app_client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["database"]["ok"] and ready["checks"]["models"]["ok"]
    assert_error(app_client.get("/metrics"), 401, "unauthorized")
    app_client.post("/v1/embed", files=files(image=faces_dir / "obama/1.jpg"), headers=ADMIN)
    r = app_client.get("/metrics", headers=ADMIN)
    assert r.status_code == 200
    text = r.text
    for name in ("facegate_http_requests_total{", "facegate_http_request_duration_seconds_bucket{",
                 "facegate_faces_embedded_total{", "facegate_embed_batch_size_bucket{",
                 "facegate_embed_queue_depth", "facegate_gallery_faces{", "facegate_http_requests_in_flight"):
        assert name in text, name
    assert 'route="/v1/embed"' in text and 'status="401"' in text


def test_rate_limit_per_key(tmp_path, test_data):
    with running(make_settings(tmp_path, rate_limit_per_minute=3)) as c:
        k1 = new_key(c, ["read"], name="a")  # the bootstrap key spent 1 of its 3 here
        k2 = new_key(c, ["read"], name="b")  # and 2 here
        for _ in range(3):
            assert c.get("/v1/collections", headers=h(k1)).status_code == 200
        r = c.get("/v1/collections", headers=h(k1))
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert c.get("/v1/collections", headers=h(k2)).status_code == 200  # buckets are per key
        assert c.get("/healthz").status_code == 200  # public routes are not limited


def test_auth_disabled_explicitly_logs_loudly(tmp_path, faces_dir, caplog):
    caplog.set_level(logging.WARNING, logger="facegate.api")
    with running(make_settings(tmp_path, auth_enabled=False, bootstrap_admin_key=None)) as c:
        assert c.post("/v1/detect", files=files(image=faces_dir / "obama/1.jpg")).status_code == 200
        assert c.post("/v1/collections", json={"id": "dev"}).status_code == 201
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/info").json()["auth_enabled"] is False
    assert any("AUTH IS DISABLED" in rec.getMessage() for rec in caplog.records)


def test_cli_keys_create_list_revoke(tmp_path, test_data):
    from service.cli import app as cli

    runner = CliRunner()
    env = {"FACEGATE_DATA_DIR": str(tmp_path), "FACEGATE_DATABASE_URL": ""}
    r = runner.invoke(cli, ["keys", "create", "--name", "ops", "--scope", "read", "--scope", "enroll",
                            "--collection", "site-1", "--json"], env=env)
    assert r.exit_code == 0, r.output
    import json

    made = json.loads(r.output)
    assert made["scopes"] == ["enroll", "read"] and made["collections"] == ["site-1"]
    r = runner.invoke(cli, ["keys", "list", "--json"], env=env)
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [k["id"] for k in listed] == [made["id"]] and made["secret"] not in r.output
    r = runner.invoke(cli, ["keys", "create", "--name", "bad", "--scope", "superuser"], env=env)
    assert r.exit_code == 2
    settings = make_settings(tmp_path, bootstrap_admin_key=None)
    with running(settings) as c:
        assert c.get("/v1/collections", headers=h(made["secret"])).status_code == 200
    r = runner.invoke(cli, ["keys", "revoke", made["id"]], env=env)
    assert r.exit_code == 0, r.output
    with running(settings) as c:
        assert_error(c.get("/v1/collections", headers=h(made["secret"])), 401, "unauthorized")


def test_readyz_reports_an_unreachable_database(app_client, monkeypatch):
    from service.errors import StorageUnavailable

    def down(*a, **k):
        raise StorageUnavailable("database is locked")

    monkeypatch.setattr(app_client.app.state.gallery, "list_collections", down)
    r = app_client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready" and body["checks"]["database"]["ok"] is False
    assert body["checks"]["models"]["ok"] is True
    assert app_client.get("/healthz").status_code == 200  # liveness is not readiness
    # a gallery route answers the typed 503 in the envelope
    monkeypatch.setattr(app_client.app.state.gallery, "list_collections", down)
    assert_error(app_client.get("/v1/collections", headers=ADMIN), 503, "storage_unavailable")
