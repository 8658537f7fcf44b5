"""Decode: every error class, every accepted format, and the bomb refused from its header."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from service.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage
from service.pipeline import decode as decode_mod
from service.pipeline.decode import decode_image, sniff_format

LIMITS = {"max_bytes": 15 * 1024 * 1024, "max_pixels": 40_000_000}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h, followed by a tiny (invalid) IDAT: only the header is real."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.fixture
def no_full_decode(monkeypatch):
    """Fail the test if OpenCV is asked to decode pixels."""

    def boom(*a, **k):
        raise AssertionError("cv2.imdecode was called on an image that should be refused from its header")

    monkeypatch.setattr(decode_mod.cv2, "imdecode", boom)


def test_empty() -> None:
    with pytest.raises(EmptyImage) as e:
        decode_image(b"", **LIMITS)
    assert e.value.code == "empty_image" and e.value.status == 400


@pytest.mark.parametrize("data", [b"hello, I am not an image", b"<html><body>x</body></html>", b"%PDF-1.4\n", b"PK\x03\x04zip"])
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage) as e:
        decode_image(data, **LIMITS)
    assert e.value.code == "invalid_image"


def test_too_many_bytes() -> None:
    data = _encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(ImageTooLarge) as e:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**9)
    assert e.value.status == 413


@pytest.mark.parametrize("w,h", [(20000, 20000), (50000, 50000), (7000, 7000)])
def test_pixel_bomb_refused_from_header(w: int, h: int, no_full_decode) -> None:
    data = _png_header_only(w, h)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge) as e:
        decode_image(data, **LIMITS)
    assert e.value.code == "image_too_large"


def test_jpeg_header_claiming_huge_size(no_full_decode) -> None:
    data = bytearray(_encode(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 50000, 50000)  # height, width in SOF0
    with pytest.raises(ImageTooLarge):
        decode_image(bytes(data), **LIMITS)


def test_truncated_jpeg_is_corrupt() -> None:
    full = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(CorruptImage) as e:
        decode_image(full[: len(full) * 4 // 10], **LIMITS)
    assert e.value.code == "corrupt_image"


def test_broken_png_is_corrupt() -> None:
    full = _encode(Image.new("RGB", (100, 100), (10, 200, 30)), "PNG")
    with pytest.raises(CorruptImage):
        decode_image(full[:60], **LIMITS)


def test_formats_decode_to_bgr_u8() -> None:
    rgb = np.zeros((30, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red in RGB
    img = Image.fromarray(rgb)
    for fmt in ("PNG", "BMP", "WEBP", "TIFF", "GIF"):
        kw = {"lossless": True} if fmt == "WEBP" else {}
        d = decode_image(_encode(img, fmt, **kw), **LIMITS)
        assert d.pixels.shape == (30, 40, 3) and d.pixels.dtype == np.uint8, fmt
        assert d.pixels[..., 2].mean() > 150 and d.pixels[..., 0].mean() < 50, fmt  # BGR: red is channel 2
        assert d.format == fmt.lower()


def test_grayscale_16bit_cmyk() -> None:
    g = decode_image(_encode(Image.new("L", (20, 10), 128), "PNG"), **LIMITS)
    assert g.pixels.shape == (10, 20, 3) and abs(int(g.pixels[0, 0, 0]) - 128) <= 1
    arr16 = (np.ones((10, 20), dtype=np.uint16) * 65535)
    _, png16 = cv2.imencode(".png", arr16)
    d16 = decode_image(png16.tobytes(), **LIMITS)
    assert d16.pixels.dtype == np.uint8 and d16.pixels.max() == 255
    cmyk = decode_image(_encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"), **LIMITS)
    b, gch, r = cmyk.pixels[5, 10].astype(int)
    assert r > 200 and gch < 60 and b < 60, "CMYK (0,255,255,0) is red"


def test_alpha_is_flattened_onto_white() -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)  # fully transparent black
    rgba[:5, :, :] = (0, 0, 255, 255)  # top half opaque blue
    d = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    assert tuple(d.pixels[8, 5]) == (255, 255, 255)
    assert tuple(d.pixels[2, 5]) == (255, 0, 0)  # BGR blue


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # left quarter blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    d = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95), **LIMITS)
    assert d.pixels.shape[:2] == (40, 20), "width and height swap"
    assert d.original_size == (20, 40)
    assert d.pixels[2, 10, 0] > 150, "the blue left edge is now at the top"


def test_sniff_ignores_names() -> None:
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"GIF89a") == "gif"
    assert sniff_format(b"nope") is None


def test_reduced_jpeg_decode_keeps_original_coordinates() -> None:
    big = np.full((3000, 4000, 3), 90, dtype=np.uint8)
    _, enc = cv2.imencode(".jpg", big)
    d = decode_image(enc.tobytes(), **LIMITS, min_side_after_reduce=1536)
    assert d.pixels.shape == (1500, 2000, 3) and d.scale == 2.0 and d.original_size == (4000, 3000)
    full = decode_image(enc.tobytes(), **LIMITS, min_side_after_reduce=0, max_side=0)
    assert full.pixels.shape == (3000, 4000, 3) and full.scale == 1.0


# --- the shared bad-input corpus -------------------------------------------------------------------
EXPECT = {
    "empty_0_bytes.jpg": EmptyImage,
    "not_an_image.jpg": NotAnImage,
    "truncated_face.jpg": CorruptImage,
    "bomb_20000x20000.png": ImageTooLarge,
    "huge_8000x8000_face.jpg": ImageTooLarge,
}


@pytest.mark.parametrize("name,exc", sorted(EXPECT.items()))
def test_shared_bad_files(bad_dir, name, exc) -> None:
    with pytest.raises(exc):
        decode_image((bad_dir / name).read_bytes(), **LIMITS)


def test_shared_bomb_never_decoded(bad_dir, no_full_decode) -> None:
    with pytest.raises(ImageTooLarge):
        decode_image((bad_dir / "bomb_20000x20000.png").read_bytes(), **LIMITS)
