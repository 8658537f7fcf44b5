"""Enrollment: photos of a person into a collection, all or none.

Every photo runs through decode -> detect -> quality gate -> align -> embed *before*
the database is touched, and all of a request's faces are stored in one transaction.
The gate refuses, naming the photo, a face smaller than ``enroll_min_face_size``
(``face_too_small``), a detector score under ``enroll_min_det_score`` or a blur score
under ``enroll_min_blur`` (``low_quality``), and a photo with several faces unless
``largest_only`` (``multiple_faces``). It returns after the gallery committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.errors import InvalidRequest
from service.gallery import EnrollFace, FaceRecord, Gallery
from service.pipeline.pipeline import FacePipeline
from service.pipeline.prepare import ImageInput, QualityGate
from service.usecases.access import Access

MAX_ENROLL_IMAGES = 16


@dataclass(frozen=True)
class Enrollment:
    faces: list[FaceRecord]
    model: str


def enroll(
    pipeline: FacePipeline, gallery: Gallery, access: Access, collection_id: str, identity_id: str,
    images: Sequence[ImageInput], *, largest_only: bool = False,
) -> Enrollment:
    access.check_collection(collection_id)
    if not images:
        raise InvalidRequest("the request has no image (send 'image', repeated for several, or 'images')")
    if len(images) > MAX_ENROLL_IMAGES:
        raise InvalidRequest(f"at most {MAX_ENROLL_IMAGES} images per call", count=len(images))
    # Fail fast (before the CPU work) on an unknown collection or identity.
    gallery.get_identity(collection_id, identity_id)
    model = gallery.get_collection(collection_id).model
    prepared = pipeline.prepare_many(images, tenant=access.key_id, recognizers=(model,), choose="largest" if largest_only else "strict",
                                     gate=QualityGate.for_enrollment(pipeline.settings))
    embs = pipeline.embed([p.crops[model][0] for p in prepared], model)
    faces = [
        EnrollFace(
            crop=p.crops[model][0], embedding=e, model=model, bbox=[float(v) for v in p.chosen[0].bbox],
            landmarks=p.chosen[0].landmarks.tolist() if p.chosen[0].landmarks is not None else None,
            det_score=float(p.chosen[0].score), quality={k: float(v) for k, v in p.chosen[0].quality.items()},
            image_sha256=p.sha256,
        )
        for p, e in zip(prepared, embs)
    ]
    return Enrollment(gallery.enroll(collection_id, identity_id, faces), model)
