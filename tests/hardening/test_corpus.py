"""Every case of the bad-input corpus gets its exact status and error code, never a 5xx,
and the gallery is exactly as it was afterwards (same rows, same index entries).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ADMIN
from tests.assets import data_dir
from tests.hardening.conftest import gallery_snapshot
from tests.hardening.corpus import Case, build_corpus

_DATA = data_dir()
CORPUS: list[Case] = build_corpus(_DATA / "faces") if _DATA and (_DATA / "faces").is_dir() else []
RESULTS: dict[str, int] = {}


def _fill(value: Any, ctx: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in ctx.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    return value  # bytes, tuples (file parts), generators: as they are


@pytest.fixture(scope="module")
def baseline(seeded) -> dict:
    return gallery_snapshot(seeded.client)


def run_case(seeded, case: Case):
    ctx = {"cid": seeded.cid, "iid": seeded.iid, "fid": str(seeded.face_id)}
    req = dict(case.request)
    for k in ("data", "json"):
        if k in req:
            req[k] = _fill(req[k], ctx)
    headers = {**(ADMIN if case.auth else {}), **req.pop("headers", {})}
    return seeded.client.request(case.method, _fill(case.path, ctx), headers=headers, **req)


@pytest.mark.skipif(not CORPUS, reason="FACEGATE_TEST_DATA is unset: the corpus is generated from the shared photos")
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus_case(seeded, baseline, case: Case) -> None:
    r = run_case(seeded, case)
    RESULTS[case.id] = r.status_code
    assert r.status_code < 500, (case.id, r.status_code, r.text[:500])
    if case.enrolls and 200 <= r.status_code < 300:  # put the gallery back as it was
        for f in r.json()["faces"]:
            d = seeded.client.delete(f"/v1/collections/{seeded.cid}/faces/{f['id']}", headers=ADMIN)
            assert d.status_code == 204, d.text
    assert r.status_code == case.status, (case.id, r.status_code, r.text[:500])
    if case.code is not None:
        err = r.json()["error"]
        assert err["code"] == case.code, (case.id, err)
        assert err["status"] == case.status and err["message"] and err["request_id"]
        assert r.headers.get("x-request-id") == err["request_id"]
    if case.check is not None:
        case.check(r, seeded)


@pytest.mark.skipif(not CORPUS, reason="FACEGATE_TEST_DATA is unset")
def test_corpus_left_gallery_unchanged_and_no_5xx(seeded, baseline) -> None:
    assert len(CORPUS) >= 40
    after = gallery_snapshot(seeded.client)
    assert after == baseline
    # the seeded face still answers: nothing corrupted the index either
    r = seeded.client.get(f"/v1/collections/{seeded.cid}/identities/{seeded.iid}/faces", headers=ADMIN)
    assert [f["id"] for f in r.json()["faces"]] == [seeded.face_id]
    fivexx = {k: v for k, v in RESULTS.items() if v >= 500}
    assert not fivexx, fivexx
    print(f"\ncorpus: {len(CORPUS)} cases, {len(RESULTS)} run, 5xx: {len(fivexx)}")
