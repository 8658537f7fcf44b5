"""Request and response schemas of the REST API (pydantic v2).

Request models of image-taking routes hold only the non-image fields and are kept flat
(no nested models) so their JSON schema can be inlined into both body forms
(multipart and JSON) by :func:`service.api.images.image_body_openapi`. Response models
carry ``json_schema_extra`` examples taken from real runs on the shared test photos, so
``/docs`` shows what a client really gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.gallery import MAX_EXTERNAL_ID, MAX_NAME, metadata_problem


# --- shared pieces ------------------------------------------------------------------------------------
def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    problem = metadata_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: Client-chosen values that are stored and returned in every listing: bounded at the door.
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata),
                     Field(description="Any JSON object: at most 16 KiB as JSON, nested at most 8 levels.")]
Name = Annotated[str, Field(max_length=MAX_NAME)]
ModelName = Annotated[str, Field(max_length=64, description="A registered model's name.")]
IdRef = Annotated[str, Field(min_length=1, max_length=128)]

_FACE_EXAMPLE = {
    "bbox": [247.56, 97.83, 261.95, 385.42],
    "landmarks": [[315.02, 242.27], [437.94, 250.28], [367.66, 317.15], [312.63, 369.03], [428.4, 375.63]],
    "score": 0.9521,
    "quality": {"size": 261.95, "blur": 703.07, "yaw": 0.04, "pitch": 9.56, "roll": 2.89},
}


_ALIGNED = ("The images already are face crops aligned to the recognizer's 5-point template (e.g. 112x112 "
            "ArcFace crops): skip detection and embed each whole image.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectedFace(BaseModel):
    """One detected face, in original-image pixel coordinates."""

    bbox: list[float] = Field(..., description="[x, y, width, height]")
    landmarks: list[list[float]] | None = Field(
        None, description="5 points [x, y]: left eye, right eye, nose tip, left and right mouth corner."
    )
    score: float = Field(..., description="Detector confidence.")
    quality: dict[str, float] = Field(
        default_factory=dict,
        description="size (shorter bbox side, px), blur (variance of Laplacian, higher = sharper), "
        "yaw/pitch/roll (degrees, estimated from the landmarks).",
    )

    model_config = ConfigDict(json_schema_extra={"example": _FACE_EXAMPLE})


class FaceOut(DetectedFace):
    """A detected face with its embedding (/v1/embed)."""

    image_index: int | None = Field(None, description="Which image of a batch the face is from (/v1/embed).")
    embedding: list[float] | None = Field(None, description="L2-normalised embedding (/v1/embed only).")


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str


# --- detect / embed -----------------------------------------------------------------------------------
class DetectParams(Strict):
    detector: ModelName | None = Field(None, description="Detector model name (default: the configured one).")


class DetectResponse(BaseModel):
    faces: list[DetectedFace]
    model: str = Field(..., description="Detector that found the faces.")
    image: ImageInfo

    model_config = ConfigDict(json_schema_extra={"example": {
        "faces": [_FACE_EXAMPLE], "model": "yunet-2023mar-int8bq",
        "image": {"width": 700, "height": 700, "format": "jpeg"}}})


class EmbedParams(Strict):
    model: ModelName | None = Field(None, description="Recognizer model name (default: the configured one).")
    largest_only: bool = Field(False, description="Embed only the largest face of each image.")
    strict: bool = Field(False, description="Fail with multiple_faces when an image has more than one face.")
    aligned: bool = Field(False, description=_ALIGNED)


class EmbedResponse(BaseModel):
    faces: list[FaceOut]
    model: str = Field(..., description="Recognizer that made the embeddings.")
    dim: int
    images: int = Field(..., description="Number of images in the request.")

    model_config = ConfigDict(json_schema_extra={"example": {
        "faces": [{**_FACE_EXAMPLE, "image_index": 0, "embedding": [-0.1218, 0.1424, 0.0966, "... (128 values)"]}],
        "model": "sface-2021dec-int8bq", "dim": 128, "images": 1}})


# --- verify -------------------------------------------------------------------------------------------
class VerifyParams(Strict):
    embedding: list[float] | None = Field(
        None, max_length=4096, description="Compare the image with this embedding instead of image2 (needs its model).")
    model: ModelName | None = Field(
        None, description="Recognizer (default: the configured one; with identity_id: the collection's).")
    identity_id: IdRef | None = Field(None, description="Compare with this enrolled identity instead of image2.")
    collection_id: IdRef | None = Field(None, description="The identity's collection (required with identity_id).")
    threshold: float | None = Field(
        None, ge=-1, le=1, description="Decision threshold; default: the model card's at the configured FAR.")
    strict: bool = Field(False, description="Fail with multiple_faces instead of using the largest face.")
    aligned: bool = Field(False, description=_ALIGNED)


class UsedFace(DetectedFace):
    faces_found: int = Field(..., description="Faces detected in that image.")
    face_index: int = Field(0, description="Index (largest first) of the face used: always 0, the largest.")


class VerifyResponse(BaseModel):
    similarity: float = Field(..., description="Cosine similarity of the two embeddings, -1..1.")
    threshold: float
    threshold_source: str = Field(..., description="'request', or where the model card's value comes from.")
    same: bool = Field(..., description="similarity >= threshold")
    model: str
    policy: str = Field(..., description="Face choice: 'largest' or 'strict'.")
    against: Literal["image", "embedding", "identity"]
    face: UsedFace = Field(..., description="The face used from `image`.")
    face2: UsedFace | None = Field(None, description="The face used from `image2`.")
    identity_faces: int | None = Field(
        None, description="With identity_id: the identity's faces compared (similarity is the best).")

    model_config = ConfigDict(json_schema_extra={"example": {
        "similarity": 0.7012, "threshold": 0.363,
        "threshold_source": "card default", "same": True, "model": "sface-2021dec-int8bq", "policy": "largest",
        "against": "image", "face": {**_FACE_EXAMPLE, "faces_found": 1, "face_index": 0},
        "face2": {**_FACE_EXAMPLE, "faces_found": 1, "face_index": 0}}})


# --- collections / identities / faces -----------------------------------------------------------------
class CollectionCreate(Strict):
    id: str = Field(..., pattern=r"^[a-z0-9_-]{1,64}$", description="Collection id, e.g. a tenant or site.")
    name: Name = ""
    model: ModelName | None = Field(None, description="Recognizer for this collection (default: the configured one).")
    metadata: Metadata = Field(default_factory=dict)

    model_config = ConfigDict(json_schema_extra={"example": {"id": "site-berlin", "name": "Berlin office"}})


class CollectionUpdate(Strict):
    name: Name | None = None
    metadata: Metadata | None = None


class CollectionOut(BaseModel):
    id: str
    name: str
    model: str = Field(..., description="The recognizer every embedding of the collection comes from.")
    metadata: dict[str, Any]
    created_at: datetime
    identities: int | None = Field(None, description="Identities in the collection.")
    faces: int | None = Field(None, description="Enrolled faces in the collection.")


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class IdentityCreate(Strict):
    external_id: str = Field(..., min_length=1, max_length=MAX_EXTERNAL_ID, description="Your id for the person; unique.")
    name: Name = ""
    metadata: Metadata = Field(default_factory=dict)

    model_config = ConfigDict(json_schema_extra={"example": {
        "external_id": "E-1001", "name": "Ada Lovelace", "metadata": {"department": "R&D"}}})


class IdentityUpdate(Strict):
    external_id: str | None = Field(None, min_length=1, max_length=MAX_EXTERNAL_ID)
    name: Name | None = None
    metadata: Metadata | None = Field(None, description="Replaces the metadata when given.")


class IdentityOut(BaseModel):
    id: str = Field(..., description="The service's id of the identity (32 hex characters).")
    collection_id: str
    external_id: str = Field(..., description="Your id for the person, unique in the collection.")
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime = Field(..., description="Last change of the identity or of its faces.")
    faces: int | None = Field(None, description="Enrolled faces.")


class IdentityPage(BaseModel):
    identities: list[IdentityOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last.")


class EnrollParams(Strict):
    largest_only: bool = Field(
        False, description="Enroll the largest face of an image with several faces, instead of "
        "refusing it with multiple_faces.")


class FaceRecordOut(BaseModel):
    """An enrolled face: where it was in its photo and how good it was (the photo itself is not kept)."""

    id: int = Field(..., description="Face id (64-bit); also the id in the vector index.")
    identity_id: str
    collection_id: str
    bbox: list[float] | None = Field(..., description="[x, y, width, height] in the enrolled photo.")
    landmarks: list[list[float]] | None = Field(..., description="The 5 points the crop was aligned with.")
    det_score: float | None = Field(..., description="Detector confidence.")
    quality: dict[str, Any] | None = Field(..., description="size, blur, yaw/pitch/roll at enrolment.")
    image_sha256: str | None = Field(..., description="SHA-256 of the uploaded photo's bytes.")
    created_at: datetime
    models: list[str] = Field(default_factory=list, description="Models that hold an embedding of this face.")


class EnrollResponse(BaseModel):
    faces: list[FaceRecordOut]
    model: str


class FaceList(BaseModel):
    faces: list[FaceRecordOut]


# --- identify -----------------------------------------------------------------------------------------
class IdentifyParams(Strict):
    collection_id: IdRef | None = Field(
        None, description="Search this collection; default: every collection the key may use.")
    top_k: int = Field(5, ge=1, le=100)
    aggregate: Literal["max", "mean"] = Field(
        "max", description="Identity score: its best face (max) or the mean over its faces.")
    threshold: float | None = Field(
        None, ge=-1, le=1, description="Below it the answer is unknown; default: the model card's.")
    largest_only: bool = Field(False, description="Only identify the largest face of the probe.")


class Candidate(BaseModel):
    identity_id: str
    external_id: str
    name: str
    collection_id: str
    similarity: float
    face_id: int = Field(..., description="The identity's best-matching enrolled face.")
    matched_faces: int
    above_threshold: bool


class IdentifiedFace(BaseModel):
    face: DetectedFace
    unknown: bool = Field(..., description="True when no candidate reaches the threshold.")
    best: Candidate | None = Field(None, description="Top candidate when not unknown.")
    candidates: list[Candidate]


class ThresholdUsed(BaseModel):
    collection_id: str
    model: str
    threshold: float
    threshold_source: str


class IdentifyResponse(BaseModel):
    results: list[IdentifiedFace]
    aggregate: str
    searched: list[ThresholdUsed] = Field(..., description="Collections searched, with model and threshold.")


# --- models / jobs / keys -----------------------------------------------------------------------------
class ModelOut(BaseModel):
    name: str
    kind: str
    loaded: bool
    runtime: dict[str, Any] | None = Field(None, description="Provider, batch mode, dim (when loaded).")
    card: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelOut]
    default_detector: str
    default_recognizer: str


class ActivateModel(Strict):
    model: ModelName = Field(..., description="Recognizer to make active for the collection.")

    model_config = ConfigDict(json_schema_extra={"example": {"model": "sface-2021dec-int8bq"}})


class JobOut(BaseModel):
    id: str
    kind: str
    collection_id: str
    params: dict[str, Any]
    status: str
    done: int
    total: int
    progress: float = Field(..., description="done / total (1.0 when there is nothing to do).")
    error: str | None
    created_at: datetime
    updated_at: datetime


class KeyCreate(Strict):
    name: str = Field(..., min_length=1, max_length=MAX_NAME)
    scopes: list[str] = Field(..., min_length=1, max_length=5, description="admin, enroll, verify, identify, read")
    collections: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, min_length=1, max_length=1000,
        description="Restrict to these collections (omit for all; an empty list is refused).")


class KeyOut(BaseModel):
    id: str
    prefix: str
    name: str
    scopes: list[str]
    collections: list[str] | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(..., description="The API key. Shown once; only its hash is stored.")


class ServiceInfo(BaseModel):
    name: str
    version: str
    auth_enabled: bool
    api_key_header: str
    default_recognizer: str
    default_detector: str


class ErrorBody(BaseModel):
    code: str = Field(..., description="Machine-readable, stable: no_face, multiple_faces, image_too_large, ...")
    message: str
    status: int
    request_id: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody

    model_config = ConfigDict(json_schema_extra={"example": {"error": {
        "code": "no_face", "message": "no face was found in the image", "status": 422,
        "request_id": "5f0c2a0e9b6d4b7c8e1f2a3b4c5d6e7f", "details": {"field": "image"}}}})


#: ``responses=`` for routes: the error envelope on the statuses they can answer with.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorEnvelope, "description": d}
    for s, d in {
        400: "invalid_image / corrupt_image / empty_image",
        401: "unauthorized",
        403: "forbidden",
        404: "not found (collection_not_found, identity_not_found, ...)",
        409: "model_mismatch / conflict",
        413: "image_too_large",
        415: "unsupported_media_type",
        422: "no_face / multiple_faces / face_too_small / low_quality / invalid_request",
        429: "rate_limited",
        503: "storage_unavailable / inference_error",
    }.items()
}
