"""Where the shared real-face test assets are: $FACEGATE_TEST_DATA, else ../shared/data beside
the clone when it is there, else nowhere (the tests that need them skip with a reason)."""

from __future__ import annotations

import os
from pathlib import Path

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_dir() -> Path | None:
    env = os.environ.get("FACEGATE_TEST_DATA")
    if env:
        return Path(env).resolve()  # cards made from these files store their path: keep it absolute
    return _SHARED if (_SHARED / "MANIFEST.md").is_file() else None
