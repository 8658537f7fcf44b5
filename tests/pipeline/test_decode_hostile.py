"""Decode against hostile and awkward input: memory per image, JPEG scan floods, EXIF orientation.

Every hostile file is generated here. Memory is measured as the peak RSS growth of a fresh
Python process that imports only the decoder (ru_maxrss is the process's high-water mark,
so the decode runs in its own process, after the imports and the file are in place).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from devkit.hostile import jpeg_scans, png_chunk, repeat_scan
from service.config import Settings
from service.errors import CorruptImage
from service.pipeline import decode as decode_mod
from service.pipeline.decode import decode_image
from service.pipeline.prescan import check_jpeg

LIMITS = {"max_bytes": 15 * 1024 * 1024, "max_pixels": 40_000_000}
REPO = Path(__file__).resolve().parents[2]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, {repo!r})
    from devkit.hostile import zero_png
    from service.pipeline.decode import decode_image
    data = zero_png({w}, {w}, {ct}, {bd})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = decode_image(data, max_bytes=15 * 1024 * 1024, max_pixels=40_000_000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"mb": (peak - before) / 1024, "bytes": len(data), "shape": d.pixels.shape,
                      "scale": d.scale, "size": d.original_size, "min": int(d.pixels.min())}}))
    """
)


@pytest.mark.parametrize(
    "color_type,bit_depth,name", [(6, 8, "RGBA 8-bit"), (6, 16, "RGBA 16-bit"), (4, 16, "grey+alpha 16-bit")]
)
def test_small_transparent_png_of_40_mp_stays_small_in_memory(color_type: int, bit_depth: int, name: str) -> None:
    """A ~150-300 KB all-transparent 6300x6300 PNG: before, 1.8-2.1 GB of float work; now Pillow's 8-bit
    RGBA (159 MB) is the only full-size buffer."""
    w = 6300
    code = _PEAK_SCRIPT.format(repo=str(REPO), w=w, ct=color_type, bd=bit_depth)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bytes"] < 400_000
    assert r["mb"] < 250, f"{name}: decoding raised peak RSS by {r['mb']:.0f} MB"
    assert tuple(r["shape"]) == (2048, 2048, 3) and tuple(r["size"]) == (w, w)
    assert abs(r["scale"] - w / 2048) < 0.01
    assert r["min"] == 255, "transparent black is composited onto white"


# --- alpha and 16-bit arithmetic ----------------------------------------------------------------------
def test_semi_transparent_pixel_composited_exactly() -> None:
    # round(c * a / 255 + 255 * (1 - a / 255)) by hand, a = 128:
    # R 200 -> 100.39 + 127.0 = 227.39 -> 227; G 100 -> 50.20 + 127.0 -> 177; B 0 -> 127.
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:] = (200, 100, 0, 128)
    d = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    assert tuple(int(v) for v in d.pixels[1, 1]) == (127, 177, 227)  # BGR


def test_16_bit_rgba_and_grey_alpha_png() -> None:
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[:] = (200 * 257, 100 * 257, 0, 128 * 257)
    _, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    d = decode_image(png.tobytes(), **LIMITS)
    assert d.pixels.dtype == np.uint8 and tuple(int(v) for v in d.pixels[2, 2]) == (127, 177, 227)
    # grey 16-bit 100*257 with alpha 128*257: 100 * 128 / 255 + 127 = 177.2 -> 177
    la = struct.pack(">HH", 100 * 257, 128 * 257) * 16
    raw = b"".join(b"\x00" + la[i * 16 : (i + 1) * 16] for i in range(4))
    png_la = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 4, 0, 0, 0))
              + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    g = decode_image(png_la, **LIMITS)
    assert tuple(int(v) for v in g.pixels[0, 0]) == (177, 177, 177)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_white(fmt: str) -> None:
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (0, 0, 8, 4))  # top half red, bottom half index 0 = transparent
    d = decode_image(_encode(p, fmt, transparency=0), **LIMITS)
    assert tuple(int(v) for v in d.pixels[6, 3]) == (255, 255, 255)
    assert tuple(int(v) for v in d.pixels[1, 3]) == (0, 0, 255)


def test_16_bit_grey_rounds_to_nearest() -> None:
    # 100 * 257 + 200 = 25900 -> 25900 / 257 = 100.78 -> 101; 65535 -> 255; 128 -> 0.5 -> 0 or 1
    arr = np.array([[25900, 65535, 0, 257 * 7]], np.uint16)
    _, png = cv2.imencode(".png", arr)
    d = decode_image(png.tobytes(), **LIMITS)
    assert d.pixels[0, :, 0].tolist() == [101, 255, 0, 7]


def test_alpha_is_composited_before_reducing() -> None:
    """Columns alternate transparent black / opaque red; halved, every pixel is half white, half red.

    Averaging RGBA first and compositing after would give R = 191 (dark fringes around cut-outs)."""
    rgba = np.zeros((20, 4100, 4), np.uint8)
    rgba[:, 1::2] = (255, 0, 0, 255)
    d = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS, max_side=2050)
    assert d.pixels.shape == (10, 2050, 3) and d.scale == 2.0
    b, g, r = (int(v) for v in d.pixels[5, 100])
    assert r == 255 and abs(g - 127.5) <= 1 and abs(b - 127.5) <= 1


# --- reduction keeps original coordinates -------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP"])
def test_reduced_decode_maps_back_to_original_coordinates(fmt: str) -> None:
    w, h = 5000, 2500
    img = np.full((h, w, 3), 40, np.uint8)
    img[1000:1500, 3000:3600] = (250, 250, 250)  # white box: centre (3300, 1250) in original pixels
    data = _encode(Image.fromarray(img), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    d = decode_image(data, max_bytes=len(data), max_pixels=w * h, max_side=1000)  # BMP: 37 MB
    assert d.original_size == (w, h) and max(d.pixels.shape[:2]) <= 1000
    ys, xs = np.nonzero(d.pixels[..., 1] > 150)
    cx, cy = (xs.mean() + 0.5) * d.scale, (ys.mean() + 0.5) * d.scale
    assert abs(cx - 3300) < 8 and abs(cy - 1250) < 8, (cx, cy, d.scale)


def test_no_reduction_under_max_side_and_off_switch() -> None:
    img = Image.new("RGB", (2100, 1050), (1, 2, 3))
    assert decode_image(_encode(img, "PNG"), **LIMITS, max_side=0).pixels.shape == (1050, 2100, 3)
    d = decode_image(_encode(img, "PNG"), **LIMITS, max_side=2048)
    assert d.pixels.shape == (1024, 2048, 3) and abs(d.scale - 2100 / 2048) < 1e-6


# --- EXIF orientation ---------------------------------------------------------------------------------
def _oriented(fmt: str, orientation: int, stored: Image.Image) -> bytes:
    if fmt == "TIFF":
        return _encode(stored, "TIFF", tiffinfo={0x0112: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    return _encode(stored, fmt, exif=exif.tobytes(), **kw)


def _stored_image(w: int, h: int) -> Image.Image:
    """Asymmetric content: a red block near the top-left corner, a blue one on the right edge."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[h // 10 : h // 3, w // 10 : w // 4] = (255, 0, 0)
    a[h // 2 : h - h // 10, w - w // 6 : w - w // 20] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_pixels_size_and_scale_agree(fmt: str, orientation: int) -> None:
    """Reference: Pillow's exif_transpose of the stored pixels. Before, TIFF and PNG with orientation
    5-8 reported the stored (w, h) for an upright image, so boxes came back scaled by w/h."""
    stored = _stored_image(80, 40)
    data = _oriented(fmt, orientation, stored)
    ref_im = stored.copy()
    ref_im.getexif()[0x0112] = orientation
    ref = np.asarray(ImageOps.exif_transpose(ref_im))
    d = decode_image(data, **LIMITS)
    assert d.original_size == (ref.shape[1], ref.shape[0])
    assert d.pixels.shape[:2] == ref.shape[:2] and d.scale == 1.0
    err = np.abs(d.pixels[..., ::-1].astype(int) - ref).mean()
    assert err < 6, f"{fmt} orientation {orientation}: mean abs error {err:.1f} against exif_transpose"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
def test_exif_orientation_with_reduction_maps_to_upright_original(fmt: str, orientation: int) -> None:
    stored = _stored_image(3000, 1200)
    ref_im = stored.copy()
    ref_im.getexif()[0x0112] = orientation
    ref = np.asarray(ImageOps.exif_transpose(ref_im))
    ys, xs = np.nonzero((ref[..., 0] > 200) & (ref[..., 2] < 60))  # the red block, upright, full size
    d = decode_image(_oriented(fmt, orientation, stored), **LIMITS, max_side=600)
    assert d.original_size == (ref.shape[1], ref.shape[0]) and max(d.pixels.shape[:2]) <= 600
    py, px = np.nonzero((d.pixels[..., 2] > 200) & (d.pixels[..., 0] < 60))
    assert abs((px.mean() + 0.5) * d.scale - (xs.mean() + 0.5)) < 10
    assert abs((py.mean() + 0.5) * d.scale - (ys.mean() + 0.5)) < 10


# --- JPEG scans -----------------------------------------------------------------------------------------


def _flat_progressive(n: int, subsampling: int = 0) -> bytes:
    return _encode(Image.new("RGB", (n, n), (90, 120, 150)), "JPEG", progressive=True, quality=90,
                   subsampling=subsampling)


def _sos_fields(data: bytes, sos: int) -> tuple[list[int], int, int, int]:
    ns = data[sos + 4]
    o = sos + 5 + 2 * ns
    return [data[sos + 5 + 2 * i] for i in range(ns)], data[o], data[o + 1], data[o + 2]


def test_repeated_refinement_scans_are_refused_before_decoding() -> None:
    base = _flat_progressive(1200)
    scans = jpeg_scans(base)
    assert len(scans) == 10, "libjpeg's default progression for colour"
    last = len(scans) - 1
    comps, ss, se, ahal = _sos_fields(base, scans[last][1])
    assert comps == [1] and (ss, se) == (1, 63) and ahal >> 4 == 1, "the last scan refines all AC of Y"
    hostile = repeat_scan(base, last, 300)
    assert cv2.imdecode(np.frombuffer(hostile, np.uint8), cv2.IMREAD_COLOR) is not None, "OpenCV decodes it"
    with pytest.raises(CorruptImage) as e:
        decode_image(hostile, **LIMITS)
    assert e.value.code == "corrupt_image" and e.value.details["limit"] == 64 and e.value.details["scans"] == 65


def test_scan_flood_costs_no_more_than_a_normal_decode() -> None:
    """CPU of the hostile file against the plain one, in one run: before, it grew with every scan."""
    base = _flat_progressive(2000)
    hostile = repeat_scan(base, len(jpeg_scans(base)) - 1, 400)

    def cpu(data: bytes) -> float:
        t = time.process_time()
        try:
            decode_image(data, **LIMITS)
        except CorruptImage:
            pass
        return time.process_time() - t

    plain = min(cpu(base) for _ in range(3))
    assert cpu(hostile) < 2 * plain + 0.02


def test_pass_budget_counts_blocks_read_per_scan() -> None:
    """4:4:4 default progression: Y, Cb, Cr read 6+4+4 = 14 times over 3 components = 4.67 passes; each
    extra full Y refinement scan adds 1/3: 22 extra -> 12.0 (accepted), 23 -> 12.33 (refused)."""
    base = _flat_progressive(256)
    last = len(jpeg_scans(base)) - 1
    ok = decode_image(repeat_scan(base, last, 22), **LIMITS)
    assert ok.pixels.shape == (256, 256, 3)
    with pytest.raises(CorruptImage) as e:
        decode_image(repeat_scan(base, last, 23), **LIMITS)
    assert e.value.details["passes"] == pytest.approx(12.33, abs=0.01) and e.value.details["scans"] == 33


@pytest.mark.parametrize("mode,sub,prog", [("RGB", 0, True), ("RGB", 2, True), ("L", 0, True), ("RGB", 2, False),
                                           ("CMYK", 0, True)])
def test_ordinary_jpegs_are_within_the_limits(mode: str, sub: int, prog: bool) -> None:
    yy, xx = np.mgrid[0:300, 0:400]
    rgb = np.stack([xx * 255 // 400, yy * 255 // 300, (xx + yy) % 256], axis=2).astype(np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    d = decode_image(_encode(img, "JPEG", progressive=prog, subsampling=sub, quality=85), **LIMITS)
    assert d.pixels.shape == (300, 400, 3)


def test_restart_markers_do_not_end_a_scan() -> None:
    """RSTn markers sit inside entropy-coded data; a walker that took them for the end of the scan
    would mistake the following data bytes for markers."""
    yy, xx = np.mgrid[0:200, 0:300]
    img = Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8))
    data = _encode(img, "JPEG", progressive=True, restart_marker_rows=1)
    assert data.count(b"\xff\xd0") > 10
    scans = check_jpeg(data, max_scans=64, max_passes=12)
    assert scans.scans == 10 and scans.progressive
    assert decode_image(data, **LIMITS).pixels.shape == (200, 300, 3)


def test_thumbnail_inside_app1_is_skipped_not_counted() -> None:
    """An APP1 segment holding a whole JPEG (scans and EOI of its own): a truncated main image is still
    truncated, and the thumbnail's scans do not count towards the limit."""
    thumb = repeat_scan(_flat_progressive(16), 9, 80)  # 90 scans, over the limit on its own
    main = _encode(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG", quality=90)
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumb) + 8) + b"Exif\x00\x00" + thumb
    whole = main[:2] + app1 + main[2:]
    assert decode_image(whole, **LIMITS).pixels.shape == (48, 64, 3)
    with pytest.raises(CorruptImage):
        decode_image(whole[: len(whole) - 40], **LIMITS)


def _floods() -> dict[str, tuple[bytes, str]]:
    """15 MB of the smallest header items each format allows, after its signature."""
    jpeg = _encode(Image.new("RGB", (64, 48)), "JPEG")
    png = _encode(Image.new("RGB", (64, 48)), "PNG")
    gif = _encode(Image.new("P", (64, 48)), "GIF")
    image_descriptor = gif.index(b"\x2c\x00\x00\x00\x00")
    return {
        "jpeg COM segments": (jpeg[:2] + b"\xff\xfe\x00\x02" * 3_700_000 + jpeg[2:], "marker segments"),
        "png empty chunks": (png[:33] + png_chunk(b"abCd", b"") * 1_200_000 + png[33:], "chunks"),
        "gif comment extensions": (gif[:image_descriptor] + b"\x21\xfe\x01a\x00" * 3_000_000
                                   + gif[image_descriptor:], "extension blocks"),
    }


@pytest.mark.parametrize("name", ["jpeg COM segments", "png empty chunks", "gif comment extensions"])
def test_header_floods_are_refused_quickly(name: str) -> None:
    """Pillow's header parsers loop in Python over each of these: 1.5-3 s of CPU per 15 MB file before."""
    data, message = _floods()[name]
    assert len(data) <= LIMITS["max_bytes"]
    t = time.process_time()
    with pytest.raises(CorruptImage) as e:
        decode_image(data, **LIMITS)
    assert time.process_time() - t < 0.3 and message in e.value.message


def test_png_split_into_many_idat_chunks_still_decodes() -> None:
    """libpng writes 8 KB IDAT chunks: a 15 MB PNG has ~1,900; a 1-byte split of a small one has ~2,000."""
    img = np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    png = _encode(Image.fromarray(img), "PNG", compress_level=0)
    ihdr_end = 8 + 25
    idat_at = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[idat_at : idat_at + 4])[0]
    stream = png[idat_at + 8 : idat_at + 8 + length]
    pieces = b"".join(png_chunk(b"IDAT", stream[i : i + 4]) for i in range(0, len(stream), 4))
    split = png[:ihdr_end] + pieces + png_chunk(b"IEND", b"")
    assert split.count(b"IDAT") > 1500
    d = decode_image(split, **LIMITS)
    assert np.array_equal(d.pixels[..., ::-1], img)


def test_stuffed_entropy_data_walks_in_linear_time() -> None:
    """14 MB of FF00 stuffing inside a scan (the slowest bytes for a marker search)."""
    main = _encode(Image.new("RGB", (64, 48)), "JPEG")
    sos_end = jpeg_scans(main)[0][2]
    hostile = main[:sos_end] + b"\xff\x00" * (7 << 20) + main[sos_end:]
    t = time.process_time()
    try:
        decode_image(hostile, **LIMITS)
    except CorruptImage:
        pass
    assert time.process_time() - t < 2.0


def test_decode_defaults_match_the_settings() -> None:
    s = Settings(_env_file=None)
    assert decode_mod.DEFAULT_MAX_SIDE == s.decode_max_side
    assert decode_mod.DEFAULT_JPEG_MAX_SCANS == s.jpeg_max_scans
    assert decode_mod.DEFAULT_JPEG_MAX_PASSES == s.jpeg_max_scan_passes
