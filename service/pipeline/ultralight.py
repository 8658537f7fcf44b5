"""Ultra-Light-Fast-Generic-Face-Detector (RFB-320) on onnxruntime: boxes only.

Its ONNX export already decodes priors into normalised corner boxes, so only
thresholding and NMS remain. It gives no landmarks, so its faces can be reported
but never aligned or embedded (``AlignmentUnavailable``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from service.cards import ModelCard
from service.config import Settings
from service.engine.session import load_session
from service.pipeline.faces import DetectedFace
from service.pipeline.nms import nms


class UltraLightDetector:
    has_landmarks = False

    def __init__(self, card: ModelCard, path: Path, settings: Settings) -> None:
        self.card = card
        self.loaded = load_session(path, settings.providers, intra_op_threads=settings.intra_op_threads, want_batch=False)
        self.score_threshold = settings.det_score_threshold
        self.nms_threshold = settings.det_nms_threshold
        w, h = card.input.size
        self.input_size = (w or 320, h or 240)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        ih, iw = image.shape[:2]
        w, h = self.input_size
        spec = self.card.input
        blob = cv2.dnn.blobFromImage(image, 1.0 / spec.std, (w, h), (spec.mean,) * 3, swapRB=spec.color == "RGB")
        scores, boxes = self.loaded.session.run(None, {self.loaded.input_name: blob})
        scores, boxes = scores[0][:, 1], boxes[0]
        keep = np.where(scores >= self.score_threshold)[0]
        boxes = boxes[keep] * np.array([iw, ih, iw, ih], dtype=np.float32)
        scores = scores[keep]
        faces = []
        for j in nms(boxes, scores, self.nms_threshold):
            x1, y1, x2, y2 = np.clip(boxes[j], 0, [iw, ih, iw, ih])
            faces.append(DetectedFace(bbox=np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32), score=float(scores[j])))
        return faces
