"""Collections, identities and their faces.

Enrollment runs every image through decode -> detect -> quality gate -> align -> embed
*before* touching the database, and stores all of a request's faces in one transaction:
either every image is enrolled or none is. The gate refuses, with a typed error naming
the image, a face smaller than ``enroll_min_face_size`` (``face_too_small``), with a
detector score under ``enroll_min_det_score`` or a blur score under ``enroll_min_blur``
(``low_quality``), and an image with several faces unless ``largest_only``
(``multiple_faces``). The response comes after the gallery committed.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api import schemas as S
from service.api.auth import Principal, require
from service.api.common import embed, gallery_of, pipeline_of, prepare
from service.api.images import ImageRequest, image_body_openapi, image_request, tag_field
from service.errors import FaceTooSmall, InvalidRequest, LowQuality
from service.gallery import EnrollFace

router = APIRouter(prefix="/v1/collections", tags=["gallery"], responses=S.ERROR_RESPONSES)

MAX_ENROLL_IMAGES = 16
#: Face ids are 64-bit database integers; a larger path value is a 422, not an OverflowError (500).
FACE_ID = Path(..., ge=-(2**63), le=2**63 - 1)


def _coll(c) -> dict:
    return asdict(c)


def _ident(i) -> dict:
    return asdict(i)


def _face(f) -> dict:
    d = asdict(f)
    d["models"] = list(f.models)
    return d


# --- collections --------------------------------------------------------------------------------------
@router.post("", response_model=S.CollectionOut, status_code=201, summary="Create a collection")
async def create_collection(
    request: Request, body: S.CollectionCreate, principal: Principal = Depends(require("admin"))
) -> dict:
    principal.check_collection(body.id)
    pipeline = pipeline_of(request)
    if body.model:
        card = pipeline.card(body.model)
        if card.kind != "recognizer":
            raise InvalidRequest(f"model {body.model!r} is a {card.kind}, not a recognizer")
    c = await run_in_threadpool(
        gallery_of(request).create_collection, body.id, body.name, body.model, body.metadata
    )
    return _coll(c)


@router.get("", response_model=S.CollectionList, summary="List collections (those the key may use)")
async def list_collections(request: Request, principal: Principal = Depends(require("read"))) -> dict:
    colls = await run_in_threadpool(gallery_of(request).list_collections)
    return {"collections": [_coll(c) for c in colls if principal.can_access(c.id)]}


@router.get("/{collection_id}", response_model=S.CollectionOut, summary="Get a collection with counts")
async def get_collection(
    request: Request, collection_id: str, principal: Principal = Depends(require("read"))
) -> dict:
    principal.check_collection(collection_id)
    return _coll(await run_in_threadpool(gallery_of(request).get_collection, collection_id))


@router.patch("/{collection_id}", response_model=S.CollectionOut, summary="Rename or change metadata")
async def update_collection(
    request: Request, collection_id: str, body: S.CollectionUpdate, principal: Principal = Depends(require("admin"))
) -> dict:
    principal.check_collection(collection_id)
    c = await run_in_threadpool(
        lambda: gallery_of(request).update_collection(collection_id, name=body.name, metadata=body.metadata)
    )
    return _coll(c)


@router.delete("/{collection_id}", status_code=204, summary="Delete a collection and everything in it")
async def delete_collection(
    request: Request, collection_id: str, principal: Principal = Depends(require("admin"))
) -> Response:
    principal.check_collection(collection_id)
    await run_in_threadpool(gallery_of(request).delete_collection, collection_id)
    return Response(status_code=204)


# --- identities ---------------------------------------------------------------------------------------
@router.post(
    "/{collection_id}/identities", response_model=S.IdentityOut, status_code=201, summary="Create an identity"
)
async def create_identity(
    request: Request, collection_id: str, body: S.IdentityCreate, principal: Principal = Depends(require("enroll"))
) -> dict:
    principal.check_collection(collection_id)
    i = await run_in_threadpool(
        gallery_of(request).create_identity, collection_id, body.external_id, body.name, body.metadata
    )
    return _ident(i)


@router.get(
    "/{collection_id}/identities", response_model=S.IdentityPage, summary="List identities (keyset pages)"
)
async def list_identities(
    request: Request,
    collection_id: str,
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    principal: Principal = Depends(require("read")),
) -> dict:
    principal.check_collection(collection_id)
    page = await run_in_threadpool(gallery_of(request).list_identities, collection_id, limit, cursor)
    return {"identities": [_ident(i) for i in page.items], "next_cursor": page.next_cursor}


@router.get("/{collection_id}/identities/{identity_id}", response_model=S.IdentityOut, summary="Get an identity")
async def get_identity(
    request: Request, collection_id: str, identity_id: str, principal: Principal = Depends(require("read"))
) -> dict:
    principal.check_collection(collection_id)
    return _ident(await run_in_threadpool(gallery_of(request).get_identity, collection_id, identity_id))


@router.patch(
    "/{collection_id}/identities/{identity_id}", response_model=S.IdentityOut, summary="Update an identity"
)
async def update_identity(
    request: Request,
    collection_id: str,
    identity_id: str,
    body: S.IdentityUpdate,
    principal: Principal = Depends(require("enroll")),
) -> dict:
    principal.check_collection(collection_id)
    i = await run_in_threadpool(
        lambda: gallery_of(request).update_identity(
            collection_id, identity_id, external_id=body.external_id, name=body.name, metadata=body.metadata
        )
    )
    return _ident(i)


@router.delete(
    "/{collection_id}/identities/{identity_id}", status_code=204,
    summary="Delete an identity with its faces (they leave the index before this returns)",
)
async def delete_identity(
    request: Request, collection_id: str, identity_id: str, principal: Principal = Depends(require("enroll"))
) -> Response:
    principal.check_collection(collection_id)
    await run_in_threadpool(gallery_of(request).delete_identity, collection_id, identity_id)
    return Response(status_code=204)


# --- faces --------------------------------------------------------------------------------------------
@router.post(
    "/{collection_id}/identities/{identity_id}/faces",
    response_model=S.EnrollResponse,
    status_code=201,
    summary="Enroll one or more photos of the identity (all or none)",
    openapi_extra=image_body_openapi(
        S.EnrollParams,
        images={"image": "A photo of the person (repeat the part for several).", "images": "Several photos."},
        json_example={"images": ["/9j/4AAQSkZJRg...(base64 JPEG)"]},
        required_images=(),
    ),
)
async def enroll(
    request: Request,
    collection_id: str,
    identity_id: str,
    principal: Principal = Depends(require("enroll")),
    body: ImageRequest = Depends(image_request),
) -> dict:
    principal.check_collection(collection_id)
    params = body.parse(S.EnrollParams)
    images = body.all("image")
    if not images:
        raise InvalidRequest("the request has no image (send 'image', repeated for several, or 'images')")
    if len(images) > MAX_ENROLL_IMAGES:
        raise InvalidRequest(f"at most {MAX_ENROLL_IMAGES} images per call", count=len(images))
    gallery = gallery_of(request)
    pipeline = pipeline_of(request)
    s = request.app.state.settings
    # Fail fast (before the CPU work) on an unknown collection or identity.
    await run_in_threadpool(gallery.get_identity, collection_id, identity_id)
    model = (await run_in_threadpool(gallery.get_collection, collection_id)).model

    prepared = []
    for img in images:
        p = await prepare(pipeline, img, detector=None, recognizer=model, need_face=True,
                          strict=not params.largest_only, largest_only=True)
        f = p.faces[0]
        q = f.quality
        if f.size < s.enroll_min_face_size:
            raise tag_field(FaceTooSmall(
                f"the face is {f.size:.0f} px; enrollment needs at least {s.enroll_min_face_size} px",
                size=round(f.size, 1), min_size=s.enroll_min_face_size), img)
        if f.score < s.enroll_min_det_score:
            raise tag_field(LowQuality(
                f"detector score {f.score:.2f} is below the enrollment minimum {s.enroll_min_det_score}",
                score=round(float(f.score), 4), min_score=s.enroll_min_det_score, reason="det_score"), img)
        if q.get("blur", float("inf")) < s.enroll_min_blur:
            raise tag_field(LowQuality(
                f"the face is too blurred (sharpness {q['blur']:.1f} < {s.enroll_min_blur})",
                blur=round(float(q["blur"]), 2), min_blur=s.enroll_min_blur, reason="blur"), img)
        prepared.append(p)
    embs = await embed(pipeline, [p.crops[0] for p in prepared], model)
    faces = [
        EnrollFace(
            crop=p.crops[0], embedding=e, model=model,
            bbox=[float(v) for v in p.faces[0].bbox],
            landmarks=p.faces[0].landmarks.tolist() if p.faces[0].landmarks is not None else None,
            det_score=float(p.faces[0].score), quality={k: float(v) for k, v in p.faces[0].quality.items()},
            image_sha256=p.sha256,
        )
        for p, e in zip(prepared, embs)
    ]
    stored = await run_in_threadpool(gallery.enroll, collection_id, identity_id, faces)
    return {"faces": [_face(f) for f in stored], "model": model}


@router.get(
    "/{collection_id}/identities/{identity_id}/faces", response_model=S.FaceList, summary="List an identity's faces"
)
async def list_faces(
    request: Request, collection_id: str, identity_id: str, principal: Principal = Depends(require("read"))
) -> dict:
    principal.check_collection(collection_id)
    faces = await run_in_threadpool(gallery_of(request).list_faces, collection_id, identity_id)
    return {"faces": [_face(f) for f in faces]}


@router.get(
    "/{collection_id}/faces/{face_id}/crop", summary="The stored aligned crop (PNG)",
    response_class=Response, responses={200: {"content": {"image/png": {}}}},
)
async def face_crop(
    request: Request, collection_id: str, face_id: int = FACE_ID, principal: Principal = Depends(require("read"))
) -> Response:
    principal.check_collection(collection_id)
    png = await run_in_threadpool(gallery_of(request).get_face_crop, collection_id, face_id)
    return Response(png, media_type="image/png")


@router.delete("/{collection_id}/faces/{face_id}", status_code=204, summary="Delete one face")
async def delete_face(
    request: Request, collection_id: str, face_id: int = FACE_ID, principal: Principal = Depends(require("enroll"))
) -> Response:
    principal.check_collection(collection_id)
    await run_in_threadpool(gallery_of(request).delete_face, collection_id, face_id)
    return Response(status_code=204)
