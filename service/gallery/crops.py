"""The stored aligned crop: lossless PNG, so a re-embed sees exactly what was enrolled."""

from __future__ import annotations

import numpy as np

from service.errors import InvalidRequest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_crop(crop: np.ndarray | bytes) -> bytes:
    """Aligned crop (HxW or HxWx3 BGR uint8, or PNG bytes as they are) -> PNG bytes."""
    if isinstance(crop, (bytes, bytearray, memoryview)):
        data = bytes(crop)
        if not data.startswith(PNG_SIGNATURE):
            raise InvalidRequest("crop bytes must be a PNG image")
        return data
    arr = np.asarray(crop)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InvalidRequest("crop must be an HxW or HxWx3 uint8 (BGR) array", shape=list(arr.shape))
    import cv2  # lazy: only enroll and re-embed need it

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise InvalidRequest("crop could not be encoded as PNG")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """PNG bytes -> BGR uint8 array (what the recognizer pipeline takes)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidRequest("stored crop cannot be decoded")
    return img
