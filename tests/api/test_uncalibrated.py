"""No trap between registering a model and serving it (issue 14).

A recognizer registered without thresholds cannot become a collection's model (409
``model_uncalibrated`` naming the calibrate command), and a verify on it without a request
threshold answers that same typed error, not 503 ``model_load_error``. After
``facegate models calibrate NAME --identities DIR --write`` the switch goes through and
identify answers with the new model and the card's threshold. Interrupted switch jobs are
resumed when the service starts.
"""

from __future__ import annotations

import time

import pytest

from service.cards import Registry
from service.gallery import Gallery
from service.gallery.jobs import process_owner
from service.modelinspect import card_from_onnx
from tests.api.conftest import ADMIN, assert_error, files, make_settings, photos, running
from tests.api.models import switch_models_dir

RAW = "mbf-raw"  # the shared MobileFaceNet, registered as `models add` does without --threshold


@pytest.fixture
def models_dir(tmp_path, shared_models):
    root = switch_models_dir(tmp_path / "models", shared_models)
    Registry(root).save(card_from_onnx(shared_models / "mobilefacenet_paddle_128d.onnx", RAW, color="BGR",
                                       mean=127.5, std=128.0, family_hint="paddle"))
    assert Registry(root).get(RAW).thresholds is None
    return root


def _enroll(c, faces_dir, who: str = "obama") -> None:
    assert c.post("/v1/collections", json={"id": "staff"}, headers=ADMIN).status_code == 201
    ident = c.post("/v1/collections/staff/identities", json={"external_id": who}, headers=ADMIN).json()
    r = c.post(f"/v1/collections/staff/identities/{ident['id']}/faces", headers=ADMIN,
               files=files(image=photos(faces_dir, who)[:2]))
    assert r.status_code == 201, r.text


def _wait(c, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while (job := c.get(f"/v1/jobs/{job_id}", headers=ADMIN).json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_uncalibrated_model_is_refused_then_calibrated_switched_and_used(tmp_path, models_dir, faces_dir) -> None:
    from service.cli.models import calibrate

    settings = make_settings(tmp_path / "data", models_dir=models_dir)
    with running(settings) as c:
        _enroll(c, faces_dir)
        err = assert_error(c.post("/v1/collections/staff/model", json={"model": RAW}, headers=ADMIN),
                           409, "model_uncalibrated")
        assert f"facegate models calibrate {RAW} --identities DIR --write" in err["message"]
        assert_error(c.post("/v1/collections", json={"id": "other", "model": RAW}, headers=ADMIN),
                     409, "model_uncalibrated")
        probe = photos(faces_dir, "obama")[2]
        # The old trap: 503 model_load_error. Now the typed 409, and a request threshold still works.
        assert_error(c.post("/v1/verify", headers=ADMIN, data={"model": RAW},
                            files=files(image=probe, image2=photos(faces_dir, "obama")[0])), 409, "model_uncalibrated")
        r = c.post("/v1/verify", headers=ADMIN, data={"model": RAW, "threshold": "0.3"},
                   files=files(image=probe, image2=photos(faces_dir, "obama")[0]))
        assert r.status_code == 200 and r.json()["threshold_source"] == "request", r.text
        assert c.get("/v1/collections/staff", headers=ADMIN).json()["model"] == "sface-2021dec-int8bq"

        result = calibrate(RAW, faces_dir, write=True, models_dir=models_dir, progress=False)
        assert result["written"] and Registry(models_dir).get(RAW).thresholds is not None

        r = c.post("/v1/collections/staff/model", json={"model": RAW}, headers=ADMIN)
        assert r.status_code == 202, r.text
        assert _wait(c, r.json()["id"])["status"] == "done"
        r = c.post("/v1/identify", headers=ADMIN, data={"collection_id": "staff"}, files=files(image=probe))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["searched"][0]["model"] == RAW and body["searched"][0]["threshold_source"].startswith("card")
        assert body["results"][0]["best"]["external_id"] == "obama"


def test_interrupted_switch_is_resumed_at_start(tmp_path, models_dir, faces_dir) -> None:
    settings = make_settings(tmp_path / "data", models_dir=models_dir)
    with running(settings) as c:
        _enroll(c, faces_dir)
    # What a process killed mid-switch leaves: a running job owned by a pid that is gone.
    g = Gallery(settings).start()
    job = g.start_reembed_job("staff", "mbf-paddle")
    host = process_owner().split(":")[0]
    with g.db.tx(write=True) as s:
        from service.storage.schema import JobRow

        row = s.get(JobRow, job.id)
        row.status, row.owner = "running", f"{host}:{2**22 + 4321}:gone"
    g.close()
    with running(settings) as c:
        assert _wait(c, job.id)["status"] == "done"
        assert c.get("/v1/collections/staff", headers=ADMIN).json()["model"] == "mbf-paddle"
