"""Shared fixtures. Real assets come from $FACEGATE_TEST_DATA (CI: ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.assets import data_dir

_DATA = data_dir()


def _data_dir() -> Path:
    if not _DATA:
        pytest.skip("FACEGATE_TEST_DATA is unset and there is no ../shared/data: real face images and "
                    "reference models are not available")
    path = _DATA
    if not path.is_dir():
        pytest.fail(f"FACEGATE_TEST_DATA={_DATA} is not a directory")
    return path


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root of the shared assets (faces/, bad/, lfw112/, models/)."""
    return _data_dir()


# Sub-folders of the assets (see their MANIFEST.md): photos by identity, hostile files,
# reference ONNX models, aligned LFW crops.
faces_dir = pytest.fixture(scope="session", name="faces_dir")(lambda test_data: test_data / "faces")
bad_dir = pytest.fixture(scope="session", name="bad_dir")(lambda test_data: test_data / "bad")
shared_models = pytest.fixture(scope="session", name="shared_models")(lambda test_data: test_data / "models")
lfw_dir = pytest.fixture(scope="session", name="lfw_dir")(lambda test_data: test_data / "lfw112")


#: The shared reference models, registered under these names by ``shared_registry``:
#: name -> (file, preset for recognizers).
SHARED_MODELS = {
    "yunet-fp32": ("face_detection_yunet_2023mar.onnx", None),
    "yunet-2026may": ("face_detection_yunet_2026may.onnx", None),
    "scrfd-2.5g": ("scrfd_2.5g_bnkps.onnx", None),
    "rfb-320": ("version-RFB-320.onnx", None),
    "sface-clean": ("face_recognition_sface_2021dec_int8bq_clean.onnx", "sface"),
    "mbf-paddle": ("mobilefacenet_paddle_128d.onnx", "paddle"),
}


@pytest.fixture(scope="session")
def shared_registry(tmp_path_factory, shared_models: Path):
    """A models dir holding the default pack's cards plus cards for every shared model (linked, not copied)."""
    import shutil

    from service.cards import BUILTIN_MODELS_DIR, Registry
    from service.modelinspect import PRESETS, card_from_onnx

    root = tmp_path_factory.mktemp("models")
    for card_dir in BUILTIN_MODELS_DIR.iterdir():
        if (card_dir / "model.json").is_file():
            shutil.copytree(card_dir, root / card_dir.name)
    reg = Registry(root)
    for name, (file, preset) in SHARED_MODELS.items():
        color, mean, std = PRESETS[preset] if preset else ("RGB", 127.5, 127.5)
        card = card_from_onnx(shared_models / file, name, color=color, mean=mean, std=std, family_hint=preset or "")
        reg.save(card)
    return reg


@pytest.fixture(scope="session")
def make_pipeline(shared_registry):
    """Factory: a FacePipeline over the shared registry with the given settings overrides."""
    from service.config import Settings
    from service.pipeline.pipeline import FacePipeline

    made = []

    def make(**overrides):
        s = Settings(models_dir=shared_registry.models_dir, **overrides)
        p = FacePipeline(s, shared_registry)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
