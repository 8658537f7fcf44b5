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

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None, **kw: Any) -> None:
        """``class NoFace(FaceError, code="no_face")``: code and status in the class header."""
        super().__init_subclass__(**kw)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details = details
        super().__init__(self.message)


# --- image input -----------------------------------------------------------------
class ImageError(FacegateError, code="invalid_image", status=400):
    """An uploaded image cannot be used (400 family)."""


class EmptyImage(ImageError, code="empty_image"):
    """The image body is empty."""


class NotAnImage(ImageError, code="invalid_image"):
    """The bytes are not an image in any supported format."""


class CorruptImage(ImageError, code="corrupt_image"):
    """The image header is valid but its data cannot be decoded."""


class ImageTooLarge(ImageError, code="image_too_large", status=413):
    """The image exceeds the configured byte or pixel limit."""


class UnsupportedMediaType(ImageError, code="unsupported_media_type", status=415):
    """The request's content type is not one this route accepts."""


# --- faces -------------------------------------------------------------------------
class FaceError(FacegateError, status=422):
    """The image is fine, its faces are not what the request needs (422 family)."""


class NoFace(FaceError, code="no_face"):
    """No face was found in the image."""


class MultipleFaces(FaceError, code="multiple_faces"):
    """More than one face was found and the request asked for exactly one."""


class FaceTooSmall(FaceError, code="face_too_small"):
    """The face is smaller than the configured minimum size."""


class LowQuality(FaceError, code="low_quality"):
    """The face fails the quality gate (detector score, blur or pose)."""


class AlignmentUnavailable(FaceError, code="alignment_unavailable"):
    """The detector gives no landmarks, so the face cannot be aligned for embedding."""


# --- models ------------------------------------------------------------------------
class ModelError(FacegateError, code="model_error", status=500):
    pass


class ModelNotFound(ModelError, code="model_not_found", status=404):
    """No model with that name is registered."""


class ModelMismatch(ModelError, code="model_mismatch", status=409):
    """Embeddings of different models cannot be compared."""


class ModelLoadError(ModelError, code="model_load_error", status=503):
    """A model file is missing, corrupt or fails its checksum."""


class ModelUncalibrated(ModelError, code="model_uncalibrated", status=409):
    """The model's card has no decision thresholds, so it cannot decide same / different or unknown."""
    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"model {model} has no calibrated thresholds: calibrate it on a folder of identity folders "
            f"(people it never saw) with `facegate models calibrate {model} --identities DIR --write`, "
            "or send a `threshold` with the request",
            model=model,
            calibrate=f"facegate models calibrate {model} --identities DIR --write",
        )


class InferenceError(ModelError, code="inference_error", status=503):
    """The inference runtime failed on a batch."""


# --- gallery, auth, service ----------------------------------------------------------
class NotFound(FacegateError, code="not_found", status=404):
    pass


class CollectionNotFound(NotFound, code="collection_not_found"):
    """No collection with that id."""


class IdentityNotFound(NotFound, code="identity_not_found"):
    """No identity with that id in the collection."""


class FaceNotFound(NotFound, code="face_not_found"):
    """No face with that id."""


class JobNotFound(NotFound, code="job_not_found"):
    """No job with that id."""


class Conflict(FacegateError, code="conflict", status=409):
    """The resource already exists or is in a conflicting state."""


class InvalidRequest(FacegateError, code="invalid_request", status=422):
    """The request is malformed."""


class Unauthorized(FacegateError, code="unauthorized", status=401):
    """A valid API key is required."""


class Forbidden(FacegateError, code="forbidden", status=403):
    """The API key lacks the scope or collection access this request needs."""


class RateLimited(FacegateError, code="rate_limited", status=429):
    """Too many requests for this API key."""


class StorageUnavailable(FacegateError, code="storage_unavailable", status=503):
    """The gallery database cannot be written (read-only, full or unreachable)."""
