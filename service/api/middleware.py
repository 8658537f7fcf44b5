"""ASGI middleware, outermost first: request id -> metrics -> CORS (when configured) -> body size limit.

Each is a plain ASGI class (no ``BaseHTTPMiddleware``), so streaming bodies pass through
untouched and the body limit can count bytes while they arrive.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.error_handlers import error_response, request_id_of
from service.api.metrics import Metrics
from service.errors import ImageTooLarge

#: The client's ``X-Request-ID`` is kept when it is a sane token, otherwise one is generated;
#: it is echoed in the response header and in the error envelope.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _HTTPOnly:
    """An ASGI middleware that acts on HTTP requests and passes everything else through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestIdMiddleware(_HTTPOnly):
    """Assign the request id first, so every later layer (auth, limits, logs) can use it."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class BodyLimitMiddleware(_HTTPOnly):
    """Enforce ``max_request_bytes`` before the body is read into memory.

    A declared ``Content-Length`` over the limit is refused at once, without reading a
    byte of the body. A chunked (or lying) body is counted while it streams in, and the
    read fails with :class:`ImageTooLarge` the moment the count passes the limit, so a
    client can never make the server buffer more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class MetricsMiddleware(_HTTPOnly):
    """Counts and times every HTTP request (after routing, so the template is known)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        m = self.metrics

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path_format", None) or getattr(route, "path", None) or "<unmatched>"
            if path.startswith("/ui") and path != "/ui":
                path = "/ui/*"
            method = scope.get("method", "-")
            m.requests.labels(path, method, str(status)).inc()
            m.latency.labels(path, method).observe(time.perf_counter() - start)


#: The web page loads only its own files; nothing may frame it (clickjacking). /docs keeps
#: the inline start-up script FastAPI's Swagger page needs, with every asset from this origin.
_UI_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
_DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class SecurityHeadersMiddleware(_HTTPOnly):
    """Browser-facing hardening on every response: no MIME sniffing, no framing, no referrer;
    a Content-Security-Policy on the web page and the API docs."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        csp = _UI_CSP if path == "/" or path.startswith("/ui") else (
            _DOCS_CSP if path.startswith(("/docs", "/redoc", "/static-offline-docs")) else None)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer")]
                if csp:
                    extra.append((b"content-security-policy", csp.encode()))
                headers += [(k, v) for k, v in extra if k not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


#: Query-string parameters that may carry a credential: their values never reach the log.
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|secret|password|auth)=)[^&\s]*")


class _RedactQuerySecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_PARAMS.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Keys sent by mistake in a query string (``?api_key=``) are refused, and must not be
    written to uvicorn's access log either. Idempotent."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactQuerySecrets) for f in access.filters):
        access.addFilter(_RedactQuerySecrets())
