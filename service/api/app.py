"""Application factory. Models load at start-up so a bad model fails the start, not a request."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.config import Settings, get_settings
from service.pipeline.pipeline import FacePipeline


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pipeline = FacePipeline(settings)
        pipeline.load()
        app.state.pipeline = pipeline
        yield
        pipeline.close()

    app = FastAPI(title="facegate", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> dict:
        return {"status": "ready", "models": app.state.pipeline.loaded_models()}

    return app
