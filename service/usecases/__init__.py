"""The use cases: what the product does, with plain Python in and plain results out.

The API routes, the CLI and the benchmarks call these functions, so the business rules
(which face, which threshold, how candidates merge, who may touch which collection)
exist once. Everything here is blocking; the API runs it off the event loop.
"""

from service.usecases.access import EVERYTHING, Access
from service.usecases.collections import (
    create_collection,
    require_calibrated,
    resume_interrupted_jobs,
    switch_model,
)
from service.usecases.enroll import Enrollment, enroll
from service.usecases.faces import Detection, EmbeddedFace, Embedding, detect, embed
from service.usecases.identify import Candidate, FaceIdentification, Identification, Searched, identify
from service.usecases.ranking import IdentifyResult, Match, identify_embeddings, rank
from service.usecases.thresholds import Threshold, card_threshold, decision_threshold
from service.usecases.verify import UsedFace, Verification, verify

__all__ = [
    "EVERYTHING", "Access", "Candidate", "Detection", "EmbeddedFace", "Embedding", "Enrollment",
    "FaceIdentification", "Identification", "IdentifyResult", "Match", "Searched", "Threshold", "UsedFace",
    "Verification", "card_threshold", "create_collection", "decision_threshold", "detect", "embed", "enroll",
    "identify", "identify_embeddings", "rank", "require_calibrated", "resume_interrupted_jobs", "switch_model",
    "verify",
]
