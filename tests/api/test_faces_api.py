"""Stateless routes on real photos: detect, embed (batch), verify (all three modes)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.api.conftest import ADMIN, assert_error, b64, card_threshold, files


def test_detect_multipart_shape(app_client, faces_dir):
    r = app_client.post("/v1/detect", files=files(image=faces_dir / "obama/1.jpg"), headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "yunet-2023mar-int8bq"
    assert body["image"] == {"width": 820, "height": 1024, "format": "jpeg"}
    [face] = body["faces"]
    assert len(face["bbox"]) == 4 and len(face["landmarks"]) == 5
    assert all(len(p) == 2 for p in face["landmarks"])
    assert face["score"] > 0.8
    assert {"size", "blur", "yaw", "pitch", "roll"} <= set(face["quality"])
    assert "embedding" not in face


def test_detect_json_base64_and_data_url_agree(app_client, faces_dir):
    p = faces_dir / "biden/1.jpg"
    a = app_client.post("/v1/detect", json={"image": b64(p)}, headers=ADMIN).json()
    b = app_client.post("/v1/detect", json={"image": b64(p, data_url=True)}, headers=ADMIN).json()
    c = app_client.post("/v1/detect", files=files(image=p), headers=ADMIN).json()
    assert a["faces"] == b["faces"] == c["faces"] and len(a["faces"]) == 1


def test_detect_many_faces_and_no_face(app_client, bad_dir):
    r = app_client.post("/v1/detect", files=files(image=bad_dir / "multi_face_group_6.jpg"), headers=ADMIN)
    assert r.status_code == 200 and len(r.json()["faces"]) == 6
    areas = [f["bbox"][2] * f["bbox"][3] for f in r.json()["faces"]]
    assert areas == sorted(areas, reverse=True)
    r = app_client.post("/v1/detect", files=files(image=bad_dir / "no_face_banner.png"), headers=ADMIN)
    assert r.status_code == 200 and r.json()["faces"] == []


@pytest.mark.parametrize("name", ["webp_bytes_with_jpg_extension.jpg", "png_rgba_face.png", "grayscale_face.jpg",
                                  "exif_orientation6_face.jpg", "partial_face_1.jpg"])
def test_detect_odd_but_valid_images(app_client, bad_dir, name):
    r = app_client.post("/v1/detect", files=files(image=bad_dir / name), headers=ADMIN)
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1


def test_embed_batch_multipart_and_json(app_client, faces_dir, bad_dir):
    imgs = [faces_dir / "obama/1.jpg", bad_dir / "multi_face_two_people.jpg"]
    r = app_client.post("/v1/embed", files=files(image=imgs), headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "sface-2021dec-int8bq" and body["dim"] == 128 and body["images"] == 2
    assert [f["image_index"] for f in body["faces"]] == [0, 1, 1]
    for f in body["faces"]:
        v = np.asarray(f["embedding"])
        assert v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-3
        assert len(f["bbox"]) == 4 and len(f["landmarks"]) == 5
    j = app_client.post("/v1/embed", json={"images": [b64(p) for p in imgs], "largest_only": True}, headers=ADMIN)
    assert j.status_code == 200, j.text
    assert [f["image_index"] for f in j.json()["faces"]] == [0, 1]
    np.testing.assert_allclose(j.json()["faces"][0]["embedding"], body["faces"][0]["embedding"], atol=1e-5)


def test_embedding_similarities_separate_all_shared_pairs(app_client, faces_dir):
    """Every same/different pair of the shared set, through /v1/embed, against the card threshold."""
    with open(faces_dir / "pairs.csv") as f:
        pairs = [(r["a"], r["b"], r["same"] == "1") for r in csv.DictReader(f)]
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    emb = {}
    for chunk in [paths[i:i + 8] for i in range(0, len(paths), 8)]:
        r = app_client.post("/v1/embed", files=files(image=[faces_dir / p for p in chunk]),
                            data={"largest_only": "true"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        for f in r.json()["faces"]:
            emb[chunk[f["image_index"]]] = np.asarray(f["embedding"])
    same = [float(emb[a] @ emb[b]) for a, b, s in pairs if s]
    diff = [float(emb[a] @ emb[b]) for a, b, s in pairs if not s]
    assert len(same) == 24 and len(diff) == 382
    assert min(same) > card_threshold()[0] > max(diff), (min(same), max(diff))


SAME = [("obama/1.jpg", "obama/2.jpg"), ("kit_harington/1.jpg", "kit_harington/3.jpg"),
        ("deepface_p12/1.jpg", "deepface_p12/2.jpg"), ("alex_lacamoire/1.jpg", "alex_lacamoire/3.png")]
DIFF = [("obama/1.jpg", "biden/1.jpg"), ("rose_leslie/1.jpg", "kate_siegel/1.jpg"),
        ("paul_rudd/1.jpg", "shea_whigham/1.jpg"), ("tom_hanks/1.png", "lin_manuel_miranda/1.png")]


@pytest.mark.parametrize("a,b,same", [(a, b, True) for a, b in SAME] + [(a, b, False) for a, b in DIFF])
def test_verify_pairs(app_client, faces_dir, a, b, same):
    r = app_client.post("/v1/verify", files=files(image=faces_dir / a, image2=faces_dir / b), headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same"] is same
    assert (body["threshold"], body["threshold_source"]) == pytest.approx(card_threshold())
    assert body["model"] == "sface-2021dec-int8bq" and body["against"] == "image"
    assert body["face"]["faces_found"] == 1 and body["face2"]["faces_found"] == 1
    assert (body["similarity"] >= body["threshold"]) is same


def test_verify_json_with_request_threshold(app_client, faces_dir):
    r = app_client.post("/v1/verify", headers=ADMIN, json={
        "image": b64(faces_dir / "obama/1.jpg", data_url=True), "image2": b64(faces_dir / "obama/2.jpg"),
        "threshold": 0.99})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == 0.99 and body["threshold_source"] == "request" and body["same"] is False


def test_verify_image_against_embedding(app_client, faces_dir):
    e = app_client.post("/v1/embed", files=files(image=faces_dir / "obama/2.jpg"), headers=ADMIN).json()
    vec = e["faces"][0]["embedding"]
    r = app_client.post("/v1/verify", headers=ADMIN,
                        json={"image": b64(faces_dir / "obama/1.jpg"), "embedding": vec, "model": e["model"]})
    assert r.status_code == 200, r.text
    assert r.json()["same"] is True and r.json()["against"] == "embedding"
    # the same embedding as a multipart form field (JSON text)
    import json

    r2 = app_client.post("/v1/verify", headers=ADMIN, files=files(image=faces_dir / "biden/1.jpg"),
                         data={"embedding": json.dumps(vec)})
    assert r2.status_code == 200, r2.text
    assert r2.json()["same"] is False


def test_verify_policy_largest_or_strict(app_client, faces_dir, bad_dir):
    group = bad_dir / "multi_face_two_people.jpg"
    r = app_client.post("/v1/verify", files=files(image=group, image2=faces_dir / "obama/1.jpg"), headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "largest" and r.json()["face"]["faces_found"] == 2
    r = app_client.post("/v1/verify", files=files(image=group, image2=faces_dir / "obama/1.jpg"),
                        data={"strict": "true"}, headers=ADMIN)
    err = assert_error(r, 422, "multiple_faces")
    assert err["details"]["field"] == "image" and err["details"]["count"] == 2


def test_verify_needs_exactly_one_reference(app_client, faces_dir):
    r = app_client.post("/v1/verify", files=files(image=faces_dir / "obama/1.jpg"), headers=ADMIN)
    assert_error(r, 422, "invalid_request")


def test_openapi_documents_both_body_forms_with_examples(app_client):
    spec = app_client.get("/openapi.json").json()
    paths = spec["paths"]
    for route in ("/v1/detect", "/v1/embed", "/v1/verify", "/v1/identify",
                  "/v1/collections/{collection_id}/identities/{identity_id}/faces"):
        content = paths[route]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(content), route
        assert content["application/json"]["example"]
    assert paths["/v1/verify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"][
        "image2"]["format"] == "binary"
    schemas = spec["components"]["schemas"]
    assert "example" in schemas["VerifyResponse"] and "example" in schemas["ErrorEnvelope"]
    assert app_client.get("/docs").status_code == 200


def test_request_id_is_echoed(app_client):
    r = app_client.get("/v1/collections/nope", headers={**ADMIN, "X-Request-ID": "abc-123"})
    err = assert_error(r, 404, "collection_not_found")
    assert err["request_id"] == "abc-123"



def test_prealigned_crop_through_explicit_aligned_mode(app_client, faces_dir, bad_dir):
    crop = bad_dir / "prealigned_112x112.png"
    r = app_client.post("/v1/embed", files=files(image=crop), data={"aligned": "true"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    [face] = r.json()["faces"]
    assert face["bbox"] == [0.0, 0.0, 112.0, 112.0] and face["landmarks"] is None and face["score"] == 1.0
    # the same person, once through detection+alignment and once as a ready crop
    r = app_client.post("/v1/verify", files=files(image=crop, image2=crop), data={"aligned": "true"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["similarity"] > 0.999
    r = app_client.post("/v1/embed", files=files(image=faces_dir / "obama/1.jpg"), data={"aligned": "true"},
                        headers=ADMIN)
    assert_error(r, 422, "invalid_request")  # not a square crop
