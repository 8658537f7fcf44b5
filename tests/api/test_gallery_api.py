"""The gallery through the API on real photos, on SQLite and (when configured) PostgreSQL.

The tests of this module build on each other in file order (one app and one database per
backend): enroll the shared identities, identify held-out photos and strangers, edit and
delete, restart on the same database, switch the recognizer.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import (
    ADMIN,
    ENROLLED,
    STRANGERS,
    assert_error,
    b64,
    card_threshold,
    database,
    files,
    make_settings,
    photos,
    running,
)

COLL = "people"
SWITCH_MODEL = "mbf-paddle"


@dataclass
class Env:
    settings: Any
    client: Any = None
    ids: dict[str, str] = field(default_factory=dict)  # person -> identity id
    answers: dict[str, tuple[str | None, float]] = field(default_factory=dict)  # probe -> (best id, similarity)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, shared_models) -> Path:
    """The default pack plus the shared MobileFaceNet (128-d, BGR, (x-127.5)/128) for the switch test."""
    from service.cards import BUILTIN_MODELS_DIR, Registry
    from service.modelinspect import card_from_onnx

    root = tmp_path_factory.mktemp("models")
    for d in BUILTIN_MODELS_DIR.iterdir():
        if (d / "model.json").is_file():
            shutil.copytree(d, root / d.name)
    card = card_from_onnx(shared_models / "mobilefacenet_paddle_128d.onnx", SWITCH_MODEL, color="BGR",
                          mean=127.5, std=128.0, threshold=0.3, family_hint="paddle")
    Registry(root).save(card)
    return root


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path_factory, models_dir, test_data):
    tmp = tmp_path_factory.mktemp(f"gallery-{request.param}")
    with database(request.param, tmp) as url:
        e = Env(make_settings(tmp, database_url=url, models_dir=models_dir))
        with running(e.settings) as client:
            e.client = client
            yield e
            e.client = None


def identify(client, path: Path, **fields: Any) -> dict:
    data = {"collection_id": COLL, **{k: str(v) for k, v in fields.items()}}
    r = client.post("/v1/identify", files=files(image=path), data=data, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def test_enroll_shared_identities(env, faces_dir):
    c = env.client
    r = c.post("/v1/collections", json={"id": COLL, "name": "Shared test people", "metadata": {"site": "test"}},
               headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "sface-2021dec-int8bq"
    for n, who in enumerate(ENROLLED):
        r = c.post(f"/v1/collections/{COLL}/identities", headers=ADMIN,
                   json={"external_id": who, "name": who.replace("_", " ").title(), "metadata": {"n": n}})
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        env.ids[who] = iid
        train = photos(faces_dir, who)[:-1]
        if n % 2:  # half as JSON base64, half as multipart
            r = c.post(f"/v1/collections/{COLL}/identities/{iid}/faces", headers=ADMIN,
                       json={"images": [b64(p) for p in train]})
        else:
            r = c.post(f"/v1/collections/{COLL}/identities/{iid}/faces", headers=ADMIN, files=files(image=train))
        assert r.status_code == 201, r.text
        body = r.json()
        assert len(body["faces"]) == len(train) and body["model"] == "sface-2021dec-int8bq"
        assert all(f["models"] == ["sface-2021dec-int8bq"] and f["image_sha256"] for f in body["faces"])
    coll = c.get(f"/v1/collections/{COLL}", headers=ADMIN).json()
    assert coll["identities"] == len(ENROLLED)
    assert coll["faces"] == sum(len(photos(faces_dir, w)) - 1 for w in ENROLLED)


def test_list_identities_paginates_and_update(env):
    c = env.client
    seen, cursor, pages = [], None, 0
    while True:
        q = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        r = c.get(f"/v1/collections/{COLL}/identities{q}", headers=ADMIN)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["identities"]) <= 4
        seen += [i["external_id"] for i in page["identities"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ENROLLED and pages == 3
    iid = env.ids["obama"]
    r = c.patch(f"/v1/collections/{COLL}/identities/{iid}", json={"name": "Barack Obama", "metadata": {"k": 1}},
                headers=ADMIN)
    assert r.status_code == 200, r.text
    got = c.get(f"/v1/collections/{COLL}/identities/{iid}", headers=ADMIN).json()
    assert got["name"] == "Barack Obama" and got["metadata"] == {"k": 1} and got["external_id"] == "obama"
    assert got["faces"] == 4


def test_identify_held_out_photos_and_strangers(env, faces_dir):
    for who in ENROLLED:
        probe = photos(faces_dir, who)[-1]
        body = identify(env.client, probe, top_k=3)
        [res] = body["results"]
        assert res["unknown"] is False, (who, res)
        assert res["best"]["external_id"] == who and res["best"]["identity_id"] == env.ids[who]
        assert res["best"]["similarity"] >= body["searched"][0]["threshold"]
        assert len(res["candidates"]) <= 3
        env.answers[str(probe)] = (res["best"]["identity_id"], res["best"]["similarity"])
    for who in STRANGERS:
        probe = photos(faces_dir, who)[0]
        body = identify(env.client, probe)
        [res] = body["results"]
        assert res["unknown"] is True and res["best"] is None, (who, res)
        assert all(not c["above_threshold"] for c in res["candidates"])
        env.answers[str(probe)] = (None, max([c["similarity"] for c in res["candidates"]], default=-1.0))
    thr, source = card_threshold()
    assert body["searched"] == [{"collection_id": COLL, "model": "sface-2021dec-int8bq", "threshold": thr,
                                 "threshold_source": source}]


def test_identify_mean_aggregate_threshold_and_json(env, faces_dir):
    probe = photos(faces_dir, "obama")[-1]
    body = identify(env.client, probe, aggregate="mean")
    assert body["aggregate"] == "mean" and body["results"][0]["best"]["external_id"] == "obama"
    r = env.client.post("/v1/identify", headers=ADMIN,
                        json={"image": b64(probe), "collection_id": COLL, "threshold": 0.999})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["unknown"] is True
    assert r.json()["searched"][0]["threshold_source"] == "request"


def test_verify_against_enrolled_identity(env, faces_dir):
    c = env.client
    r = c.post("/v1/verify", files=files(image=photos(faces_dir, "obama")[-1]), headers=ADMIN,
               data={"identity_id": env.ids["obama"], "collection_id": COLL})
    assert r.status_code == 200, r.text
    assert r.json()["same"] is True and r.json()["against"] == "identity" and r.json()["identity_faces"] == 4
    r = c.post("/v1/verify", files=files(image=photos(faces_dir, "biden")[-1]), headers=ADMIN,
               data={"identity_id": env.ids["obama"], "collection_id": COLL})
    assert r.status_code == 200 and r.json()["same"] is False


def test_faces_list_crop_and_delete_one(env):
    c = env.client
    iid = env.ids["obama"]
    faces = c.get(f"/v1/collections/{COLL}/identities/{iid}/faces", headers=ADMIN).json()["faces"]
    assert len(faces) == 4
    crop = c.get(f"/v1/collections/{COLL}/faces/{faces[0]['id']}/crop", headers=ADMIN)
    assert crop.status_code == 200 and crop.content.startswith(b"\x89PNG")
    r = c.delete(f"/v1/collections/{COLL}/faces/{faces[0]['id']}", headers=ADMIN)
    assert r.status_code == 204
    after = c.get(f"/v1/collections/{COLL}/identities/{iid}/faces", headers=ADMIN).json()["faces"]
    assert [f["id"] for f in after] == [f["id"] for f in faces[1:]]


def test_delete_identity_removes_it_from_identify(env, faces_dir):
    c = env.client
    who = "rose_leslie"
    probe = photos(faces_dir, who)[-1]
    assert identify(c, probe)["results"][0]["best"]["external_id"] == who
    r = c.delete(f"/v1/collections/{COLL}/identities/{env.ids[who]}", headers=ADMIN)
    assert r.status_code == 204
    res = identify(c, probe, top_k=20)["results"][0]
    assert all(cand["identity_id"] != env.ids[who] for cand in res["candidates"])
    assert res["unknown"] is True
    assert_error(c.get(f"/v1/collections/{COLL}/identities/{env.ids[who]}", headers=ADMIN), 404,
                 "identity_not_found")
    env.answers[str(probe)] = (None, max([x["similarity"] for x in res["candidates"]], default=-1.0))


def test_restart_on_same_database_gives_same_answers(env):
    env.client.__exit__(None, None, None)  # full shutdown of the module's app
    try:
        with running(env.settings) as c2:
            for probe, (best, sim) in env.answers.items():
                r = c2.post("/v1/identify", files=files(image=Path(probe)), data={"collection_id": COLL},
                            headers=ADMIN)
                assert r.status_code == 200, r.text
                res = r.json()["results"][0]
                if best is None:
                    assert res["unknown"] is True, probe
                else:
                    assert res["best"]["identity_id"] == best, probe
                    assert res["best"]["similarity"] == pytest.approx(sim, abs=1e-5)
    finally:
        env.client.__enter__()


def test_identify_across_collections_without_filter(env, faces_dir):
    c = env.client
    assert c.post("/v1/collections", json={"id": "other"}, headers=ADMIN).status_code == 201
    iid = c.post("/v1/collections/other/identities", json={"external_id": "obama-elsewhere"},
                 headers=ADMIN).json()["id"]
    assert c.post(f"/v1/collections/other/identities/{iid}/faces", files=files(image=faces_dir / "obama/1.jpg"),
                  headers=ADMIN).status_code == 201
    r = c.post("/v1/identify", files=files(image=photos(faces_dir, "obama")[-1]), headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {s["collection_id"] for s in body["searched"]} == {COLL, "other"}
    got = {(x["collection_id"], x["external_id"]) for x in body["results"][0]["candidates"][:2]}
    assert got == {(COLL, "obama"), ("other", "obama-elsewhere")}
    assert c.delete("/v1/collections/other", headers=ADMIN).status_code == 204
    assert_error(c.get("/v1/collections/other", headers=ADMIN), 404, "collection_not_found")


def test_models_listed_with_cards(env):
    r = env.client.get("/v1/models", headers=ADMIN)
    assert r.status_code == 200
    by = {m["name"]: m for m in r.json()["models"]}
    assert by["sface-2021dec-int8bq"]["loaded"] and by["sface-2021dec-int8bq"]["runtime"]["dim"] == 128
    assert by["sface-2021dec-int8bq"]["card"]["thresholds"]["default"] == card_threshold()[0]
    assert by["yunet-2023mar-int8bq"]["kind"] == "detector"
    assert SWITCH_MODEL in by


def test_switch_recognizer_reembeds_from_stored_crops(env, faces_dir):
    c = env.client
    r = c.post(f"/v1/collections/{COLL}/model", json={"model": SWITCH_MODEL}, headers=ADMIN)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "reembed" and job["params"]["new_model"] == SWITCH_MODEL
    deadline = time.monotonic() + 60
    while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = c.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
        assert 0.0 <= job["progress"] <= 1.0
    assert job["status"] == "done", job
    assert job["done"] == job["total"] > 0 and job["progress"] == 1.0
    assert c.get(f"/v1/collections/{COLL}", headers=ADMIN).json()["model"] == SWITCH_MODEL
    faces = c.get(f"/v1/collections/{COLL}/identities/{env.ids['obama']}/faces", headers=ADMIN).json()["faces"]
    assert all(f["models"] == [SWITCH_MODEL] for f in faces)
    # identify now embeds the probe with the new model, never comparing across models
    body = identify(c, photos(faces_dir, "obama")[-1])
    assert body["searched"][0]["model"] == SWITCH_MODEL and body["searched"][0]["threshold"] == 0.3
    assert body["results"][0]["candidates"][0]["external_id"] == "obama"
    # verify against the identity uses the collection's model; asking for another one is a mismatch
    r = c.post("/v1/verify", files=files(image=photos(faces_dir, "obama")[-1]), headers=ADMIN,
               data={"identity_id": env.ids["obama"], "collection_id": COLL, "model": "sface-2021dec-int8bq"})
    assert_error(r, 409, "model_mismatch")
    # enrollment continues with the new model
    r = c.post(f"/v1/collections/{COLL}/identities/{env.ids['biden']}/faces", headers=ADMIN,
               files=files(image=photos(faces_dir, "biden")[-1]))
    assert r.status_code == 201 and r.json()["model"] == SWITCH_MODEL
