"""The fault injections behind ``bench/faults.py`` and the suite's fault tests: SIGKILL
during enrolls, read-only and full storage, broken model files, a missing provider."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from devkit.load import ADMIN_KEY, PEOPLE, photos_of, server_env
from devkit.server import Server

ADMIN = {"X-API-Key": ADMIN_KEY}
COLL = "crash"


# --- 1. SIGKILL rounds --------------------------------------------------------------------------------
def db_checks(db: Path, collection: str) -> dict:
    """Integrity of the (crashed) SQLite file and row-level orphans, read with plain sqlite3."""
    con = sqlite3.connect(str(db), timeout=30)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
        faces_wo_emb = con.execute(
            "SELECT COUNT(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.face_id = f.id)"
        ).fetchone()[0]
        emb_wo_face = con.execute(
            "SELECT COUNT(*) FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.id = e.face_id)"
        ).fetchone()[0]
        rows = {r[0] for r in con.execute("SELECT id FROM faces WHERE collection_id = ?", (collection,))}
    finally:
        con.close()
    return {"integrity": integrity, "foreign_key_violations": len(fk), "faces_without_embedding": faces_wo_emb,
            "embeddings_without_face": emb_wo_face, "rows": rows}


def _index_vectors(metrics: str, collection: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'facegate_index_vectors{{collection_model="{collection}/'):
            return float(line.split()[-1])
    return 0.0


def sigkill_rounds(data_dir: Path, faces_dir: Path, *, rounds: int = 5, clients: int = 4, seed: int = 0,
                   log=print) -> dict:
    """Kill -9 the server mid-enroll ``rounds`` times; check durability and consistency each time."""
    rng = random.Random(seed)
    people = [w for w in PEOPLE if len(photos_of(faces_dir, w)) >= 2][:clients]
    server = Server(data_dir, server_env()).start()
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as c:
        assert c.post("/v1/collections", json={"id": COLL}).status_code in (201, 409)
        ids = {}
        for w in people:
            r = c.post(f"/v1/collections/{COLL}/identities", json={"external_id": w})
            assert r.status_code == 201, r.text
            ids[w] = r.json()["id"]
    acked: dict[str, set[int]] = {w: set() for w in people}
    per_round = []
    totals = {"attempts": 0, "acknowledged": 0, "lost": 0, "orphans": 0, "integrity_failures": 0}
    try:
        for rnd in range(1, rounds + 1):
            target = rng.randint(3, 12)  # kill after this many acknowledged enrolls in the round
            round_acked: dict[str, list[int]] = {w: [] for w in people}
            attempts = [0]
            stop = threading.Event()
            unexpected: list[str] = []

            def worker(who: str, url: str = server.url, stop: threading.Event = stop, attempts: list = attempts,
                       round_acked: dict = round_acked, unexpected: list = unexpected) -> None:
                imgs = photos_of(faces_dir, who)
                i = rng.randrange(len(imgs))
                with httpx.Client(base_url=url, headers=ADMIN, timeout=60) as cl:
                    while not stop.is_set():
                        p = imgs[i % len(imgs)]
                        i += 1
                        attempts[0] += 1
                        try:
                            r = cl.post(f"/v1/collections/{COLL}/identities/{ids[who]}/faces",
                                        files=[("image", (p.name, p.read_bytes(), "image/jpeg"))])
                        except httpx.HTTPError:
                            return  # the server died mid-request: not acknowledged
                        if r.status_code == 201:
                            round_acked[who] += [f["id"] for f in r.json()["faces"]]
                        else:
                            unexpected.append(f"{r.status_code} {r.text[:200]}")

            threads = [threading.Thread(target=worker, args=(w,)) for w in people]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 120
            while sum(map(len, round_acked.values())) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.random() * 0.3)  # land the kill at a random point of the requests in flight
            server.kill()
            stop.set()
            for t in threads:
                t.join(timeout=60)
            n_acked = sum(map(len, round_acked.values()))
            for w in people:
                acked[w] |= set(round_acked[w])

            crashed = db_checks(data_dir / "facegate.db", COLL)  # the files exactly as the crash left them
            server = Server(data_dir, server_env()).start()
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as c:
                stored: set[int] = set()
                lost = 0
                for w in people:
                    r = c.get(f"/v1/collections/{COLL}/identities/{ids[w]}/faces")
                    assert r.status_code == 200, r.text
                    mine = {f["id"] for f in r.json()["faces"]}
                    lost += len(acked[w] - mine)
                    stored |= mine
                # every identify candidate is a stored row (this also loads the index, rebuilt from the database)
                probe = photos_of(faces_dir, people[0])[0]
                r = c.post("/v1/identify", files=[("image", (probe.name, probe.read_bytes(), "image/jpeg"))],
                           data={"collection_id": COLL, "top_k": "10"})
                found = r.json()["results"][0] if r.status_code == 200 else {"candidates": [], "best": None}
                cand = {x["face_id"] for x in found["candidates"]}
                best_ok = (found["best"] or {}).get("external_id") == people[0]
                indexed = _index_vectors(c.get("/metrics").text, COLL)
            orphan_kinds = {"faces_without_embedding": crashed["faces_without_embedding"],
                            "embeddings_without_face": crashed["embeddings_without_face"],
                            "index_size_differs_from_rows": abs(int(indexed) - len(stored)),
                            "candidates_without_row": len(cand - stored),
                            "rows_differ_after_restart": len(crashed["rows"] ^ stored)}
            orphans = sum(orphan_kinds.values())
            row = {"round": rnd, "kill_after_acked": target, "attempts": attempts[0], "acknowledged": n_acked,
                   "lost": lost, "orphans": orphans, "integrity": crashed["integrity"],
                   "foreign_key_violations": crashed["foreign_key_violations"], "stored_total": len(stored),
                   "indexed_total": int(indexed), "orphan_kinds": orphan_kinds, "identify_after_restart": best_ok,
                   "unexpected_statuses": unexpected[:3], "client_errors": sum(u < "5" for u in unexpected)}
            per_round.append(row)
            totals["attempts"] += attempts[0]
            totals["acknowledged"] += n_acked
            totals["lost"] += lost
            totals["orphans"] += orphans
            totals["integrity_failures"] += int(crashed["integrity"] != "ok" or crashed["foreign_key_violations"] > 0)
            log(f"round {rnd}: {attempts[0]} attempts, {n_acked} acknowledged, lost {lost}, orphans {orphans}, "
                f"integrity {crashed['integrity']}, stored {len(stored)}, indexed {int(indexed)}")
    finally:
        server.stop()
    return {"rounds": rounds, "clients": clients, **totals, "per_round": per_round}


# --- 2. storage faults --------------------------------------------------------------------------------
def _app_settings(data_dir: Path, **kw):
    from service.config import Settings

    return Settings(data_dir=data_dir, bootstrap_admin_key=ADMIN_KEY, index_use_gpu=False, rate_limit_per_minute=0,
                    sqlite_busy_timeout_ms=5_000, **kw)


def storage_faults(data_dir: Path, faces_dir: Path) -> dict:
    """Read-only database and full disk while serving (SQLite ``query_only`` and ``max_page_count``:
    the same errors a read-only mount or a full filesystem give), then recovery."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from service.api.app import create_app

    ph = [p.read_bytes() for p in photos_of(faces_dir, "biden")] + [photos_of(faces_dir, "obama")[0].read_bytes()]
    out: dict = {}
    with TestClient(create_app(_app_settings(data_dir)), raise_server_exceptions=False) as c:
        assert c.post("/v1/collections", json={"id": "st"}, headers=ADMIN).status_code == 201
        iid = c.post("/v1/collections/st/identities", json={"external_id": "b"}, headers=ADMIN).json()["id"]
        enroll = f"/v1/collections/st/identities/{iid}/faces"

        def do_enroll(i: int):
            return c.post(enroll, files=[("image", ("p.jpg", ph[i % len(ph)], "image/jpeg"))], headers=ADMIN)

        assert do_enroll(0).status_code == 201
        g = c.app.state.gallery
        mode = {"v": None}

        @event.listens_for(g.engine, "begin")
        def _fault(conn) -> None:
            if mode["v"] == "readonly":
                conn.exec_driver_sql("PRAGMA query_only=ON")
            elif mode["v"] == "full":
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                conn.exec_driver_sql(f"PRAGMA max_page_count={pages}")
            else:
                conn.exec_driver_sql("PRAGMA query_only=OFF")
                conn.exec_driver_sql("PRAGMA max_page_count=1073741823")

        def faces_now() -> list[int]:
            return sorted(f["id"] for f in c.get(enroll, headers=ADMIN).json()["faces"])

        for fault in ("readonly", "full"):
            before = faces_now()
            mode["v"] = fault
            statuses = {}
            r = do_enroll(1)
            statuses["enroll"] = (r.status_code, r.json().get("error", {}).get("code"))
            if fault == "readonly":  # small writes fit a full disk's free space; only a read-only one refuses all
                r = c.post("/v1/collections/st/identities", json={"external_id": "new"}, headers=ADMIN)
                statuses["create_identity"] = (r.status_code, r.json().get("error", {}).get("code"))
                r = c.delete(f"/v1/collections/st/identities/{iid}", headers=ADMIN)
                statuses["delete_identity"] = (r.status_code, r.json().get("error", {}).get("code"))
                r = c.post("/v1/collections", json={"id": "st2"}, headers=ADMIN)
                statuses["create_collection"] = (r.status_code, r.json().get("error", {}).get("code"))
            r = c.post("/v1/identify", files=[("image", ("p.jpg", ph[1], "image/jpeg"))],
                       data={"collection_id": "st"}, headers=ADMIN)
            reads_ok = r.status_code == 200 and c.get(enroll, headers=ADMIN).status_code == 200
            unchanged = faces_now() == before
            mode["v"] = None  # the fault clears
            r = do_enroll(2)
            recovered = r.status_code == 201
            new_id = r.json()["faces"][0]["id"] if recovered else None
            r = c.post("/v1/identify", files=[("image", ("p.jpg", ph[2], "image/jpeg"))],
                       data={"collection_id": "st", "top_k": "20"}, headers=ADMIN)
            found = recovered and any(x["face_id"] == new_id or x["identity_id"] == iid
                                      for x in r.json()["results"][0]["candidates"])
            out[fault] = {"statuses": {k: list(v) for k, v in statuses.items()}, "reads_ok": reads_ok,
                          "unchanged": unchanged, "recovered": recovered, "identify_after_recovery": found}
        event.remove(g.engine, "begin", _fault)
    return out


# --- 3. model files -----------------------------------------------------------------------------------
def _models_dir(root: Path, kind: str, shared_model: Path | None) -> tuple[Path, str]:
    """A models dir with the default detector and a recognizer card whose file is broken in one way.
    Returns (models dir, the path the error must name)."""
    from service.cards import BUILTIN_MODELS_DIR

    models = root / kind / "models"
    shutil.copytree(BUILTIN_MODELS_DIR / "yunet-2023mar-int8bq", models / "yunet-2023mar-int8bq")
    rec = models / "sface-2021dec-int8bq"
    rec.mkdir(parents=True)
    card = json.loads((BUILTIN_MODELS_DIR / "sface-2021dec-int8bq" / "model.json").read_text())
    weights = rec / "model.onnx"
    good_sha = hashlib.sha256(shared_model.read_bytes()).hexdigest() if shared_model else "0" * 64
    garbage = b"this is not an onnx model\x00" * 100
    if kind == "missing":
        card["source"] = {"file": "model.onnx", "sha256": good_sha}
    elif kind == "checksum":  # corrupted on disk: the card's sha256 catches it
        weights.write_bytes(garbage)
        card["source"] = {"file": "model.onnx", "sha256": good_sha}
    elif kind == "unparsable":  # a card made for a broken file: onnx itself refuses it
        weights.write_bytes(garbage)
        card["source"] = {"file": "model.onnx", "sha256": hashlib.sha256(garbage).hexdigest()}
    elif kind == "truncated":  # half of a real model, card made for the half
        half = shared_model.read_bytes()[: shared_model.stat().st_size // 2]
        weights.write_bytes(half)
        card["source"] = {"file": "model.onnx", "sha256": hashlib.sha256(half).hexdigest()}
    elif kind == "bad_card":
        (rec / "model.json").write_text('{"name": "sface-2021dec-int8bq", "kind": ')
        return models, str(rec / "model.json")
    (rec / "model.json").write_text(json.dumps(card))
    return models, str(weights.resolve())


def model_faults(root: Path, shared_model: Path | None, *, cli: bool = True) -> dict:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    out = {}
    for kind in ("missing", "checksum", "unparsable", "truncated", "bad_card"):
        if kind == "truncated" and shared_model is None:
            continue
        models, must_name = _models_dir(root, kind, shared_model)
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("facegate").addHandler(handler)
        error = None
        try:
            with TestClient(create_app(_app_settings(root / kind / "data", models_dir=models))):
                pass
        except Exception as e:  # noqa: BLE001 - the start must fail; record how
            error = f"{type(e).__name__}: {e}"
        finally:
            logging.getLogger("facegate").removeHandler(handler)
        line = next((r.getMessage() for r in records if r.getMessage().startswith("facegate cannot start")), "")
        out[kind] = {"start_failed": error is not None, "names_file": must_name in (error or "") and must_name in line,
                     "error": (error or "")[:300], "log_line": line[:300]}
    if cli:  # the real command: exits non-zero, and the first error line names the file
        models, must_name = _models_dir(root / "cli", "missing", shared_model)
        script = Path(sys.executable).parent / "facegate"
        env = {**os.environ, "FACEGATE_MODELS_DIR": str(models), "FACEGATE_DATA_DIR": str(root / "cli" / "data")}
        t0 = time.monotonic()
        p = subprocess.run([str(script), "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
        text = p.stdout + p.stderr
        first = next((ln for ln in text.splitlines() if "cannot start" in ln), "")
        out["cli_missing"] = {"exit_code": p.returncode, "seconds": round(time.monotonic() - t0, 1),
                              "names_file": must_name in first, "first_error_line": first[:300]}
    return out


# --- 4. provider fallback -----------------------------------------------------------------------------
def provider_fallback(data_dir: Path) -> dict:
    import onnxruntime as ort
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.engine import session

    session._WARNED.clear()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("facegate")
    old_level = logger.level
    logger.setLevel(logging.WARNING)  # whatever the root logger's level, warnings must reach us
    logger.addHandler(handler)
    try:
        settings = _app_settings(data_dir, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        with TestClient(create_app(settings)) as c:
            models = c.get("/v1/models", headers=ADMIN).json()["models"]
            ready = c.get("/readyz").status_code
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    runtime = {m["name"]: m["runtime"] for m in models if m["loaded"] and m["kind"] == "recognizer"}
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING and "CUDA" in r.getMessage()]
    return {"cuda_available": "CUDAExecutionProvider" in ort.get_available_providers(), "ready": ready,
            "providers": {k: v.get("provider") for k, v in runtime.items()}, "warnings": warnings[:3]}
