"""Face alignment: the preprocessing contract shared by the service and training.

This module is the single home of the 5-point template and the similarity warp.
Training imports it when it prepares data, so a model is trained on exactly the
crops the service will feed it.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

#: ArcFace template for 112x112 crops: left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def template_for(size: tuple[int, int] | int, template: np.ndarray | None = None) -> np.ndarray:
    """Template scaled to a crop of ``size`` (w, h).

    Scaling the 112 template by width keeps the face at the same relative position;
    for non-square crops (e.g. 112x96 SphereFace-style) the extra height is split
    evenly, as InsightFace does for its 128-wide variant.
    """
    w, h = (size, size) if isinstance(size, int) else size
    base = ARCFACE_TEMPLATE_112 if template is None else np.asarray(template, dtype=np.float32)
    if template is not None or (w, h) == (112, 112):
        return base.copy()
    s = w / 112.0
    out = base * s
    out[:, 1] += (h - 112.0 * s) / 2.0
    return out.astype(np.float32)


AlignMethod = Literal["lmeds", "umeyama"]


def similarity_transform(src: np.ndarray, dst: np.ndarray, method: AlignMethod = "lmeds") -> np.ndarray:
    """2x3 similarity transform mapping ``src`` points onto ``dst``.

    ``lmeds`` (default): ``cv2.estimateAffinePartial2D`` with least-median-of-squares,
    which ignores one badly placed landmark (a mouth corner under a hand, say). The
    shared reference embeddings and the lfw112 crops were made this way, so our
    numbers match theirs. It is deterministic (OpenCV seeds its RNG).
    ``umeyama``: plain least squares over all five points (Umeyama 1991), what
    InsightFace uses through scikit-image; written out because scikit-image is a heavy
    dependency for 15 lines. Also the fallback when LMEDS finds no solution.
    """
    if method == "lmeds":
        m, _ = cv2.estimateAffinePartial2D(
            np.asarray(src, dtype=np.float32).reshape(-1, 1, 2),
            np.asarray(dst, dtype=np.float32).reshape(-1, 1, 2),
            method=cv2.LMEDS,
        )
        if m is not None:
            return m
    return _umeyama(src, dst)


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (sc**2).sum() / n
    scale = (d * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: tuple[int, int] | int = 112,
    template: np.ndarray | None = None,
    method: AlignMethod = "lmeds",
) -> np.ndarray:
    """Warp ``image`` so the 5 ``landmarks`` land on the template; returns an (h, w, C) crop."""
    w, h = (size, size) if isinstance(size, int) else size
    lm = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    m = similarity_transform(lm, template_for((w, h), template), method)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
