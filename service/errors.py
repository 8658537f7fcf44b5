"""Typed errors shared by the pipeline, the gallery and the API.

Every failure a client can cause is a :class:`FacegateError` with a stable
machine-readable ``code`` and the HTTP status the API answers with, so the API
layer maps exceptions to responses in one place and never answers 500 for bad input.
"""

from __future__ import annotations

from typing import Any


class FacegateError(Exception):
    code: str = "error"
    status: int = 400

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details = details
        super().__init__(self.message)


# --- image input -----------------------------------------------------------------
class ImageError(FacegateError):
    code = "invalid_image"
    status = 400


class EmptyImage(ImageError):
    """The image body is empty."""

    code = "empty_image"


class NotAnImage(ImageError):
    """The bytes are not an image in any supported format."""

    code = "invalid_image"


class CorruptImage(ImageError):
    """The image header is valid but its data cannot be decoded."""

    code = "corrupt_image"


class ImageTooLarge(ImageError):
    """The image exceeds the configured byte or pixel limit."""

    code = "image_too_large"
    status = 413


class UnsupportedMediaType(ImageError):
    """The request's content type is not one this route accepts."""

    code = "unsupported_media_type"
    status = 415


# --- faces -------------------------------------------------------------------------
class FaceError(FacegateError):
    status = 422


class NoFace(FaceError):
    """No face was found in the image."""

    code = "no_face"


class MultipleFaces(FaceError):
    """More than one face was found and the request asked for exactly one."""

    code = "multiple_faces"


class FaceTooSmall(FaceError):
    """The face is smaller than the configured minimum size."""

    code = "face_too_small"


class LowQuality(FaceError):
    """The face fails the quality gate (detector score, blur or pose)."""

    code = "low_quality"


class AlignmentUnavailable(FaceError):
    """The detector gives no landmarks, so the face cannot be aligned for embedding."""

    code = "alignment_unavailable"


# --- models ------------------------------------------------------------------------
class ModelError(FacegateError):
    code = "model_error"
    status = 500


class ModelNotFound(ModelError):
    """No model with that name is registered."""

    code = "model_not_found"
    status = 404


class ModelMismatch(ModelError):
    """Embeddings of different models cannot be compared."""

    code = "model_mismatch"
    status = 409


class ModelLoadError(ModelError):
    """A model file is missing, corrupt or fails its checksum."""

    code = "model_load_error"
    status = 503


class ModelUncalibrated(ModelError):
    """The model's card has no decision thresholds, so it cannot decide same / different or unknown."""

    code = "model_uncalibrated"
    status = 409

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"model {model} has no calibrated thresholds: calibrate it on a folder of identity folders "
            f"(people it never saw) with `facegate models calibrate {model} --identities DIR --write`, "
            "or send a `threshold` with the request",
            model=model,
            calibrate=f"facegate models calibrate {model} --identities DIR --write",
        )


class InferenceError(ModelError):
    """The inference runtime failed on a batch."""

    code = "inference_error"
    status = 503


# --- gallery, auth, service ----------------------------------------------------------
class NotFound(FacegateError):
    code = "not_found"
    status = 404


class CollectionNotFound(NotFound):
    """No collection with that id."""

    code = "collection_not_found"


class IdentityNotFound(NotFound):
    """No identity with that id in the collection."""

    code = "identity_not_found"


class FaceNotFound(NotFound):
    """No face with that id."""

    code = "face_not_found"


class JobNotFound(NotFound):
    """No job with that id."""

    code = "job_not_found"


class Conflict(FacegateError):
    """The resource already exists or is in a conflicting state."""

    code = "conflict"
    status = 409


class InvalidRequest(FacegateError):
    """The request is malformed."""

    code = "invalid_request"
    status = 422


class Unauthorized(FacegateError):
    """A valid API key is required."""

    code = "unauthorized"
    status = 401


class Forbidden(FacegateError):
    """The API key lacks the scope or collection access this request needs."""

    code = "forbidden"
    status = 403


class RateLimited(FacegateError):
    """Too many requests for this API key."""

    code = "rate_limited"
    status = 429


class StorageUnavailable(FacegateError):
    """The gallery database cannot be written (read-only, full or unreachable)."""

    code = "storage_unavailable"
    status = 503
