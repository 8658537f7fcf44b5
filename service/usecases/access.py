"""Who may touch which collection, as the use cases see it (an API key's principal satisfies it)."""

from __future__ import annotations

from typing import Protocol


class Access(Protocol):
    key_id: str  # who is asking: also the tenant whose share of the decode pool this work takes

    def can_access(self, collection_id: str) -> bool: ...

    def check_collection(self, collection_id: str) -> None:
        """Raise :class:`~service.errors.Forbidden` unless the caller may use the collection."""


class FullAccess:
    """In-process callers (the CLI, benchmarks): every collection."""

    key_id = "local"

    def can_access(self, collection_id: str) -> bool:
        return True

    def check_collection(self, collection_id: str) -> None:
        return None


EVERYTHING = FullAccess()
