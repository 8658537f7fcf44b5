"""Collections, identities and their faces.

Enrollment (all photos of a request or none, behind the quality gate) is the
:func:`service.usecases.enroll` use case; the rest are the gallery's own operations,
each behind its scope and the key's collection limits.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Path, Query, Response

from service import usecases as uc
from service.api import responses as out
from service.api import schemas as S
from service.api.deps import AdminKey, EnrollKey, GalleryDep, ImageBody, PipelineDep, ReadKey, Run
from service.api.images import image_body_openapi
from service.api.security import AuthenticatedRoute

router = APIRouter(prefix="/v1/collections", tags=["gallery"], responses=S.ERROR_RESPONSES,
                   route_class=AuthenticatedRoute)

#: Face ids are 64-bit database integers; a larger path value is a 422, not an OverflowError (500).
FACE_ID = Path(..., ge=-(2**63), le=2**63 - 1)


# --- collections --------------------------------------------------------------------------------------
@router.post("", response_model=S.CollectionOut, status_code=201, summary="Create a collection")
async def create_collection(body: S.CollectionCreate, principal: AdminKey, pipeline: PipelineDep,
                            gallery: GalleryDep, run: Run) -> dict:
    return asdict(await run(uc.create_collection, pipeline, gallery, principal, body.id, name=body.name,
                            model=body.model, metadata=body.metadata))


@router.get("", response_model=S.CollectionList, summary="List collections (those the key may use)")
async def list_collections(principal: ReadKey, gallery: GalleryDep, run: Run) -> dict:
    colls = await run(gallery.list_collections)
    return {"collections": [asdict(c) for c in colls if principal.can_access(c.id)]}


@router.get("/{collection_id}", response_model=S.CollectionOut, summary="Get a collection with counts")
async def get_collection(collection_id: str, principal: ReadKey, gallery: GalleryDep, run: Run) -> dict:
    principal.check_collection(collection_id)
    return asdict(await run(gallery.get_collection, collection_id))


@router.patch("/{collection_id}", response_model=S.CollectionOut, summary="Rename or change metadata")
async def update_collection(collection_id: str, body: S.CollectionUpdate, principal: AdminKey,
                            gallery: GalleryDep, run: Run) -> dict:
    principal.check_collection(collection_id)
    return asdict(await run(gallery.update_collection, collection_id, name=body.name, metadata=body.metadata))


@router.delete("/{collection_id}", status_code=204, summary="Delete a collection and everything in it")
async def delete_collection(collection_id: str, principal: AdminKey, gallery: GalleryDep, run: Run) -> Response:
    principal.check_collection(collection_id)
    await run(gallery.delete_collection, collection_id)
    return Response(status_code=204)


# --- identities ---------------------------------------------------------------------------------------
@router.post("/{collection_id}/identities", response_model=S.IdentityOut, status_code=201,
             summary="Create an identity")
async def create_identity(collection_id: str, body: S.IdentityCreate, principal: EnrollKey, gallery: GalleryDep,
                          run: Run) -> dict:
    principal.check_collection(collection_id)
    return asdict(await run(gallery.create_identity, collection_id, body.external_id, body.name, body.metadata))


@router.get("/{collection_id}/identities", response_model=S.IdentityPage, summary="List identities (keyset pages)")
async def list_identities(
    collection_id: str, principal: ReadKey, gallery: GalleryDep, run: Run,
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> dict:
    principal.check_collection(collection_id)
    page = await run(gallery.list_identities, collection_id, limit, cursor)
    return {"identities": [asdict(i) for i in page.items], "next_cursor": page.next_cursor}


@router.get("/{collection_id}/identities/{identity_id}", response_model=S.IdentityOut, summary="Get an identity")
async def get_identity(collection_id: str, identity_id: str, principal: ReadKey, gallery: GalleryDep,
                       run: Run) -> dict:
    principal.check_collection(collection_id)
    return asdict(await run(gallery.get_identity, collection_id, identity_id))


@router.patch("/{collection_id}/identities/{identity_id}", response_model=S.IdentityOut,
              summary="Update an identity")
async def update_identity(collection_id: str, identity_id: str, body: S.IdentityUpdate, principal: EnrollKey,
                          gallery: GalleryDep, run: Run) -> dict:
    principal.check_collection(collection_id)
    return asdict(await run(gallery.update_identity, collection_id, identity_id, external_id=body.external_id,
                            name=body.name, metadata=body.metadata))


@router.delete("/{collection_id}/identities/{identity_id}", status_code=204,
               summary="Delete an identity with its faces (they leave the index before this returns)")
async def delete_identity(collection_id: str, identity_id: str, principal: EnrollKey, gallery: GalleryDep,
                          run: Run) -> Response:
    principal.check_collection(collection_id)
    await run(gallery.delete_identity, collection_id, identity_id)
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
async def enroll(collection_id: str, identity_id: str, principal: EnrollKey, body: ImageBody,
                 pipeline: PipelineDep, gallery: GalleryDep, run: Run) -> dict:
    principal.check_collection(collection_id)
    params = body.parse(S.EnrollParams)
    e = await run(uc.enroll, pipeline, gallery, principal, collection_id, identity_id, body.all("image"),
                  largest_only=params.largest_only)
    return {"faces": [out.face_record(f) for f in e.faces], "model": e.model}


@router.get("/{collection_id}/identities/{identity_id}/faces", response_model=S.FaceList,
            summary="List an identity's faces")
async def list_faces(collection_id: str, identity_id: str, principal: ReadKey, gallery: GalleryDep,
                     run: Run) -> dict:
    principal.check_collection(collection_id)
    return {"faces": [out.face_record(f) for f in await run(gallery.list_faces, collection_id, identity_id)]}


@router.get("/{collection_id}/faces/{face_id}/crop", summary="The stored aligned crop (PNG)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def face_crop(principal: ReadKey, gallery: GalleryDep, run: Run, collection_id: str,
                    face_id: int = FACE_ID) -> Response:
    principal.check_collection(collection_id)
    return Response(await run(gallery.get_face_crop, collection_id, face_id), media_type="image/png")


@router.delete("/{collection_id}/faces/{face_id}", status_code=204, summary="Delete one face")
async def delete_face(principal: EnrollKey, gallery: GalleryDep, run: Run, collection_id: str,
                      face_id: int = FACE_ID) -> Response:
    principal.check_collection(collection_id)
    await run(gallery.delete_face, collection_id, face_id)
    return Response(status_code=204)
