"""Application factory. Models load and the database migrates at start-up, so a bad model
or an unreachable database fails the start, not a request.

Layers, outermost first: request id -> metrics -> CORS (when configured) -> body size
limit (``middleware.py``) -> routing -> authentication, before the body is parsed
(``security.py``) -> scope and rate limit (the route's dependency) -> route -> use case.
Public: ``/healthz``, ``/readyz``, ``/v1/info``, the web page (``/`` redirects to ``/ui/``)
and the OpenAPI docs. ``/metrics`` needs an admin key: gallery sizes per collection are
tenant information.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from service import __version__
from service import usecases as uc
from service.api import routes_faces, routes_gallery, routes_keys, routes_models
from service.api import schemas as S
from service.api.deps import AdminKey, Runner
from service.api.error_handlers import install_error_handlers
from service.api.metrics import Metrics
from service.api.middleware import (
    BodyLimitMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    redact_access_log,
)
from service.auth import KeyStore, TokenBucketLimiter, hash_key
from service.auth.key_store import ApiKeyStore
from service.auth.shared_limiter import SharedLimiter
from service.config import Settings, get_settings
from service.errors import FacegateError, Forbidden
from service.gallery import Gallery
from service.pipeline.pipeline import FacePipeline

log = logging.getLogger("facegate.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """
Face verification (1:1) and identification (1:N).

* Images travel as **multipart** (`image`, and `image2` for the second verify image) or as
  **base64 in JSON** (same field names, optionally `data:image/...;base64,` URLs); every
  image-taking route accepts both.
* Every error has the same envelope: `{"error": {"code", "message", "status", "request_id", "details"}}`.
* Send the API key in the `X-API-Key` header (configurable). Scopes: `admin`, `enroll`,
  `verify`, `identify`, `read`.
"""


FIRST_KEY_FILE = "admin.key"


def ensure_first_admin_key(keys: KeyStore, settings: Settings) -> Path | None:
    """On a first start with auth on and no key at all, mint an admin key into ``<data_dir>/admin.key``.

    Secure by default without a manual step: the service never runs open, and the
    secret goes to a 0600 file, never to the log. ``O_EXCL`` makes the file the
    lock, so several workers starting at once create one key, not one each.
    """
    if keys.list(include_revoked=False):
        return None
    path = settings.data_dir / FIRST_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        log.warning("no active API key in the database, but %s exists: use the key in it, or delete the file "
                    "to have a new one minted at the next start", path)
        return None
    with os.fdopen(fd, "w") as f:
        _, secret = keys.create("initial admin (first start)", ["admin"])
        f.write(secret + "\n")
    log.warning("no API key existed: created an admin key and saved it to %s (mode 0600; it is not logged). "
                "Create narrower keys with `facegate keys create`.", path)
    return path


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.auth_enabled:
            log.warning(
                "\n" + "!" * 78 + "\n!!! AUTH IS DISABLED (FACEGATE_AUTH_ENABLED=false): anyone who can reach this "
                "port\n!!! can enroll, identify and delete. Use this for local development only.\n" + "!" * 78
            )
        pipeline = FacePipeline(settings)
        gallery = Gallery(settings)
        try:
            await run_in_threadpool(pipeline.load)
            await run_in_threadpool(gallery.start)
            await run_in_threadpool(uc.resume_interrupted_jobs, pipeline, gallery)
        except FacegateError as e:  # one clear line (naming the file) above uvicorn's traceback
            log.critical("facegate cannot start: %s", e.message)
            raise
        pipeline.on_batch = app.state.metrics.on_batch
        app.state.pipeline = pipeline
        app.state.gallery = gallery
        boot = settings.bootstrap_admin_key.get_secret_value() if settings.bootstrap_admin_key else None
        app.state.keys = KeyStore(ApiKeyStore(gallery.db), hash_key(boot) if boot else None)
        app.state.limiter = SharedLimiter(gallery.db, settings.rate_limit_per_minute).start()
        if boot and settings.auth_enabled:
            log.warning("the bootstrap admin key (FACEGATE_BOOTSTRAP_ADMIN_KEY) is accepted; create real keys "
                        "with `facegate keys create` and remove it")
        elif settings.auth_enabled:
            await run_in_threadpool(ensure_first_admin_key, app.state.keys, settings)
        try:
            yield
        finally:
            pipeline.close()
            await run_in_threadpool(app.state.limiter.close)
            await run_in_threadpool(gallery.close)
            app.state.metrics.process_exit()

    # FastAPIOffline serves /docs and /redoc with their scripts from the installed package:
    # no outside CDN, so the docs work offline and the page loads nothing from third parties.
    app = FastAPIOffline(
        title="facegate",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={},
    )
    app.state.settings = settings
    app.state.auth_failures = TokenBucketLimiter(settings.auth_failures_per_minute)
    app.state.metrics = Metrics(app.state)
    app.state.runner = Runner()

    install_error_handlers(app)
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
            allow_headers=["*"], expose_headers=["X-Request-ID"],
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    redact_access_log()

    for r in (routes_faces.router, routes_gallery.router, routes_models.router, routes_keys.router):
        app.include_router(r)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: models loaded and database reachable",
             responses={503: {"model": S.ErrorEnvelope}})
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, object] = {}
        ok = True
        pipeline = getattr(request.app.state, "pipeline", None)
        loaded = pipeline.loaded_models() if pipeline else {}
        models_ok = settings.detector in loaded and settings.recognizer in loaded
        checks["models"] = {"ok": models_ok, "loaded": sorted(loaded)}
        ok &= models_ok
        try:
            await run_in_threadpool(request.app.state.gallery.list_collections, counts=False)
            checks["database"] = {"ok": True}
        except Exception as e:  # noqa: BLE001 - readiness reports, it does not raise
            # public route: the kind of failure only (the driver's message is in the server log)
            log.warning("readiness: database check failed: %s", e)
            checks["database"] = {"ok": False, "error": type(e).__name__}
            ok = False
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (admin key)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def metrics(request: Request, principal: AdminKey) -> Response:
        if principal.collections is not None:  # every tenant's gallery sizes are in there
            raise Forbidden("only an admin key valid for every collection may read /metrics")
        return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/info", tags=["health"], response_model=S.ServiceInfo, summary="Public facts the web page needs")
    def info() -> dict:
        return {
            "name": "facegate", "version": __version__, "auth_enabled": settings.auth_enabled,
            "api_key_header": settings.api_key_header, "default_recognizer": settings.recognizer,
            "default_detector": settings.detector,
        }

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    return app
