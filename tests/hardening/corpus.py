"""The bad-input corpus, generated in memory from the shared photos (nothing binary is
checked in). ``build_corpus(faces_dir)`` returns every case with the exact status and
error code the API must answer with.

Two families:

* **image payloads** x **every image-taking route** (detect, embed, verify, identify,
  enroll): broken, disguised, hostile and merely unusual images. Each payload has one
  expectation kind: an error that every route gives alike, ``FACE`` (a usable photo of
  Obama: every route succeeds and finds him), or ``NOFACE`` (a valid image without a
  face: detect answers 200 with no faces, the others ``no_face``).
* **request-level cases**: bodies, content types, multipart shapes, base64 forms, JSON
  sizes and nesting, parameters out of range, unknown ids, hostile ids.

Run ``python -m tests.hardening.corpus`` to print the case list and its size.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from tests.hardening.conftest import MAX_IMAGE, MAX_REQUEST

UPRIGHT = "obama/2.jpg"  # never enrolled: identify must still name him
REFERENCE = "obama/1.jpg"  # the enrolled photo; verify's second image
ROUTES = ("detect", "embed", "verify", "identify", "enroll")
FACE, NOFACE = "FACE", "NOFACE"


@dataclass
class Case:
    id: str
    method: str
    path: str  # may hold {cid}, {iid}, {fid}
    request: dict[str, Any] = field(default_factory=dict)  # httpx kwargs: files, data, json, content, headers
    status: int = 200
    code: str | None = None  # the envelope's error code (None for 2xx)
    check: Callable[[Any, Any], None] | None = None  # extra assertion: check(response, seeded)
    auth: bool = True  # send the admin key
    enrolls: bool = False  # a 2xx stores faces: the runner deletes them again


# --- image payloads -------------------------------------------------------------------------------------
def _jpeg(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    """A tiny, well-formed PNG whose header declares w x h RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def jpeg_claiming(real: bytes, w: int, h: int) -> bytes:
    """A real JPEG with its SOF header patched to declare w x h pixels."""
    data = bytearray(real)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        i = data.find(marker)
        if i > 0:
            data[i + 5 : i + 9] = struct.pack(">HH", h, w)
            return bytes(data)
    raise ValueError("no SOF marker")


def exif_rotated(upright: Image.Image, orientation: int) -> bytes:
    """Pixels stored rotated, with the EXIF Orientation tag that makes them upright again."""
    stored = {3: upright.transpose(Image.Transpose.ROTATE_180),
              6: upright.transpose(Image.Transpose.ROTATE_90),
              8: upright.transpose(Image.Transpose.ROTATE_270)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(stored, exif=exif.tobytes())


def bitflip(data: bytes, start: int, end: int, n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for pos in rng.integers(start, end, n):
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def image_payloads(faces_dir: Path) -> dict[str, tuple[bytes, str, str, Any]]:
    """name -> (bytes, filename, part content type, expectation: FACE | NOFACE | (status, code))."""
    up_bytes = (faces_dir / UPRIGHT).read_bytes()
    up = Image.open(io.BytesIO(up_bytes)).convert("RGB")
    up_bgr = cv2.cvtColor(np.asarray(up), cv2.COLOR_RGB2BGR)
    png_bytes = cv2.imencode(".png", up_bgr)[1].tobytes()
    sos = up_bytes.rfind(b"\xff\xda")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("face.jpg", up_bytes)
    frames = [up.resize((up.width // 2, up.height // 2)).convert("P"), Image.new("P", (up.width // 2, up.height // 2))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    idat = png_bytes.find(b"IDAT")
    gray = Image.new("RGB", (320, 240), (128, 128, 128))

    E = lambda status, code: (status, code)
    return {
        # nothing / not an image
        "zero_bytes": (b"", "empty.jpg", "image/jpeg", E(400, "empty_image")),
        "one_byte": (b"\xff", "one.jpg", "image/jpeg", E(400, "invalid_image")),
        "text_as_jpeg": (b"this is not an image, just some text\n" * 3, "note.jpg", "image/jpeg",
                         E(400, "invalid_image")),
        "html_as_png": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "page.png",
                        "image/png", E(400, "invalid_image")),
        "svg_as_image": (b'<svg xmlns="http://www.w3.org/2000/svg" width="50000" height="50000"/>', "a.svg",
                         "image/svg+xml", E(400, "invalid_image")),
        "pdf_as_jpeg": (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
                        "doc.jpg", "image/jpeg", E(400, "invalid_image")),
        "zip_of_a_jpeg": (zbuf.getvalue(), "face.jpg", "image/jpeg", E(400, "invalid_image")),
        # right magic, broken body
        "jpeg_magic_then_text": (b"\xff\xd8\xff" + b"hello" * 10, "m.jpg", "image/jpeg", E(400, "corrupt_image")),
        "gif_magic_then_garbage": (b"GIF89a" + b"\x00\x01" * 4, "m.gif", "image/gif", E(400, "corrupt_image")),
        "jpeg_truncated_40pct": (up_bytes[: len(up_bytes) * 2 // 5], "t.jpg", "image/jpeg", E(400, "corrupt_image")),
        "jpeg_truncated_after_header": (up_bytes[: sos + 20], "t.jpg", "image/jpeg", E(400, "corrupt_image")),
        "png_truncated_half": (png_bytes[: len(png_bytes) // 2], "t.png", "image/png", E(400, "corrupt_image")),
        "jpeg_bitflip_header": (bitflip(up_bytes, 2, 600, 40, 1), "f.jpg", "image/jpeg", E(400, "corrupt_image")),
        # OpenCV decodes a damaged scan without complaint (like most viewers); this one garbles the face
        "jpeg_bitflip_scan": (bitflip(up_bytes, sos + 600, len(up_bytes) - 2, 30, 2), "f.jpg", "image/jpeg", NOFACE),
        "png_bitflip_idat": (bitflip(png_bytes, idat + 8, idat + 4000, 8, 3), "f.png", "image/png",
                             E(400, "corrupt_image")),
        # hostile headers
        "png_header_50000x50000": (png_claiming(50000, 50000), "bomb.png", "image/png", E(413, "image_too_large")),
        "jpeg_header_50000x50000": (jpeg_claiming(up_bytes, 50000, 50000), "bomb.jpg", "image/jpeg",
                                    E(413, "image_too_large")),
        "png_header_7000x7000": (png_claiming(7000, 7000), "49mp.png", "image/png", E(413, "image_too_large")),
        "png_header_zero_width": (png_claiming(0, 100), "zero.png", "image/png", E(400, "corrupt_image")),
        "over_image_byte_limit": (up_bytes + b"\x00" * (MAX_IMAGE + 1 - len(up_bytes)), "big.jpg", "image/jpeg",
                                  E(413, "image_too_large")),
        # unusual but valid: the face must be found
        "exif_orientation_3": (exif_rotated(up, 3), "r3.jpg", "image/jpeg", FACE),
        "exif_orientation_6": (exif_rotated(up, 6), "r6.jpg", "image/jpeg", FACE),
        "exif_orientation_8": (exif_rotated(up, 8), "r8.jpg", "image/jpeg", FACE),
        "png_16bit_rgb": (cv2.imencode(".png", up_bgr.astype(np.uint16) * 257)[1].tobytes(), "16.png", "image/png",
                          FACE),
        "png_16bit_gray": (cv2.imencode(".png", cv2.cvtColor(up_bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)[1]
                           .tobytes(), "16g.png", "image/png", FACE),
        "jpeg_cmyk": (_jpeg(up.convert("CMYK")), "cmyk.jpg", "image/jpeg", FACE),
        "gif_animated": (gif.getvalue(), "anim.gif", "image/gif", FACE),
        "webp_named_jpg": (cv2.imencode(".webp", up_bgr)[1].tobytes(), "face.jpg", "image/jpeg", FACE),
        "octet_stream_part": (up_bytes, "blob", "application/octet-stream", FACE),
        # valid, no face
        "png_1x1": (cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes(), "1.png", "image/png", NOFACE),
        "grey_jpeg_no_face": (_jpeg(gray), "grey.jpg", "image/jpeg", NOFACE),
    }


# --- routes ---------------------------------------------------------------------------------------------
def route_call(route: str, part: tuple[str, tuple[str, bytes, str]], ref: bytes) -> tuple[str, str, dict]:
    """(method, path, request kwargs) posting ``part`` as the probe image to ``route``."""
    if route == "verify":
        return "POST", "/v1/verify", {"files": [part, ("image2", ("ref.jpg", ref, "image/jpeg"))]}
    if route == "identify":
        return "POST", "/v1/identify", {"files": [part], "data": {"collection_id": "{cid}"}}
    if route == "enroll":
        return "POST", "/v1/collections/{cid}/identities/{iid}/faces", {"files": [part]}
    return "POST", f"/v1/{route}", {"files": [part]}


def _found_obama(route: str) -> Callable[[Any, Any], None]:
    def check(r, seeded) -> None:
        body = r.json()
        if route == "detect":
            assert len(body["faces"]) >= 1, body
            w, h = body["image"]["width"], body["image"]["height"]
            assert h > w, f"EXIF orientation not applied: {w}x{h} (the upright photo is portrait)"
            x, y, bw, bh = body["faces"][0]["bbox"]
            assert 0 <= x and x + bw <= w * 1.05 and 0 <= y and y + bh <= h * 1.05
        elif route == "embed":
            assert body["faces"] and body["dim"] == len(body["faces"][0]["embedding"])
        elif route == "verify":
            assert body["same"] is True, body
        elif route == "identify":
            assert body["results"][0]["best"]["external_id"] == "obama", body
        elif route == "enroll":
            assert len(body["faces"]) == 1
    return check


def _no_faces(r, seeded) -> None:
    assert r.json()["faces"] == []


def image_cases(faces_dir: Path) -> list[Case]:
    ref = (faces_dir / REFERENCE).read_bytes()
    up = Image.open(faces_dir / UPRIGHT)
    assert up.height > up.width, "the upright photo must be portrait for the EXIF checks"
    cases = []
    for name, (data, filename, ctype, expect) in image_payloads(faces_dir).items():
        for route in ROUTES:
            method, path, req = route_call(route, ("image", (filename, data, ctype)), ref)
            if expect == FACE:
                status, code = (201 if route == "enroll" else 200), None
                check = _found_obama(route)
            elif expect == NOFACE:
                status, code = (200, None) if route == "detect" else (422, "no_face")
                check = _no_faces if route == "detect" else None
            else:
                (status, code), check = expect, None
            cases.append(Case(f"{name}-{route}", method, path, req, status, code, check, enrolls=route == "enroll"))
    return cases


# --- request-level cases --------------------------------------------------------------------------------
def request_cases(faces_dir: Path) -> list[Case]:
    photo = (faces_dir / UPRIGHT).read_bytes()
    ref = (faces_dir / REFERENCE).read_bytes()
    b64 = base64.b64encode(photo).decode()
    b64_ref = base64.b64encode(ref).decode()
    jpg = ("image", ("p.jpg", photo, "image/jpeg"))
    ref_part = ("image2", ("r.jpg", ref, "image/jpeg"))
    J = {"Content-Type": "application/json"}
    enroll = "/v1/collections/{cid}/identities/{iid}/faces"
    cases: list[Case] = []

    def add(id_, method, path, status, code=None, check=None, auth=True, enrolls=False, **req):
        cases.append(Case(id_, method, path, req, status, code, check, auth, enrolls))

    # bodies and content types, on every image route
    for route, path in (("detect", "/v1/detect"), ("embed", "/v1/embed"), ("verify", "/v1/verify"),
                        ("identify", "/v1/identify"), ("enroll", enroll)):
        add(f"empty_body_no_ctype-{route}", "POST", path, 415, "unsupported_media_type", content=b"")
        add(f"empty_body_json-{route}", "POST", path, 422, "invalid_request", content=b"", headers=J)
        add(f"raw_jpeg_body-{route}", "POST", path, 415, "unsupported_media_type", content=photo,
            headers={"Content-Type": "image/jpeg"})
        add(f"form_urlencoded-{route}", "POST", path, 415, "unsupported_media_type", data={"image": b64})
        add(f"multipart_without_boundary-{route}", "POST", path, 400, "bad_request", content=b"--x\r\n",
            headers={"Content-Type": "multipart/form-data"})
        add(f"multipart_garbage-{route}", "POST", path, 400, "bad_request", content=b"garbage, not multipart",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        add(f"multipart_no_image_part-{route}", "POST", path, 422, "invalid_request", data={"strict": "false"},
            files=[("unrelated", ("x.txt", b"hello", "text/plain"))])
        add(f"json_array_body-{route}", "POST", path, 422, "invalid_request", json=[b64])
        add(f"json_invalid-{route}", "POST", path, 422, "invalid_request", content=b'{"image": "abc",', headers=J)
        add(f"json_nested_100k-{route}", "POST", path, 422, "invalid_request",
            content=b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=J)
        add(f"oversized_json-{route}", "POST", path, 413, "image_too_large",
            content=json.dumps({"image": "A" * (MAX_REQUEST + 10)}).encode(), headers=J)
        add(f"no_api_key-{route}", "POST", path, 401, "unauthorized", auth=False, files=[jpg])
        add(f"wrong_api_key-{route}", "POST", path, 401, "unauthorized", auth=False, files=[jpg],
            headers={"X-API-Key": "fg_0123456789ab_" + "x" * 43})

    def oversized_chunked():
        for _ in range(MAX_REQUEST // (1 << 20) + 2):
            yield b"A" * (1 << 20)

    add("oversized_chunked_no_length-detect", "POST", "/v1/detect", 413, "image_too_large",
        content=oversized_chunked(), headers=J)

    # multipart shapes
    add("multipart_image_text_part_ctype-detect", "POST", "/v1/detect", 415, "unsupported_media_type",
        files=[("image", ("p.jpg", photo, "text/plain"))])
    add("multipart_extra_file_part-detect", "POST", "/v1/detect", 422, "invalid_request",
        files=[jpg, ("extra", ("e.jpg", photo, "image/jpeg"))])
    add("multipart_unknown_field-detect", "POST", "/v1/detect", 422, "invalid_request", files=[jpg],
        data={"bogus": "1"})
    add("multipart_duplicate_field-identify", "POST", "/v1/identify", 422, "invalid_request", files=[jpg],
        data={"top_k": ["3", "4"]})
    add("multipart_two_images-detect", "POST", "/v1/detect", 422, "invalid_request",
        files=[jpg, ("image", ("q.jpg", photo, "image/jpeg"))])
    add("multipart_missing_image2-verify", "POST", "/v1/verify", 422, "invalid_request", files=[jpg])
    add("multipart_image2_and_embedding-verify", "POST", "/v1/verify", 422, "invalid_request",
        files=[jpg, ref_part], data={"embedding": json.dumps([0.1] * 128)})
    add("multipart_text_part_as_base64-detect", "POST", "/v1/detect", 200, None, files=[("image", (None, b64))])
    add("multipart_33_images-embed", "POST", "/v1/embed", 422, "invalid_request",
        files=[("image", (f"{i}.png", b"\x89PNG", "image/png")) for i in range(33)])
    add("multipart_17_images-enroll", "POST", enroll, 422, "invalid_request",
        files=[("image", (f"{i}.png", b"\x89PNG", "image/png")) for i in range(17)])

    # base64 forms
    add("base64_data_url-detect", "POST", "/v1/detect", 200, json={"image": "data:image/jpeg;base64," + b64})
    add("base64_data_url_wrong_mime-detect", "POST", "/v1/detect", 200, json={"image": "data:text/plain;base64," + b64})
    add("base64_no_padding-verify", "POST", "/v1/verify", 200,
        json={"image": b64.rstrip("="), "image2": b64_ref.rstrip("=")})
    add("base64_urlsafe_with_newlines-detect", "POST", "/v1/detect", 200,
        json={"image": "\n".join(base64.urlsafe_b64encode(photo).decode()[i:i + 76] for i in range(0, len(b64), 76))})
    # excess trailing padding is tolerated (lenient decoder, same bytes); an impossible length is not
    add("base64_excess_padding-detect", "POST", "/v1/detect", 200, json={"image": b64 + "==="})
    add("base64_impossible_length-detect", "POST", "/v1/detect", 400, "invalid_image",
        json={"image": b64.rstrip("=")[: len(b64) // 4 * 4 - 3]})
    add("base64_padding_inside-detect", "POST", "/v1/detect", 400, "invalid_image",
        json={"image": b64[:100] + "=" + b64[100:]})
    add("base64_not_base64-identify", "POST", "/v1/identify", 400, "invalid_image",
        json={"image": "*** not base64 ***", "collection_id": "{cid}"})
    add("base64_data_url_only-detect", "POST", "/v1/detect", 400, "empty_image", json={"image": "data:image/png;base64,"})
    add("base64_of_text-embed", "POST", "/v1/embed", 400, "invalid_image",
        json={"image": base64.b64encode(b"hello, not an image").decode()})
    add("base64_image_is_number-verify", "POST", "/v1/verify", 422, "invalid_request", json={"image": 1, "image2": 2})
    add("base64_images_not_list-embed", "POST", "/v1/embed", 422, "invalid_request", json={"images": b64})
    add("base64_images_list_of_ints-embed", "POST", "/v1/embed", 422, "invalid_request", json={"images": [1, 2]})
    add("base64_over_image_limit-detect", "POST", "/v1/detect", 413, "image_too_large",
        json={"image": "A" * (MAX_IMAGE // 3 * 4 + 8)})

    # parameters out of range
    for k in (-1, 0, 101, 10**12):
        add(f"identify_top_k_{k}", "POST", "/v1/identify", 422, "invalid_request", files=[jpg],
            data={"collection_id": "{cid}", "top_k": str(k)})
    add("identify_top_k_text", "POST", "/v1/identify", 422, "invalid_request", files=[jpg], data={"top_k": "many"})
    add("identify_aggregate_unknown", "POST", "/v1/identify", 422, "invalid_request", files=[jpg],
        data={"aggregate": "median"})
    for t in ("-1.5", "1.0001", "1e309", "nan"):
        add(f"verify_threshold_{t}", "POST", "/v1/verify", 422, "invalid_request", files=[jpg, ref_part],
            data={"threshold": t})
        add(f"identify_threshold_{t}", "POST", "/v1/identify", 422, "invalid_request", files=[jpg],
            data={"threshold": t})
    add("verify_threshold_json_NaN", "POST", "/v1/verify", 422, "invalid_request",
        content=b'{"image": "' + b64.encode() + b'", "image2": "' + b64_ref.encode() + b'", "threshold": NaN}',
        headers=J)
    add("verify_threshold_edge_-1", "POST", "/v1/verify", 200, files=[jpg, ref_part], data={"threshold": "-1"},
        check=lambda r, s: r.json()["same"] is True)
    add("verify_threshold_edge_1", "POST", "/v1/verify", 200, files=[jpg, ref_part], data={"threshold": "1"},
        check=lambda r, s: r.json()["same"] is False)
    add("verify_embedding_wrong_dim", "POST", "/v1/verify", 409, "model_mismatch", files=[jpg],
        data={"embedding": json.dumps([0.1] * 7)})
    add("verify_embedding_nested_100k_form_field", "POST", "/v1/verify", 422, "invalid_request", files=[jpg],
        data={"embedding": "[" * 100_000 + "]" * 100_000})
    add("verify_embedding_zero", "POST", "/v1/verify", 422, "invalid_request", files=[jpg],
        data={"embedding": json.dumps([0.0] * 128)})
    add("verify_embedding_infinite", "POST", "/v1/verify", 422, "invalid_request",
        content=json.dumps({"image": b64, "embedding": [1e308 * 10] + [0.0] * 127}).encode(), headers=J)
    add("verify_embedding_strings", "POST", "/v1/verify", 422, "invalid_request", json={"image": b64,
                                                                                         "embedding": ["a"] * 128})
    add("verify_identity_without_collection", "POST", "/v1/verify", 422, "invalid_request", files=[jpg],
        data={"identity_id": "{iid}"})

    # unknown ids, hostile ids
    add("identify_unknown_collection", "POST", "/v1/identify", 404, "collection_not_found", files=[jpg],
        data={"collection_id": "no-such-collection"})
    add("identify_unicode_collection", "POST", "/v1/identify", 404, "collection_not_found", files=[jpg],
        data={"collection_id": "søren-ŝ-名前-🙂"})
    add("enroll_unknown_collection", "POST", "/v1/collections/nope/identities/{iid}/faces", 404,
        "collection_not_found", files=[jpg])
    add("enroll_unknown_identity", "POST", "/v1/collections/{cid}/identities/0123456789abcdef/faces", 404,
        "identity_not_found", files=[jpg])
    add("enroll_unicode_identity", "POST", "/v1/collections/{cid}/identities/%C3%A9%F0%9F%99%82/faces", 404,
        "identity_not_found", files=[jpg])
    add("enroll_10k_char_identity", "POST", "/v1/collections/{cid}/identities/" + "a" * 10_000 + "/faces", 404,
        "identity_not_found", files=[jpg])
    add("verify_unknown_identity", "POST", "/v1/verify", 404, "identity_not_found", files=[jpg],
        data={"identity_id": "nobody", "collection_id": "{cid}"})
    add("verify_unknown_collection", "POST", "/v1/verify", 404, "collection_not_found", files=[jpg],
        data={"identity_id": "{iid}", "collection_id": "nope"})
    add("get_identity_unicode", "GET", "/v1/collections/{cid}/identities/%E5%90%8D%E5%89%8D", 404,
        "identity_not_found")
    add("get_identity_traversal", "GET", "/v1/collections/{cid}/identities/..%2F..%2Fapi_keys", 404,
        "not_found")  # the decoded slashes match no route
    add("get_collection_10k_chars", "GET", "/v1/collections/" + "c" * 10_000, 404, "collection_not_found")
    add("get_face_crop_unknown", "GET", "/v1/collections/{cid}/faces/999999999/crop", 404, "face_not_found")
    add("get_face_crop_not_int", "GET", "/v1/collections/{cid}/faces/abc/crop", 422, "invalid_request")
    add("get_face_crop_int64_overflow", "GET", "/v1/collections/{cid}/faces/99999999999999999999999/crop", 422,
        "invalid_request")
    add("delete_face_int64_underflow", "DELETE", "/v1/collections/{cid}/faces/-99999999999999999999999", 422,
        "invalid_request")
    add("delete_face_other_collection", "DELETE", "/v1/collections/nope/faces/{fid}", 404, "collection_not_found")
    add("delete_identity_unknown", "DELETE", "/v1/collections/{cid}/identities/ghost", 404, "identity_not_found")
    add("list_identities_limit_0", "GET", "/v1/collections/{cid}/identities?limit=0", 422, "invalid_request")
    add("list_identities_limit_huge", "GET", "/v1/collections/{cid}/identities?limit=100000000", 422,
        "invalid_request")
    add("list_identities_bad_cursor", "GET", "/v1/collections/{cid}/identities?cursor=%00%FF!!", 422,
        "invalid_request")
    add("embed_unknown_model", "POST", "/v1/embed", 404, "model_not_found", files=[jpg], data={"model": "nope"})
    add("embed_model_traversal", "POST", "/v1/embed", 422, "invalid_request", files=[jpg],
        data={"model": "../../../etc/passwd"})
    add("embed_model_is_detector", "POST", "/v1/embed", 422, "invalid_request", files=[jpg],
        data={"model": "yunet-2023mar-int8bq"})
    add("detect_detector_traversal", "POST", "/v1/detect", 422, "invalid_request", files=[jpg],
        data={"detector": "..%2f..%2fsecret"})
    add("detect_detector_absolute", "POST", "/v1/detect", 422, "invalid_request", files=[jpg],
        data={"detector": "/etc/passwd"})
    add("activate_model_traversal", "POST", "/v1/collections/{cid}/model", 422, "invalid_request",
        json={"model": "../sface-2021dec-int8bq"})
    add("activate_model_unknown", "POST", "/v1/collections/{cid}/model", 404, "model_not_found",
        json={"model": "nope"})
    add("create_collection_bad_id", "POST", "/v1/collections", 422, "invalid_request", json={"id": "../x"})
    add("create_collection_unicode_id", "POST", "/v1/collections", 422, "invalid_request", json={"id": "ŝ🙂"})
    add("create_collection_duplicate", "POST", "/v1/collections", 409, "conflict", json={"id": "{cid}"})
    add("create_collection_unknown_model", "POST", "/v1/collections", 404, "model_not_found",
        json={"id": "newone", "model": "nope"})
    add("create_identity_external_id_too_long", "POST", "/v1/collections/{cid}/identities", 422, "invalid_request",
        json={"external_id": "x" * 257})
    add("create_identity_external_id_empty", "POST", "/v1/collections/{cid}/identities", 422, "invalid_request",
        json={"external_id": ""})
    add("create_identity_duplicate_external_id", "POST", "/v1/collections/{cid}/identities", 409, "conflict",
        json={"external_id": "obama"})
    add("create_identity_metadata_not_object", "POST", "/v1/collections/{cid}/identities", 422, "invalid_request",
        json={"external_id": "m", "metadata": ["a"]})
    add("create_identity_metadata_nested_100k", "POST", "/v1/collections/{cid}/identities", 400,
        "bad_request", content=b'{"external_id": "m", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000
        + b"}}", headers=J)
    add("create_identity_metadata_oversized", "POST", "/v1/collections/{cid}/identities", 413, "image_too_large",
        json={"external_id": "m", "metadata": {"blob": "x" * (MAX_REQUEST + 1)}})
    add("create_identity_unknown_collection", "POST", "/v1/collections/nope/identities", 404,
        "collection_not_found", json={"external_id": "m"})
    add("patch_identity_unknown_field", "PATCH", "/v1/collections/{cid}/identities/{iid}", 422, "invalid_request",
        json={"collection_id": "other"})
    # stored values that would break later reads, and values too large to store or echo
    deep: dict = {"leaf": 1}
    for _ in range(300):
        deep = {"k": deep}
    add("create_identity_metadata_deep_300", "POST", "/v1/collections/{cid}/identities", 422, "invalid_request",
        json={"external_id": "deep", "metadata": deep})
    add("patch_identity_metadata_deep_300", "PATCH", "/v1/collections/{cid}/identities/{iid}", 422,
        "invalid_request", json={"metadata": deep})
    add("create_collection_metadata_deep_300", "POST", "/v1/collections", 422, "invalid_request",
        json={"id": "deepmeta", "metadata": deep})
    add("patch_collection_metadata_20k", "PATCH", "/v1/collections/{cid}", 422, "invalid_request",
        json={"metadata": {"blob": "x" * 20_000}})
    add("create_identity_name_1mb", "POST", "/v1/collections/{cid}/identities", 422, "invalid_request",
        json={"external_id": "bigname", "name": "n" * 1_000_000})
    add("create_collection_name_300", "POST", "/v1/collections", 422, "invalid_request",
        json={"id": "longname", "name": "n" * 300})
    add("create_key_empty_collections", "POST", "/v1/keys", 422, "invalid_request",
        json={"name": "k", "scopes": ["read"], "collections": []})
    add("identify_collection_id_100k", "POST", "/v1/identify", 422, "invalid_request", files=[jpg],
        data={"collection_id": "c" * 100_000})
    add("embed_model_name_10k", "POST", "/v1/embed", 422, "invalid_request", files=[jpg], data={"model": "m" * 10_000})
    add("verify_embedding_norm_overflows", "POST", "/v1/verify", 422, "invalid_request",
        json={"image": b64, "embedding": [3e38] * 128})
    add("create_key_bad_scope", "POST", "/v1/keys", 422, "invalid_request", json={"name": "k", "scopes": ["root"]})
    add("revoke_unknown_key", "DELETE", "/v1/keys/nokey", 404, "not_found")
    add("unknown_route", "GET", "/v1/nothing-here", 404, "not_found")
    add("wrong_method", "DELETE", "/v1/verify", 405, "method_not_allowed")
    add("bad_content_length", "POST", "/v1/detect", 400, "bad_request", content=b"{}",
        headers={**J, "Content-Length": "-5"})
    return cases


def build_corpus(faces_dir: Path) -> list[Case]:
    cases = image_cases(faces_dir) + request_cases(faces_dir)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


if __name__ == "__main__":  # pragma: no cover - a listing for humans
    import os

    corpus = build_corpus(Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")) / "faces")
    for c in corpus:
        print(f"{c.status:>3} {c.code or '-':<24} {c.method:<6} {c.id}")
    print(len(corpus), "cases")
