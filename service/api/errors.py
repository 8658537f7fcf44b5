"""The one place where failures become HTTP responses.

Every failure, whatever raised it, is answered with the same envelope::

    {"error": {"code": "no_face", "message": "...", "status": 422,
               "request_id": "3f2c...", "details": {...}}}

* :class:`~service.errors.FacegateError` subclasses carry their own ``code`` and
  ``status`` (the pipeline and the gallery raise them; this module never guesses).
* FastAPI's request validation (bad JSON, wrong field types, missing fields) becomes
  ``invalid_request`` 422, with pydantic's error list in ``details``.
* Starlette's own HTTP errors (404 unknown route, 405 wrong method) keep their status
  with a stable code (``not_found``, ``method_not_allowed``).
* Anything else is a bug: 500 ``internal_error``, logged with its traceback and the
  request id, and the message does not leak internals.

The request id comes from the client's ``X-Request-ID`` header when it is a sane token,
otherwise it is generated; it is echoed in the response header and in the envelope so a
client's bug report can be matched with the server log.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import FacegateError, ImageTooLarge

log = logging.getLogger("facegate.api")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "image_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def request_id_of(scope_or_request: Request | Scope) -> str:
    """The id assigned by :class:`RequestIdMiddleware` (or ``"-"`` outside a request)."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    return scope.get("state", {}).get("request_id", "-")


def envelope(status: int, code: str, message: str, request_id: str, details: dict[str, Any] | None = None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "request_id": request_id,
            "details": details or {},
        }
    }


def error_response(
    status: int, code: str, message: str, request_id: str, details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    hdrs = {REQUEST_ID_HEADER: request_id, **(headers or {})}
    return JSONResponse(envelope(status, code, message, request_id, details), status_code=status, headers=hdrs)


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    """Details must serialise; anything exotic becomes its repr rather than a 500."""
    out: dict[str, Any] = {}
    for k, v in details.items():
        if isinstance(v, (str, int, float, bool, type(None), list, dict)):
            out[k] = v
        else:
            out[k] = repr(v)
    return out


async def _facegate_error(request: Request, exc: FacegateError) -> JSONResponse:
    rid = request_id_of(request)
    headers = {}
    retry = exc.details.get("retry_after") if exc.details else None
    if retry is not None:
        headers["Retry-After"] = str(int(max(1, round(float(retry)))))
    if exc.status >= 500:
        log.warning("request %s failed: %s %s", rid, exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, rid, _jsonable(exc.details), headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for e in exc.errors():
        errors.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")})
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    msg = f"invalid request: {'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else "invalid request"
    return error_response(422, "invalid_request", msg, request_id_of(request), {"errors": errors})


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, code, detail, request_id_of(request), headers=dict(exc.headers or {}))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    log.exception("request %s: unhandled error", rid)
    return error_response(500, "internal_error", "internal server error; quote the request id when reporting it", rid)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FacegateError, _facegate_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)


class RequestIdMiddleware:
    """Assign the request id first, so every later layer (auth, limits, logs) can use it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _SANE_ID.match(cand) else None
                break
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Enforce ``max_request_bytes`` before the body is read into memory.

    A declared ``Content-Length`` over the limit is refused at once, without reading a
    byte of the body. A chunked (or lying) body is counted while it streams in, and the
    read fails with :class:`ImageTooLarge` the moment the count passes the limit, so a
    client can never make the server buffer more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
                if declared < 0:
                    resp = error_response(400, "bad_request", "invalid Content-Length header", request_id_of(scope))
                    await resp(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    resp = error_response(
                        413, ImageTooLarge.code,
                        f"the request body is {declared} bytes; the limit is {self.max_bytes}",
                        request_id_of(scope), {"limit": self.max_bytes},
                        headers={"Connection": "close"},
                    )
                    await resp(scope, receive, send)
                    return
                break
        seen = 0
        limit = self.max_bytes
        exceeded = replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise ImageTooLarge(f"the request body exceeds the limit of {limit} bytes", limit=limit)
            return message

        async def typed_send(message: Message) -> None:
            # FastAPI turns any error while it reads a JSON body into a generic 400; whatever
            # the app made of it, an over-limit body is answered with the typed 413.
            nonlocal replaced
            if not exceeded:
                await send(message)
                return
            if message["type"] == "http.response.start" and not replaced:
                replaced = True
                resp = error_response(
                    413, ImageTooLarge.code, f"the request body exceeds the limit of {limit} bytes",
                    request_id_of(scope), {"limit": limit}, headers={"Connection": "close"},
                )
                await resp(scope, receive, send)

        await self.app(scope, limited_receive, typed_send)
