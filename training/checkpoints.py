"""Where a run's newest checkpoint is published, under names that never change.

Training writes ``<run>/checkpoints/step_N.pt`` and prunes old ones; users and the docs need
one stable name: ``<run>/last.pt`` (a hard link to the newest checkpoint, or a copy where the
file system has no hard links) and ``<run>/checkpoints/last.txt`` (its file name, which
``--resume RUN_DIR`` and ``--checkpoint RUN_DIR`` read). Both are replaced atomically, so a
reader never sees a half-written ``last.pt``, and pruning ``step_N.pt`` files never breaks it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LAST = "last.pt"


def publish_last(ckpt_dir: Path, path: Path) -> Path:
    """Point ``last.txt`` and ``<run>/last.pt`` at the checkpoint ``path``; returns ``last.pt``."""
    ckpt_dir, path = Path(ckpt_dir), Path(path)
    txt_tmp = ckpt_dir / "last.txt.tmp"
    txt_tmp.write_text(path.name + "\n")
    os.replace(txt_tmp, ckpt_dir / "last.txt")
    last = ckpt_dir.parent / LAST
    tmp = last.with_name(f".{LAST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links here (some network and FUSE file systems): a copy
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)
    return last
