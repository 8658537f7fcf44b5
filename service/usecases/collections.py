"""Collection-level use cases: create one with a recognizer, switch its recognizer.

Switching never mixes models: a background job re-embeds the collection's stored aligned
crops with the new model while identify keeps using the old one, and the gallery flips
the active model atomically once every face has an embedding of the new model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import InvalidRequest
from service.gallery import Collection, Gallery, Job
from service.pipeline.pipeline import FacePipeline
from service.usecases.access import Access


def create_collection(
    pipeline: FacePipeline, gallery: Gallery, access: Access, collection_id: str, *, name: str = "",
    model: str | None = None, metadata: Mapping[str, Any] | None = None,
) -> Collection:
    access.check_collection(collection_id)
    if model:
        pipeline.recognizer(model)
    return gallery.create_collection(collection_id, name, model, metadata)


def switch_model(pipeline: FacePipeline, gallery: Gallery, access: Access, collection_id: str, model: str) -> Job:
    """Start re-embedding the collection with ``model``; poll the returned job."""
    access.check_collection(collection_id)
    new = pipeline.recognizer(model)
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
