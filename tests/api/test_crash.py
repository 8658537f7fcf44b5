"""Crash consistency: SIGKILL a real server in the middle of concurrent enrolls.

Every enroll the server acknowledged (HTTP 201) must be present after a restart, and no
index entry may lack its database row (nor a face row its embedding).
"""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import sqlalchemy as sa

from devkit.server import Server
from tests.api.conftest import ADMIN, ADMIN_KEY, ENROLLED, photos

COLL = "crash"
CLIENTS = 4


def test_sigkill_during_concurrent_enrolls_loses_no_acknowledged_face(tmp_path, faces_dir):
    env = {"FACEGATE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "FACEGATE_RATE_LIMIT_PER_MINUTE": "0",
           "FACEGATE_INDEX_USE_GPU": "false"}
    server = Server(tmp_path / "data", env).start()
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
            assert c.post("/v1/collections", json={"id": COLL}).status_code == 201
            people = ENROLLED[:CLIENTS]
            ids = {w: c.post(f"/v1/collections/{COLL}/identities", json={"external_id": w}).json()["id"]
                   for w in people}

        acked: dict[str, list[int]] = {w: [] for w in people}
        attempts = {"n": 0}
        stop = threading.Event()

        def worker(who: str) -> None:
            imgs = photos(faces_dir, who)
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as cl:
                i = 0
                while not stop.is_set():
                    p = imgs[i % len(imgs)]
                    i += 1
                    attempts["n"] += 1
                    try:
                        r = cl.post(f"/v1/collections/{COLL}/identities/{ids[who]}/faces",
                                    files=[("image", (p.name, p.read_bytes(), "image/jpeg"))])
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 201:
                        acked[who] += [f["id"] for f in r.json()["faces"]]
                    else:
                        assert r.status_code >= 500 or r.status_code == 201, r.text

        threads = [threading.Thread(target=worker, args=(w,)) for w in people]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(map(len, acked.values())) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # requests are in flight right now
        stop.set()
        for t in threads:
            t.join(timeout=30)
        n_acked = sum(map(len, acked.values()))
        assert n_acked >= 10

        server = Server(tmp_path / "data", env).start()
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
            stored: dict[str, set[int]] = {}
            for w in people:
                r = c.get(f"/v1/collections/{COLL}/identities/{ids[w]}/faces")
                assert r.status_code == 200, r.text
                stored[w] = {f["id"] for f in r.json()["faces"]}
                assert set(acked[w]) <= stored[w], (w, sorted(set(acked[w]) - stored[w]))
                assert all(f["models"] == ["sface-2021dec-int8bq"] for f in r.json()["faces"])
            all_rows = set().union(*stored.values())
            # identify through the restarted server: every candidate face is a stored row
            for w in people:
                r = c.post("/v1/identify", files=[("image", ("p.jpg", photos(faces_dir, w)[0].read_bytes(),
                                                             "image/jpeg"))],
                           data={"collection_id": COLL, "top_k": "10"})
                assert r.status_code == 200, r.text
                res = r.json()["results"][0]
                assert res["best"]["external_id"] == w
                assert {x["face_id"] for x in res["candidates"]} <= all_rows
            metrics = c.get("/metrics").text
            line = next(x for x in metrics.splitlines()
                        if x.startswith(f'facegate_index_vectors{{collection_model="{COLL}/'))
            assert float(line.split()[-1]) == len(all_rows)

        # the database itself: every index entry (rebuilt from it) has a row, every row an embedding
        from service.config import Settings
        from service.gallery import Gallery

        g = Gallery(Settings(data_dir=tmp_path / "data", index_use_gpu=False)).start()
        try:
            indexed = set(np.asarray(g.indexed_ids(COLL)).tolist())
            with g.engine.connect() as conn:
                rows = {r[0] for r in conn.execute(sa.text("SELECT id FROM faces WHERE collection_id = :c"),
                                                   {"c": COLL})}
                orphans = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM faces f WHERE NOT EXISTS "
                    "(SELECT 1 FROM embeddings e WHERE e.face_id = f.id)")).scalar()
                dangling = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM embeddings e WHERE NOT EXISTS "
                    "(SELECT 1 FROM faces f WHERE f.id = e.face_id)")).scalar()
            assert indexed == rows == all_rows
            assert orphans == 0 and dangling == 0
        finally:
            g.close()
        print(f"crash test: {attempts['n']} enroll attempts, {n_acked} acknowledged, {len(all_rows)} stored")
    finally:
        server.stop()
