"""FastAPI dependencies in one place: the pipeline, the gallery, the keys, the caller.

A route declares what it needs with these ``Annotated`` aliases and reads like: parse,
authorise, call one use case, return. Use cases are blocking; :func:`run` runs one off the
event loop on its own bounded thread budget, so heavy requests never starve the threads
that authenticate and serve light calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request

from service.api.images import ImageRequest, image_request
from service.api.security import require
from service.auth import KeyStore, Principal
from service.config import Settings
from service.gallery import Gallery
from service.pipeline.pipeline import FacePipeline

T = TypeVar("T")


def get_pipeline(request: Request) -> FacePipeline:
    return request.app.state.pipeline


def get_gallery(request: Request) -> Gallery:
    return request.app.state.gallery


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys


PipelineDep = Annotated[FacePipeline, Depends(get_pipeline)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
ImageBody = Annotated[ImageRequest, Depends(image_request)]

AdminKey = Annotated[Principal, Depends(require("admin"))]
EnrollKey = Annotated[Principal, Depends(require("enroll"))]
VerifyKey = Annotated[Principal, Depends(require("verify"))]
IdentifyKey = Annotated[Principal, Depends(require("identify"))]
ReadKey = Annotated[Principal, Depends(require("read"))]

#: Use-case calls in flight at once per process (each mostly waits for the decode pool or
#: the recognizer's micro-batcher; the pipeline bounds the CPU work itself).
USECASE_THREADS = 32


class Runner:
    """Runs a blocking use case (or gallery call) off the event loop, on the use cases' own
    thread budget (apart from the default pool that authentication uses)."""

    def __init__(self, threads: int = USECASE_THREADS) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._limiter is None:  # created inside the event loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._limiter)


def get_runner(request: Request) -> Runner:
    return request.app.state.runner


Run = Annotated[Runner, Depends(get_runner)]
