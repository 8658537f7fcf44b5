"""API keys: generation, hashing, verification, scopes, collection limits, rate limits.

Key format
----------
``fg_<prefix>_<secret>``: ``prefix`` (12 hex characters) is stored in clear to find the
key's row; ``secret`` (43 URL-safe characters, 256 random bits) is never stored. The
database keeps ``sha256:<hex>`` of the whole key. A fast hash is enough because the
secret is a random 256-bit token, not a password: there is nothing to brute-force or
look up in a dictionary, and a per-request slow hash (bcrypt, scrypt) would add tens of
milliseconds to every call. Hashes are compared with :func:`hmac.compare_digest`.

Scopes
------
``admin`` (everything, including keys, collections, model switches and ``/metrics``),
``enroll`` (create/update/delete identities and faces), ``verify`` (detect, embed,
verify), ``identify`` and ``read`` (list/get collections, identities, faces, models,
jobs). A key may be restricted to a list of collections; it then cannot touch any other
collection, whatever its scopes.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.errors import Forbidden, InvalidRequest, RateLimited, Unauthorized

log = logging.getLogger("facegate.auth")

SCOPES: tuple[str, ...] = ("admin", "enroll", "verify", "identify", "read")
KEY_RE = re.compile(r"^fg_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
#: How long a verified key is trusted without asking the database again. A revoke made
#: through this process takes effect at once (the cache entry is dropped); one made by
#: another process or replica takes effect within this many seconds.
KEY_CACHE_TTL_S = 5.0
#: ``last_used_at`` is written at most this often per key and process.
TOUCH_INTERVAL_S = 60.0


def hash_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """A new key: (full secret to hand out once, prefix, stored hash)."""
    prefix = secrets.token_hex(6)
    secret = f"fg_{prefix}_{secrets.token_urlsafe(32)}"
    return secret, prefix, hash_key(secret)


def check_scopes(scopes: Iterable[str]) -> list[str]:
    out = sorted(set(scopes))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise InvalidRequest(f"scopes must be a non-empty subset of {', '.join(SCOPES)}", invalid=bad)
    return out


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored key, the bootstrap admin key, or anyone (auth disabled)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    collections: frozenset[str] | None = None  # None = every collection

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.has(scope):
            raise Forbidden(f"this API key lacks the '{scope}' scope", required_scope=scope)

    def can_access(self, collection_id: str) -> bool:
        return self.collections is None or collection_id in self.collections

    def check_collection(self, collection_id: str) -> None:
        if not self.can_access(collection_id):
            raise Forbidden("this API key is not allowed to use this collection", collection_id=collection_id)


ANONYMOUS = Principal(key_id="anonymous", name="auth disabled", scopes=frozenset({"admin"}))


class TokenBucketLimiter:
    """Per-key token buckets, in process memory.

    Each key may burst up to ``per_minute`` requests and refills at ``per_minute / 60``
    per second. The buckets live in this process only: with several workers or
    replicas each enforces the limit separately (so the effective limit is N times
    higher); a shared limiter (Redis, the database) would be needed to make it global.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Spend one token; None if allowed, else seconds until the next token."""
        if self.capacity <= 0:
            return None
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


@dataclass
class KeyStore:
    """Verifies presented keys against the gallery's api_keys table (with a short cache)."""

    gallery: object  # service.gallery.Gallery; typed loosely to keep import order simple
    bootstrap_hash: str | None = None
    _cache: dict[str, tuple[float, Principal]] = field(default_factory=dict)
    _touched: dict[str, float] = field(default_factory=dict)  # key id -> last last_used_at write
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, name: str, scopes: Sequence[str], collections: Sequence[str] | None = None):
        """Create a key; returns (ApiKey record, secret). The secret is shown only here."""
        scopes = check_scopes(scopes)
        secret, prefix, digest = generate_key()
        rec = self.gallery.create_api_key(name, prefix, digest, scopes, list(collections) if collections else None)
        return rec, secret

    def revoke(self, key_id: str):
        rec = self.gallery.revoke_api_key(key_id)
        with self._lock:
            for k in [k for k, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[k]
        return rec

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
        for rec in self.gallery.find_api_keys_by_prefix(m.group(1)):
            # compare every candidate (no early exit) so timing does not depend on position
            if hmac.compare_digest(rec.key_hash, digest) and not rec.revoked:
                found = rec
        if found is None:
            raise Unauthorized("the API key is not valid or has been revoked")
        principal = Principal(
            key_id=found.id,
            name=found.name,
            scopes=frozenset(found.scopes),
            collections=frozenset(found.collections) if found.collections is not None else None,
        )
        with self._lock:
            self._cache[digest] = (now, principal)
            due = now - self._touched.get(found.id, -1e9) >= TOUCH_INTERVAL_S
            if due:
                self._touched[found.id] = now
        if due:  # last_used_at is coarse on purpose: no write transaction per request
            try:
                self.gallery.touch_api_key(found.id, min_interval_s=TOUCH_INTERVAL_S)
            except Exception:  # bookkeeping must never fail a request
                log.debug("could not record use of key %s", found.id, exc_info=True)
        return principal


def require(scope: str | None) -> Callable:
    """FastAPI dependency factory: authenticate, check ``scope`` (None = any valid key),
    apply the per-key rate limit, and return the :class:`Principal`."""

    async def dependency(request: Request) -> Principal:
        state = request.app.state
        settings = state.settings
        if not settings.auth_enabled:
            principal = ANONYMOUS
            bucket_key = "ip:" + (request.client.host if request.client else "-")
        else:
            presented = request.headers.get(settings.api_key_header)
            if not presented:
                raise Unauthorized(f"missing API key (send it in the {settings.api_key_header} header)")
            principal = await run_in_threadpool(state.keys.verify, presented.strip())
            bucket_key = "key:" + principal.key_id
        if scope is not None:
            principal.require(scope)
        wait = state.limiter.take(bucket_key)
        if wait is not None:
            raise RateLimited(
                f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
                retry_after=round(wait, 3),
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope or 'key'}"
    return dependency
