"""A fixed script of API calls whose answers are recorded: a refactor must not change them.

The script covers the product's main paths end to end on the shared photos: detect, embed,
verify (against a photo, an embedding and an enrolled identity), two collections with
enrolments, identify in one collection and across both, edits and deletes, a model switch
with its job, restricted keys and the error envelope of the typical client mistakes.

Answers are compared with ``tests/api/recorded/script.json`` after normalising what
legitimately differs between runs: generated ids (replaced by placeholders numbered in
order of first appearance), timestamps, request ids, and floats (compared within a
tolerance, since onnxruntime's results differ in the last bits with the micro-batch
composition). Re-record only on purpose, after reading the diff:

    FACEGATE_RECORD=1 pytest tests/api/test_recorded_responses.py
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import ADMIN, b64, files, make_settings, photos, running
from tests.api.models import switch_models_dir

GOLDEN = Path(__file__).resolve().parent / "recorded" / "script.json"
SWITCH_MODEL = "mbf-paddle"
FLOAT_TOL = 2e-3
EMBEDDING_HEAD = 8  # embeddings are recorded by their first values only

_UUID = re.compile(r"^[0-9a-f]{32}$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_KEY = re.compile(r"fg_[0-9a-f]{12}_[A-Za-z0-9_-]+")


class Normaliser:
    """Replaces run-specific values by stable placeholders (same value -> same placeholder)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def _ph(self, kind: str, value: Any) -> str:
        key = f"{kind}:{value}"
        if key not in self.seen:
            self.seen[key] = f"<{kind}{sum(1 for k in self.seen if k.startswith(kind + ':')) + 1}>"
        return self.seen[key]

    def __call__(self, obj: Any, key: str | None = None) -> Any:
        if isinstance(obj, dict):
            return {k: self(v, k) for k, v in obj.items()}
        if isinstance(obj, list):
            if key == "embedding":
                obj = obj[:EMBEDDING_HEAD]
            return [self(v, key) for v in obj]
        if isinstance(obj, str):
            if key in ("created_at", "updated_at", "revoked_at", "last_used_at") or _TS.match(obj):
                return "<ts>"
            if key == "secret" or _KEY.fullmatch(obj):
                return "<secret>"
            if key == "request_id":
                return "<request_id>"
            if key == "next_cursor":
                return "<cursor>"
            if _UUID.match(obj) or key == "prefix":
                return self._ph("id", obj)
            return obj
        if isinstance(obj, int) and not isinstance(obj, bool) and key in ("id", "face_id"):
            return self._ph("face", obj)
        return obj


def run_script(client, faces_dir: Path, bad_dir: Path) -> list[dict[str, Any]]:
    """Run the calls in order; returns [{"step", "status", "body"}] (bodies normalised)."""
    norm = Normaliser()
    out: list[dict[str, Any]] = []
    ids: dict[str, str] = {}

    def call(step: str, method: str, url: str, **kw: Any) -> Any:
        headers = kw.pop("headers", ADMIN)
        r = client.request(method, url, headers=headers, **kw)
        body = r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None
        if r.headers.get("content-type", "").startswith("image/"):
            body = {"content_type": r.headers["content-type"], "png": r.content[:8].hex()}
        out.append({"step": step, "status": r.status_code, "body": norm(body)})
        return body

    obama, biden, kit, rose = (photos(faces_dir, p) for p in ("obama", "biden", "kit_harington", "rose_leslie"))
    group = bad_dir / "multi_face_two_people.jpg"

    call("info", "GET", "/v1/info", headers={})
    call("detect group", "POST", "/v1/detect", files=files(image=group))
    call("embed two", "POST", "/v1/embed", files=files(image=[obama[0], biden[0]]))
    call("verify same", "POST", "/v1/verify", files=files(image=obama[0], image2=obama[1]))
    call("verify different json", "POST", "/v1/verify", json={"image": b64(obama[0]), "image2": b64(biden[0])})
    call("verify own threshold", "POST", "/v1/verify", files=files(image=kit[0], image2=kit[1]),
         data={"threshold": "0.9"})
    emb = call("embed one", "POST", "/v1/embed", files=files(image=rose[0]))
    full = client.post("/v1/embed", files=files(image=rose[0]), headers=ADMIN).json()["faces"][0]["embedding"]
    call("verify against embedding", "POST", "/v1/verify", json={"image": b64(rose[1]), "embedding": full})
    assert emb is not None
    call("verify strict two faces", "POST", "/v1/verify", files=files(image=group, image2=obama[0]),
         data={"strict": "true"})
    call("verify no face", "POST", "/v1/verify", files=files(image=bad_dir / "no_face_banner.png", image2=obama[0]))
    call("verify nothing to compare", "POST", "/v1/verify", files=files(image=obama[0]))

    for cid in ("staff", "visitors"):
        call(f"create {cid}", "POST", "/v1/collections", json={"id": cid, "name": cid.title(), "metadata": {"k": 1}})
    call("create duplicate", "POST", "/v1/collections", json={"id": "staff"})
    for cid, who, pics in (("staff", "obama", obama), ("staff", "biden", biden), ("visitors", "kit", kit)):
        ident = call(f"identity {who}", "POST", f"/v1/collections/{cid}/identities",
                     json={"external_id": who, "name": who.title(), "metadata": {"team": cid}})
        ids[who] = ident["id"]
        call(f"enroll {who}", "POST", f"/v1/collections/{cid}/identities/{ident['id']}/faces",
             files=files(image=pics[:-1]))
    call("enroll no face", "POST", f"/v1/collections/staff/identities/{ids['obama']}/faces",
         files=files(image=bad_dir / "no_face_banner.png"))
    call("enroll unknown identity", "POST", "/v1/collections/staff/identities/" + "0" * 32 + "/faces",
         files=files(image=obama[0]))
    call("identify held out", "POST", "/v1/identify", files=files(image=obama[-1]), data={"collection_id": "staff"})
    call("identify mean", "POST", "/v1/identify", files=files(image=biden[-1]),
         data={"collection_id": "staff", "aggregate": "mean", "top_k": "2"})
    call("identify stranger", "POST", "/v1/identify", files=files(image=rose[0]), data={"collection_id": "staff"})
    call("identify all collections", "POST", "/v1/identify", files=files(image=kit[-1]))
    call("identify group", "POST", "/v1/identify", files=files(image=group), data={"collection_id": "staff"})
    call("verify against identity", "POST", "/v1/verify", files=files(image=obama[-1]),
         data={"identity_id": ids["obama"], "collection_id": "staff"})
    call("list collections", "GET", "/v1/collections")
    call("list identities", "GET", "/v1/collections/staff/identities?limit=1")
    call("get identity", "GET", f"/v1/collections/staff/identities/{ids['biden']}")
    call("patch identity", "PATCH", f"/v1/collections/staff/identities/{ids['biden']}",
         json={"name": "Joe", "metadata": {"role": "visitor"}})
    faces = call("list faces", "GET", f"/v1/collections/staff/identities/{ids['obama']}/faces")
    call("face crop", "GET", f"/v1/collections/staff/faces/{faces['faces'][0]['id']}/crop")
    call("delete face", "DELETE", f"/v1/collections/staff/faces/{faces['faces'][0]['id']}")
    call("delete face again", "DELETE", f"/v1/collections/staff/faces/{faces['faces'][0]['id']}")
    call("delete identity", "DELETE", f"/v1/collections/staff/identities/{ids['biden']}")
    call("identify after delete", "POST", "/v1/identify", files=files(image=biden[-1]),
         data={"collection_id": "staff"})

    job = call("switch model", "POST", "/v1/collections/visitors/model", json={"model": SWITCH_MODEL})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        j = client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
        if j["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    call("job done", "GET", f"/v1/jobs/{job['id']}")
    call("identify switched", "POST", "/v1/identify", files=files(image=kit[-1]), data={"collection_id": "visitors"})
    call("collection jobs", "GET", "/v1/collections/visitors/jobs")

    key = call("create key", "POST", "/v1/keys", json={"name": "kiosk", "scopes": ["verify"],
                                                       "collections": ["staff"]})
    kiosk = {"X-API-Key": client.post("/v1/keys", headers=ADMIN, json={"name": "kiosk2", "scopes": ["verify"],
                                                                        "collections": ["staff"]}).json()["secret"]}
    assert key is not None
    call("kiosk identify", "POST", "/v1/identify", files=files(image=obama[-1]), headers=kiosk)
    call("kiosk verify other collection", "POST", "/v1/verify", files=files(image=kit[-1]), headers=kiosk,
         data={"identity_id": ids["kit"], "collection_id": "visitors"})
    call("no key", "GET", "/v1/collections", headers={})
    call("wrong key", "GET", "/v1/collections", headers={"X-API-Key": "fg_000000000000_" + "x" * 43})
    call("unknown collection", "GET", "/v1/collections/nope")
    call("bad json", "POST", "/v1/collections", content=b"{", headers={**ADMIN, "Content-Type": "application/json"})
    call("delete collection", "DELETE", "/v1/collections/visitors")
    call("list after delete", "GET", "/v1/collections")
    return out


def _compare(got: Any, want: Any, where: str) -> list[str]:
    if isinstance(want, float) or (isinstance(got, float) and isinstance(want, int)):
        if not isinstance(got, (int, float)) or abs(got - want) > FLOAT_TOL:
            return [f"{where}: {got!r} != {want!r}"]
        return []
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else got!r} != {sorted(want)}"]
        return [m for k in want for m in _compare(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: {got!r} != {want!r}"]
        return [m for i, (g, w) in enumerate(zip(got, want)) for m in _compare(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def test_recorded_script_gives_the_same_answers(tmp_path, test_data, shared_models):
    settings = make_settings(tmp_path, models_dir=switch_models_dir(tmp_path / "models", shared_models, SWITCH_MODEL))
    with running(settings) as client:
        got = run_script(client, test_data / "faces", test_data / "bad")
    if os.environ.get("FACEGATE_RECORD") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {len(got)} answers into {GOLDEN.name}")
    want = json.loads(GOLDEN.read_text())
    assert [s["step"] for s in got] == [s["step"] for s in want]
    problems = [m for g, w in zip(got, want) for m in _compare(g, w, w["step"])]
    assert not problems, "\n".join(problems[:40])
