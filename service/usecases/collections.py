"""Collection-level use cases: create one with a recognizer, switch its recognizer.

Switching never mixes models: a background job re-embeds the collection's stored aligned
crops with the new model while identify keeps using the old one, and the gallery flips
the active model atomically once every face has an embedding of the new model.

A collection's model must be able to decide: a model whose card has no thresholds (an
ONNX file registered with ``facegate models add`` and never calibrated) is refused here
with ``model_uncalibrated``, which names the calibrate command, instead of being activated
and then failing every identify that does not bring its own threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from service.errors import FacegateError, InvalidRequest
from service.gallery import Collection, Gallery, Job
from service.pipeline.pipeline import FacePipeline
from service.usecases.access import Access
from service.usecases.thresholds import card_threshold

log = logging.getLogger("facegate.jobs")


def require_calibrated(pipeline: FacePipeline, model: str) -> None:
    """``model_uncalibrated`` unless a decision threshold exists for ``model`` without a request
    threshold (its card's, or the operator's ``FACEGATE_THRESHOLD_OVERRIDE``)."""
    card_threshold(pipeline.registry, pipeline.settings, model)


def create_collection(
    pipeline: FacePipeline, gallery: Gallery, access: Access, collection_id: str, *, name: str = "",
    model: str | None = None, metadata: Mapping[str, Any] | None = None,
) -> Collection:
    access.check_collection(collection_id)
    require_calibrated(pipeline, pipeline.recognizer(model))
    return gallery.create_collection(collection_id, name, model, metadata)


def switch_model(pipeline: FacePipeline, gallery: Gallery, access: Access, collection_id: str, model: str) -> Job:
    """Start re-embedding the collection with ``model``; poll the returned job."""
    access.check_collection(collection_id)
    new = pipeline.recognizer(model)
    require_calibrated(pipeline, new)
    coll = gallery.get_collection(collection_id)
    old_card, new_card = pipeline.card(coll.model), pipeline.card(new)
    # The stored crops were aligned for the old model's input; re-embedding them only
    # makes sense when the new model takes the same crop.
    if tuple(old_card.input.size) != tuple(new_card.input.size) or old_card.template != new_card.template:
        raise InvalidRequest(
            f"{new} takes {new_card.input.size[0]}x{new_card.input.size[1]} crops aligned differently from the "
            f"stored {old_card.input.size[0]}x{old_card.input.size[1]} crops; re-enroll from photos instead",
            model=new,
        )
    pipeline.embedder(new)  # load now: a broken model fails this call, not the job
    job = gallery.start_reembed_job(collection_id, new)
    gallery.start_reembed_thread(job.id, lambda crops: pipeline.embed(list(crops), new))
    return gallery.get_job(job.id)


def resume_interrupted_jobs(pipeline: FacePipeline, gallery: Gallery) -> list[Job]:
    """Rerun, in the background, the model switches whose process died (found by
    ``Gallery.start``); each continues where it stopped. A model that no longer loads leaves
    its job failed, with the reason, for an operator to see."""
    resumed = []
    for job in getattr(gallery, "interrupted_jobs", []):
        new = job.params["new_model"]
        try:
            pipeline.embedder(new)
        except FacegateError as e:
            log.warning("job %s (switch %s to %s) not resumed: %s", job.id, job.collection_id, new, e.message)
            continue
        gallery.start_reembed_thread(job.id, lambda crops, m=new: pipeline.embed(list(crops), m))
        log.warning("job %s (switch %s to %s) resumed after its process died", job.id, job.collection_id, new)
        resumed.append(job)
    gallery.interrupted_jobs = []
    return resumed
