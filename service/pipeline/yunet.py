"""YuNet (OpenCV Zoo) through ``cv2.FaceDetectorYN``.

OpenCV's wrapper is used instead of onnxruntime because the int8 block-quantised
YuNet of the default pack runs in OpenCV 5 only (docs/facts.md), and the wrapper already
decodes YuNet's anchor-free heads. A ``FaceDetectorYN`` holds its input size as
state, so concurrent callers each take an instance from a small pool.
"""

from __future__ import annotations

import queue
from pathlib import Path

import cv2
import numpy as np

from service.cards import ModelCard
from service.config import Settings
from service.errors import ModelLoadError
from service.pipeline.faces import DetectedFace

# OpenCV 5 warns on every FaceDetectorYN.create that its new graph engine ignores
# preferable targets; that is noise for a CPU/CUDA-agnostic caller.
if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class YuNetDetector:
    has_landmarks = True

    def __init__(self, card: ModelCard, path: Path, settings: Settings, pool_size: int = 2) -> None:
        self.card = card
        self._pool: queue.Queue = queue.Queue()
        for _ in range(pool_size):
            try:
                det = cv2.FaceDetectorYN.create(
                    str(path), "", (320, 320), settings.det_score_threshold, settings.det_nms_threshold, 5000
                )
            except cv2.error as e:
                raise ModelLoadError(f"OpenCV cannot load YuNet model {path}: {e}", path=str(path)) from e
            self._pool.put(det)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        h, w = image.shape[:2]
        det = self._pool.get()
        try:
            det.setInputSize((w, h))
            _, rows = det.detect(image)
        finally:
            self._pool.put(det)
        if rows is None:
            return []
        return [
            DetectedFace(bbox=r[0:4].astype(np.float32), score=float(r[14]), landmarks=r[4:14].reshape(5, 2).astype(np.float32))
            for r in rows
        ]
