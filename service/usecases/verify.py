"""1:1 verification: is the face in a photo the same person as a second photo, a given
embedding, or an enrolled identity?

The largest face of each photo is used (``strict`` makes a photo with several faces fail
with ``multiple_faces``). Against an identity the collection's active model is used and
the similarity is the best over the identity's faces. ``same`` is ``similarity >=
threshold``; the threshold is chosen by :mod:`service.usecases.thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import InvalidRequest, ModelMismatch
from service.gallery import Gallery
from service.pipeline.faces import DetectedFace
from service.pipeline.pipeline import FacePipeline
from service.pipeline.prepare import ImageInput
from service.usecases.access import Access
from service.usecases.faces import face_choice
from service.usecases.thresholds import decision_threshold

Against = Literal["image", "embedding", "identity"]


@dataclass(frozen=True)
class UsedFace:
    """The face a photo contributed: the largest (or the only one, when strict)."""

    face: DetectedFace
    faces_found: int  # faces detected in that photo


@dataclass(frozen=True)
class Verification:
    """The 1:1 answer and how it was reached."""

    similarity: float
    threshold: float
    threshold_source: str
    same: bool
    model: str
    policy: str  # "largest" or "strict"
    against: Against
    face: UsedFace
    face2: UsedFace | None = None
    identity_faces: int | None = None  # against an identity: how many faces were compared


def verify(
    pipeline: FacePipeline, gallery: Gallery | None, access: Access, image: ImageInput, *,
    image2: ImageInput | None = None, embedding: list[float] | np.ndarray | None = None,
    identity_id: str | None = None, collection_id: str | None = None, model: str | None = None,
    threshold: float | None = None, strict: bool = False, aligned: bool = False,
) -> Verification:
    given = {"image": image2 is not None, "embedding": embedding is not None, "identity": identity_id is not None}
    modes = [m for m, present in given.items() if present]
    if len(modes) != 1:
        raise InvalidRequest("send exactly one of image2, embedding or identity_id to compare `image` with", got=modes)
    against: Against = modes[0]  # type: ignore[assignment]

    ref: np.ndarray | None = None
    identity_faces = None
    if against == "identity":
        if not collection_id:
            raise InvalidRequest("identity_id needs its collection_id")
        access.check_collection(collection_id)
        if gallery is None:
            raise InvalidRequest("verification against an identity needs a gallery")
        coll = gallery.get_collection(collection_id)
        if model and model != coll.model:
            raise ModelMismatch("the collection's faces are embedded with another model",
                                active_model=coll.model, got=model)
        model = coll.model
        ref = gallery.get_embeddings(collection_id, identity_id, model)  # type: ignore[arg-type]
        if ref.shape[0] == 0:
            raise InvalidRequest("the identity has no enrolled faces", identity_id=identity_id)
        identity_faces = int(ref.shape[0])
    else:
        model = pipeline.recognizer(model)
    if against == "embedding":
        ref = reference_embedding(pipeline, model, embedding)

    kw = {"recognizers": (model,), "choose": face_choice(strict=strict, largest_only=True), "aligned": aligned}
    if image2 is not None:
        pa, pb = pipeline.prepare_many([image, image2], tenant=access.key_id, **kw)
        embs = pipeline.embed(pa.crops[model] + pb.crops[model], model)
        e1, ref = embs[0], embs[1:2]
    else:
        [pa], pb = pipeline.prepare_many([image], tenant=access.key_id, **kw), None
        e1 = pipeline.embed(pa.crops[model], model)[0]
    similarity = float(np.max(ref @ e1))
    thr = decision_threshold(pipeline.registry, pipeline.settings, model, threshold)
    return Verification(
        similarity=similarity, threshold=thr.value, threshold_source=thr.source, same=bool(similarity >= thr.value),
        model=model, policy="strict" if strict else "largest", against=against,
        face=UsedFace(pa.faces[0], len(pa.faces)),
        face2=UsedFace(pb.faces[0], len(pb.faces)) if pb is not None else None,
        identity_faces=identity_faces,
    )


def reference_embedding(pipeline: FacePipeline, model: str, embedding: list[float] | np.ndarray | None) -> np.ndarray:
    """A client's embedding as a (1, D) unit row: the model's dimension, finite, non-zero."""
    vec = np.asarray(embedding, dtype=np.float32)
    dim = pipeline.dim(model)
    if vec.ndim != 1 or vec.shape[0] != dim:
        raise ModelMismatch(f"the embedding has {vec.shape[0] if vec.ndim else 0} values; {model} makes {dim}",
                            model=model, expected_dim=dim, got_dim=int(vec.shape[0]) if vec.ndim else 0)
    norm = float(np.linalg.norm(vec))  # float32: a norm that overflows is inf, not a huge number
    if not np.isfinite(vec).all() or not np.isfinite(norm) or norm < 1e-12:
        raise InvalidRequest("the embedding must be finite, non-zero, and its norm must fit in float32")
    return (vec / norm)[None, :]
