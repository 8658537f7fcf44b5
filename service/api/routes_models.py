"""Models (cards and runtime state), per-collection recognizer switches and their jobs."""

from __future__ import annotations

from fastapi import APIRouter

from service import usecases as uc
from service.api import responses as out
from service.api import schemas as S
from service.api.deps import AdminKey, GalleryDep, PipelineDep, ReadKey, Run
from service.api.security import AuthenticatedRoute
from service.errors import JobNotFound

router = APIRouter(prefix="/v1", tags=["models"], responses=S.ERROR_RESPONSES, route_class=AuthenticatedRoute)


@router.get("/models", response_model=S.ModelList, summary="Registered models, their cards and runtime state")
async def list_models(_: ReadKey, pipeline: PipelineDep, run: Run) -> dict:
    loaded = pipeline.loaded_models()
    cards = await run(pipeline.registry.cards)
    return {
        "models": [
            {"name": c.name, "kind": c.kind, "loaded": c.name in loaded, "runtime": loaded.get(c.name),
             "card": c.model_dump(mode="json", exclude_none=True)}
            for c in cards
        ],
        "default_detector": pipeline.settings.detector,
        "default_recognizer": pipeline.settings.recognizer,
    }


@router.post("/collections/{collection_id}/model", response_model=S.JobOut, status_code=202,
             summary="Activate a recognizer for a collection (re-embeds its faces in the background)")
async def activate_model(collection_id: str, body: S.ActivateModel, principal: AdminKey, pipeline: PipelineDep,
                         gallery: GalleryDep, run: Run) -> dict:
    return out.job(await run(uc.switch_model, pipeline, gallery, principal, collection_id, body.model))


@router.get("/jobs/{job_id}", response_model=S.JobOut, summary="Progress of a background job")
async def get_job(job_id: str, principal: ReadKey, gallery: GalleryDep, run: Run) -> dict:
    job = await run(gallery.get_job, job_id)
    if not principal.can_access(job.collection_id):  # same answer as a job that does not exist:
        raise JobNotFound(job_id=job_id)  # job ids cannot be probed across tenants
    return out.job(job)


@router.get("/collections/{collection_id}/jobs", response_model=list[S.JobOut], summary="A collection's jobs")
async def list_jobs(collection_id: str, principal: ReadKey, gallery: GalleryDep, run: Run) -> list:
    principal.check_collection(collection_id)
    await run(gallery.get_collection, collection_id)
    return [out.job(j) for j in await run(gallery.list_jobs, collection_id)]
