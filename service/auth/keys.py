"""API keys: generation, hashing and verification (with a short cache).

Key format
----------
``fg_<prefix>_<secret>``: ``prefix`` (12 hex characters) is stored in clear to find the
key's row; ``secret`` (43 URL-safe characters, 256 random bits) is never stored. The
database keeps ``sha256:<hex>`` of the whole key. A fast hash is enough because the
secret is a random 256-bit token, not a password: there is nothing to brute-force or
look up in a dictionary, and a per-request slow hash (bcrypt, scrypt) would add tens of
milliseconds to every call. Hashes are compared with :func:`hmac.compare_digest`.

Auth can be disabled only with ``FACEGATE_AUTH_ENABLED=false``, for local development;
the app logs a loud warning at start-up when it is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence

from service.auth.key_store import ApiKey, ApiKeyStore
from service.auth.principal import Principal, check_scopes
from service.errors import InvalidRequest, Unauthorized

log = logging.getLogger("facegate.auth")

KEY_RE = re.compile(r"^fg_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
#: How long a verified key is trusted without asking the database again. A revoke made
#: through this process takes effect at once (the cache entry is dropped); one made by
#: another worker or replica within this many seconds (one key lookup per key and second).
KEY_CACHE_TTL_S = 1.0
#: ``last_used_at`` is written at most this often per key and process.
TOUCH_INTERVAL_S = 60.0


def hash_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """A new key: (full secret to hand out once, prefix, stored hash)."""
    prefix = secrets.token_hex(6)
    secret = f"fg_{prefix}_{secrets.token_urlsafe(32)}"
    return secret, prefix, hash_key(secret)


class KeyStore:
    """Creates, revokes and verifies keys against the api_keys table. Thread-safe."""

    def __init__(self, store: ApiKeyStore, bootstrap_hash: str | None = None) -> None:
        self.store = store
        self.bootstrap_hash = bootstrap_hash
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._touched: dict[str, float] = {}  # key id -> last last_used_at write
        self._lock = threading.Lock()

    def create(self, name: str, scopes: Sequence[str], collections: Sequence[str] | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns (record, secret). The secret is shown only here."""
        scopes = check_scopes(scopes)
        if collections is not None and not list(collections):
            # [] must not become "every collection": a restriction to nothing is a mistake
            raise InvalidRequest("collections must name at least one collection (omit it for all collections)")
        secret, prefix, digest = generate_key()
        rec = self.store.create(name, prefix, digest, scopes, list(collections) if collections is not None else None)
        return rec, secret

    def revoke(self, key_id: str) -> ApiKey:
        rec = self.store.revoke(key_id)
        with self._lock:
            for k in [k for k, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[k]
        return rec

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        return self.store.list(include_revoked=include_revoked)

    def verify(self, presented: str) -> Principal:
        """The principal for ``presented``, or Unauthorized. Blocking (database)."""
        digest = hash_key(presented)
        if self.bootstrap_hash is not None and hmac.compare_digest(digest, self.bootstrap_hash):
            return Principal(key_id="bootstrap", name="bootstrap admin key", scopes=frozenset({"admin"}))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and now - hit[0] < KEY_CACHE_TTL_S:
                return hit[1]
        m = KEY_RE.match(presented)
        if m is None:
            raise Unauthorized("the API key is not valid")
        found = None
        for rec in self.store.find_by_prefix(m.group(1)):
            # compare every candidate (no early exit) so timing does not depend on position
            if hmac.compare_digest(rec.key_hash, digest) and not rec.revoked:
                found = rec
        if found is None:
            raise Unauthorized("the API key is not valid or has been revoked")
        principal = Principal(key_id=found.id, name=found.name, scopes=frozenset(found.scopes),
                              collections=frozenset(found.collections) if found.collections is not None else None)
        with self._lock:
            self._cache[digest] = (now, principal)
            due = now - self._touched.get(found.id, -1e9) >= TOUCH_INTERVAL_S
            if due:
                self._touched[found.id] = now
        if due:  # last_used_at is coarse on purpose: no write transaction per request
            try:
                self.store.touch(found.id, min_interval_s=TOUCH_INTERVAL_S)
            except Exception:  # bookkeeping must never fail a request
                log.debug("could not record use of key %s", found.id, exc_info=True)
        return principal
