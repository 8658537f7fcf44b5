"""Face detection: one interface, several backends, shared pre/post-processing.

Backends only see an image already downscaled to the detection size and return
faces in that image's coordinates; :func:`detect_faces` does the downscale, maps
coordinates back, filters by size and score, sorts and caps the count, so each
backend stays a thin adapter over its network's output format.
"""

from __future__ import annotations

from typing import Literal, Protocol

import cv2
import numpy as np

from service.cards import ModelCard, Registry
from service.config import Settings
from service.errors import ModelLoadError
from service.pipeline.faces import DetectedFace


class Detector(Protocol):
    card: ModelCard
    has_landmarks: bool

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces in ``image`` (BGR uint8), in its own pixel coordinates."""
        ...


def detect_faces(
    detector: Detector,
    image: np.ndarray,
    *,
    max_side: int = 1024,
    min_size: float = 0,
    max_faces: int = 0,
    sort: Literal["area", "score"] = "area",
) -> list[DetectedFace]:
    """Detect on a copy downscaled to ``max_side`` and return faces in ``image`` coordinates.

    Downscaling is not only for speed: YuNet misses large close-ups at full
    resolution (a 1638x2048 portrait) and finds them at <= 1024 (docs/facts.md).
    """
    h, w = image.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    small = image if factor == 1.0 else cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    faces = detector.detect(small)
    if factor != 1.0:
        faces = [f.scaled(1.0 / factor) for f in faces]
    faces = [f for f in faces if f.size >= min_size]
    key = (lambda f: f.area) if sort == "area" else (lambda f: f.score)
    faces.sort(key=key, reverse=True)
    return faces[:max_faces] if max_faces else faces


def load_detector(card: ModelCard, registry: Registry, settings: Settings) -> Detector:
    """Backend for ``card.family``."""
    path = registry.weights_path(card)
    if card.family == "yunet":
        from service.pipeline.yunet import YuNetDetector

        return YuNetDetector(card, path, settings)
    if card.family == "scrfd":
        from service.pipeline.scrfd import ScrfdDetector

        return ScrfdDetector(card, path, settings)
    if card.family == "ultralight":
        from service.pipeline.ultralight import UltraLightDetector

        return UltraLightDetector(card, path, settings)
    raise ModelLoadError(f"model {card.name}: unknown detector family {card.family!r}")
