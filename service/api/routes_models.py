"""Models (cards and runtime state), per-collection recognizer switches and their jobs.

Switching a collection's recognizer never mixes models: a background job re-embeds the
collection's stored aligned crops with the new model while identify keeps using the old
one, and the gallery flips the active model atomically once every face has an embedding
of the new model (``Gallery.finish_switch``). Progress is visible at ``/v1/jobs/{id}``.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from service.api import schemas as S
from service.api.auth import Principal, require
from service.api.common import gallery_of, pipeline_of, recognizer_name
from service.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["models"], responses=S.ERROR_RESPONSES)


def job_dict(j) -> dict:
    d = asdict(j)
    d["progress"] = round(j.done / j.total, 4) if j.total else 1.0
    return d


@router.get("/models", response_model=S.ModelList, summary="Registered models, their cards and runtime state")
async def list_models(request: Request, _: Principal = Depends(require("read"))) -> dict:
    pipeline = pipeline_of(request)
    loaded = pipeline.loaded_models()
    cards = await run_in_threadpool(pipeline.registry.cards)
    return {
        "models": [
            {"name": c.name, "kind": c.kind, "loaded": c.name in loaded, "runtime": loaded.get(c.name),
             "card": c.model_dump(mode="json", exclude_none=True)}
            for c in cards
        ],
        "default_detector": pipeline.settings.detector,
        "default_recognizer": pipeline.settings.recognizer,
    }


@router.post(
    "/collections/{collection_id}/model",
    response_model=S.JobOut,
    status_code=202,
    tags=["models"],
    summary="Activate a recognizer for a collection (re-embeds its faces in the background)",
)
async def activate_model(
    request: Request, collection_id: str, body: S.ActivateModel, principal: Principal = Depends(require("admin"))
) -> dict:
    principal.check_collection(collection_id)
    pipeline, gallery = pipeline_of(request), gallery_of(request)
    new = recognizer_name(pipeline, body.model)
    coll = await run_in_threadpool(gallery.get_collection, collection_id)
    old_card, new_card = pipeline.card(coll.model), pipeline.card(new)
    # The stored crops were aligned for the old model's input; re-embedding them only
    # makes sense when the new model takes the same crop.
    if tuple(old_card.input.size) != tuple(new_card.input.size) or old_card.template != new_card.template:
        raise InvalidRequest(
            f"{new} takes {new_card.input.size[0]}x{new_card.input.size[1]} crops aligned differently from the "
            f"stored {old_card.input.size[0]}x{old_card.input.size[1]} crops; re-enroll from photos instead",
            model=new,
        )
    await run_in_threadpool(pipeline.embedder, new)  # load now: a broken model fails this call, not the job
    job = await run_in_threadpool(gallery.start_reembed_job, collection_id, new)

    def embed_fn(crops):
        return pipeline.embed(list(crops), new)

    gallery.start_reembed_thread(job.id, embed_fn)
    return job_dict(await run_in_threadpool(gallery.get_job, job.id))


@router.get("/jobs/{job_id}", response_model=S.JobOut, summary="Progress of a background job")
async def get_job(request: Request, job_id: str, principal: Principal = Depends(require("read"))) -> dict:
    job = await run_in_threadpool(gallery_of(request).get_job, job_id)
    principal.check_collection(job.collection_id)
    return job_dict(job)


@router.get("/collections/{collection_id}/jobs", response_model=list[S.JobOut], summary="A collection's jobs")
async def list_jobs(request: Request, collection_id: str, principal: Principal = Depends(require("read"))) -> list:
    principal.check_collection(collection_id)
    await run_in_threadpool(gallery_of(request).get_collection, collection_id)
    return [job_dict(j) for j in await run_in_threadpool(gallery_of(request).list_jobs, collection_id)]
