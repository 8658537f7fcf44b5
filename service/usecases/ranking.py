"""From nearest faces to ranked identities and an open-set decision, for one collection.

A query is searched for ``top_k * oversample`` nearest faces; they are grouped by
identity, and each identity is scored by its best face (``max``) or by the mean
similarity over *all* its stored faces (``mean``, computed exactly from the stored
embeddings of the candidate identities, not only the faces the search returned). An
identity is ``above_threshold`` when its aggregated score reaches the threshold, and the
answer is ``unknown`` when no candidate is: the same number decides both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import InvalidRequest
from service.gallery import FaceHit, Gallery, normalise

Aggregate = Literal["max", "mean"]
MAX_TOP_K = 1000


@dataclass(frozen=True)
class Match:
    """One candidate identity for a query, aggregated over its faces."""

    identity_id: str
    external_id: str
    name: str
    score: float  # cosine similarity (aggregated per ``aggregate``)
    face_id: int  # the identity's best-matching face
    matched_faces: int  # faces of this identity among the searched candidates
    above_threshold: bool


@dataclass(frozen=True)
class IdentifyResult:
    """Answer for one query embedding: ranked matches plus the open-set decision."""

    matches: list[Match]
    best_score: float | None
    unknown: bool  # no match reaches the threshold
    threshold: float | None


def check_options(top_k: int, aggregate: str) -> None:
    if aggregate not in ("max", "mean"):
        raise InvalidRequest("aggregate must be 'max' or 'mean'")
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be between 1 and {MAX_TOP_K}")


def rank(
    hits: list[FaceHit], query: np.ndarray, *, top_k: int, threshold: float | None, aggregate: Aggregate = "max",
    stored: dict[str, np.ndarray] | None = None,
) -> IdentifyResult:
    """Group one query's face hits by identity and decide. ``stored`` holds every stored
    embedding of the candidate identities (needed for ``mean``)."""
    best: dict[str, list] = {}  # identity -> [best score, best hit, count]
    for h in hits:
        cur = best.get(h.identity_id)
        if cur is None:
            best[h.identity_id] = [h.score, h, 1]
        else:
            cur[2] += 1
            if h.score > cur[0]:
                cur[0], cur[1] = h.score, h
    matches = []
    for iid, (score, hit, count) in best.items():
        if aggregate == "mean" and stored is not None and iid in stored:
            score = float(np.mean(stored[iid] @ query))
        matches.append(Match(identity_id=iid, external_id=hit.external_id, name=hit.name, score=float(score),
                             face_id=hit.face_id, matched_faces=count,
                             above_threshold=threshold is None or score >= threshold))
    matches.sort(key=lambda m: (-m.score, m.identity_id))
    matches = matches[: int(top_k)]
    return IdentifyResult(matches=matches, best_score=matches[0].score if matches else None,
                          unknown=not any(m.above_threshold for m in matches), threshold=threshold)


def identify_embeddings(
    gallery: Gallery, collection_id: str, model: str, queries: np.ndarray, *, top_k: int = 5,
    aggregate: Aggregate = "max", threshold: float | None = None, oversample: int | None = None,
) -> list[IdentifyResult]:
    """Rank identities of one collection for each query embedding (rows of ``queries``).
    ModelMismatch if ``model`` is not the collection's active model or the dimension differs."""
    check_options(top_k, aggregate)
    q = normalise(queries, "query")
    k_faces = int(top_k) * max(1, int(oversample or gallery.settings.index_oversample))
    per_query = gallery.search(collection_id, model, q, k_faces)
    stored = None
    if aggregate == "mean":
        idents = {h.identity_id for hits in per_query for h in hits}
        stored = gallery.embeddings_of(sorted(idents), model) if idents else {}
    return [rank(hits, q[i], top_k=top_k, threshold=threshold, aggregate=aggregate, stored=stored)
            for i, hits in enumerate(per_query)]
