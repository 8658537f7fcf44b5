"""SCRFD (InsightFace ``det_*.onnx`` / ``scrfd_*_bnkps.onnx``) on onnxruntime.

The network outputs, per stride 8/16/32 and per anchor (2 per grid cell), a score,
box distances (left, top, right, bottom) and 5 keypoint offsets, all in units of the
stride from the anchor centre. The image is resized to fit the card's input size,
padded bottom/right to a multiple of 32, and the boxes are mapped back.

Two scales: SCRFD's largest anchors stop at about 500 px, so at 640 input a close-up
face that fills the photo scores low with misplaced landmarks (0.58 on a shared
portrait) or is missed (an aligned 112-px crop: 0.08). A second pass at half the
input size (+25 % pixels) finds those (0.84, 0.74); candidates of both passes go
through one NMS, so the better-scoring box of a face wins.
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

STRIDES = (8, 16, 32)


class ScrfdDetector:
    def __init__(self, card: ModelCard, path: Path, settings: Settings) -> None:
        self.card = card
        self.loaded = load_session(path, settings.providers, intra_op_threads=settings.intra_op_threads, want_batch=False)
        self.score_threshold = settings.det_score_threshold
        self.nms_threshold = settings.det_nms_threshold
        outs = self.loaded.output_names
        self.has_landmarks = len(outs) in (9, 15)
        self.num_anchors = 2 if len(outs) in (6, 9) else 1
        self.groups = len(outs) // len(STRIDES)  # score, bbox[, kps]
        w, h = card.input.size
        self.input_size = (w or 640, h or 640)
        self._fixed = all(isinstance(d, int) for d in self.loaded.input_shape[2:])
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}
        # A graph with a fixed input size cannot take the half-scale pass.
        self.scales = (1.0,) if self._fixed else (1.0, 0.5)

    def _anchor_centers(self, fh: int, fw: int, stride: int) -> np.ndarray:
        key = (fh, fw, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:fh, :fw]
            c = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
            self._centers[key] = np.repeat(c, self.num_anchors, axis=0)
        return self._centers[key]

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        parts = [self._candidates(image, f) for f in self.scales]
        boxes_a = np.concatenate([p[0] for p in parts])
        if len(boxes_a) == 0:
            return []
        scores_a = np.concatenate([p[1] for p in parts])
        kps_a = np.concatenate([p[2] for p in parts]) if self.has_landmarks else None
        faces = []
        for j in nms(boxes_a, scores_a, self.nms_threshold):
            x1, y1, x2, y2 = boxes_a[j]
            faces.append(
                DetectedFace(
                    bbox=np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32),
                    score=float(scores_a[j]),
                    landmarks=None if kps_a is None else kps_a[j].astype(np.float32),
                )
            )
        return faces

    def _candidates(self, image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (x1y1x2y2), scores and keypoints above threshold at ``factor`` x the input size."""
        ih, iw = image.shape[:2]
        tw, th = int(self.input_size[0] * factor), int(self.input_size[1] * factor)
        scale = min(tw / iw, th / ih)
        nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
        if self._fixed and factor == 1.0:
            pw, ph = tw, th
        else:  # dynamic graph: pad only to the stride multiple, not the full square
            pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
        canvas = np.zeros((ph, pw, 3), dtype=np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, (pw, ph), (127.5, 127.5, 127.5), swapRB=True)
        outs = self.loaded.session.run(None, {self.loaded.input_name: blob})

        boxes, scores, kpss = [], [], []
        n = len(STRIDES)
        for i, stride in enumerate(STRIDES):
            sc = outs[i].reshape(-1)
            bb = outs[i + n].reshape(-1, 4) * stride
            centers = self._anchor_centers(ph // stride, pw // stride, stride)
            keep = np.where(sc >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            c = centers[keep]
            b = bb[keep]
            boxes.append(np.stack([c[:, 0] - b[:, 0], c[:, 1] - b[:, 1], c[:, 0] + b[:, 2], c[:, 1] + b[:, 3]], axis=1))
            scores.append(sc[keep])
            if self.has_landmarks:
                k = outs[i + 2 * n].reshape(-1, 10)[keep] * stride
                kpss.append(k.reshape(-1, 5, 2) + c[:, None, :])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        kps = np.concatenate(kpss) / scale if kpss else np.zeros((0, 5, 2), np.float32)
        return np.concatenate(boxes) / scale, np.concatenate(scores), kps
