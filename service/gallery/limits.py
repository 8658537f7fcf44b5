"""Size limits of what clients store in the gallery: names, external ids, metadata.

A stored value must never break later reads: metadata nested a few hundred levels deep
once made every listing of its collection fail, for every tenant. Limits are checked at
the API's schema level (a clear 422, nothing stored) and again by the store for every
other caller; values stored before the limits existed are read back defused.
"""

from __future__ import annotations

import json
from typing import Any

from service.errors import InvalidRequest

MAX_NAME = 256
MAX_EXTERNAL_ID = 256
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting stops once ``limit`` is passed (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def metadata_problem(meta: Any) -> str | None:
    """Why ``meta`` cannot be stored, or None."""
    if not isinstance(meta, dict):
        return "metadata must be a JSON object"
    if depth(meta, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        return f"metadata may nest at most {MAX_METADATA_DEPTH} levels"
    try:
        size = len(json.dumps(meta, ensure_ascii=False, allow_nan=False).encode())
    except (ValueError, TypeError):
        return "metadata must be plain JSON (no NaN or infinity)"
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
    return None


def check_metadata(meta: Any) -> dict[str, Any]:
    problem = metadata_problem(meta)
    if problem:
        raise InvalidRequest(problem)
    return meta


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidRequest(f"{what} must be a string of at most {MAX_NAME} characters")
    return name


def readable_metadata(meta: Any) -> dict[str, Any]:
    """Metadata as stored, unless it breaks the limits (stored before they existed): then a
    marker, so one bad row cannot make a listing fail."""
    if meta is None:
        return {}
    return dict(meta) if metadata_problem(meta) is None else {"_unreadable": "stored metadata exceeds the limits"}
