"""The detected-face record every detector returns and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DetectedFace:
    """One detected face in original-image coordinates.

    ``landmarks`` are (5, 2): left eye, right eye, nose tip, left and right mouth
    corner as seen in the image (the ArcFace template order); None when the detector
    gives no landmarks, which makes the face impossible to align.
    """

    bbox: np.ndarray  # (4,) x, y, w, h
    score: float
    landmarks: np.ndarray | None = None
    quality: dict[str, float] = field(default_factory=dict)

    @property
    def area(self) -> float:
        return float(self.bbox[2] * self.bbox[3])

    @property
    def size(self) -> float:
        """Shorter bbox side in pixels: what min-face-size limits compare against."""
        return float(min(self.bbox[2], self.bbox[3]))

    def scaled(self, factor: float) -> DetectedFace:
        """Same face with coordinates multiplied by ``factor``."""
        lm = None if self.landmarks is None else self.landmarks * factor
        return DetectedFace(self.bbox * factor, self.score, lm, dict(self.quality))

    def to_dict(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "landmarks": None if self.landmarks is None else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
            "quality": {k: round(float(v), 4) for k, v in self.quality.items()},
        }
