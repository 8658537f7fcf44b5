"""Image bytes -> BGR uint8 pixels, refusing bad input with typed errors.

Order matters for safety: size in bytes, then the format sniffed from magic bytes
(never the file name or the client's content type), then a walk over the container
(service/pipeline/prescan.py: the JPEG scan limits, and caps on the chunks or segments
that Pillow's header parsers, written in Python, would loop over), then the pixel count
read from the header by Pillow (which parses headers lazily) *before* any full decode,
so a decompression bomb is refused without allocating its pixels.

Memory stays proportional to what the pipeline needs: images are reduced to at most
``max_side`` pixels on their longest side while they are decoded (libjpeg's reduced
decode for JPEG, an integer box reduction over tiles for the formats Pillow decodes),
and alpha and 16-bit samples are turned into 8-bit BGR tile by tile, in integer
arithmetic, so a small all-zero 40 MP RGBA PNG never becomes a full-size float image.

EXIF orientation is applied here, the same way for every format, after the
reduction: the decoders are asked for the stored pixels (OpenCV's
IMREAD_IGNORE_ORIENTATION; Pillow does not rotate PNG, WebP or JPEG), so pixels,
``original_size`` and ``scale`` always agree. TIFF is the exception: both libtiff-based
decoders rotate TIFFs themselves (Pillow then drops the tag), so Pillow's loaded image
is already upright and its orientation tag is gone.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from service.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage
from service.pipeline.prescan import check_gif, check_jpeg, check_png

#: Alpha is composited onto white (``_composite``): transparent cut-outs of faces are usually
#: product-style images on white, and white gives the detector the most contrast.
ALPHA_BACKGROUND = 255

#: Defaults of the decode limits; service/config.py carries the same values as settings
#: (tests/pipeline/test_decode_hostile.py checks that they agree).
DEFAULT_MAX_SIDE = 2048
DEFAULT_JPEG_MAX_SCANS = 64
DEFAULT_JPEG_MAX_PASSES = 12.0

#: Source pixels per side of the tiles that the Pillow path converts at a time (1 MB of RGBA).
_TILE = 512

_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"BM", 0, "bmp"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
]

#: EXIF orientation -> OpenCV operations that make the stored pixels upright (Pillow's
#: ImageOps.exif_transpose table, as OpenCV calls).
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


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

    ``scale``: original-image coordinates = pixel coordinates * scale, i.e. original width /
    ``pixels`` width (1 unless the image was reduced while decoding). Faces are reported in
    original-image coordinates.
    """

    pixels: np.ndarray
    format: str
    original_size: tuple[int, int]  # (w, h) after EXIF orientation
    scale: float = 1.0


def _orientation(im: Image.Image) -> int:
    """EXIF orientation tag, 1 when absent or unreadable (a broken EXIF block is not a broken image).

    Only reads what Pillow has parsed: for a PNG whose eXIf chunk follows the pixel data,
    Pillow's ``getexif`` would decode the whole image to reach it, so before ``load`` such a
    PNG reads as 1 (and the Pillow path asks again after loading).
    """
    try:
        if im.format == "PNG" and "exif" not in im.info:
            return 1
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return 1
    return value if value in _ORIENT else 1


def _open(data: bytes) -> Image.Image:
    """Pillow's lazy open: the header only; pixels are not decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image header declares too many pixels: {e}") from e
    except Exception as e:  # any header parse failure means corrupt input
        # the library's own message may carry object reprs or paths: name the failure only
        raise CorruptImage("cannot read the image header", reason=type(e).__name__) from e


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    min_side_after_reduce: int = 0,
    max_side: int = DEFAULT_MAX_SIDE,
    jpeg_max_scans: int = DEFAULT_JPEG_MAX_SCANS,
    jpeg_max_passes: float = DEFAULT_JPEG_MAX_PASSES,
) -> DecodedImage:
    """Decode ``data`` to BGR uint8 with a longest side of at most ``max_side`` (0 = full size).

    ``min_side_after_reduce``: for large JPEGs, let libjpeg decode at 1/2, 1/4 or 1/8
    scale while the longest side stays at least this long (0 disables). Detection runs
    on a downscaled copy anyway, and a reduced decode of a 12 MP phone photo is about
    a third faster. ``jpeg_max_scans`` / ``jpeg_max_passes``: see service/pipeline/prescan.py.
    """
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes}", limit=max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise NotAnImage("the bytes are not a JPEG, PNG, WebP, BMP, GIF or TIFF image")
    if fmt == "jpeg":  # before Pillow's header parser, which loops over every marker segment
        check_jpeg(data, max_scans=jpeg_max_scans, max_passes=jpeg_max_passes)
    elif fmt == "png":
        check_png(data)
    elif fmt == "gif":
        check_gif(data)
    with _open(data) as im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise CorruptImage("the image header declares a zero size")
        if w * h > max_pixels:
            raise ImageTooLarge(
                f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}",
                limit=max_pixels, width=w, height=h,
            )
        if fmt in ("jpeg", "webp"):
            img, full, covered, orientation = _decode_cv2(data, fmt, im, max_side, min_side_after_reduce)
        else:
            img, full, covered, orientation = _decode_pillow(im, fmt, max_side)
    if orientation in _ORIENT:
        img = _ORIENT[orientation](img)
        if orientation >= 5:
            full, covered = (full[1], full[0]), (covered[1], covered[0])
    return DecodedImage(pixels=np.ascontiguousarray(img), format=fmt, original_size=full, scale=covered[0] / img.shape[1])


# A decode route returns (pixels as stored, full size as stored, the part of it the pixels cover,
# EXIF orientation still to apply). "Covered" differs from "full" by the < factor source pixels
# that an integer box reduction leaves at the right and bottom edges.
_Decoded = tuple[np.ndarray, tuple[int, int], tuple[int, int], int]


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average ``img`` down to a longest side of ``max_side`` (0 = unchanged)."""
    h, w = img.shape[:2]
    if not max_side or max(w, h) <= max_side:
        return img
    f = max_side / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _decode_cv2(data: bytes, fmt: str, im: Image.Image, max_side: int, min_side: int) -> _Decoded:
    """JPEG (libjpeg's reduced decode) and WebP (libwebp has no cheaper path in OpenCV or Pillow)."""
    w, h = im.size
    longest = max(w, h)
    orientation = _orientation(im)
    has_alpha = fmt == "webp" and _has_alpha(im)
    buf = np.frombuffer(data, dtype=np.uint8)
    if has_alpha:
        flag = cv2.IMREAD_UNCHANGED
    else:
        # Decoding at 1/k is free quality-wise while the result stays >= max_side (it is
        # area-reduced to max_side next); min_side trades some more for speed (JPEG only).
        # For WebP OpenCV decodes fully and halves with a 2x2 average (INTER_LINEAR at exactly
        # 1/2), without the full-size copy its plain decode makes; 1/4 and 1/8 would alias.
        factors = (8, 4, 2) if fmt == "jpeg" else (2,)
        k = 1
        for f in factors:
            if (max_side and longest / f >= max_side) or (fmt == "jpeg" and min_side and longest / f >= min_side):
                k = f
                break
        flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}[k]
    img = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.size == 0:
        raise CorruptImage(f"the {fmt.upper()} data cannot be decoded")
    if img.ndim == 3 and img.shape[2] == 4:
        for y in range(0, img.shape[0], _TILE):  # in place, a band at a time
            band = img[y : y + _TILE]
            band[..., :3] = _composite(band)
        img = cv2.cvtColor(_fit(img, max_side), cv2.COLOR_BGRA2BGR)
    elif img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return _fit(img, max_side), (w, h), (w, h), orientation


def _composite(px: np.ndarray) -> np.ndarray:
    """uint8 colour + alpha (..., 4) or grey + alpha (..., 2) -> colour (..., 3) composited onto white.

    round((c * a + 255 * (255 - a)) / 255) = round(c * a / 255) + (255 - a), exactly, since the
    second term is an integer; OpenCV's saturating uint8 multiply computes the first in one pass.
    """
    px = np.ascontiguousarray(px)
    if px.shape[2] == 4:
        c = cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)  # drops the 4th channel; the same for BGRA
    else:
        c = cv2.cvtColor(cv2.extractChannel(px, 0), cv2.COLOR_GRAY2BGR)
    a3 = cv2.cvtColor(cv2.extractChannel(px, px.shape[2] - 1), cv2.COLOR_GRAY2BGR)
    return cv2.add(cv2.multiply(c, a3, scale=1.0 / 255.0), cv2.bitwise_not(a3))  # + (255 - a): white


def _grey16(px: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer holding 16-bit) grey -> 8-bit, rounded: round(x / 257)."""
    x = np.clip(px, 0, 65535).astype(np.uint32)
    return ((x + 128) // 257).astype(np.uint8)


def _has_alpha(im: Image.Image) -> bool:
    """An alpha channel or a transparent colour (Pillow's ``has_transparency_data``, which needs Pillow 10.1)."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _tile_converter(im: Image.Image) -> Callable[[Image.Image], np.ndarray]:
    """A function from a Pillow tile of ``im`` to RGB uint8 pixels, for ``im``'s mode."""
    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (a 16-bit grey tRNS colour is ignored)
        return lambda t: np.repeat(_grey16(np.asarray(t))[..., None], 3, axis=2)
    if _has_alpha(im):  # RGBA, LA, PA, RGBa, La, or P / L / RGB with a transparent colour
        if im.mode in ("LA", "La") and "transparency" not in im.info:
            return lambda t: _composite(np.asarray(t.convert("LA")))
        return lambda t: _composite(np.asarray(t.convert("RGBA")))
    if im.mode == "F":
        return lambda t: np.repeat(np.clip(np.asarray(t) * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "RGB":
        return np.asarray
    return lambda t: np.asarray(t.convert("RGB"))


def _decode_pillow(im: Image.Image, fmt: str, max_side: int) -> _Decoded:
    """PNG, GIF, BMP, TIFF: Pillow keeps the decoded image in its own compact form (16-bit
    RGBA becomes 8-bit RGBA while decoding, palette images stay 1 byte a pixel); it is then
    converted and box-reduced by an integer factor tile by tile, and area-reduced to
    ``max_side`` at the end, so nothing else of full size is ever allocated.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Exception as e:  # truncated data, bad CRC, unsupported codec
        raise CorruptImage(f"the {fmt.upper()} data cannot be decoded", reason=type(e).__name__) from e
    orientation = _orientation(im)  # after load: a PNG's eXIf may follow its pixel data
    w, h = im.size
    k = max(1, max(w, h) // max_side) if max_side else 1
    ow, oh = max(1, w // k), max(1, h // k)
    cw, ch = (w if w < k else ow * k), (h if h < k else oh * k)
    convert = _tile_converter(im)
    out = np.empty((oh, ow, 3), dtype=np.uint8)
    step = k * max(1, _TILE // k)
    for y0 in range(0, ch, step):
        y1 = min(ch, y0 + step)
        th = max(1, (y1 - y0) // k)
        for x0 in range(0, cw, step):
            x1 = min(cw, x0 + step)
            tw = max(1, (x1 - x0) // k)
            rgb = convert(im.crop((x0, y0, x1, y1)))
            if k > 1:
                rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
            out[y0 // k : y0 // k + th, x0 // k : x0 // k + tw] = rgb[..., ::-1]
    return _fit(out, max_side), (w, h), (cw, ch), orientation
