"""Stateless face routes (detect, embed, verify) and identify against the gallery.

Each route parses its body, lets its dependency authorise the key, calls one use case
(:mod:`service.usecases`) and serialises the result (:mod:`service.api.responses`). The
face-choice policy (the largest face; ``strict`` fails with ``multiple_faces``) and the
threshold choice live in the use cases.
"""

from __future__ import annotations

from fastapi import APIRouter

from service import usecases as uc
from service.api import responses as out
from service.api import schemas as S
from service.api.deps import GalleryDep, IdentifyKey, ImageBody, PipelineDep, Run, VerifyKey
from service.api.images import image_body_openapi
from service.api.security import AuthenticatedRoute

router = APIRouter(prefix="/v1", tags=["faces"], responses=S.ERROR_RESPONSES, route_class=AuthenticatedRoute)

_B64_EXAMPLE = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDAwLDA...(base64 JPEG)"


@router.post(
    "/detect",
    response_model=S.DetectResponse,
    summary="Detect faces: bbox, 5 landmarks, score and quality",
    openapi_extra=image_body_openapi(S.DetectParams, images={"image": "The photo."},
                                     json_example={"image": _B64_EXAMPLE}),
)
async def detect(principal: VerifyKey, body: ImageBody, pipeline: PipelineDep, run: Run) -> dict:
    params = body.parse(S.DetectParams)
    return out.detection(await run(uc.detect, pipeline, body.one("image"), detector=params.detector,
                                   tenant=principal.key_id))


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
async def embed(principal: VerifyKey, body: ImageBody, pipeline: PipelineDep, run: Run) -> dict:
    p = body.parse(S.EmbedParams)
    return out.embedding(await run(uc.embed, pipeline, body.all("image"), model=p.model, strict=p.strict,
                                   largest_only=p.largest_only, aligned=p.aligned, tenant=principal.key_id))


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
async def verify(principal: VerifyKey, body: ImageBody, pipeline: PipelineDep, gallery: GalleryDep,
                 run: Run) -> dict:
    p = body.parse(S.VerifyParams)
    image, image2 = body.one("image"), body.one("image2", required=False)
    return out.verification(await run(
        uc.verify, pipeline, gallery, principal, image, image2=image2, embedding=p.embedding,
        identity_id=p.identity_id, collection_id=p.collection_id, model=p.model, threshold=p.threshold,
        strict=p.strict, aligned=p.aligned))


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
async def identify(principal: IdentifyKey, body: ImageBody, pipeline: PipelineDep, gallery: GalleryDep,
                   run: Run) -> dict:
    p = body.parse(S.IdentifyParams)
    return out.identification(await run(
        uc.identify, pipeline, gallery, principal, body.one("image"), collection_id=p.collection_id,
        top_k=p.top_k, aggregate=p.aggregate, threshold=p.threshold, largest_only=p.largest_only))
