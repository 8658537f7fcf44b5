"""A models folder for API tests: the default pack plus a second recognizer to switch to."""

from __future__ import annotations

import shutil
from pathlib import Path


def switch_models_dir(root: Path, shared_models: Path, name: str = "mbf-paddle") -> Path:
    """The default pack's cards copied into ``root`` plus the shared MobileFaceNet (128-d,
    BGR, (x-127.5)/128, threshold 0.3) registered as ``name``, linked in place."""
    from service.cards import BUILTIN_MODELS_DIR, Registry
    from service.modelinspect import card_from_onnx

    root.mkdir(parents=True, exist_ok=True)
    for d in BUILTIN_MODELS_DIR.iterdir():
        if (d / "model.json").is_file():
            shutil.copytree(d, root / d.name, dirs_exist_ok=True)
    card = card_from_onnx(shared_models / "mobilefacenet_paddle_128d.onnx", name, color="BGR",
                          mean=127.5, std=128.0, threshold=0.3, family_hint="paddle")
    Registry(root).save(card)
    return root
