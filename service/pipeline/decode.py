"""Image bytes -> BGR uint8 pixels, refusing bad input with typed errors.

Order matters for safety: size in bytes, then the format sniffed from magic bytes
(never the file name or the client's content type), then the pixel count read from
the header by Pillow (which parses headers lazily) *before* any full decode, so a
decompression bomb is refused without allocating its pixels. OpenCV then decodes;
it honours EXIF orientation, where Pillow does not.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from service.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage

#: Alpha is composited onto white: transparent cut-outs of faces are usually
#: product-style images on white, and white gives the detector the most contrast.
ALPHA_BACKGROUND = 255

_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"BM", 0, "bmp"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
]


def sniff_format(data: bytes) -> str | None:
    """Image format from magic bytes, or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for sig, off, name in _SIGNATURES:
        if data[off : off + len(sig)] == sig:
            return name
    return None


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus how they relate to the original image.

    ``scale`` = original width / ``pixels`` width: 1 unless a large JPEG was decoded
    at reduced size. Faces are reported in original-image coordinates.
    """

    pixels: np.ndarray
    format: str
    original_size: tuple[int, int]  # (w, h) after EXIF orientation
    scale: float = 1.0


def _header_size(data: bytes) -> tuple[int, int, str]:
    """(w, h, PIL mode) from the header only; Pillow does not decode pixels on open."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                mode = im.mode
                orientation = _orientation(im) if im.format in ("JPEG", "MPO", "WEBP", "TIFF") else 1
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image header declares too many pixels: {e}") from e
    except Exception as e:
        raise CorruptImage(f"cannot read the image header: {e}") from e
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return w, h, mode


def _orientation(im: Image.Image) -> int:
    """EXIF orientation tag, 1 when absent or unreadable (a broken EXIF block is not a broken image)."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return 1


def _jpeg_truncated(data: bytes) -> bool:
    """True when the main image's scan has no end-of-image marker.

    OpenCV silently decodes a truncated JPEG with a grey bottom; for a face service a
    half image is a corrupt image. The EOI must follow the *last* start-of-scan, since
    an EXIF thumbnail carries its own EOI earlier in the file.
    """
    sos = data.rfind(b"\xff\xda")
    return sos < 0 or data.find(b"\xff\xd9", sos) < 0


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    min_side_after_reduce: int = 0,
) -> DecodedImage:
    """Decode ``data`` to BGR uint8.

    ``min_side_after_reduce``: for large JPEGs, let libjpeg decode at 1/2, 1/4 or 1/8
    scale while the longest side stays at least this long (0 disables). Detection runs
    on a downscaled copy anyway, and a reduced decode of a 12 MP phone photo is about
    a third faster (FACTS.md).
    """
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes}", limit=max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise NotAnImage("the bytes are not a JPEG, PNG, WebP, BMP, GIF or TIFF image")
    w, h, mode = _header_size(data)
    if w <= 0 or h <= 0:
        raise CorruptImage("the image header declares a zero size")
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}", limit=max_pixels, width=w, height=h
        )
    if fmt == "jpeg" and _jpeg_truncated(data):
        raise CorruptImage("the JPEG is truncated (no end-of-image marker after its last scan)")

    buf = np.frombuffer(data, dtype=np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and fmt in ("png", "gif", "webp"))
    if has_alpha:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps alpha; _to_bgr_u8 flattens it
    else:
        flag = cv2.IMREAD_COLOR
        if fmt == "jpeg" and min_side_after_reduce > 0:
            for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                    (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if max(w, h) / factor >= min_side_after_reduce:
                    flag = reduced
                    break
        img = cv2.imdecode(buf, flag)
    if img is None or img.size == 0:
        raise CorruptImage(f"the {fmt.upper()} data cannot be decoded")
    img = _to_bgr_u8(img)
    return DecodedImage(pixels=np.ascontiguousarray(img), format=fmt, original_size=(w, h), scale=w / img.shape[1])


def _to_bgr_u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] in (2, 4):
        return _flatten(img)
    if img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def _flatten(img: np.ndarray) -> np.ndarray:
    """Composite the alpha channel of a uint8 grey+alpha or BGRA image onto ``ALPHA_BACKGROUND``."""
    if img.shape[2] == 2:
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])  # grey + alpha
    alpha = img[..., 3:4].astype(np.float32) / 255.0
    rgb = img[..., :3].astype(np.float32)
    out = rgb * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
    return (out + 0.5).astype(np.uint8)
