"""Non-maximum suppression shared by the detector backends (OpenCV's implementation)."""

from __future__ import annotations

import cv2
import numpy as np


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by non-maximum suppression (OpenCV's implementation)."""
    if len(boxes_xyxy) == 0:
        return np.zeros((0,), dtype=np.int64)
    xywh = boxes_xyxy.copy()
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold=0.0, nms_threshold=iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)
