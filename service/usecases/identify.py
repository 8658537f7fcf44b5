"""1:N identification of every face in a photo, across the collections the caller may use.

Detection runs once; each face is aligned and embedded once per distinct recognizer of
the searched collections (embeddings of different models are never compared). Each
collection is searched with its own threshold (:mod:`service.usecases.thresholds`) and
ranked by :mod:`service.usecases.ranking`; the candidates of all collections are then
merged by similarity, and ``best`` is the most similar candidate above its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.gallery import Gallery
from service.pipeline.faces import DetectedFace
from service.pipeline.pipeline import FacePipeline
from service.pipeline.prepare import ImageInput
from service.usecases.access import Access
from service.usecases.faces import face_choice
from service.usecases.ranking import Aggregate, IdentifyResult, check_options, identify_embeddings
from service.usecases.thresholds import decision_threshold


@dataclass(frozen=True)
class Candidate:
    identity_id: str
    external_id: str
    name: str
    collection_id: str
    similarity: float
    face_id: int
    matched_faces: int
    above_threshold: bool


@dataclass(frozen=True)
class FaceIdentification:
    face: DetectedFace
    candidates: list[Candidate]  # most similar first, at most top_k

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.above_threshold), None)

    @property
    def unknown(self) -> bool:
        return self.best is None


@dataclass(frozen=True)
class Searched:
    collection_id: str
    model: str
    threshold: float
    threshold_source: str


@dataclass(frozen=True)
class Identification:
    results: list[FaceIdentification]
    aggregate: Aggregate
    searched: list[Searched]


def identify(
    pipeline: FacePipeline, gallery: Gallery, access: Access, image: ImageInput, *,
    collection_id: str | None = None, top_k: int = 5, aggregate: Aggregate = "max",
    threshold: float | None = None, largest_only: bool = False,
) -> Identification:
    """Without ``collection_id`` every collection the caller may use is searched."""
    check_options(top_k, aggregate)
    if collection_id is not None:
        access.check_collection(collection_id)
        colls = [gallery.get_collection(collection_id)]
    else:
        colls = [c for c in gallery.list_collections(counts=False) if access.can_access(c.id)]
    models = tuple(sorted({c.model for c in colls})) or (pipeline.settings.recognizer,)
    [p] = pipeline.prepare_many([image], tenant=access.key_id, recognizers=models,
                                choose=face_choice(strict=False, largest_only=largest_only))
    embs = {m: pipeline.embed(p.crops[m], m) for m in models}

    searched: list[Searched] = []
    per_coll: list[tuple[str, list[IdentifyResult]]] = []
    for c in colls:
        thr = decision_threshold(pipeline.registry, pipeline.settings, c.model, threshold)
        searched.append(Searched(c.id, c.model, thr.value, thr.source))
        res = identify_embeddings(gallery, c.id, c.model, embs[c.model], top_k=top_k, aggregate=aggregate,
                                  threshold=thr.value)
        per_coll.append((c.id, res))

    results = []
    for i, face in enumerate(p.chosen):
        cands = [
            Candidate(m.identity_id, m.external_id, m.name, cid, float(m.score), int(m.face_id),
                      int(m.matched_faces), bool(m.above_threshold))
            for cid, res in per_coll for m in res[i].matches
        ]
        cands.sort(key=lambda c: -c.similarity)
        results.append(FaceIdentification(face, cands[:top_k]))
    return Identification(results, aggregate, searched)
