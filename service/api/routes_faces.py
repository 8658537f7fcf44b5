"""Stateless face routes (detect, embed, verify) and identify against the gallery.

Face choice policy (verify, enroll): the largest face of an image (by bbox area) is
used; ``strict=true`` makes an image with several faces fail with ``multiple_faces``
instead. The face used is echoed back with how many faces were found.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from service.api import schemas as S
from service.api.auth import Principal, require
from service.api.common import (
    detector_name,
    embed,
    face_dict,
    gallery_of,
    image_info,
    pipeline_of,
    prepare,
    recognizer_name,
    threshold_for,
)
from service.api.images import ImageRequest, image_body_openapi, image_request
from service.errors import InvalidRequest, ModelMismatch

router = APIRouter(prefix="/v1", tags=["faces"], responses=S.ERROR_RESPONSES)

_B64_EXAMPLE = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDAwLDA...(base64 JPEG)"
MAX_BATCH_IMAGES = 32


@router.post(
    "/detect",
    response_model=S.DetectResponse,
    summary="Detect faces: bbox, 5 landmarks, score and quality",
    openapi_extra=image_body_openapi(
        S.DetectParams,
        images={"image": "The photo."},
        json_example={"image": _B64_EXAMPLE},
    ),
)
async def detect(
    request: Request,
    _: Principal = Depends(require("verify")),
    body: ImageRequest = Depends(image_request),
) -> dict:
    params = body.parse(S.DetectParams)
    pipeline = pipeline_of(request)
    det = detector_name(pipeline, params.detector)
    p = await prepare(pipeline, body.one("image"), detector=det, recognizer=None, need_face=False, strict=False,
                      largest_only=False)
    return {"faces": [face_dict(f) for f in p.faces], "model": det, "image": image_info(p)}


@router.post(
    "/embed",
    response_model=S.EmbedResponse,
    summary="Embedding of every face, for one image or a batch",
    description="Several images in one call: repeat the multipart `image` part, or send `images` "
    "(a list of base64 strings) in JSON. Each face says which image it is from (`image_index`). "
    "Any image without a face fails the whole call with `no_face` (details.field names it).",
    openapi_extra=image_body_openapi(
        S.EmbedParams,
        images={"image": "The photo (repeat the part for a batch).", "images": "A batch of photos."},
        json_example={"images": [_B64_EXAMPLE, _B64_EXAMPLE], "largest_only": True},
        required_images=(),
    ),
)
async def embed_route(
    request: Request,
    _: Principal = Depends(require("verify")),
    body: ImageRequest = Depends(image_request),
) -> dict:
    params = body.parse(S.EmbedParams)
    pipeline = pipeline_of(request)
    model = recognizer_name(pipeline, params.model)
    images = body.all("image")
    if not images:
        raise InvalidRequest("the request has no image (send 'image', repeated for a batch, or 'images')")
    if len(images) > MAX_BATCH_IMAGES:
        raise InvalidRequest(f"at most {MAX_BATCH_IMAGES} images per call", count=len(images))
    # Decode + detect of the batch's images run side by side in the thread pool.
    prepared = await asyncio.gather(*(
        prepare(pipeline, img, detector=None, recognizer=model, need_face=True, strict=params.strict,
                largest_only=params.largest_only, aligned=params.aligned)
        for img in images
    ))
    crops = [c for p in prepared for c in p.crops]
    embs = await embed(pipeline, crops, model)
    faces, k = [], 0
    for i, p in enumerate(prepared):
        for f in p.faces[: len(p.crops)]:
            faces.append(face_dict(f, image_index=i, embedding=[round(float(x), 6) for x in embs[k]]))
            k += 1
    return {"faces": faces, "model": model, "dim": int(embs.shape[1]), "images": len(images)}


@router.post(
    "/verify",
    response_model=S.VerifyResponse,
    summary="1:1 verification: is the face in `image` the same person as ...?",
    description="Compare `image` with one of: a second image (`image2`), an embedding (`embedding`, "
    "made by `model`), or an enrolled identity (`identity_id` + `collection_id`; the collection's "
    "active model is used and the similarity is the best over the identity's faces). "
    "The threshold is the request's own `threshold`, else the model card's at the configured FAR "
    "target; `threshold_source` says which.",
    openapi_extra=image_body_openapi(
        S.VerifyParams,
        images={"image": "The probe photo.", "image2": "The photo to compare with."},
        json_example={"image": _B64_EXAMPLE, "image2": _B64_EXAMPLE, "strict": False},
    ),
)
async def verify(
    request: Request,
    principal: Principal = Depends(require("verify")),
    body: ImageRequest = Depends(image_request),
) -> dict:
    params = body.parse(S.VerifyParams)
    pipeline = pipeline_of(request)
    img1 = body.one("image")
    img2 = body.one("image2", required=False)
    modes = [m for m, present in (("image", img2 is not None), ("embedding", params.embedding is not None),
                                  ("identity", params.identity_id is not None)) if present]
    if len(modes) != 1:
        raise InvalidRequest("send exactly one of image2, embedding or identity_id to compare `image` with",
                             got=modes)
    against = modes[0]
    policy = "strict" if params.strict else "largest"

    ref: np.ndarray | None = None
    identity_faces = None
    if against == "identity":
        if not params.collection_id:
            raise InvalidRequest("identity_id needs its collection_id")
        principal.check_collection(params.collection_id)
        gallery = gallery_of(request)
        coll = await run_in_threadpool(gallery.get_collection, params.collection_id)
        if params.model and params.model != coll.model:
            raise ModelMismatch("the collection's faces are embedded with another model",
                                active_model=coll.model, got=params.model)
        model = coll.model
        ref = await run_in_threadpool(gallery.get_embeddings, params.collection_id, params.identity_id, model)
        if ref.shape[0] == 0:
            raise InvalidRequest("the identity has no enrolled faces", identity_id=params.identity_id)
        identity_faces = int(ref.shape[0])
    else:
        model = recognizer_name(pipeline, params.model)
    if against == "embedding":
        vec = np.asarray(params.embedding, dtype=np.float32)
        if recognizer_name(pipeline, model) not in pipeline.loaded_models():
            await run_in_threadpool(pipeline.embedder, model)
        dim = pipeline.loaded_models()[model]["dim"]
        if vec.ndim != 1 or vec.shape[0] != dim:
            raise ModelMismatch(f"the embedding has {vec.shape[0]} values; {model} makes {dim}",
                                model=model, expected_dim=dim, got_dim=int(vec.shape[0]))
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(vec).all() or norm < 1e-12:
            raise InvalidRequest("the embedding must be finite and non-zero")
        ref = (vec / norm)[None, :]

    kw = {"detector": None, "recognizer": model, "need_face": True, "strict": params.strict, "largest_only": True,
          "aligned": params.aligned}
    if img2 is not None:
        # The two images are independent: decode and detect them concurrently (two threads).
        # gather re-raises the first typed error as-is.
        pa, pb = await asyncio.gather(prepare(pipeline, img1, **kw), prepare(pipeline, img2, **kw))
        embs = await embed(pipeline, pa.crops + pb.crops, model)
        e1, ref = embs[0], embs[1:2]
    else:
        pa = await prepare(pipeline, img1, **kw)
        e1 = (await embed(pipeline, pa.crops, model))[0]
        pb = None
    sims = ref @ e1
    similarity = float(np.max(sims))
    thr, source = await threshold_for(pipeline, model, params.threshold)
    out = {
        "similarity": round(similarity, 6),
        "threshold": thr,
        "threshold_source": source,
        "same": bool(similarity >= thr),
        "model": model,
        "policy": policy,
        "against": against,
        "face": face_dict(pa.faces[0], faces_found=len(pa.faces), face_index=0),
        "identity_faces": identity_faces,
    }
    if pb is not None:
        out["face2"] = face_dict(pb.faces[0], faces_found=len(pb.faces), face_index=0)
    return out


@router.post(
    "/identify",
    response_model=S.IdentifyResponse,
    summary="1:N identification of every face in the probe image",
    description="For each face of `image` (largest first), the top-k enrolled identities, scored per "
    "identity by their best face (`max`) or the mean over their faces (`mean`). `unknown` is true "
    "when no candidate reaches the threshold. Each collection is searched with its own active model "
    "(embeddings of different models are never compared); without `collection_id` every collection "
    "the API key may use is searched.",
    openapi_extra=image_body_openapi(
        S.IdentifyParams,
        images={"image": "The probe photo."},
        json_example={"image": _B64_EXAMPLE, "collection_id": "site-berlin", "top_k": 3},
    ),
)
async def identify(
    request: Request,
    principal: Principal = Depends(require("identify")),
    body: ImageRequest = Depends(image_request),
) -> dict:
    params = body.parse(S.IdentifyParams)
    pipeline = pipeline_of(request)
    gallery = gallery_of(request)
    img = body.one("image")
    if params.collection_id is not None:
        principal.check_collection(params.collection_id)
        colls = [await run_in_threadpool(gallery.get_collection, params.collection_id)]
    else:
        colls = [c for c in await run_in_threadpool(gallery.list_collections, counts=False)
                 if principal.can_access(c.id)]
    models = sorted({c.model for c in colls}) or [pipeline.settings.recognizer]
    # Detect once; align and embed once per distinct model of the searched collections.
    first = await prepare(pipeline, img, detector=None, recognizer=models[0], need_face=True, strict=False,
                          largest_only=params.largest_only)
    faces = first.faces[: len(first.crops)]
    embs: dict[str, np.ndarray] = {models[0]: await embed(pipeline, first.crops, models[0])}
    for m in models[1:]:
        crops = await run_in_threadpool(lambda m=m: [pipeline.align(first.image, f, m) for f in faces])
        embs[m] = await embed(pipeline, crops, m)

    searched, per_coll = [], []
    for c in colls:
        thr, source = await threshold_for(pipeline, c.model, params.threshold)
        searched.append({"collection_id": c.id, "model": c.model, "threshold": thr, "threshold_source": source})
        res = await run_in_threadpool(
            gallery.identify, c.id, c.model, embs[c.model], params.top_k, params.aggregate, thr
        )
        per_coll.append((c, res))

    results = []
    for i, f in enumerate(faces):
        cands = []
        for c, res in per_coll:
            for m in res[i].matches:
                cands.append({
                    "identity_id": m.identity_id, "external_id": m.external_id, "name": m.name,
                    "collection_id": c.id, "similarity": round(float(m.score), 6), "face_id": int(m.face_id),
                    "matched_faces": int(m.matched_faces), "above_threshold": bool(m.above_threshold),
                })
        cands.sort(key=lambda d: -d["similarity"])
        cands = cands[: params.top_k]
        best = next((d for d in cands if d["above_threshold"]), None)
        results.append({"face": face_dict(f), "unknown": best is None, "best": best, "candidates": cands})
    return {"results": results, "aggregate": params.aggregate, "searched": searched}
