"""Every bad input gets its typed 4xx in the one envelope; nothing a client sends causes a 500."""

from __future__ import annotations

import base64
import json

import pytest

from tests.api.conftest import ADMIN, assert_error, b64, files, make_settings, running

BAD_EXPECTED = {
    "empty_0_bytes.jpg": (400, "empty_image"),
    "not_an_image.jpg": (400, "invalid_image"),
    "truncated_face.jpg": (400, "corrupt_image"),  # documented choice: a half JPEG is corrupt
    "bomb_20000x20000.png": (413, "image_too_large"),  # refused from the header
    "huge_8000x8000_face.jpg": (413, "image_too_large"),  # over the 40 MP pixel limit
    "no_face_banner.png": (422, "no_face"),
    "no_face_surgical_mask.jpg": (422, "no_face"),
}


@pytest.fixture(scope="module")
def gallery_ids(app_client):
    r = app_client.post("/v1/collections", json={"id": "errs", "name": "errors"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    r = app_client.post("/v1/collections/errs/identities", json={"external_id": "p1"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return "errs", r.json()["id"]


@pytest.mark.parametrize("name", sorted(BAD_EXPECTED))
def test_bad_files_on_verify_multipart(app_client, faces_dir, bad_dir, name):
    status, code = BAD_EXPECTED[name]
    r = app_client.post("/v1/verify", files=files(image=bad_dir / name, image2=faces_dir / "obama/1.jpg"),
                        headers=ADMIN)
    err = assert_error(r, status, code)
    assert err["details"]["field"] == "image"


@pytest.mark.parametrize("name", sorted(BAD_EXPECTED))
def test_bad_files_as_second_image_in_json(app_client, faces_dir, bad_dir, name):
    status, code = BAD_EXPECTED[name]
    r = app_client.post("/v1/verify", headers=ADMIN,
                        json={"image": b64(faces_dir / "obama/1.jpg"), "image2": b64(bad_dir / name)})
    err = assert_error(r, status, code)
    assert err["details"]["field"] == "image2"


def test_no_route_answers_500_for_any_bad_file(app_client, bad_dir, gallery_ids):
    cid, iid = gallery_ids
    every = ["/v1/detect", f"/v1/collections/{cid}/identities/{iid}/faces"]
    for p in sorted(bad_dir.iterdir()):
        # embed and identify share the decode/detect path; run them on the refused files only
        routes = every + (["/v1/embed", "/v1/identify"] if p.name in BAD_EXPECTED else [])
        for route in routes:
            r = app_client.post(route, files=files(image=p), headers=ADMIN)
            assert r.status_code < 500, (route, p.name, r.status_code, r.text[:300])
            if r.status_code >= 400:
                assert r.json()["error"]["code"]


def test_base64_garbage_is_invalid_image(app_client):
    r = app_client.post("/v1/detect", json={"image": "this is *not* base64 !!!"}, headers=ADMIN)
    err = assert_error(r, 400, "invalid_image")
    assert "base64" in err["message"]
    # valid base64 of bytes that are no image
    r = app_client.post("/v1/detect", json={"image": base64.b64encode(b"hello world, not an image").decode()},
                        headers=ADMIN)
    assert_error(r, 400, "invalid_image")
    r = app_client.post("/v1/detect", json={"image": ""}, headers=ADMIN)
    assert_error(r, 400, "empty_image")
    r = app_client.post("/v1/detect", json={"image": 12345}, headers=ADMIN)
    assert_error(r, 422, "invalid_request")


def test_wrong_content_types_are_415(app_client, faces_dir):
    data = (faces_dir / "obama/1.jpg").read_bytes()
    r = app_client.post("/v1/detect", content=data, headers={**ADMIN, "Content-Type": "image/jpeg"})
    assert_error(r, 415, "unsupported_media_type")
    r = app_client.post("/v1/verify", content=b"image=abc", headers={**ADMIN, "Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    r = app_client.post("/v1/detect", content=b"x", headers=ADMIN)
    assert_error(r, 415, "unsupported_media_type")
    r = app_client.post("/v1/detect", files=[("image", ("doc.pdf", data, "application/pdf"))], headers=ADMIN)
    err = assert_error(r, 415, "unsupported_media_type")
    assert err["details"]["field"] == "image"


def test_malformed_json_and_fields_are_invalid_request(app_client, faces_dir):
    r = app_client.post("/v1/detect", content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request")
    r = app_client.post("/v1/detect", json=[1, 2], headers=ADMIN)
    assert_error(r, 422, "invalid_request")
    r = app_client.post("/v1/verify", headers=ADMIN, json={
        "image": b64(faces_dir / "obama/1.jpg"), "image2": b64(faces_dir / "obama/2.jpg"), "threshold": 2})
    err = assert_error(r, 422, "invalid_request")
    assert err["details"]["errors"][0]["loc"] == ["threshold"]
    r = app_client.post("/v1/verify", headers=ADMIN, json={"image": b64(faces_dir / "obama/1.jpg"), "bogus": 1,
                                                            "image2": b64(faces_dir / "obama/2.jpg")})
    assert_error(r, 422, "invalid_request")
    r = app_client.post("/v1/collections", json={"id": "Bad Id!"}, headers=ADMIN)
    assert_error(r, 422, "invalid_request")
    r = app_client.get("/v1/collections/errs/identities?limit=0", headers=ADMIN)
    assert_error(r, 422, "invalid_request")


def test_no_face_and_multiple_faces(app_client, faces_dir, bad_dir, gallery_ids):
    cid, iid = gallery_ids
    r = app_client.post("/v1/embed", files=files(image=bad_dir / "no_face_banner.png"), headers=ADMIN)
    assert_error(r, 422, "no_face")
    r = app_client.post("/v1/identify", files=files(image=bad_dir / "no_face_surgical_mask.jpg"),
                        data={"collection_id": cid}, headers=ADMIN)
    assert_error(r, 422, "no_face")
    r = app_client.post("/v1/embed", files=files(image=bad_dir / "multi_face_group_6.jpg"),
                        data={"strict": "true"}, headers=ADMIN)
    err = assert_error(r, 422, "multiple_faces")
    assert err["details"]["count"] == 6
    # enrollment refuses a group photo unless told to take the largest face
    r = app_client.post(f"/v1/collections/{cid}/identities/{iid}/faces",
                        files=files(image=bad_dir / "multi_face_two_people.jpg"), headers=ADMIN)
    assert_error(r, 422, "multiple_faces")


def test_quality_gate_face_too_small_and_nothing_enrolled(app_client, faces_dir, bad_dir, gallery_ids):
    cid, iid = gallery_ids
    before = app_client.get(f"/v1/collections/{cid}/identities/{iid}/faces", headers=ADMIN).json()["faces"]
    # one good and one tiny image: all or nothing
    r = app_client.post(f"/v1/collections/{cid}/identities/{iid}/faces", headers=ADMIN,
                        files=files(image=[faces_dir / "obama/1.jpg", bad_dir / "tiny_64x48_face.jpg"]))
    err = assert_error(r, 422, "face_too_small")
    assert err["details"]["filename"] == "tiny_64x48_face.jpg" and err["details"]["min_size"] == 48
    after = app_client.get(f"/v1/collections/{cid}/identities/{iid}/faces", headers=ADMIN).json()["faces"]
    assert after == before


def test_not_found_codes(app_client, gallery_ids):
    cid, _ = gallery_ids
    assert_error(app_client.get("/v1/collections/nope", headers=ADMIN), 404, "collection_not_found")
    assert_error(app_client.get(f"/v1/collections/{cid}/identities/0123", headers=ADMIN), 404, "identity_not_found")
    assert_error(app_client.delete(f"/v1/collections/{cid}/identities/0123", headers=ADMIN), 404,
                 "identity_not_found")
    assert_error(app_client.delete(f"/v1/collections/{cid}/faces/999999", headers=ADMIN), 404, "face_not_found")
    assert_error(app_client.get("/v1/jobs/nope", headers=ADMIN), 404, "job_not_found")
    assert_error(app_client.get("/v1/nothing-here", headers=ADMIN), 404, "not_found")
    assert_error(app_client.get("/v1/verify", headers=ADMIN), 405, "method_not_allowed")


def test_enroll_into_unknown_identity(app_client, faces_dir, gallery_ids):
    cid, _ = gallery_ids
    r = app_client.post(f"/v1/collections/{cid}/identities/doesnotexist/faces",
                        files=files(image=faces_dir / "obama/1.jpg"), headers=ADMIN)
    assert_error(r, 404, "identity_not_found")


def test_model_errors(app_client, faces_dir):
    r = app_client.post("/v1/embed", files=files(image=faces_dir / "obama/1.jpg"), data={"model": "no-such-model"},
                        headers=ADMIN)
    assert_error(r, 404, "model_not_found")
    r = app_client.post("/v1/embed", files=files(image=faces_dir / "obama/1.jpg"),
                        data={"model": "yunet-2023mar-int8bq"}, headers=ADMIN)
    assert_error(r, 422, "invalid_request")  # a detector is not a recognizer
    r = app_client.post("/v1/verify", headers=ADMIN, files=files(image=faces_dir / "obama/1.jpg"),
                        data={"embedding": json.dumps([0.1] * 512)})
    err = assert_error(r, 409, "model_mismatch")
    assert err["details"]["expected_dim"] == 128 and err["details"]["got_dim"] == 512


def test_conflicts(app_client, gallery_ids):
    cid, _ = gallery_ids
    assert_error(app_client.post("/v1/collections", json={"id": cid}, headers=ADMIN), 409, "conflict")
    assert_error(app_client.post(f"/v1/collections/{cid}/identities", json={"external_id": "p1"}, headers=ADMIN),
                 409, "conflict")
    r = app_client.post(f"/v1/collections/{cid}/model", json={"model": "sface-2021dec-int8bq"}, headers=ADMIN)
    assert_error(r, 409, "conflict")  # already the active model


@pytest.fixture(scope="module")
def small_client(tmp_path_factory, test_data):
    """Tight limits: 300 kB per request, 100 kB per image; a strict detector-score gate."""
    tmp = tmp_path_factory.mktemp("small")
    with running(make_settings(tmp, max_request_bytes=300_000, max_image_bytes=100_000,
                               enroll_min_det_score=0.97)) as c:
        yield c


def test_request_body_limit_from_content_length(small_client):
    r = small_client.post("/v1/detect", content=b"0" * 400_000,
                          headers={**ADMIN, "Content-Type": "application/json"})
    err = assert_error(r, 413, "image_too_large")
    assert err["details"]["limit"] == 300_000


def test_request_body_limit_while_streaming(small_client):
    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(40):
            yield b"A" * 10_000

    r = small_client.post("/v1/detect", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 413, "image_too_large")


def test_image_byte_limit_in_base64_and_multipart(small_client, faces_dir):
    big = faces_dir / "deepface_p13/1.jpg"
    assert 100_000 < big.stat().st_size < 300_000 * 3 // 4  # under the request limit, over the image limit
    r = small_client.post("/v1/detect", files=files(image=big), headers=ADMIN)
    err = assert_error(r, 413, "image_too_large")
    assert err["details"]["field"] == "image"
    r = small_client.post("/v1/detect", json={"image": b64(big)}, headers=ADMIN)
    err = assert_error(r, 413, "image_too_large")
    assert err["details"]["field"] == "image"


def test_quality_gate_low_detector_score(small_client, faces_dir):
    small_client.post("/v1/collections", json={"id": "q"}, headers=ADMIN)
    iid = small_client.post("/v1/collections/q/identities", json={"external_id": "x"}, headers=ADMIN).json()["id"]
    r = small_client.post(f"/v1/collections/q/identities/{iid}/faces", files=files(image=faces_dir / "obama/4.jpg"),
                          headers=ADMIN)
    err = assert_error(r, 422, "low_quality")
    assert err["details"]["reason"] == "det_score"
    assert small_client.get(f"/v1/collections/q/identities/{iid}", headers=ADMIN).json()["faces"] == 0
