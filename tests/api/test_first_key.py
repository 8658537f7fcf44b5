"""First start with auth on and no key: an admin key is minted into data_dir/admin.key, never logged."""

from __future__ import annotations

import logging
import stat

from tests.api.conftest import make_settings, running


def test_first_start_mints_one_admin_key(tmp_path, caplog) -> None:
    settings = make_settings(tmp_path, bootstrap_admin_key=None)
    with caplog.at_level(logging.INFO), running(settings) as client:
        key_file = tmp_path / "admin.key"
        assert key_file.is_file()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        secret = key_file.read_text().strip()
        assert client.get("/v1/collections").status_code == 401
        assert client.get("/v1/collections", headers={"X-API-Key": secret}).status_code == 200
        assert client.post("/v1/collections", json={"id": "c1", "name": "C1"},
                           headers={"X-API-Key": secret}).status_code == 201
    assert secret not in caplog.text and str(key_file) in caplog.text

    # A restart finds the key in the database and mints no other.
    with running(settings) as client:
        keys = client.get("/v1/keys", headers={"X-API-Key": secret}).json()
        assert len(keys) == 1 and keys[0]["scopes"] == ["admin"]
    assert key_file.read_text().strip() == secret


def test_no_key_minted_when_auth_is_off_or_bootstrap_set(tmp_path) -> None:
    with running(make_settings(tmp_path / "a", auth_enabled=False, bootstrap_admin_key=None)):
        pass
    with running(make_settings(tmp_path / "b")):
        pass
    assert not (tmp_path / "a" / "admin.key").exists() and not (tmp_path / "b" / "admin.key").exists()
