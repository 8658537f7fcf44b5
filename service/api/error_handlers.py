"""The one place where failures become HTTP responses (the error envelope and its handlers).

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

The request id (:class:`service.api.middleware.RequestIdMiddleware`) is echoed in the
envelope so a client's bug report can be matched with the server log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from service.errors import FacegateError

log = logging.getLogger("facegate.api")

REQUEST_ID_HEADER = "X-Request-ID"

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


#: An error echoes at most this much of any string it carries (a 5 MB id is not sent back).
ECHO_LIMIT = 200
_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)+[\w.@+-]*")  # an absolute file-system path
_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")  # "<object X at 0x7f...>"


def clean(text: str) -> str:
    """What a message may say: no server paths, no object reprs, a short prefix of user input."""
    text = _REPR.sub("<object>", _PATH.sub("<path>", text))
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}… ({len(text)} characters)"


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Details as safe JSON: strings cleaned, containers bounded, anything exotic a short tag."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (bool, int, float, type(None))):
        return value
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        return {clean(str(k)): _jsonable(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in list(value)[:50]]
    return type(value).__name__


async def _facegate_error(request: Request, exc: FacegateError) -> JSONResponse:
    rid = request_id_of(request)
    headers = {}
    retry = exc.details.get("retry_after") if exc.details else None
    if retry is not None:
        headers["Retry-After"] = str(int(max(1, round(float(retry)))))
    if exc.status >= 500:
        log.warning("request %s failed: %s %s", rid, exc.code, exc.message)
    return error_response(exc.status, exc.code, clean(exc.message), rid, _jsonable(exc.details), headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for e in exc.errors():
        errors.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")})
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    msg = f"invalid request: {'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else "invalid request"
    return error_response(422, "invalid_request", clean(msg), request_id_of(request), _jsonable({"errors": errors}))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    detail = clean(exc.detail if isinstance(exc.detail, str) else str(exc.detail))
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
