"""Cheap face-quality signals for the enrollment gate and the detect response.

Pose comes from the 5 landmarks alone (no extra network): good enough to reject
profile shots and strong tilts, not a head-pose estimator. Blur is the variance of
the Laplacian on a 112-px grey crop, the usual sharpness proxy.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from service.pipeline.faces import DetectedFace

#: Nose-tip protrusion relative to the inter-ocular distance, for the yaw model below.
_NOSE_DEPTH = 0.55
#: (nose - eyes) / (mouth - eyes) vertically on the frontal ArcFace template.
_FRONTAL_NOSE_RATIO = 0.494


def pose_from_landmarks(lm: np.ndarray) -> dict[str, float]:
    """Approximate yaw, pitch, roll in degrees.

    Roll is the angle of the eye line. After de-rolling, yaw follows from the nose
    tip's horizontal offset from the eyes' midpoint (offset = depth·sin θ while the
    eye distance shrinks by cos θ), pitch from where the nose sits between the eye
    and mouth lines.
    """
    le, re, nose, lm_, rm = (np.asarray(p, dtype=np.float64) for p in lm)
    dx, dy = re - le
    roll = math.degrees(math.atan2(dy, dx))
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    eyes_mid = (le + re) / 2
    pts = {k: rot @ (v - eyes_mid) for k, v in {"le": le, "re": re, "nose": nose, "mouth": (lm_ + rm) / 2}.items()}
    iod = max(abs(pts["re"][0] - pts["le"][0]), 1e-6)
    yaw = math.degrees(math.atan2(pts["nose"][0], iod * _NOSE_DEPTH))
    eye_mouth = max(pts["mouth"][1], 1e-6)
    ratio = pts["nose"][1] / eye_mouth
    pitch = math.degrees(math.atan2((ratio - _FRONTAL_NOSE_RATIO) * eye_mouth, iod * _NOSE_DEPTH))
    return {"yaw": yaw, "pitch": pitch, "roll": roll}


def blur_score(image: np.ndarray, face: DetectedFace) -> float:
    """Variance of the Laplacian of the face box resized to 112 px (higher = sharper)."""
    x, y, w, h = face.bbox
    ih, iw = image.shape[:2]
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(iw, int(math.ceil(x + w))), min(ih, int(math.ceil(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    crop = cv2.resize(image[y0:y1, x0:x1], (112, 112), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def assess(image: np.ndarray, face: DetectedFace) -> dict[str, float]:
    """Quality record for ``face`` (given in ``image`` coordinates)."""
    q = {"size": face.size, "blur": blur_score(image, face)}
    if face.landmarks is not None:
        q.update(pose_from_landmarks(face.landmarks))
    return q
