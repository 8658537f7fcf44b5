"""Use-case results -> the JSON bodies the API documents (``schemas.py``).

Floats a client compares (similarities, embeddings) are rounded to 6 decimals; records
of the gallery are plain dataclasses and serialise field by field.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from service.auth.key_store import ApiKey
from service.gallery import FaceRecord, Job
from service.pipeline.faces import DetectedFace
from service.pipeline.prepare import ImageInfo
from service.usecases import Candidate, Detection, Embedding, Identification, Verification


def face(f: DetectedFace, **extra: Any) -> dict:
    return {**f.to_dict(), **extra}


def image_info(info: ImageInfo) -> dict:
    return {"width": info.width, "height": info.height, "format": info.format}


def detection(d: Detection) -> dict:
    return {"faces": [face(f) for f in d.faces], "model": d.model, "image": image_info(d.image)}


def embedding(e: Embedding) -> dict:
    faces = [face(ef.face, image_index=ef.image_index, embedding=[round(float(x), 6) for x in ef.embedding])
             for ef in e.faces]
    return {"faces": faces, "model": e.model, "dim": e.dim, "images": e.images}


def verification(v: Verification) -> dict:
    out = {
        "similarity": round(v.similarity, 6), "threshold": v.threshold, "threshold_source": v.threshold_source,
        "same": v.same, "model": v.model, "policy": v.policy, "against": v.against,
        "face": face(v.face.face, faces_found=v.face.faces_found, face_index=0),
        "identity_faces": v.identity_faces,
    }
    if v.face2 is not None:
        out["face2"] = face(v.face2.face, faces_found=v.face2.faces_found, face_index=0)
    return out


def candidate(c: Candidate) -> dict:
    return {"identity_id": c.identity_id, "external_id": c.external_id, "name": c.name,
            "collection_id": c.collection_id, "similarity": round(c.similarity, 6), "face_id": c.face_id,
            "matched_faces": c.matched_faces, "above_threshold": c.above_threshold}


def identification(r: Identification) -> dict:
    results = []
    for fi in r.results:
        best = fi.best
        results.append({"face": face(fi.face), "unknown": fi.unknown,
                        "best": candidate(best) if best is not None else None,
                        "candidates": [candidate(c) for c in fi.candidates]})
    return {"results": results, "aggregate": r.aggregate, "searched": [asdict(s) for s in r.searched]}


def face_record(f: FaceRecord) -> dict:
    d = asdict(f)
    d["models"] = list(f.models)
    return d


def job(j: Job) -> dict:
    d = asdict(j)
    d["progress"] = round(j.done / j.total, 4) if j.total else 1.0
    return d


def api_key(k: ApiKey) -> dict:
    return {"id": k.id, "prefix": k.prefix, "name": k.name, "scopes": list(k.scopes), "collections": k.collections,
            "created_at": k.created_at, "revoked_at": k.revoked_at, "last_used_at": k.last_used_at}
