"""Stateless use cases on photos: detect the faces, embed them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidRequest
from service.pipeline.faces import DetectedFace
from service.pipeline.pipeline import FacePipeline
from service.pipeline.prepare import FaceChoice, ImageInfo, ImageInput

MAX_BATCH_IMAGES = 32


def face_choice(*, strict: bool, largest_only: bool) -> FaceChoice:
    """The request flags as a choice policy: strict wins (exactly one), then largest."""
    return "strict" if strict else ("largest" if largest_only else "all")


@dataclass(frozen=True)
class Detection:
    faces: list[DetectedFace]
    model: str
    image: ImageInfo


@dataclass(frozen=True)
class EmbeddedFace:
    image_index: int
    face: DetectedFace
    embedding: np.ndarray  # (D,) float32, L2-normalised


@dataclass(frozen=True)
class Embedding:
    faces: list[EmbeddedFace]
    model: str
    dim: int
    images: int


def detect(pipeline: FacePipeline, image: ImageInput, *, detector: str | None = None, tenant: str = "local") -> Detection:
    """Every face of the photo, largest first, with landmarks, score and quality."""
    det = pipeline.detector_name(detector)
    [p] = pipeline.prepare_many([image], tenant=tenant, detector=det, need_face=False)
    return Detection(p.faces, det, p.info)


def embed(
    pipeline: FacePipeline, images: Sequence[ImageInput], *, model: str | None = None, strict: bool = False,
    largest_only: bool = False, aligned: bool = False, tenant: str = "local",
) -> Embedding:
    """Embeddings of the chosen faces of one or more photos (a photo without a face fails the call)."""
    model = pipeline.recognizer(model)
    if not images:
        raise InvalidRequest("the request has no image (send 'image', repeated for a batch, or 'images')")
    if len(images) > MAX_BATCH_IMAGES:
        raise InvalidRequest(f"at most {MAX_BATCH_IMAGES} images per call", count=len(images))
    prepared = pipeline.prepare_many(images, tenant=tenant, recognizers=(model,), choose=face_choice(strict=strict,
                                     largest_only=largest_only), aligned=aligned)
    embs = pipeline.embed([c for p in prepared for c in p.crops[model]], model)
    out, k = [], 0
    for i, p in enumerate(prepared):
        for f in p.chosen:
            out.append(EmbeddedFace(i, f, embs[k]))
            k += 1
    return Embedding(out, model, int(embs.shape[1]), len(images))
