"""Who is calling and what they may do: scopes and the collections a key is limited to.

Scopes: ``admin`` (everything, including keys, collections, model switches and
``/metrics``), ``enroll`` (create/update/delete identities and faces), ``verify``
(detect, embed, verify), ``identify`` and ``read`` (list/get collections, identities,
faces, models, jobs). A key may be restricted to a list of collections; it then cannot
touch any other collection, whatever its scopes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.errors import Forbidden, InvalidRequest

SCOPES: tuple[str, ...] = ("admin", "enroll", "verify", "identify", "read")


def check_scopes(scopes: Iterable[str]) -> list[str]:
    out = sorted(set(scopes))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise InvalidRequest(f"scopes must be a non-empty subset of {', '.join(SCOPES)}", invalid=bad)
    return out


@dataclass(frozen=True)
class Principal:
    """A stored key, the bootstrap admin key, or anyone (auth disabled)."""

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
#: What in-process callers (the CLI, benchmarks) act as: every scope, every collection.
LOCAL = Principal(key_id="local", name="in-process caller", scopes=frozenset({"admin"}))
